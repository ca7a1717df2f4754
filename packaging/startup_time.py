"""Time from launching D&D Studio to its first window on screen, as a user sees it.

    python packaging/startup_time.py [EXECUTABLE] [--runs N] [--cold] [--screenshot PNG]

EXECUTABLE defaults to the CPU bundle, dist/pyinstaller-cpu/dnd-studio/dnd-studio (``.venv/bin/dnd-studio``
measures the app from the source checkout). Without ``DISPLAY`` a private Xvfb screen is started. The clock
starts when the process is started and stops when a window titled "D&D Studio" is mapped (``xdotool search
--onlyvisible``, polled every 20 ms); the app is then closed and the next run starts.

``--cold`` evicts the executable's folder from the page cache before each run (``posix_fadvise(DONTNEED)`` on
every file: no root needed), as after a reboot or a fresh install; system libraries and Python's own page cache
outside the folder stay warm, so this is a close, slightly optimistic, stand-in for a cold start. Without
``--cold`` the first run is whatever state the cache is in and later runs are warm.

Needs xdotool (and Xvfb without a display; ImageMagick's ``import`` for ``--screenshot``):
``apt-get install xvfb xdotool imagemagick``.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_EXE = ROOT / "dist" / "pyinstaller-cpu" / "dnd-studio" / "dnd-studio"
TITLE = "D&D Studio"


def evict_page_cache(folder: Path) -> int:
    """Drop ``folder``'s files from the page cache; returns the bytes advised."""
    total = 0
    for dirpath, _dirs, files in os.walk(folder):
        for name in files:
            p = os.path.join(dirpath, name)
            if os.path.islink(p):
                continue
            try:
                fd = os.open(p, os.O_RDONLY)
            except OSError:
                continue
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                total += os.fstat(fd).st_size
            finally:
                os.close(fd)
    return total


def start_xvfb(timeout: float = 30.0) -> tuple[subprocess.Popen, str]:
    """A private Xvfb screen, returned once it accepts connections.

    ``-displayfd`` lets the server pick a free display and write its number only when it is listening: probing for
    lock files and sockets raced with stale ``/tmp/.X11-unix`` sockets (a client connected before the server did).
    """
    if not shutil.which("Xvfb"):
        raise SystemExit("no DISPLAY and no Xvfb: apt-get install xvfb")
    rfd, wfd = os.pipe()
    log = tempfile.TemporaryFile()
    try:
        proc = subprocess.Popen(["Xvfb", "-displayfd", str(wfd), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                                pass_fds=(wfd,), stdout=subprocess.DEVNULL, stderr=log)
        proc.log = log          # its stderr, for xvfb_state()
    finally:
        os.close(wfd)
    got = b""
    deadline = time.monotonic() + timeout
    try:
        while not got.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([rfd], [], [], left)[0]:
                proc.kill()
                raise SystemExit(f"Xvfb gave no display within {timeout:.0f} s")
            chunk = os.read(rfd, 64)
            if not chunk:                                   # the server exited before it was ready
                proc.wait()
                raise SystemExit(f"Xvfb was not ready: {xvfb_state(proc)}")
            got += chunk
    finally:
        os.close(rfd)
    display = f":{int(got.strip())}"
    if shutil.which("xdpyinfo"):
        # the server says it is ready; a client's view is what counts (a CI run once saw a client refused here)
        env = dict(os.environ, DISPLAY=display)
        while subprocess.run(["xdpyinfo"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode:
            if proc.poll() is not None or time.monotonic() > deadline:
                state = xvfb_state(proc)
                proc.kill()
                raise SystemExit(f"Xvfb on {display} accepts no client: {state}")
            time.sleep(0.1)
    return proc, display


def xvfb_state(proc: subprocess.Popen | None) -> str:
    """One line on the private X server, for error messages: running, or how it ended and what it said."""
    if proc is None:
        return "X server: the caller's DISPLAY"
    code = proc.poll()
    said = ""
    log = getattr(proc, "log", None)
    if log is not None:
        log.seek(0)
        said = log.read().decode(errors="replace").strip()[-1500:]
    return f"Xvfb {'running' if code is None else f'exited ({code})'}" + (f"; it said:\n{said}" if said else "")


def window_ids(env: dict) -> list[str]:
    r = subprocess.run(["xdotool", "search", "--onlyvisible", "--name", f"^{TITLE}$"], env=env,
                       capture_output=True, text=True)
    return r.stdout.split()


def one_run(exe: Path, env: dict, timeout: float, screenshot: Path | None,
            xvfb: subprocess.Popen | None = None, retry_connect: bool = True) -> float:
    log = tempfile.TemporaryFile()
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(exe)], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=tempfile.gettempdir())
    try:
        while True:
            if window_ids(env):
                elapsed = time.perf_counter() - t0
                break
            if proc.poll() is not None:
                log.seek(0)
                said = log.read().decode(errors="replace")
                if "could not connect to display" in said and retry_connect:
                    # the X server refused or dropped one connection (seen once in CI): say so, try once more
                    print(f"the app could not connect to {env.get('DISPLAY')} ({xvfb_state(xvfb)}); retrying",
                          flush=True)
                    time.sleep(1.0)
                    return one_run(exe, env, timeout, screenshot, xvfb, retry_connect=False)
                raise SystemExit(f"the app exited ({proc.returncode}) before showing a window "
                                 f"(DISPLAY={env.get('DISPLAY')}):\n{said[-2000:]}\n{xvfb_state(xvfb)}")
            if time.perf_counter() - t0 > timeout:
                raise SystemExit(f"no window after {timeout:.0f} s")
            time.sleep(0.02)
        if screenshot is not None and shutil.which("import"):   # ImageMagick
            time.sleep(2.0)   # let it paint
            subprocess.run(["import", "-window", "root", str(screenshot)], env=env, check=False)
        return elapsed
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("exe", nargs="?", default=str(DEFAULT_EXE))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cold", action="store_true", help="evict the app's folder from the page cache before each run")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--screenshot", type=Path, help="save a screenshot of the screen after the first run's window")
    args = ap.parse_args(argv)
    exe = Path(args.exe).absolute()
    if not exe.exists():
        raise SystemExit(f"{exe} not found (build it with packaging/build_linux.sh)")
    if not shutil.which("xdotool"):
        raise SystemExit("xdotool is needed: apt-get install xdotool")
    env = dict(os.environ)
    env.pop("QT_QPA_PLATFORM", None)
    xvfb = None
    if not env.get("DISPLAY"):
        xvfb, env["DISPLAY"] = start_xvfb()
    folder = exe.resolve().parent
    try:
        times = []
        for k in range(args.runs):
            if args.cold:
                evict_page_cache(folder)
            t = one_run(exe, env, args.timeout, args.screenshot if k == 0 else None, xvfb)
            times.append(t)
            print(f"run {k + 1}: first window after {t:.2f} s{' (cold cache)' if args.cold else ''}", flush=True)
        kind = "cold" if args.cold else "first run then warm"
        print(f"startup to first window ({kind}, {exe}): median {statistics.median(times):.2f} s, "
              f"min {min(times):.2f} s, max {max(times):.2f} s over {len(times)} runs")
    finally:
        if xvfb is not None:
            xvfb.terminate()
            xvfb.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
