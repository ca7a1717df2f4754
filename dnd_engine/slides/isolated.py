"""Read an untrusted slide in a child process, so that a native crash fails that slide only.

OpenSlide and the TIFF decoders are C code: a crafted file (a TileWidth of 1,048,576 px, say) makes them ask for
terabytes and abort the whole process with SIGABRT, which no ``try`` catches. The app reads slides the user
opens or drops, so it reads them here: :class:`IsolatedSlide` looks like a :class:`~dnd_engine.slides.Slide` (info,
levels, thumbnail, regions) but the file is opened, and every pixel decoded, in one child process per open slide.
When the child dies, every pending and later call raises :class:`SlideReaderCrashed` (a ``SlideError``) with one
line saying so, and the child is never restarted for that file: the same bytes would crash it again.

Requests carry an id, so several threads (the viewer's decoding threads) share one proxy: the child decodes them
on its own small thread pool, one slide handle per thread (tiffslide does not promise thread-safe reads on a
shared handle), and a receiver thread here hands each answer to the caller waiting for it. Pixels travel through
the pipe as pickled arrays: a 512×512 RGB tile (768 KiB) costs well under a millisecond on top of its decoding.

The child exits when its parent dies: the pipe then reads EOF (the parent's end lives in the parent only), and a
timer also notices a parent that is gone while a forked sibling still holds the pipe. Children start from the
fork server (never ``fork``: copying a process that runs Qt threads can deadlock); ``spawn`` where there is no
fork server or the app is frozen.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from PIL import Image

from ..errors import SlideError
from ..text import one_line

START_METHOD = ("spawn" if getattr(sys, "frozen", False) or "forkserver" not in multiprocessing.get_all_start_methods()
                else "forkserver")
READER_THREADS = 4          # the viewer decodes on at most four threads
PARENT_CHECK_S = 1.0        # how often an idle child checks that its parent still runs
# Test hook: "open", "thumbnail" or "read" makes the child call os.abort() there, so the crash path is tested on
# machines whose OpenSlide copes with the crafted files. Read in the parent when a slide is opened.
ABORT_HOOK_ENV = "DND_TEST_READER_ABORT"


class SlideReaderCrashed(SlideError):
    """The child process reading a slide died (a native crash on a damaged or crafted file)."""


def crash_message(name: str, exitcode: Optional[int]) -> str:
    """The one line a user sees when the reader of ``name`` died with ``exitcode`` (negative: a signal)."""
    if exitcode is None or exitcode >= 0:   # not a crash of the decoder: the process could not start or was ended
        return (f"{name}: the slide reader process ended unexpectedly"
                f"{f' (exit code {exitcode})' if exitcode is not None else ''}; nothing else was affected")
    try:
        how = signal.Signals(-exitcode).name
    except ValueError:
        how = f"signal {-exitcode}"
    return f"{name}: the slide reader crashed on this file ({how}): it is damaged or crafted; nothing else was affected"


class _Waiter:
    __slots__ = ("event", "ok", "value")

    def __init__(self) -> None:
        self.event = threading.Event()
        self.ok = False
        self.value: Any = None


class IsolatedSlide:
    """A slide opened and read in a child process; thread-safe. Opening blocks until the child has opened the
    file (raises :class:`SlideError` for an unreadable file, :class:`SlideReaderCrashed` when the child died).

    ``open_kwargs`` go to :func:`dnd_engine.slides.open_slide` in the child (``objective_power``, ``mpp``,
    ``fallback_magnification``). Close it when done: the child exits then.
    """

    def __init__(self, path: str | os.PathLike, *, threads: int = READER_THREADS,
                 start_method: Optional[str] = None, **open_kwargs):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._waiting: dict[int, _Waiter] = {}
        self._ids = itertools.count(1)
        self._closed = False
        self._crashed: Optional[str] = None
        ctx = multiprocessing.get_context(start_method or START_METHOD)
        self._conn, child_conn = ctx.Pipe(duplex=True)
        self._process = ctx.Process(
            target=_serve, name=f"dnd-slide-reader {self.path.name}", daemon=True,
            args=(child_conn, str(self.path), dict(open_kwargs), int(threads), os.getpid(),
                  os.environ.get(ABORT_HOOK_ENV, "")))
        try:
            self._process.start()
        except Exception as exc:  # no processes left, a broken fork server: say so in one line
            self._conn.close()
            raise SlideError(f"{self.path.name}: cannot start a slide reader process ({exc})") from None
        finally:
            child_conn.close()   # the child's end lives in the child only, so its death reads as EOF here
        self._receiver = threading.Thread(target=self._receive, name=f"dnd-slide-reader-rx {self.path.name}",
                                          daemon=True)
        self._receiver.start()
        try:
            meta = self._call("open")
        except BaseException:
            self.close()
            raise
        self._info: dict = meta["info"]
        self.properties: dict = meta["properties"]
        self.backend: str = meta["backend"]
        self.vendor: str = meta["vendor"]
        self.id: str = meta["id"]
        self.level_dimensions: list[tuple[int, int]] = [tuple(d) for d in meta["level_dimensions"]]
        self.level_downsamples: list[float] = list(meta["level_downsamples"])
        self.mpp: Optional[float] = meta["mpp"]
        self.mpp_source: Optional[str] = meta["mpp_source"]
        self.objective_power: Optional[float] = meta["objective_power"]
        self.magnification_source: str = meta["magnification_source"]

    # --- what a Slide offers ------------------------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def info(self) -> dict:
        return dict(self._info)

    def read_array(self, location: Sequence[int], level: int, size: Sequence[int]) -> np.ndarray:
        """:meth:`Slide.read_region` as an H×W×3 uint8 array (the viewer's tile reads: no PIL round trip)."""
        return self._call("read", (int(location[0]), int(location[1])), int(level), (int(size[0]), int(size[1])))

    def read_region(self, location: Sequence[int], level: int, size: Sequence[int]) -> Image.Image:
        return Image.fromarray(self.read_array(location, level, size))

    def thumbnail_array(self, max_size: int = 1024) -> np.ndarray:
        """:meth:`Slide.get_thumbnail` as an H×W×3 uint8 array."""
        return self._call("thumbnail", int(max_size))

    def get_thumbnail(self, max_size: int = 1024) -> Image.Image:
        return Image.fromarray(self.thumbnail_array(max_size))

    # --- state --------------------------------------------------------------------------------------------
    @property
    def crashed(self) -> Optional[str]:
        """The one-line message when the child died, else None."""
        return self._crashed

    @property
    def pid(self) -> Optional[int]:
        return self._process.pid

    def close(self) -> None:
        """Stop the child (calls still waiting get a SlideError). Returns at once; safe to call more than once."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._process.terminate()   # a native read may be stuck: nothing in the child needs a clean exit
        except Exception:  # noqa: BLE001 - already gone
            pass

    def __enter__(self) -> "IsolatedSlide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def __repr__(self) -> str:
        return f"IsolatedSlide({self.path.name!r}, pid={self.pid}, crashed={self._crashed is not None})"

    # --- the pipe -----------------------------------------------------------------------------------------
    def _call(self, op: str, *args):
        waiter = _Waiter()
        with self._lock:
            if self._crashed:
                raise SlideReaderCrashed(self._crashed)
            if self._closed:
                raise SlideError(f"{self.path.name}: closed")
            rid = next(self._ids)
            self._waiting[rid] = waiter
            try:
                self._conn.send((rid, op, args))
            except (OSError, ValueError):
                pass   # the child is gone: the receiver sees EOF and fails this call with the reason
        waiter.event.wait()
        if waiter.ok:
            return waiter.value
        if isinstance(waiter.value, SlideError):
            raise waiter.value
        raise SlideError(f"{self.path.name}: {waiter.value}")

    def _receive(self) -> None:
        """Hand each answer to its caller; on EOF fail every pending call, for good."""
        while True:
            try:
                rid, ok, value = self._conn.recv()
            except (EOFError, OSError, ValueError, TypeError):
                break
            except Exception:  # noqa: BLE001 - a garbled answer: treat the reader as broken
                break
            with self._lock:
                waiter = self._waiting.pop(rid, None)
            if waiter is not None:
                waiter.ok, waiter.value = ok, value
                waiter.event.set()
        self._process.join(timeout=10)
        with self._lock:
            if self._closed:
                error: SlideError = SlideError(f"{self.path.name}: closed")
            else:
                self._crashed = crash_message(self.path.name, self._process.exitcode)
                error = SlideReaderCrashed(self._crashed)
            waiting, self._waiting = list(self._waiting.values()), {}
        try:
            self._conn.close()
        except OSError:
            pass
        for waiter in waiting:
            waiter.ok, waiter.value = False, error
            waiter.event.set()


# --- the child --------------------------------------------------------------------------------------------
def _serve(conn, path: str, open_kwargs: dict, threads: int, parent_pid: int, abort_at: str) -> None:
    """The child's main loop: open the slide, then answer requests until the pipe closes or the parent dies."""
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl+C in a terminal is for the parent to handle
    except (ValueError, OSError):
        pass
    from . import open_slide

    send_lock = threading.Lock()
    local = threading.local()
    spare: list = []           # the first handle, opened by the main thread, is handed to the first worker

    def reply(rid: int, ok: bool, value) -> None:
        with send_lock:
            conn.send((rid, ok, value))

    def handle():
        slide = getattr(local, "slide", None)
        if slide is None:
            slide = spare.pop() if spare else open_slide(path, **open_kwargs)
            local.slide = slide
        return slide

    def work(rid: int, op: str, args: tuple) -> None:
        try:
            if abort_at == op:
                os.abort()
            slide = handle()
            if op == "read":
                value = np.ascontiguousarray(np.asarray(slide.read_region(*args).convert("RGB")), dtype=np.uint8)
            elif op == "thumbnail":
                value = np.ascontiguousarray(np.asarray(slide.get_thumbnail(*args).convert("RGB")), dtype=np.uint8)
            else:
                raise SlideError(f"unknown request {op!r}")
            reply(rid, True, value)
        except SlideError as exc:
            reply(rid, False, SlideError(str(exc)))
        except Exception as exc:  # noqa: BLE001 - the parent gets one line, never a traceback
            reply(rid, False, SlideError(f"{Path(path).name}: cannot read the slide "
                                         f"({one_line(exc, typed=True)})"))

    try:
        rid, op, _ = conn.recv()
        if abort_at == "open":
            os.abort()
        try:
            slide = open_slide(path, **open_kwargs)
        except SlideError as exc:
            reply(rid, False, SlideError(str(exc)))
            os._exit(0)
        except Exception as exc:  # noqa: BLE001
            reply(rid, False, SlideError(f"{Path(path).name}: cannot open the slide "
                                         f"({one_line(exc, typed=True)})"))
            os._exit(0)
        spare.append(slide)
        reply(rid, True, {
            "info": slide.info(), "properties": dict(slide.properties), "backend": slide.backend,
            "vendor": slide.vendor, "id": slide.id, "level_dimensions": [tuple(d) for d in slide.level_dimensions],
            "level_downsamples": list(slide.level_downsamples), "mpp": slide.mpp, "mpp_source": slide.mpp_source,
            "objective_power": slide.objective_power, "magnification_source": slide.magnification_source})
        first_ppid = os.getppid()
        pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="dnd-reader")
        while True:
            if not conn.poll(PARENT_CHECK_S):
                if os.getppid() != first_ppid or not _alive(parent_pid):
                    break
                continue
            rid, op, args = conn.recv()
            if op == "close":
                break
            pool.submit(work, rid, op, args)
    except (EOFError, OSError, KeyboardInterrupt):
        pass
    finally:
        os._exit(0)   # never wait for a decode still running: nobody wants its answer


def _alive(pid: int) -> bool:
    if os.name == "nt":      # os.kill there ends the process; a spawned child sees its parent's death as EOF
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:          # alive, owned by someone else (cannot happen for our parent, but harmless)
        return True
    return True


__all__ = ["IsolatedSlide", "SlideReaderCrashed", "crash_message", "START_METHOD", "ABORT_HOOK_ENV"]
