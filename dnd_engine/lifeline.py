"""Child processes that exit with their parent.

A killed ``dnd extract`` (or app) must not leave its patch readers running: the DataLoader's own check notices a
dead parent only when a worker next waits for work (seconds later, or never while it is stopped or busy). So each
reader calls :func:`exit_with_parent` first thing. On Linux the kernel kills it the moment its parent dies
(``prctl(PR_SET_PDEATHSIG, SIGKILL)``); elsewhere, or when prctl is unavailable, a daemon thread polls the
parent and leaves with ``os._exit`` once it is gone. Readers hold nothing worth cleaning up (they write no
files), so an abrupt exit is right.

One Linux subtlety: the signal comes when the *thread* that forked the child ends, so the process that starts
readers must keep that thread until it is done with them (a DataLoader iterator lives in the thread using it;
with ``forkserver`` the forking thread is the server's main thread).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1
#: how often the portable fallback looks at its parent (seconds)
POLL_SECONDS = 0.5


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host runs; a zombie (killed, not yet reaped) does not. Unsure (another
    platform, no permission to ask) counts as alive: callers use it to take over what a dead process left, and
    must never take from a live one."""
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def _set_pdeathsig() -> bool:
    """Ask the Linux kernel to SIGKILL this process when its parent dies; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _gone(parent: int, watch: int | None) -> bool:
    return os.getppid() != parent or (watch is not None and not pid_alive(watch))


def _watch(parent: int, watch: int | None) -> None:
    while not _gone(parent, watch):
        time.sleep(POLL_SECONDS)
    os._exit(1)


def exit_with_parent(watch: int | None = None, *, use_prctl: bool = True) -> None:
    """Make this (child) process exit when its parent dies, and also when process ``watch`` dies (the process
    that wanted the child: with ``forkserver`` the parent is the fork server, which outlives it briefly).
    Call it first thing in the child."""
    parent = os.getppid()
    kernel = use_prctl and _set_pdeathsig()
    if _gone(parent, watch) or (kernel and parent == 1):     # the parent died before the signal was armed
        os._exit(1)
    if not kernel or watch is not None and watch != parent:
        threading.Thread(target=_watch, args=(parent, watch), name="dnd-lifeline", daemon=True).start()


def reader_init(main_pid: int, worker_id: int) -> None:
    """DataLoader ``worker_init_fn`` for the patch readers (bind ``main_pid`` with functools.partial: it pickles
    for forkserver and spawn)."""
    exit_with_parent(main_pid)
