"""Keeping the UI thread first in line: worker threads run at a lower CPU priority than the UI thread, and the
GIL changes hands often, so that on a busy machine the event loop runs while tiles decode and jobs compute.

Linux schedules threads individually and lets a thread raise its own nice value; elsewhere that part does nothing.
The heavy imports (torch, openslide, the engine) are done at start on such a thread, not on first use mid-task.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from typing import Sequence

BACKGROUND_NICE = 5  # CFS weight about a third of the UI thread's: decoding still runs, the UI goes first


def lower_this_thread() -> bool:
    """Give the calling (worker) thread a nice value of at least ``BACKGROUND_NICE``; True when applied."""
    if not hasattr(os, "setpriority") or not hasattr(threading, "get_native_id"):
        return False
    try:
        tid = threading.get_native_id()
        if os.getpriority(os.PRIO_PROCESS, tid) < BACKGROUND_NICE:
            os.setpriority(os.PRIO_PROCESS, tid, BACKGROUND_NICE)
        return True
    except OSError:
        return False


# How the app starts patch-reading processes: never by ``fork`` (a copy of a process that runs Qt threads can
# deadlock, and copying a process that holds torch and Qt keeps the GIL, and so the window, for a long moment).
READER_START = "spawn" if getattr(sys, "frozen", False) else "forkserver"

GIL_SWITCH_INTERVAL_S = 0.001


def favour_the_ui_thread() -> None:
    """Make Python hand the GIL over every millisecond instead of every 5: a worker in pure-Python code then
    delays the event loop by at most about 1 ms per hand-over. Costs workers a little throughput; the app (and
    the viewer benchmark, to measure what the app does) call it once at start."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


# Modules the first slide, classification or training imports on a worker. Importing one holds the GIL for long
# stretches (a shared library's dlopen and initialisation cannot be interrupted), which froze the event loop for up
# to half a second in the middle of the first drop-to-classify: imported once at start instead, on a low-priority
# thread, before the user has done anything. Names that are not installed are skipped.
WARM_MODULES = (
    "numpy", "PIL.Image", "tifffile", "imagecodecs", "openslide", "h5py", "multiprocessing.forkserver",
    "torch", "torch.nn", "torch.optim", "safetensors.torch",
    "dnd_engine.slides", "dnd_engine.tissue", "dnd_engine.features.extract", "dnd_engine.predict",
    "dnd_engine.heatmaps", "dnd_engine.dnd", "dnd_engine.dnd.results", "dnd_engine.project",
)

_warm_done = threading.Event()
_warm_lock = threading.Lock()
_warm_started = False


def warm_up_imports(modules: Sequence[str] = WARM_MODULES) -> threading.Event:
    """Import ``modules`` on a low-priority daemon thread (once per process); the returned event is set when done.
    Call after the window is shown: its first paint must not wait for torch."""
    global _warm_started
    with _warm_lock:
        if _warm_started:
            return _warm_done
        _warm_started = True

    def run() -> None:
        lower_this_thread()
        try:
            for name in modules:
                try:
                    importlib.import_module(name)
                except Exception:  # noqa: BLE001 - optional or broken here: its first real use will say why
                    pass
        finally:
            _warm_done.set()

    threading.Thread(target=run, name="dnd-warm-imports", daemon=True).start()
    return _warm_done
