"""Where the app's bundled files (icons, the sample slide, the demo model) are: a source checkout's
``resources/`` or a PyInstaller bundle's (``sys._MEIPASS``, where the spec puts it). The window, the self-test and
the packaging all ask here, so a file moved in the bundle is found by all of them or by none."""

from __future__ import annotations

import sys
from pathlib import Path


def resources_dir() -> Path:
    """``resources/`` of a source checkout, or of a PyInstaller bundle (``sys._MEIPASS``, where the spec puts it)."""
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        return Path(frozen) / "resources"
    return Path(__file__).resolve().parents[1] / "resources"
