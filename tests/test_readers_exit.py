"""Patch readers exit with their parent: a SIGKILLed ``dnd extract`` leaves no reader process behind.

The readers are stopped (SIGSTOP) before their parent is killed, so that the DataLoader's own check (a worker
notices a dead parent when it next waits for work) cannot be what ends them: only dying with the parent does.
Readers are found through /proc (psutil is not installed)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnd_engine.synth import make_synthetic_cohort

ROOT = Path(__file__).resolve().parents[1]
GONE_WITHIN = 10.0   # generous: it asserts that they exit, not how fast

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _stat(pid: int):
    """(state, ppid) of ``pid``, or None when it no longer exists."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return fields[0].decode(), int(fields[1])


def _children(pid: int) -> set:
    kids = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = _stat(int(d.name))
            if st is not None and st[1] == pid and st[0] != "Z":
                kids.add(int(d.name))
    return kids


def _running(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"      # a zombie has exited (its new parent may not reap it at once)


def _wait(cond, seconds: float, step: float = 0.01) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(step)
    return cond()


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> Path:
    return make_synthetic_cohort(tmp_path_factory.mktemp("readers") / "c", n_slides=4, size=4096, seed=3).out_dir \
        / "slides"


def test_readers_exit_when_extract_is_killed(slides, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.Popen([sys.executable, "-m", "dnd_engine.cli", "extract", "--slides", str(slides), "--out",
                          str(out), "--workers", "2", "--patch-size", "128", "--device", "cpu", "--quiet"],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    readers: set = set()
    try:
        # readers that have read something: a slide's features are written while the next ones are read
        h5 = out / "features_stain_stats" / "h5_files"
        started = _wait(lambda: p.poll() is not None or (any(h5.glob("*.h5")) and _children(p.pid)), 600)
        assert started and p.poll() is None, p.stderr.read().decode()[-3000:] if p.poll() is not None else ""
        os.kill(p.pid, signal.SIGSTOP)            # the parent can neither end nor start readers now
        readers = _children(p.pid)
        assert readers
        for r in readers:
            os.kill(r, signal.SIGSTOP)            # nor can a reader notice its parent is gone by itself
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert _wait(lambda: not any(_running(r) for r in readers), GONE_WITHIN, 0.1), \
            f"reader processes outlived the killed extract: {sorted(r for r in readers if _running(r))}"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for r in readers:                         # leave nothing behind when the test fails
            if _running(r):
                os.kill(r, signal.SIGKILL)


def test_without_prctl_a_child_still_exits_with_its_parent(tmp_path):
    """The portable fallback (a thread watching the parent) where the kernel cannot be asked."""
    pidfile = tmp_path / "grandchild.pid"
    grandchild = (f"import os, time; from dnd_engine.lifeline import exit_with_parent; "
                  f"exit_with_parent(use_prctl=False); open({str(pidfile)!r} + '.tmp', 'w').write(str(os.getpid())); "
                  f"os.replace({str(pidfile)!r} + '.tmp', {str(pidfile)!r}); "
                  f"time.sleep(600)")
    parent = f"import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', {grandchild!r}]); time.sleep(600)"
    p = subprocess.Popen([sys.executable, "-c", parent], env=dict(os.environ, PYTHONPATH=str(ROOT)))
    gc = None
    try:
        assert _wait(pidfile.is_file, 120, 0.05)
        gc = int(pidfile.read_text())
        assert _running(gc)
        p.kill()
        p.wait()
        assert _wait(lambda: not _running(gc), GONE_WITHIN, 0.1), "the child outlived its killed parent"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        if gc is not None and _running(gc):
            os.kill(gc, signal.SIGKILL)
