"""Decode tiles on a thread pool, newest view first, and hand them to the GUI thread.

The view calls :meth:`TileLoader.want` with the tiles it needs, nearest to the centre first. That list *replaces*
the queue: tiles of a view the user has already left are never decoded (napari's async-slicing lesson: requests
capture state, stale answers are dropped). A few long-lived drain tasks pull keys from the queue, so one pan does
not flood the pool with a runnable per tile. Results travel to the GUI thread as queued signals tagged with the
source's generation; a result for a slide that is no longer shown is dropped there.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from typing import Iterable, Optional

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot
from PySide6.QtGui import QImage

from dnd_engine.text import one_line

from ..jobs.background import lower_this_thread
from .tile_source import TileKey, TileSource


def default_threads() -> int:
    """Decoding is C code that releases the GIL (OpenSlide, libjpeg), so one thread per core, two to four."""
    return max(2, min(4, os.cpu_count() or 2))


class _Drain(QRunnable):
    def __init__(self, loader: "TileLoader", generation: int):
        super().__init__()
        self._loader, self._generation = loader, generation

    def run(self) -> None:
        lower_this_thread()
        loader = self._loader
        while True:
            job = loader._next(self._generation)
            if job is None:
                return
            source, key = job
            try:
                image, error = source.read(key), ""
            except Exception as exc:  # a corrupt tile must not kill the worker; the view shows the coarser level
                image, error = None, one_line(exc, None, typed=True)
            try:
                if image is not None:
                    loader._ready.emit(self._generation, key, image)
                else:
                    loader._failed.emit(self._generation, key, error)
            except RuntimeError:  # the loader was deleted without shutdown() (interpreter exit): nobody listens
                return


class TileLoader(QObject):
    """Lives on the GUI thread; ``tile_ready``/``tile_failed`` fire there for the current source only."""

    tile_ready = Signal(object, QImage)  # TileKey, image
    tile_failed = Signal(object, str)    # TileKey, one-line reason

    _ready = Signal(int, object, QImage)
    _failed = Signal(int, object, str)

    def __init__(self, parent: Optional[QObject] = None, threads: Optional[int] = None):
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(threads or default_threads())
        self._lock = threading.Lock()
        self._source: Optional[TileSource] = None
        self._generation = 0
        self._pending: deque[TileKey] = deque()
        self._in_flight: set[TileKey] = set()
        self._drains = 0
        self.failed_keys: set[TileKey] = set()
        self._ready.connect(self._on_ready, Qt.ConnectionType.QueuedConnection)
        self._failed.connect(self._on_failed, Qt.ConnectionType.QueuedConnection)

    @property
    def threads(self) -> int:
        return self._pool.maxThreadCount()

    def set_source(self, source: Optional[TileSource]) -> None:
        """Switch slides: queued tiles of the old one are dropped, its in-flight results ignored."""
        with self._lock:
            self._source = source
            self._generation += 1
            self._pending.clear()
            self._in_flight.clear()
            self._drains = 0  # old drains exit at their next _next(): their generation is stale
        self.failed_keys = set()

    def want(self, keys: Iterable[TileKey]) -> int:
        """Replace the queue with ``keys`` (in priority order), skipping tiles already being decoded or known to
        fail. Returns how many were queued."""
        with self._lock:
            if self._source is None:
                return 0
            self._pending = deque(k for k in keys if k not in self._in_flight and k not in self.failed_keys)
            queued = len(self._pending)
            start = min(queued, self._pool.maxThreadCount() - self._drains)
            self._drains += max(0, start)
            generation = self._generation
        for _ in range(max(0, start)):
            self._pool.start(_Drain(self, generation))
        return queued

    def pending(self) -> int:
        with self._lock:
            return len(self._pending) + len(self._in_flight)

    def busy(self) -> bool:
        return self.pending() > 0

    def shutdown(self) -> None:
        """Drop the queue and wait for the tiles being decoded (each takes milliseconds)."""
        self.set_source(None)
        self._pool.waitForDone()

    # --- worker side -------------------------------------------------------------------------------------
    def _next(self, generation: int):
        with self._lock:
            if generation != self._generation or self._source is None or not self._pending:
                if generation == self._generation:
                    self._drains -= 1
                return None
            key = self._pending.popleft()
            self._in_flight.add(key)
            return self._source, key

    # --- GUI side ----------------------------------------------------------------------------------------
    def _delivered(self, generation: int, key: TileKey) -> bool:
        """A key stays "in flight" until its result reaches the GUI thread, so a view change in between cannot
        queue the same tile again."""
        with self._lock:
            if generation != self._generation:
                return False
            self._in_flight.discard(key)
            return True

    @Slot(int, object, QImage)
    def _on_ready(self, generation: int, key: TileKey, image: QImage) -> None:
        if self._delivered(generation, key):
            self.tile_ready.emit(key, image)

    @Slot(int, object, str)
    def _on_failed(self, generation: int, key: TileKey, error: str) -> None:
        if self._delivered(generation, key):
            self.failed_keys.add(key)
            self.tile_failed.emit(key, error)
