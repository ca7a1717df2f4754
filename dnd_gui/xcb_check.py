"""Say which system library is missing when Qt's X11 (xcb) platform cannot load, before Qt says it vaguely.

The PySide6 wheels bring Qt but not the X11 helper libraries its xcb plugin links to. On a fresh Debian/Ubuntu
without a desktop's worth of packages, ``libxcb-cursor0``, ``libxcb-icccm4`` or ``libxcb-keysyms1`` are often
missing; Qt then prints "Could not load the Qt platform plugin "xcb" … This application failed to start" and
aborts without naming the file. This module looks the libraries up (``ldconfig -p``, plus ``LD_LIBRARY_PATH``)
*before* the QApplication exists, so the app can print the missing file and the package that provides it.
It imports no Qt: a broken Qt install must not stop the check itself.
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Iterable, Mapping, Optional

# the shared libraries Qt 6's xcb platform plugin (libqxcb.so → libQt6XcbQpa.so.6) links to, with the
# Debian/Ubuntu package that installs each one
XCB_LIBRARIES: tuple[tuple[str, str], ...] = (
    ("libxcb.so.1", "libxcb1"),
    ("libX11-xcb.so.1", "libx11-xcb1"),
    ("libxcb-cursor.so.0", "libxcb-cursor0"),
    ("libxcb-icccm.so.4", "libxcb-icccm4"),
    ("libxcb-keysyms.so.1", "libxcb-keysyms1"),
    ("libxcb-image.so.0", "libxcb-image0"),
    ("libxcb-util.so.1", "libxcb-util1"),
    ("libxcb-randr.so.0", "libxcb-randr0"),
    ("libxcb-render-util.so.0", "libxcb-render-util0"),
    ("libxcb-shape.so.0", "libxcb-shape0"),
    ("libxcb-shm.so.0", "libxcb-shm0"),
    ("libxcb-sync.so.1", "libxcb-sync1"),
    ("libxcb-xfixes.so.0", "libxcb-xfixes0"),
    ("libxcb-xkb.so.1", "libxcb-xkb1"),
    ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
)


def uses_xcb(env: Mapping[str, str] = os.environ, platform: str = sys.platform) -> bool:
    """Whether Qt will start on X11 (xcb): Linux, and QT_QPA_PLATFORM names xcb first, or is unset outside a
    Wayland session (Qt 6 prefers Wayland there)."""
    if not platform.startswith("linux"):
        return False
    wanted = env.get("QT_QPA_PLATFORM", "").strip()
    if wanted:
        return wanted.split(";")[0].split(":")[0].strip() == "xcb"
    wayland = env.get("XDG_SESSION_TYPE", "") == "wayland" and bool(env.get("WAYLAND_DISPLAY"))
    return not wayland


def installed_libraries(env: Mapping[str, str] = os.environ) -> Optional[set[str]]:
    """The shared-library file names the dynamic loader can find (``ldconfig -p`` plus the folders of
    LD_LIBRARY_PATH); None when that cannot be known (no ldconfig): then nothing is reported missing."""
    ldconfig = shutil.which("ldconfig") or next((p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig")
                                                  if os.access(p, os.X_OK)), None)
    if ldconfig is None:
        return None
    try:
        out = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    names = {line.split()[0] for line in out.splitlines()[1:] if "=>" in line and line.split()}
    if not names:
        return None
    folders = env.get("LD_LIBRARY_PATH", "").split(os.pathsep)
    spec = importlib.util.find_spec("PySide6")  # a wheel that bundles a library keeps it in PySide6/Qt/lib
    if spec is not None and spec.origin:
        folders.append(str(Path(spec.origin).parent / "Qt" / "lib"))
    for folder in folders:
        if folder and Path(folder).is_dir():
            names.update(p.name for p in Path(folder).iterdir())
    return names


def can_load(library: str) -> bool:
    """Whether the dynamic loader opens ``library`` (what Qt will do): the last word on a library the list
    above lacks, so an install in an unusual place is never reported missing."""
    try:
        ctypes.CDLL(library)
    except OSError:
        return False
    return True


def missing_xcb_libraries(available: Optional[Iterable[str]]) -> list[tuple[str, str]]:
    """(library, Debian package) for each library of :data:`XCB_LIBRARIES` not in ``available``; none when
    ``available`` is None (unknown)."""
    if available is None:
        return []
    have = set(available)
    return [(lib, pkg) for lib, pkg in XCB_LIBRARIES if lib not in have]


def missing_message(missing: list[tuple[str, str]]) -> str:
    """One line naming the missing files and the command that installs them."""
    libs = ", ".join(lib for lib, _ in missing)
    pkgs = " ".join(pkg for _, pkg in missing)
    return (f"cannot start the window: Qt's X11 (xcb) platform needs {libs}, not installed on this system. "
            f"On Debian/Ubuntu: sudo apt install {pkgs}")


def check_xcb(env: Mapping[str, str] = os.environ, platform: str = sys.platform,
              available: Optional[Iterable[str]] = None,
              loads: Callable[[str], bool] = can_load) -> Optional[str]:
    """The message to print instead of starting Qt, or None when the window can start (or it cannot be told).
    ``available`` (the system's library list) and ``loads`` (the loader's probe) are replaced in tests."""
    if not uses_xcb(env, platform):
        return None
    missing = missing_xcb_libraries(installed_libraries(env) if available is None else available)
    missing = [(lib, pkg) for lib, pkg in missing if not loads(lib)]
    return missing_message(missing) if missing else None


__all__ = ["XCB_LIBRARIES", "can_load", "check_xcb", "installed_libraries", "missing_message", "missing_xcb_libraries",
           "uses_xcb"]
