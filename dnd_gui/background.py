"""Keeping the UI thread first in line: worker threads run at a lower CPU priority than the UI thread, and the
GIL changes hands often, so that on a busy machine the event loop runs while tiles decode and jobs compute.

Linux schedules threads individually and lets a thread raise its own nice value; elsewhere that part does nothing.
"""

from __future__ import annotations

import os
import sys
import threading

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


GIL_SWITCH_INTERVAL_S = 0.001


def favour_the_ui_thread() -> None:
    """Make Python hand the GIL over every millisecond instead of every 5: a worker in pure-Python code then
    delays the event loop by at most about 1 ms per hand-over. Costs workers a little throughput; the app (and
    the viewer benchmark, to measure what the app does) call it once at start."""
    sys.setswitchinterval(GIL_SWITCH_INTERVAL_S)
