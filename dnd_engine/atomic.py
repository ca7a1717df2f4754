"""Atomic file output: write to a temporary sibling, then rename, so a crash never leaves half a file.

A temporary file's name says who writes it (``.<final>.<random>.<pid>@<host>.part``), so that a later run can
tell a killed writer's leftover from a live writer's file in a folder that two processes share: the first write
into a folder, and :func:`remove_stale_temps` at the start of a run, remove the ones whose writer is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Iterator

from .errors import OutputError
from .lifeline import pid_alive

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory locks, the files are written as they are
    fcntl = None

_UMASK = os.umask(0)
os.umask(_UMASK)


def ensure_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` (and parents) and check it is writable, with a one-line error when it is not."""
    p = Path(path)
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output folder {p}: {exc.strerror or exc}") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise OutputError(f"output folder {p} is not writable")
    return p


_HOST = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:40] or "host"
#: ours: ``.<final>.<random>.<pid>@<host>.part``; legacy (before the writer was named): ``.<final>.<random>.part``
_TEMP_RE = re.compile(r"^\..+\.[a-z0-9_]+\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9_-]*)\.part$")
_LEGACY_RE = re.compile(r"^\..+\.[a-z0-9_]{8}\.part$")
#: a legacy temporary file (no writer in its name) untouched this long is a killed writer's
LEGACY_STALE_SECONDS = 3600.0
_swept: set[str] = set()
_swept_lock = threading.Lock()


def is_stale_temp(path: Path, now: float | None = None) -> bool:
    """Whether ``path`` is one of our temporary files whose writer is gone (see the module's docstring)."""
    m = _TEMP_RE.match(path.name)
    if m is not None:
        return m["host"] == _HOST and int(m["pid"]) > 0 and not pid_alive(int(m["pid"]))
    if _LEGACY_RE.match(path.name):
        try:
            age = (time.time() if now is None else now) - path.stat().st_mtime
        except OSError:
            return False
        return age > LEGACY_STALE_SECONDS
    return False


def remove_stale_temps(*folders: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of killed writers in ``folders`` (not recursive; missing folders are fine);
    returns what was removed. Live writers' files, other hosts' and files that are not ours are left alone."""
    removed = []
    for folder in folders:
        folder = Path(folder)
        with _swept_lock:
            _swept.add(str(folder.resolve()))
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            if e.name.startswith(".") and e.name.endswith(".part") and is_stale_temp(Path(e.path)):
                with contextlib.suppress(OSError):
                    os.unlink(e.path)
                    removed.append(Path(e.path))
    return removed


def temp_path(final: str | os.PathLike) -> Path:
    """A new, empty temporary file beside ``final`` named after its writer (this process); the first one in a
    folder removes the killed writers' leftovers there."""
    final = Path(final)
    ensure_dir(final.parent)
    with _swept_lock:
        first = str(final.parent.resolve()) not in _swept
    if first:
        remove_stale_temps(final.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.", suffix=f".{os.getpid()}@{_HOST}.part", dir=final.parent)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path in the same folder; on success it replaces ``final``, on error it is removed."""
    final = Path(final)
    tmp_path = temp_path(final)
    os.chmod(tmp_path, 0o666 & ~_UMASK)   # mkstemp makes owner-only files; outputs get the usual mode
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)   # again: some writers (safetensors) recreate the file owner-only
        os.replace(tmp_path, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp_path.unlink()
        raise


def write_text_atomic(final: str | os.PathLike, text: str) -> Path:
    with atomic_path(final) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(final)


def write_json_atomic(final: str | os.PathLike, obj) -> Path:
    return write_text_atomic(final, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def locked_file(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` for a read-modify-write of a file several processes share (created if
    missing and kept: unlinking a flock target lets a later process lock a new file while another still holds the
    old one). Without ``flock`` (Windows) the block runs unlocked."""
    with open(path, "a+") as fh:
        if fcntl is not None:
            fcntl.flock(fh, fcntl.LOCK_EX)
        yield
