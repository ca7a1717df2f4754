"""Many ``dnd extract`` processes on one output folder: per-slide lock files, and shards for job arrays.

Any number of processes, on one machine or many sharing a file system, may extract one cohort into one folder;
each slide is done once. Before a process prepares a slide it takes the slide's lock,
``<features dir>/locks/<slide id>.lock``: a small JSON file (host, PID, start time, a random token) that
appears atomically, with its content, or not at all (written to a temporary file, fsynced, then hard-linked to
its name: the link fails if the name exists, on NFS too). A slide whose lock another live process holds is
skipped and reported ("being extracted by pid 123 on host X"); a slide whose features already exist is skipped
before any lock is taken. The lock goes when the slide's outputs are written (or the slide failed).

A process killed mid-slide leaves its lock behind; the lock is taken over when it is stale:

- its process is gone (same host: the PID no longer runs), or
- it is older than the timeout (any host: the holder refreshes the file's modification time every
  :data:`HEARTBEAT_SECONDS` while it works, so only a dead, hung or unreachable holder's lock ages).

Two processes may judge one lock stale at once; only one may remove it: each first creates a marker named after
the stale lock's token (``<slide>-takeover-<token>``, exclusive like the lock), and only the one that made it
removes the lock — if it still is the stale one — then drops the marker. Removing the lock and creating a new one
are two steps, but creating is exclusive, so whoever comes first (a taker or a newcomer) holds the slide and the
others see a live lock. (Moving the stale lock aside first is not enough: a taker that moves a fresh lock by
mistake leaves the name free while it puts it back.)

``--shard I/N`` (job arrays: ``--shard ${SLURM_ARRAY_TASK_ID}/N``) keeps the slides whose position in the cohort
sorted by slide id is I-1 modulo N: the same split on every machine that sees the same slide files; the locks
still guard against overlapping runs.

Files of several processes: ``extraction_summary.csv`` is merged under the folder's mutex
(:func:`~dnd_engine.atomic.locked_file`), never overwritten by one process's view.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

from ..atomic import ensure_dir, remove_stale_temps, temp_path
from ..errors import DnDError
from ..lifeline import pid_alive

log = logging.getLogger(__name__)

#: the folder, inside a features folder, that holds the slides' lock files (empty when no run is working)
LOCKS_DIR = "locks"
#: a lock not refreshed for this long (seconds) is stale, on any host; its holder refreshes it every heartbeat
DEFAULT_LOCK_TIMEOUT = 600.0
HEARTBEAT_SECONDS = 30.0
#: test hook: seconds to pause after taking the first lock (so that a test can kill a holder mid-run)
PAUSE_ENV = "DND_TEST_PAUSE_AFTER_LOCK"

HOSTNAME = socket.gethostname()


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its file says."""
    host: str
    pid: int
    start: float
    token: str

    def describe(self) -> str:
        since = time.strftime("%H:%M:%S", time.localtime(self.start)) if self.start else "?"
        return f"pid {self.pid} on host {self.host} (since {since})"

    def as_json(self) -> str:
        return json.dumps({"host": self.host, "pid": self.pid, "start": self.start, "token": self.token})


