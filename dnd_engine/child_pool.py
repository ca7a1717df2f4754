"""Run work on untrusted files in child processes whose death fails that one piece of work only.

Native slide decoders (OpenSlide, libtiff, libjpeg, glib) abort the whole process on some crafted or damaged
files: no ``try`` catches a SIGABRT. :func:`dnd_engine.slides.precheck.precheck_slide` rejects what a header
check can see; whatever it cannot foresee runs here. A :class:`ChildPool` keeps a few worker processes, each
doing one task at a time; a worker that dies (signal, ``os._exit``) fails its task with a
:class:`ChildCrashed` naming the file and the signal, and is replaced for the next task. Workers exit when
their parent does (:func:`dnd_engine.lifeline.exit_with_parent`), and ignore Ctrl-C (the parent decides what a
cancel means).
"""

from __future__ import annotations

import os
import pickle
import signal
import threading
from collections import deque
from concurrent.futures import Future
from multiprocessing import connection, get_context
from typing import Callable, Optional

from .errors import DnDError, SlideError
from .text import one_line
from .lifeline import pid_alive


class ChildCrashed(SlideError):
    """The child process reading a file died (a native library aborted on it)."""


def crash_message(name: str, exitcode: Optional[int]) -> str:
    """ "kidney.tif: the slide reader crashed on this file (signal SIGABRT): it is damaged or crafted"."""
    if exitcode is not None and exitcode < 0:
        try:
            how = f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            how = f"signal {-exitcode}"
    else:
        how = f"exit code {exitcode}"
    return f"{name}: the slide reader crashed on this file ({how}): it is damaged or crafted"


def _worker_main(conn, parent_pid: int) -> None:
    """A worker's loop: (fn, args) in, ("ok", result) or ("err", exception) out, until told to stop or the
    parent is gone."""
    from .lifeline import exit_with_parent
    exit_with_parent(parent_pid)      # the kernel ends it with its parent, even while stopped or busy decoding
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            while not conn.poll(1.0):
                if not pid_alive(parent_pid):
                    return
            task = conn.recv()
        except (EOFError, OSError):
            return
        if task is None:
            return
        fn, args = task
        try:
            reply = ("ok", fn(*args))
        except BaseException as exc:  # every failure goes back to the parent as a value
            reply = ("err", exc)
        try:
            data = pickle.dumps(reply)
        except Exception:
            exc = reply[1] if reply[0] == "err" else None
            data = pickle.dumps(("err", DnDError(one_line(exc, typed=not isinstance(exc, DnDError)))))
        try:
            conn.send_bytes(data)
        except (OSError, ValueError):
            return


