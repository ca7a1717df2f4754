"""Reading patches in DataLoader workers: each worker keeps its own slide handles and resizes off the encoder.

A cohort is one stream of :class:`PatchRequest` s (the sampler yields them, so slides can be prepared lazily
and batches run across slide boundaries); a request that cannot be read comes back flagged with its error
instead of killing the worker, so one corrupt tile fails its slide, not the cohort.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..slides import open_slide


class PatchRequest(NamedTuple):
    slide_index: int      # position of the slide in the cohort
    row: int              # row of the patch in the slide's coords
    path: str
    x: int
    y: int
    level: int
    read_size: int
    out_size: int


def resize_patch(img: Image.Image, out_size: int) -> np.ndarray:
    """The reference resize: PIL bilinear with antialiasing (torchvision's Resize on PIL images does the same)."""
    if img.size != (out_size, out_size):
        img = img.resize((out_size, out_size), Image.Resampling.BILINEAR)
    return np.array(img, dtype=np.uint8)  # a writable copy: torch.from_numpy needs one


class _Handles:
    """A few open slides per process (per worker after fork), least recently used closed first."""

    def __init__(self, size: int = 4):
        self.size = size
        self.pid = None
        self.open: OrderedDict = OrderedDict()

    def get(self, path: str):
        """Reading needs only the level and level-0 coordinates, so no magnification settings here."""
        if self.pid != os.getpid():          # a forked worker must not share its parent's handles
            self.open, self.pid = OrderedDict(), os.getpid()
        if path in self.open:
            self.open.move_to_end(path)
            return self.open[path]
        s = open_slide(path)
        self.open[path] = s
        while len(self.open) > self.size:
            self.open.popitem(last=False)[1].close()
        return s

    def close(self) -> None:
        for s in self.open.values():
            s.close()
        self.open.clear()


class PatchReader(Dataset):
    """Map-style dataset indexed by :class:`PatchRequest` itself: ``reader[request] -> (uint8 HWC, error)``."""

    def __init__(self) -> None:
        self.handles = _Handles()

    def __len__(self) -> int:  # the stream's length is not known up front; the sampler drives iteration
        raise TypeError("PatchReader is indexed by PatchRequest; iterate it through a sampler")

    def __getitem__(self, req: PatchRequest):
        try:
            s = self.handles.get(req.path)
            img = s.read_region((req.x, req.y), req.level, (req.read_size, req.read_size))
            return resize_patch(img, req.out_size), req, ""
        except Exception as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            return np.zeros((req.out_size, req.out_size, 3), np.uint8), req, msg[:300]


def collate_patches(items):
    imgs = torch.from_numpy(np.stack([it[0] for it in items]))
    return imgs, [it[1] for it in items], [it[2] for it in items]


class PatchDataset(Dataset):
    """Patches of one slide at ``coords`` (for tests, benchmarks and simple scripts)."""

    def __init__(self, slide_path: str, coords: np.ndarray, level: int, read_size: int, out_size: int):
        self.slide_path = str(slide_path)
        self.coords = np.asarray(coords, dtype=np.int64)
        self.level, self.read_size, self.out_size = int(level), int(read_size), int(out_size)
        self.handles = _Handles(1)

    def __len__(self) -> int:
        return len(self.coords)

    def read(self, i: int) -> np.ndarray:
        x, y = self.coords[i]
        s = self.handles.get(self.slide_path)
        return resize_patch(s.read_region((int(x), int(y)), self.level, (self.read_size, self.read_size)),
                            self.out_size)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.read(i))
