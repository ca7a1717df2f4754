"""Keeping the UI thread first in line: worker threads run at a lower CPU priority than the UI thread, and the
GIL changes hands often, so that on a busy machine the event loop runs while tiles decode and jobs compute.

Linux schedules threads individually and lets a thread raise its own nice value; elsewhere that part does nothing.
The heavy imports (torch, openslide, the engine) are done at start on such a thread, not on first use mid-task.
"""

from __future__ import annotations

import importlib
import multiprocessing
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
# A frozen bundle has no interpreter to start a fork server with; Windows has no fork server.
READER_START = ("spawn" if getattr(sys, "frozen", False) or "forkserver" not in multiprocessing.get_all_start_methods()
                else "forkserver")

# What the fork server imports once, so that each reading process it forks starts with them (a process started
# from a bare server imports torch and the engine again: seconds at the start of every job).
READER_PRELOAD = ("__main__", "dnd_engine.features.extract")


def start_reader_server() -> None:
    """Start the fork server the reading processes come from, with ``READER_PRELOAD`` imported: at start, in the
    background, rather than in the first extraction or classification. Does nothing without a fork server."""
    if READER_START != "forkserver":
        return
    from multiprocessing import forkserver
    forkserver.set_forkserver_preload(list(READER_PRELOAD))   # only counts before the server starts
    forkserver.ensure_running()


GIL_SWITCH_INTERVAL_S = 0.001


def favour_the_ui_thread() -> None:
    """Make Python hand the GIL over every millisecond instead of every 5: a worker in pure-Python code then
    delays the event loop by at most about 1 ms per hand-over. Costs workers a little throughput; the app (and
    the viewer benchmark, to measure what the app does) call it once at start."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)


# Modules the first slide, classification or training would import on a worker, mid-task. Importing holds the GIL
# for long stretches (loading and initialising shared libraries; torch imported on a worker kept another thread
# from running for 0.3-0.7 s on a busy 2-core machine): imported once at start instead, on a low-priority thread,
# before the user has done anything. Names that are not installed are skipped.
WARM_MODULES = (
    "numpy", "PIL.Image", "PIL.JpegImagePlugin", "PIL.PngImagePlugin", "tifffile", "imagecodecs", "openslide", "h5py",
    "multiprocessing.forkserver", "multiprocessing.popen_forkserver", "torch.utils.data",
    "torch", "torch.nn", "torch.optim", "safetensors.torch",
    "torch._dynamo",            # the first optimiser step imports it, and sympy with it (~1 s)
    "k_means_constrained",      # D&D's balanced clustering (ortools)
    "dnd_engine.slides", "dnd_engine.tissue", "dnd_engine.features.extract", "dnd_engine.predict",
    "dnd_engine.heatmaps", "dnd_engine.dnd", "dnd_engine.dnd.results", "dnd_engine.project",
)

_warm_done = threading.Event()
_warm_lock = threading.Lock()
_warm_started = False


def warm_up_imports(modules: Sequence[str] = WARM_MODULES, server: bool = True) -> threading.Event:
    """Import ``modules`` on a low-priority daemon thread (once per process), then start the readers' fork server
    (``server``); the returned event is set when done. Call after the window is shown: its first paint must not
    wait for torch."""
    global _warm_started
    with _warm_lock:
        if _warm_started:
            return _warm_done
        _warm_started = True

    def run() -> None:
        lower_this_thread()   # the server process started from here inherits the lower priority
        try:
            for name in modules:
                try:
                    importlib.import_module(name)
                except Exception:  # noqa: BLE001 - optional or broken here: its first real use will say why
                    pass
            if server:
                try:
                    start_reader_server()
                except Exception:  # noqa: BLE001 - the first job starts it (and reports a failure) instead
                    pass
        finally:
            _warm_done.set()

    threading.Thread(target=run, name="dnd-warm-imports", daemon=True).start()
    return _warm_done
