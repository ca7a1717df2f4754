"""The start screen and the recent-projects list open without the heavy engine (torch, cv2, h5py).

Listing recent projects reads small JSON manifests; importing torch for it cost seconds of start-up. A fresh
subprocess is the only honest check: this test process has long since imported everything.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HEAVY = ("torch", "cv2", "h5py")


def loaded_after(*modules: str) -> list[str]:
    """The heavy modules present in ``sys.modules`` of a fresh interpreter after importing ``modules``."""
    code = ("import sys\n" + "".join(f"import {m}\n" for m in modules)
            + f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    env = dict(os.environ, PYTHONPATH=str(ROOT), QT_QPA_PLATFORM="offscreen")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    return [m for m in r.stdout.strip().split(",") if m]


def test_start_screen_and_recent_projects_do_not_import_torch():
    assert loaded_after("dnd_gui.panels.start_screen", "dnd_gui.settings", "dnd_engine.project.manifest") == []


def test_find_slides_is_light():
    assert loaded_after("dnd_engine.slides.find", "dnd_engine.project") == []