def _read_holder(path: Path) -> Optional[Holder]:
    """The holder a lock file names; None when the file is gone. A file that does not parse (not ours, or
    damaged) is a holder with no PID, judged by its age alone."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError:
        return Holder("?", 0, 0.0, "")
    try:
        d = json.loads(text)
        return Holder(str(d["host"]), int(d["pid"]), float(d["start"]), str(d["token"]))
    except (ValueError, KeyError, TypeError):
        return Holder("?", 0, 0.0, "")


def _age(path: Path) -> Optional[float]:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None


def is_stale(holder: Holder, age: float, timeout: float) -> bool:
    """Whether a lock held by ``holder``, last refreshed ``age`` seconds ago, may be taken over: its process is
    gone (this host), or it has not been refreshed for ``timeout`` seconds (any host)."""
    if age > timeout:
        return True
    return holder.host == HOSTNAME and holder.pid > 0 and not pid_alive(holder.pid)


class SlideLocks:
    """This process's locks in one folder: :meth:`claim` a slide before working on it, :meth:`release` it when
    its outputs are written; :meth:`close` releases what is left. A daemon thread refreshes the held locks."""

    def __init__(self, folder: str | os.PathLike, timeout: float = DEFAULT_LOCK_TIMEOUT,
                 heartbeat: Optional[float] = None):
        if not timeout > 0:
            raise DnDError(f"lock timeout must be a positive number of seconds, got {timeout}")
        self.folder = ensure_dir(folder)
        self.timeout = float(timeout)
        self.heartbeat = float(heartbeat) if heartbeat else min(HEARTBEAT_SECONDS, self.timeout / 4)
        self.held: Dict[str, Holder] = {}
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._paused = False
        remove_stale_temps(self.folder)          # a taker killed mid-takeover: its renamed lock

    def path(self, slide: str) -> Path:
        return self.folder / f"{slide}.lock"

    def holds(self, slide: str) -> bool:
        return slide in self.held

    def claim(self, slide: str) -> Optional[Holder]:
        """Take ``slide``'s lock: None when this process holds it now (or held it already), else the live
        holder that keeps it."""
        if slide in self.held:
            return None
        path = self.path(slide)
        for turn in range(200):      # each turn ends in a win, a live holder, or a change to look at again
            mine = Holder(HOSTNAME, os.getpid(), time.time(), uuid.uuid4().hex)
            if self._create(path, mine):
                with self._mutex:
                    self.held[slide] = mine
                self._started()
                return None
            other, age = _read_holder(path), _age(path)
            if other is None or age is None:
                continue                                        # released meanwhile: try again
            if not is_stale(other, age, self.timeout):
                return other
            if self._remove_if(path, other):
                log.warning("%s: took over a stale lock of %s (%s)", slide, other.describe(),
                            "its process is gone" if age <= self.timeout else f"not refreshed for {age:.0f} s")
            else:
                time.sleep(0.01)                                # another taker is removing it: look again
        return _read_holder(path) or Holder("?", 0, 0.0, "")

    def _create(self, path: Path, mine: Holder) -> bool:
        """Make ``path`` hold ``mine``, atomically and only if it does not exist."""
        tmp = temp_path(path.with_name(f"{path.stem}-lock"))
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(mine.as_json())
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            except OSError:            # a file system without hard links: exclusive create, then the content
                try:
                    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                except FileExistsError:
                    return False
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(mine.as_json())
                    f.flush()
                    os.fsync(f.fileno())
                return True
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def _remove_if(self, path: Path, judged: Holder) -> bool:
        """Remove ``path`` if it still is the stale lock of ``judged``, as the one taker holding its marker; False
        when another taker holds the marker (a marker whose taker died meanwhile is removed for the next turn)."""
        marker = path.with_name(f"{path.stem}-takeover-{judged.token or 'unreadable'}")
        if not self._create(marker, Holder(HOSTNAME, os.getpid(), time.time(), uuid.uuid4().hex)):
            other, age = _read_holder(marker), _age(marker)
            if other is not None and age is not None and is_stale(other, age, self.timeout):
                with contextlib.suppress(OSError):
                    marker.unlink()
            return False
        try:
            now = _read_holder(path)
            if now is not None and now.token == judged.token:    # nobody but us may remove this one now
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            return True
        finally:
            with contextlib.suppress(OSError):
                marker.unlink()

    def release(self, slide: str) -> None:
        """Remove ``slide``'s lock if this process holds it (a lock taken over meanwhile is left to its taker)."""
        with self._mutex:
            mine = self.held.pop(slide, None)
        if mine is None:
            return
        path = self.path(slide)
        now = _read_holder(path)
        if now is not None and now.token == mine.token:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        else:
            log.warning("%s: its lock was taken over by %s while this process worked on it", slide,
                        now.describe() if now else "another process")

    def close(self) -> None:
        """Release every lock still held and stop refreshing."""
        self._stop.set()
        for slide in list(self.held):
            self.release(slide)
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> "SlideLocks":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _started(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._refresh, name="dnd-lock-heartbeat", daemon=True)
            self._thread.start()
        pause = os.environ.get(PAUSE_ENV)
        if pause and not self._paused:
            self._paused = True
            print(f"{PAUSE_ENV}: pausing {pause} s after taking the first lock", flush=True)
            time.sleep(float(pause))

    def _refresh(self) -> None:
        """The heartbeat: touch every held lock, so that other hosts see this process at work."""
        while not self._stop.wait(self.heartbeat):
            with self._mutex:
                held = dict(self.held)
            for slide, mine in held.items():
                path = self.path(slide)
                now = _read_holder(path)
                if now is None or now.token != mine.token:
                    continue                                  # released meanwhile, or taken over (release says)
                with contextlib.suppress(OSError):
                    os.utime(path)


# --- shards ------------------------------------------------------------------------------------------------
_SHARD_RE = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> Tuple[int, int]:
    """``"2/8"`` -> (2, 8); one-line :class:`DnDError` for anything but I/N with 1 ≤ I ≤ N."""
    m = _SHARD_RE.match(str(text))
    if m is None or not 1 <= int(m[1]) <= int(m[2]):
        raise DnDError(f"shard must be I/N with 1 ≤ I ≤ N, e.g. 2/8 (I: this process's part, 1-based), "
                       f"got '{text}'")
    return int(m[1]), int(m[2])


def shard_of(paths: Sequence[Path], shard: Optional[str]) -> list:
    """The slides of ``paths`` that shard ``"I/N"`` takes (all for None), in their given order: those whose
    position in the cohort sorted by slide id (then file name) is I-1 modulo N."""
    from ..slides.slide import slide_id
    paths = list(paths)
    if not shard:
        return paths
    i, n = parse_shard(shard)
    order = sorted(range(len(paths)), key=lambda k: (slide_id(paths[k]), Path(paths[k]).name))
    keep = {k for pos, k in enumerate(order) if pos % n == i - 1}
    return [p for k, p in enumerate(paths) if k in keep]


__all__ = ["DEFAULT_LOCK_TIMEOUT", "HEARTBEAT_SECONDS", "Holder", "LOCKS_DIR", "SlideLocks", "is_stale",
           "parse_shard", "shard_of"]
