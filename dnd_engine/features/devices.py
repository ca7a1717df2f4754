"""Several devices on one machine: one encoder process per device, the cohort's slides shared between them.

``dnd extract --devices cuda:0,cuda:1`` (or ``cpu,cpu``) starts one process per listed device; each runs the
ordinary one-device extraction (:func:`~dnd_engine.features.extract.extract_cohort`: its own preparation
processes, patch readers and encoder) on the same folders, so every slide's files are exactly what a one-device
run writes. Why processes and not threads: each device needs its own Python for the host-side work (decoding,
batching, writing), and a process that dies (a driver fault, the OOM killer) takes only its own slide with it.

The parent owns the sharing. A device process asks it, through its pipe, for each slide as its stream reaches
that slide (``take``); the parent gives a slide to the first process that asks, so fast devices do more slides
(each process first gets one slide of its own, so every device starts at once). Results and patch progress come
back through the same pipe and are merged into the caller's callbacks (one patch bar over the slides being
encoded on every device, one slide bar over the cohort); the parent writes the cohort's summary.
No lock is shared between processes (a process killed while holding one would stop the others): only pipes, and
one cancel flag the parent writes.

A process that dies fails its in-flight slide (the one it was encoding, else the first it had taken); the
slides it had taken but not begun go back to the pool and a fresh process on the same device carries on (at most
:data:`MAX_DEATHS` times per device). Processes start with the config's ``mp_context`` (``fork`` is replaced by
``spawn``: a forked child cannot use CUDA, nor safely inherit a Qt app's threads) and exit with their parent;
their own readers and preparation processes start as this process's would (not spawn's default: each would
import torch again).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import threading
from dataclasses import dataclass, field, replace
from multiprocessing import connection, get_context
from pathlib import Path
from typing import Callable, Optional

from ..atomic import ensure_dir
from ..device import usable_cores
from ..errors import Cancelled, DnDError
from ..progress import CancelFn, ProgressFn, no_progress
from ..text import first_line

log = logging.getLogger(__name__)

#: deaths of one device's process after which that device is given no new process
MAX_DEATHS = 3
#: the most device processes one run starts
MAX_DEVICES = 64
#: seconds a cancelled device process gets to drop its slide in flight cleanly before it is killed
CANCEL_GRACE_S = 30.0
_FREE, _DONE = -1, -2


def parse_devices(text: Optional[str]) -> list[str]:
    """``"cuda:0,cuda:1"`` → ``["cuda:0", "cuda:1"]``; ``cpu`` may repeat (``cpu,cpu``: two CPU processes
    splitting the cores) and ``cuda`` alone means every GPU. Raises :class:`DnDError` with one line for an empty
    list, an unknown device, a GPU this machine lacks, or a mix of CPU and GPU (their precisions differ, and one
    folder holds one precision)."""
    import torch
    items = [t.strip() for t in str(text or "").split(",")]
    if not any(items):
        raise DnDError("--devices is empty: list one or more devices, e.g. cuda:0,cuda:1 or cpu,cpu")
    if not all(items):
        raise DnDError(f"--devices has an empty entry in {text!r}: separate devices with single commas")
    out: list[str] = []
    for item in items:
        try:
            dev = torch.device(item.lower())
        except (RuntimeError, ValueError):
            raise DnDError(f"unknown device '{item}' in --devices (use cpu, cuda or cuda:N)") from None
        if dev.type == "cpu":
            out.append("cpu")
            continue
        if dev.type != "cuda":
            raise DnDError(f"--devices takes cpu and cuda:N devices only, got '{item}'")
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise DnDError(f"--devices names '{item}', but CUDA is not available on this machine "
                           "(use --devices cpu,cpu or leave --devices out)")
        if dev.index is None:
            out.extend(f"cuda:{k}" for k in range(n))
        elif dev.index >= n:
            have = ", ".join(f"cuda:{k}" for k in range(n))
            raise DnDError(f"--devices names '{item}', but this machine has {n} GPU{'s' if n > 1 else ''} ({have})")
        else:
            out.append(f"cuda:{dev.index}")
    kinds = {d.split(":")[0] for d in out}
    if len(kinds) > 1:
        raise DnDError("--devices mixes cpu and cuda: list devices of one kind (their precisions differ, and one "
                       "features folder holds one)")
    if len(out) > MAX_DEVICES:
        raise DnDError(f"--devices lists {len(out)} devices; at most {MAX_DEVICES}")
    return out


def process_share(device: str, n: int, num_workers: Optional[int]) -> tuple[int, int]:
    """(encoder threads, patch readers) for one of ``n`` device processes: the machine's cores are split
    between them (on a CPU the encoder's threads compete with the readers, so each gets its share; on a GPU the
    readers need the cores). A ``num_workers`` the user gave counts per process."""
    cores = usable_cores()
    threads = max(1, cores // n)
    if num_workers is not None:
        return threads, max(0, int(num_workers))
    readers = min(16, cores // n) if device.startswith("cuda") else min(4, cores) // n
    return threads, max(1, readers)


# --- the device process -------------------------------------------------------------------------------------
class _Link:
    """The device process's end of its pipe: ``take`` asks the parent for a slide, the rest report."""

    def __init__(self, conn):
        self.conn = conn
        self.lock = threading.Lock()

    def send(self, msg) -> None:
        with self.lock:
            self.conn.send(msg)

    def take(self, i: int) -> bool:
        with self.lock:
            self.conn.send(("take", i))
            return bool(self.conn.recv())

    def slide(self, done: int, total: int, msg: str) -> None:
        self.send(("slide", done, total, msg))

    def result(self, i: int, r) -> None:
        self.send(("result", i, r))


