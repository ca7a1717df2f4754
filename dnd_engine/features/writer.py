"""Per-slide feature files written as rows arrive: a temporary h5 renamed only when every row is in."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import h5py
import numpy as np
import torch

from ..atomic import _UMASK, atomic_path, temp_path
from ..errors import DnDError


class FeatureWriter:
    """``features`` (N×D float32) and ``coords`` (N×2, with the patch file's attributes) for one slide."""

    def __init__(self, final_h5: Path, final_pt: Path, coords: np.ndarray, coord_attrs: dict, dim: int,
                 file_attrs: dict):
        self.final_h5, self.final_pt = Path(final_h5), Path(final_pt)
        self.n = int(len(coords))
        self.written = np.zeros(self.n, dtype=bool)
        self.tmp = temp_path(self.final_h5)     # named after this process: a killed run's is removed later
        self.f = h5py.File(self.tmp, "w")
        self.features = self.f.create_dataset("features", shape=(self.n, dim), dtype=np.float32,
                                              chunks=(min(self.n, max(1, 2 ** 20 // (4 * dim))), dim))
        c = self.f.create_dataset("coords", data=np.asarray(coords, dtype=np.int64))
        for k, v in coord_attrs.items():
            c.attrs[k] = v
        for k, v in file_attrs.items():
            self.f.attrs[k] = v

    @property
    def done(self) -> int:
        return int(self.written.sum())

    def write(self, rows: np.ndarray, feats: np.ndarray) -> None:
        if not np.isfinite(feats).all():
            raise DnDError("the extractor produced non-finite features")
        order = np.argsort(rows)            # h5py fancy indexing needs increasing indices
        self.features[rows[order]] = feats[order]
        self.written[rows] = True

    def finish(self) -> None:
        if not self.written.all():
            raise DnDError(f"only {self.done} of {self.n} patches were written")
        self.f.close()
        os.chmod(self.tmp, 0o666 & ~_UMASK)
        os.replace(self.tmp, self.final_h5)
        write_pt_from_h5(self.final_h5, self.final_pt)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.f.close()
        with contextlib.suppress(OSError):
            self.tmp.unlink()


def write_pt_from_h5(h5_path: Path, pt_path: Path) -> None:
    """The CLAM `.pt` bag (features only), from a finished h5."""
    with h5py.File(h5_path, "r") as f:
        t = torch.from_numpy(f["features"][:])
    with atomic_path(pt_path) as tmp:
        torch.save(t, tmp)