class _Worker:
    def __init__(self, ctx, parent_pid: int):
        self.conn, child = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child, parent_pid), daemon=True,
                                name="dnd-slide-reader")
        self.proc.start()
        child.close()
        self.task: Optional[tuple] = None      # (future, name) while busy

    def stop(self, kill: bool) -> None:
        try:
            if kill:
                self.proc.kill()
            else:
                self.conn.send(None)
        except Exception:
            pass
        self.proc.join(timeout=None if kill else 5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self.conn.close()


class ChildPool:
    """Up to ``n`` worker processes (started with ``mp_context``: fork | forkserver | spawn | None for the
    platform's default); :meth:`submit` returns a :class:`Future`. ``fn`` and its arguments must pickle."""

    def __init__(self, n: int = 1, mp_context: Optional[str] = None):
        self.n = max(1, int(n))
        self._ctx = get_context(mp_context)
        self._queue: deque = deque()
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._closed = False
        # the workers are forked here, by the caller's thread; a worker that replaces a dead one is started by
        # the pool's thread while the caller's threads run on, and a fork then can copy a lock another thread
        # holds (a module being imported: the child waits on it forever), so replacements use a fork server
        self._respawn_ctx = get_context("forkserver") if self._ctx.get_start_method() == "fork" else self._ctx
        self._workers = [_Worker(self._ctx, os.getpid()) for _ in range(self.n)]
        self._thread = threading.Thread(target=self._run, name="dnd-child-pool", daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, *args, name: str = "slide") -> Future:
        """Run ``fn(*args)`` in a worker; ``name`` (the file's name) is what a crash message names."""
        fut: Future = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("the pool is shut down")
            self._queue.append((fut, name, fn, args))
        os.write(self._wake_w, b"x")
        return fut

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._closed:
                    return
                self._assign()
                busy = [w for w in self._workers if w.task is not None]
            waits = [self._wake_r] + [w.conn for w in busy] + [w.proc.sentinel for w in busy]
            ready = connection.wait(waits)
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            for w in busy:
                if w.conn in ready or w.proc.sentinel in ready:
                    self._collect(w)

    def _assign(self) -> None:
        """Give queued tasks to idle workers, starting workers up to ``n`` (called with the lock held)."""
        while self._queue:
            idle = next((w for w in self._workers if w.task is None), None)
            if idle is None and len(self._workers) < self.n:
                idle = _Worker(self._respawn_ctx, os.getpid())
                self._workers.append(idle)
            if idle is None:
                return
            fut, name, fn, args = self._queue.popleft()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                idle.conn.send((fn, args))
            except Exception as exc:  # an argument that does not pickle, or a worker that just died
                if not idle.proc.is_alive():
                    self._replace(idle)
                fut.set_exception(DnDError(f"{name}: cannot hand the file to a reader process ({exc})"))
                continue
            idle.task = (fut, name)

    def _collect(self, w: _Worker) -> None:
        fut, name = w.task
        try:
            if w.conn.poll():
                kind, value = pickle.loads(w.conn.recv_bytes())
                w.task = None
                if kind == "ok":
                    fut.set_result(value)
                else:
                    fut.set_exception(value)
                return
        except (EOFError, OSError):
            pass
        except Exception as exc:  # a reply that does not unpickle
            w.task = None
            fut.set_exception(DnDError(f"{name}: the slide reader's answer is unreadable ({exc})"))
            return
        w.proc.join(timeout=5)
        w.task = None
        fut.set_exception(ChildCrashed(crash_message(name, w.proc.exitcode)))
        with self._lock:
            self._replace(w)

    def _replace(self, w: _Worker) -> None:
        """Drop a dead worker; the next task starts a fresh one."""
        if w in self._workers:
            self._workers.remove(w)
        w.stop(kill=True)

    def shutdown(self, kill: bool = False) -> None:
        """Stop the workers (``kill``: at once, dropping tasks in flight) and cancel queued tasks."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            queued, self._queue = list(self._queue), deque()
        os.write(self._wake_w, b"x")
        self._thread.join()
        for fut, *_ in queued:
            fut.cancel()
        for w in self._workers:
            if w.task is not None:
                w.task[0].set_exception(DnDError(f"{w.task[1]}: stopped"))
                w.stop(kill=True)
            else:
                w.stop(kill=kill)
        self._workers.clear()
        os.close(self._wake_r)
        os.close(self._wake_w)

    def __enter__(self) -> "ChildPool":
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown(kill=exc[0] is not None)


def run_isolated(fn: Callable, *args, name: str = "slide", mp_context: Optional[str] = None):
    """``fn(*args)`` in a child process of its own; its exception is raised here, its death a ChildCrashed."""
    with ChildPool(1, mp_context) as pool:
        return pool.submit(fn, *args, name=name).result()


def slide_base_magnification(slide_path: str, slide_overrides=None,
                             fallback_magnification: Optional[float] = None) -> Optional[float]:
    """A slide's level-0 magnification, for a child process to read (this module imports no torch, so a
    forkserver child starts quickly)."""
    from .slides.overrides import open_with_override
    with open_with_override(slide_path, slide_overrides, fallback_magnification=fallback_magnification) as slide:
        return slide.magnification_at_level(0)
