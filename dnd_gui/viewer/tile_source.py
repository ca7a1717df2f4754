"""Where viewer tiles come from: the pyramid's tile grid (plain geometry) and the slide reads behind it.

The grid splits every pyramid level into ``TILE_SIZE``-pixel tiles and answers the viewer's two questions: which
level shows the slide at a given zoom without upsampling (the nearest finer level, as QuPath and ASAP pick), and
which tiles of that level cover a level-0 rectangle. :class:`TileSource` reads one tile as a ``QImage`` ready to
draw; it is called from the loader's worker threads only. The pixels come from the slide's reader process
(:class:`~dnd_engine.slides.isolated.IsolatedSlide`, which decodes each request on its own thread with its own
handle): a crafted file that makes OpenSlide abort kills that process, never the app, and every later read of
the slide raises the crash's one-line message (:attr:`TileSource.crashed`).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np
from PySide6.QtGui import QImage

from dnd_engine.errors import SlideError
from dnd_engine.slides.isolated import IsolatedSlide, SlideReaderCrashed

from ..jobs.background import READER_START, start_reader_server
from .qimage import rgb_to_qimage

TILE_SIZE = 512  # level pixels per tile side: big enough to keep request counts low, small enough to decode in ms


@dataclass(frozen=True, order=True)
class TileKey:
    level: int
    col: int
    row: int


class TileGrid:
    """The tile layout of every pyramid level, in level-0 coordinates (the scene's units)."""

    def __init__(self, level_dimensions: Sequence[Sequence[int]], level_downsamples: Sequence[float],
                 tile_size: int = TILE_SIZE):
        if not level_dimensions or len(level_dimensions) != len(level_downsamples):
            raise ValueError("one dimension pair and one downsample per level are needed")
        self.level_dimensions = [(int(w), int(h)) for w, h in level_dimensions]
        self.level_downsamples = [float(d) for d in level_downsamples]
        self.tile_size = int(tile_size)

    @classmethod
    def from_info(cls, info: dict, tile_size: int = TILE_SIZE) -> "TileGrid":
        return cls(info["level_dimensions"], info["level_downsamples"], tile_size)

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def coarsest_level(self) -> int:
        return int(np.argmax(self.level_downsamples))

    def level_for_scale(self, scale: float) -> int:
        """The level to draw at ``scale`` device pixels per level-0 pixel: the coarsest whose downsample does not
        exceed the screen's (never upsample a coarse level when a finer one exists); 1 % tolerance for levels
        such as 4.0005 that scanners round."""
        wanted = 1.0 / max(scale, 1e-12)
        best, best_ds = 0, self.level_downsamples[0]
        for i, ds in enumerate(self.level_downsamples):
            if ds <= wanted * 1.01 and ds > best_ds:
                best, best_ds = i, ds
        return best

    def tiles_across(self, level: int) -> int:
        return max(1, math.ceil(self.level_dimensions[level][0] / self.tile_size))

    def tiles_down(self, level: int) -> int:
        return max(1, math.ceil(self.level_dimensions[level][1] / self.tile_size))

    def tile_count(self, level: int) -> int:
        return self.tiles_across(level) * self.tiles_down(level)

    def tile_pixels(self, key: TileKey) -> tuple[int, int]:
        """(w, h) of the tile in its level's pixels: edge tiles are cut at the level's border."""
        lw, lh = self.level_dimensions[key.level]
        t = self.tile_size
        return min(t, lw - key.col * t), min(t, lh - key.row * t)

    def tile_rect(self, key: TileKey) -> tuple[float, float, float, float]:
        """(x, y, w, h) of the tile in level-0 pixels."""
        ds = self.level_downsamples[key.level]
        w, h = self.tile_pixels(key)
        t = self.tile_size
        return key.col * t * ds, key.row * t * ds, w * ds, h * ds

    def keys_in_rect(self, level: int, x0: float, y0: float, x1: float, y1: float,
                     margin: int = 0) -> list[TileKey]:
        """Tiles of ``level`` meeting the level-0 rectangle [x0, x1) × [y0, y1), plus ``margin`` tiles around it,
        in row-major order. Empty when the rectangle misses the slide."""
        ds = self.level_downsamples[level]
        span = self.tile_size * ds
        nx, ny = self.tiles_across(level), self.tiles_down(level)
        c0 = max(0, math.floor(x0 / span) - margin)
        r0 = max(0, math.floor(y0 / span) - margin)
        c1 = min(nx - 1, math.ceil(x1 / span) - 1 + margin)
        r1 = min(ny - 1, math.ceil(y1 / span) - 1 + margin)
        if c1 < c0 or r1 < r0 or x1 <= 0 or y1 <= 0:
            return []
        return [TileKey(level, c, r) for r in range(r0, r1 + 1) for c in range(c0, c1 + 1)]

    def by_distance(self, keys: Iterable[TileKey], cx: float, cy: float) -> list[TileKey]:
        """``keys`` nearest first to the level-0 point (cx, cy): the tiles under the user's eyes load first."""
        def dist(k: TileKey) -> float:
            x, y, w, h = self.tile_rect(k)
            return (x + w / 2 - cx) ** 2 + (y + h / 2 - cy) ** 2
        return sorted(keys, key=dist)


def open_reader(path: str, **kwargs) -> IsolatedSlide:
    """Open ``path`` in a reader process started the app's way: from the fork server, started first (with the
    extraction code preloaded, see :func:`start_reader_server`) so that a slide opened before the warm-up ends
    does not leave jobs a bare server. Raises :class:`SlideError`."""
    try:
        start_reader_server()
    except Exception:  # noqa: BLE001 - the reader still starts (with a bare server, or says why it cannot)
        pass
    return IsolatedSlide(path, start_method=READER_START, **kwargs)


class TileSource:
    """Reads tiles of one slide through its reader process; thread-safe.

    ``reader``: the open :class:`IsolatedSlide` to share (the slide loader's; the caller keeps owning it), else
    the source opens its own on the first read and closes it in :meth:`close`. A reader that failed to open or
    crashed is never opened again: every read raises the same error.
    """

    def __init__(self, path: str, grid: TileGrid, reader: Optional[IsolatedSlide] = None):
        self.path = str(path)
        self.grid = grid
        self._lock = threading.Lock()
        self._reader = reader
        self._owns_reader = reader is None
        self._open_error: Optional[SlideError] = None
        self._closed = False

    @property
    def crashed(self) -> Optional[str]:
        """The one-line message when the slide's reader process died (the slide can no longer be read), else
        None."""
        if isinstance(self._open_error, SlideReaderCrashed):
            return str(self._open_error)
        reader = self._reader
        return reader.crashed if reader is not None else None

    def _get_reader(self) -> IsolatedSlide:
        with self._lock:
            if self._closed:
                raise SlideError(f"{self.path}: closed")
            if self._open_error is not None:
                raise self._open_error
            if self._reader is None:
                try:
                    self._reader = open_reader(self.path)
                except SlideError as exc:
                    self._open_error = exc
                    raise
            return self._reader

    def read(self, key: TileKey) -> QImage:
        """Decode one tile (level pixels, edge tiles cut to the level's border). Raises :class:`SlideError`
        (:class:`SlideReaderCrashed` when the reader process died)."""
        reader = self._get_reader()
        ds = self.grid.level_downsamples[key.level]
        t = self.grid.tile_size
        w, h = self.grid.tile_pixels(key)
        x0, y0 = round(key.col * t * ds), round(key.row * t * ds)
        return rgb_to_qimage(reader.read_array((x0, y0), key.level, (w, h)))

    def close(self) -> None:
        """Close the source's own reader (reads still running then fail, and are dropped as stale)."""
        with self._lock:
            self._closed = True
            reader = self._reader if self._owns_reader else None
        if reader is not None:
            reader.close()