def _picklable_error(exc: BaseException):
    """What the parent is sent for an exception that ends a device process: the exception itself where it
    survives pickling, else a DnDError with its first line (never a traceback)."""
    from .settings import SettingsMismatch
    if isinstance(exc, SettingsMismatch):
        return ("mismatch", exc.body, exc.wanted, exc.kind, exc.hint)
    try:
        pickle.loads(pickle.dumps(exc))
        return ("error", exc)
    except Exception:
        msg = first_line(exc)
        return ("error", DnDError(msg if isinstance(exc, DnDError) else f"{type(exc).__name__}: {msg}"))


def _device_main(conn, parent_pid: int, paths: list, out_dir: str, config, threads: int, cancel_flag,
                 build: Optional[Callable]) -> None:
    """One device's process: the one-device extraction over the slides the parent gives it."""
    from ..lifeline import exit_with_parent
    exit_with_parent(parent_pid)                  # a killed dnd extract (or app) leaves no encoder behind
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to decide (it cancels us)
    link = _Link(conn)
    try:
        import torch
        torch.set_num_threads(threads)
        from .extract import extract_cohort
        extractor = build(config.device) if build is not None else None
        extract_cohort(paths, out_dir, config, slide_progress=link.slide, cancelled=lambda: bool(cancel_flag.value),
                       extractor=extractor, take=link.take, on_slide=link.result)
        link.send(("finished",))
    except Cancelled:
        link.send(("cancelled",))
    except BaseException as exc:     # every failure goes back to the parent as a value
        try:
            link.send(_picklable_error(exc))
        except (OSError, ValueError):
            pass
    finally:
        conn.close()


# --- the parent ---------------------------------------------------------------------------------------------
@dataclass
class _Proc:
    key: int                     # which process of the run (owner of the slides it takes)
    slot: int                    # position in the --devices list
    device: str
    proc: object
    conn: object
    taken: set = field(default_factory=set)       # slides it asked for and was given
    started: set = field(default_factory=set)     # slide ids this process has written features for, unfinished
    ended: Optional[str] = None                   # finished | cancelled | error | died
    spoke: bool = False                           # it sent something: it started (a death before is a start failure)

    @property
    def label(self) -> str:
        return f"{self.device} [{self.slot + 1}]"


def _death_words(exitcode: Optional[int]) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"signal {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit code {exitcode}"


