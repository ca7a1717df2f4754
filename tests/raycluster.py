"""A throw-away local Ray cluster for tests: a head and one worker node on 127.0.0.1, one CPU each.

Started with ``ray start`` in a session of its own, so that teardown ends exactly its processes (by process
group; ``ray stop`` would stop every Ray process on the machine, other people's included).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalRayCluster:
    def __init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="rt", dir="/tmp")    # short: Ray's socket paths must fit 107 bytes
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.groups: list[int] = []
        # Ray 2.60 clusters check a token: this cluster's own, given to its nodes and (see driver_env) the driver
        self.driver_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", **self.driver_env,
                        PYTHONPATH=os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        self.env.pop("RAY_ADDRESS", None)

    def _start(self, *args: str) -> None:
        ray = str(Path(sys.executable).parent / "ray")
        p = subprocess.Popen([ray, "start", *args, "--num-cpus=1", "--node-ip-address=127.0.0.1",
                              "--object-store-memory=100000000"], env=self.env, start_new_session=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.groups.append(p.pid)
        out, _ = p.communicate(timeout=180)
        if p.returncode != 0:
            raise RuntimeError(f"ray start failed: {out[-2000:]}")

    def start(self) -> "LocalRayCluster":
        self._start("--head", f"--port={self.port}", "--include-dashboard=false", f"--temp-dir={self.tmp}")
        self._start(f"--address={self.address}")
        return self

    def stop(self) -> None:
        for sig, wait in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 10.0)):
            for g in self.groups:
                if _alive(g):
                    os.killpg(g, sig)
            end = time.monotonic() + wait
            while any(_alive(g) for g in self.groups) and time.monotonic() < end:
                time.sleep(0.2)
        shutil.rmtree(self.tmp, ignore_errors=True)
