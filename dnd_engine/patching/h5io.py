"""CLAM/TRIDENT `.h5` coordinate files: dataset `coords` (N×2 level-0 top-left) with attributes."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from ..atomic import atomic_path
from ..errors import DnDError

COORD_ATTRS = ("patch_size", "patch_level")


def write_coords_h5(path: str | os.PathLike, coords: np.ndarray, attrs: dict, extra: dict | None = None) -> Path:
    """Write a CLAM-style patch file atomically; ``extra`` holds further datasets (e.g. tissue fraction)."""
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            d = f.create_dataset("coords", data=np.asarray(coords, dtype=np.int64), maxshape=(None, 2),
                                 chunks=(min(max(len(coords), 1), 4096), 2))
            for k, v in attrs.items():
                d.attrs[k] = v
            for k, v in (extra or {}).items():
                f.create_dataset(k, data=v)
    return Path(path)


def read_coords_h5(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """Coordinates and their attributes from a CLAM, TRIDENT or D&D Studio `.h5`."""
    try:
        with h5py.File(path, "r") as f:
            if "coords" not in f:
                raise DnDError(f"{Path(path).name}: no 'coords' dataset (not a CLAM/TRIDENT patch file)")
            d = f["coords"]
            return d[:].astype(np.int64), {k: _plain(v) for k, v in d.attrs.items()}
    except OSError as exc:
        raise DnDError(f"{Path(path).name}: not a readable HDF5 file: {exc}") from None


def _plain(v):
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    return v