def extract_on_devices(paths: list[Path], out_dir, config, progress: ProgressFn = no_progress,
                       slide_progress: ProgressFn = no_progress, cancelled: Optional[CancelFn] = None,
                       build: Optional[Callable] = None, devices: Optional[list[str]] = None) -> list:
    """Extract ``paths`` with one encoder process per device of ``config.devices`` (or ``devices``); returns
    one :class:`SlideResult` per slide, in cohort order, each with ``info["device"]`` (which device did it) and
    ``info["device_slot"]`` (its position in the list). ``build(device)`` builds each process's extractor
    (benchmarks and tests: a random-initialised network; it must pickle); else each builds it from ``config``.
    Raises what a one-device run raises (the first device process's error), and :class:`Cancelled` after
    every process has stopped."""
    from .extract import SlideResult, _write_summary, feature_dir_for
    devs = list(devices) if devices is not None else parse_devices(config.devices)
    paths = [Path(p) for p in paths]
    out_dir = ensure_dir(out_dir)
    fdir = ensure_dir(feature_dir_for(out_dir, config.extractor))
    n = len(paths)
    if len(devs) == 1 and build is None:
        from .extract import extract_cohort
        one = replace(config, device=devs[0], devices=None, shard=None)   # paths are this shard's already
        return _tagged(extract_cohort(paths, out_dir, one, progress, slide_progress, cancelled), devs[0], 0)
    method = config.mp_context if config.mp_context in ("spawn", "forkserver") else "spawn"
    ctx = get_context(method)
    # a spawned process defaults to spawn for its own children: its patch readers and preparation processes would
    # each import torch again (seconds apiece); they start as they would in this process
    inner = config.mp_context or multiprocessing.get_start_method(allow_none=True) or \
        multiprocessing.get_all_start_methods()[0]
    cancel_flag = ctx.RawValue("b", 0)           # no lock: a process killed while holding one would stop the rest
    owner = [_FREE] * n
    for k in range(min(len(devs), n)):           # each device starts on a slide of its own (its first process)
        owner[k] = k
    results: dict = {}
    deaths = [0] * len(devs)
    start_failures: list = []
    procs: list[_Proc] = []
    error: Optional[BaseException] = None
    encoding: dict = {}          # (process key, slide id) -> (patches done, total) of the slides being encoded now

    def start(slot: int) -> _Proc:
        threads, readers = process_share(devs[slot], len(devs), config.num_workers)
        cfg = replace(config, device=devs[slot], devices=None, shard=None, num_workers=readers, mp_context=inner)
        parent_end, child_end = ctx.Pipe(duplex=True)
        proc = ctx.Process(target=_device_main, name=f"dnd-device-{slot}",
                           args=(child_end, os.getpid(), paths, str(out_dir), cfg, threads, cancel_flag, build))
        proc.start()
        child_end.close()
        log.info("device process %d (%s, pid %d): %d encoder threads, %d patch readers", slot + 1, devs[slot],
                 proc.pid, threads, readers)
        p = _Proc(len(procs), slot, devs[slot], proc, parent_end)
        procs.append(p)
        return p

    def finish(i: int, r, p: Optional[_Proc]) -> None:
        if p is not None:
            r.info = {**r.info, "device": p.device, "device_slot": p.slot}
            p.started.discard(r.slide_id)
            log.info("%s: %s on %s", r.slide_id, r.status, p.label)
        results[i] = r
        owner[i] = _DONE
        _write_summary(fdir, [results[k] for k in sorted(results)])
        progress(len(results), n, f"{r.slide_id}: {r.status}")

    def handle(p: _Proc, msg) -> None:
        nonlocal error
        kind = msg[0]
        p.spoke = True
        if kind == "take":
            i = msg[1]
            ok = not cancel_flag.value and error is None and owner[i] in (_FREE, p.key)
            if ok:
                owner[i] = p.key
                p.taken.add(i)
            p.conn.send(ok)
        elif kind == "slide":               # one patch bar over the slides every device is encoding now
            _, done, total, text = msg
            sid = text.split(":")[0]
            p.started.add(sid)
            encoding[(p.key, sid)] = (done, total)
            d, t = sum(v[0] for v in encoding.values()), sum(v[1] for v in encoding.values())
            slide_progress(d, t, f"{sid}: {d}/{t} patches" if len(encoding) == 1 else
                           f"{len(encoding)} slides: {d}/{t} patches")
            if done >= total:
                del encoding[(p.key, sid)]
        elif kind == "result":
            finish(msg[1], msg[2], p)
        elif kind in ("finished", "cancelled"):
            p.ended = kind
        elif kind in ("error", "mismatch"):
            p.ended = "error"
            if error is None:
                if kind == "mismatch":
                    from .settings import SettingsMismatch
                    error = SettingsMismatch(msg[1], msg[2], msg[3], msg[4])
                else:
                    error = msg[1]
                cancel_flag.value = 1              # the others stop too: a one-device run would have stopped

    def died(p: _Proc) -> None:
        """``p`` ended without saying so: its in-flight slide fails, its other slides go back to the pool."""
        p.proc.join(timeout=5)
        how = _death_words(p.proc.exitcode)
        p.ended = "died"
        if not p.spoke:
            start_failures.append(f"{p.device}: {how}")
        for key in [k for k in encoding if k[0] == p.key]:
            del encoding[key]
        deaths[p.slot] += 1
        mine = [i for i in range(n) if owner[i] == p.key and i not in results]
        taken = [i for i in mine if i in p.taken]
        in_flight = {i for i in taken if _slide_id(paths[i]) in p.started} or set(taken[:1])
        for i in mine:
            if i in in_flight:
                r = SlideResult(_slide_id(paths[i]), str(paths[i]), "failed",
                                error=f"{paths[i].name}: the encoder process on {p.device} died ({how}) while "
                                      "extracting this slide")
                finish(i, r, p)
            else:
                owner[i] = _FREE
        log.warning("the encoder process on %s died (%s); %d slide(s) failed, %d returned to the pool", p.label,
                    how, len(in_flight), len(mine) - len(in_flight))
        if any(o == _FREE for o in owner) and not cancel_flag.value and error is None:
            slot = _next_slot(p.slot, deaths)
            if slot is not None:
                start(slot)

    progress(0, n, "starting")
    try:
        for slot in range(min(len(devs), max(1, n))):
            start(slot)
        while True:
            if cancelled is not None and not cancel_flag.value and cancelled():
                cancel_flag.value = 1
            live = [p for p in procs if p.ended is None]
            if not live:
                left = [i for i in range(n) if i not in results]
                if not left or cancel_flag.value or error is not None:
                    break
                for i in left:                # nobody holds them now: the fresh process may take them all
                    owner[i] = _FREE
                slot = _next_slot(0, deaths)
                if slot is None and len(start_failures) == sum(deaths):
                    raise DnDError(f"no encoder process could start ({start_failures[-1]}); see the log")
                if slot is None:              # every device's process kept dying: the rest cannot be done
                    for i in left:
                        finish(i, SlideResult(_slide_id(paths[i]), str(paths[i]), "failed",
                                              error=f"{paths[i].name}: not extracted: every device's encoder "
                                                    f"process died {MAX_DEATHS} times"), None)
                    break
                start(slot)                   # slides returned to the pool after the others passed them
                continue
            waits = {}
            for p in live:
                waits[p.conn] = p
                waits[p.proc.sentinel] = p
            for obj in connection.wait(list(waits), timeout=0.2):
                p = waits[obj]
                if p.ended is not None:
                    continue
                try:
                    while p.conn.poll():
                        handle(p, p.conn.recv())
                        if p.ended is not None:
                            break
                except (EOFError, OSError):
                    pass
                if p.ended is None and not p.proc.is_alive():
                    died(p)
                elif p.ended is not None:
                    p.proc.join(timeout=5)
    except BaseException:
        cancel_flag.value = 1
        raise
    finally:
        _stop_all(procs)
    if error is not None:
        raise error
    if cancel_flag.value:
        for i in range(n):
            if i not in results and any(i in p.taken for p in procs):   # taken, unfinished (as one device)
                results[i] = SlideResult(_slide_id(paths[i]), str(paths[i]), "cancelled",
                                         error="cancelled by the user")
        _write_summary(fdir, [results[k] for k in sorted(results)])
        raise Cancelled("extraction cancelled")
    _write_summary(fdir, [results[k] for k in sorted(results)])
    return [results[k] for k in sorted(results)]


def _next_slot(prefer: int, deaths: list) -> Optional[int]:
    """The device for a fresh process: ``prefer`` unless its processes died too often, else the next one."""
    order = [prefer] + [k for k in range(len(deaths)) if k != prefer]
    return next((k for k in order if deaths[k] < MAX_DEATHS), None)


def _stop_all(procs: list) -> None:
    """Let every device process end (a cancel: each drops its slide in flight), then kill what is left."""
    import time
    t_end = time.monotonic() + CANCEL_GRACE_S
    for p in procs:
        while p.proc.is_alive() and time.monotonic() < t_end:
            try:                        # keep answering: a process waiting on a slide request must not hang
                if p.conn.poll(0.1):
                    msg = p.conn.recv()
                    if msg[0] == "take":
                        p.conn.send(False)
            except (EOFError, OSError):
                p.proc.join(timeout=0.1)
        if p.proc.is_alive():
            p.proc.kill()
        p.proc.join()
        p.conn.close()


def _tagged(results: list, device: str, slot: int) -> list:
    for r in results:
        r.info = {**r.info, "device": device, "device_slot": slot}
    return results


def _slide_id(path: Path) -> str:
    from ..slides.slide import slide_id
    return slide_id(path)
