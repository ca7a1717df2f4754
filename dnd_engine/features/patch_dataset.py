"""Reading patches in DataLoader workers: each worker keeps its own slide handles and resizes off the encoder.

A cohort is one stream of work units (the sampler yields them, so slides can be prepared lazily and batches
run across slide boundaries). A unit is either a list of :class:`PatchRequest` s, each read with
``read_region`` (the reference path, for any format), or a :class:`TileBand`: a block of one slide's grid read
by the tile-native reader (:mod:`dnd_engine.slides.tiles`), which decodes each compressed tile of the block
once. A patch that cannot be read comes back flagged with its error instead of killing the worker, so one
corrupt tile fails its slide, not the cohort; a band that fails flags all of its patches.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from ..slides import open_slide
from ..slides.resize import resize_patch  # noqa: F401  (re-exported: the reference resize)
from ..slides.tiles import RawBlock, TileReader, TileSpec
from ..text import one_line


class PatchRequest(NamedTuple):
    slide_index: int      # position of the slide in the cohort
    row: int              # row of the patch in the slide's coords
    path: str
    x: int
    y: int
    level: int
    read_size: int
    out_size: int


class TileBand(NamedTuple):
    """Patches of one slide for one worker to read from the slide's tiles, in the grid's (tile) order."""
    slide_index: int
    rows: np.ndarray      # (n,) rows of the patches in the slide's coords
    coords: np.ndarray    # (n, 2) level-0 x, y of those rows
    spec: TileSpec
    raw: bool = False     # send the compressed tiles for decoding on the encoder's device, where possible

    def requests(self) -> list[PatchRequest]:
        s = self.spec
        return [PatchRequest(self.slide_index, int(r), s.path, int(x), int(y), s.level, s.read_size, s.out_size)
                for r, (x, y) in zip(self.rows, self.coords)]


def _error_text(exc: BaseException) -> str:
    return one_line(exc)


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


class _TileReaders(_Handles):
    """The same per-process cache for tile readers, keyed by their :class:`TileSpec`."""

    def get(self, spec: TileSpec) -> TileReader:  # type: ignore[override]
        if self.pid != os.getpid():
            self.open, self.pid = OrderedDict(), os.getpid()
        if spec in self.open:
            self.open.move_to_end(spec)
            return self.open[spec]
        reader = TileReader(spec)
        self.open[spec] = reader
        while len(self.open) > self.size:
            self.open.popitem(last=False)[1].close()
        return reader


class PatchReader(Dataset):
    """Map-style dataset indexed by work units: ``reader[request] -> (uint8 HWC, request, error)``, and
    ``__getitems__`` (what the DataLoader calls with each unit) for a list of requests or a :class:`TileBand`."""

    def __init__(self) -> None:
        self.handles = _Handles()
        self.tile_readers = _TileReaders(2)

    def __getitems__(self, unit):
        if isinstance(unit, TileBand):
            return self.read_band(unit)
        return [self[req] for req in unit]

    def read_band(self, band: TileBand):
        reqs = band.requests()
        out = band.spec.out_size
        try:
            reader = self.tile_readers.get(band.spec)
            if band.raw:
                block = reader.raw_block(band.coords)
                if block is not None:
                    return RawBand(block, reqs)
            imgs = _batch_buffer((len(reqs), out, out, 3))
            reader.read_patches_into(band.coords, imgs.numpy())
        except Exception as exc:             # a corrupt tile: every patch of the band carries the error
            msg = _error_text(exc)
            return ReadBatch(torch.zeros((len(reqs), out, out, 3), dtype=torch.uint8), reqs, [msg] * len(reqs))
        return ReadBatch(imgs, reqs, [""] * len(reqs))

    def __len__(self) -> int:  # the stream's length is not known up front; the sampler drives iteration
        raise TypeError("PatchReader is indexed by PatchRequest; iterate it through a sampler")

    def __getitem__(self, req: PatchRequest):
        try:
            s = self.handles.get(req.path)
            img = s.read_region((req.x, req.y), req.level, (req.read_size, req.read_size))
            return resize_patch(img, req.out_size), req, ""
        except Exception as exc:
            return np.zeros((req.out_size, req.out_size, 3), np.uint8), req, _error_text(exc)


class ReadBatch(NamedTuple):
    """A band's patches as one uint8 NHWC tensor, written in place by the tile reader (in a worker: straight
    into shared memory, so handing it to the main process copies nothing), with its requests and errors."""
    imgs: torch.Tensor
    reqs: list
    errors: list


def _batch_buffer(shape: tuple) -> torch.Tensor:
    """An uninitialised uint8 tensor; in a DataLoader worker, allocated in shared memory.

    Why: a worker's result travels to the main process as a shared-memory file; a tensor in ordinary memory is
    copied into one when it is sent (a whole batch, every batch). Allocating it there first removes that copy.
    """
    n = int(np.prod(shape))
    if get_worker_info() is not None:
        try:
            return torch.empty(0, dtype=torch.uint8).set_(torch.UntypedStorage._new_shared(n)).view(shape)
        except (AttributeError, RuntimeError):      # a torch without it: the DataLoader copies, as before
            pass
    return torch.empty(shape, dtype=torch.uint8)


class RawBand(NamedTuple):
    """A band's compressed tiles (:class:`RawBlock`), to be decoded by the main process on the device."""
    block: RawBlock
    reqs: list


def collate_patches(items):
    """(uint8 NHWC patches, requests, errors); for a :class:`RawBand`, its :class:`RawBlock` in place of the
    patches (:mod:`dnd_engine.features.device_decode` turns it into patches)."""
    if isinstance(items, RawBand):
        return items.block, items.reqs, [""] * len(items.reqs)
    if isinstance(items, ReadBatch):
        return items.imgs, items.reqs, items.errors
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
