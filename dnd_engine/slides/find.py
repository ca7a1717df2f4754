"""Finding slide files in a folder, light enough for the start screen.

The recent-projects list and the project manifest need this; it used to live beside feature extraction, so merely
listing projects imported torch, cv2 and h5py. It depends only on the file-name rules in :mod:`.slide`.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import DnDError
from .slide import is_slide_path, slide_id

__all__ = ["find_slides", "slide_id"]


def find_slides(slides: str | os.PathLike) -> list[Path]:
    """Slide files in a folder (not recursive, sorted), or the one file given."""
    p = Path(slides)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise DnDError(f"{p}: no such file or folder")
    found = sorted(q for q in p.iterdir() if q.is_file() and is_slide_path(q))
    if not found:
        raise DnDError(f"{p}: no slide files found (looked for {', '.join(('.svs', '.tif', '.ndpi', '.mrxs', '...'))})")
    return found
