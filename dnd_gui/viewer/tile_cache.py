"""A least-recently-used tile cache bounded in bytes, so memory stays flat however long the user pans.

Tiles of the coarsest level are pinned (never evicted): there are few of them and they are the picture shown
while finer tiles load (ASAP keeps its coarsest level the same way). Lives on the GUI thread only.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Callable, Hashable, Optional

from PySide6.QtGui import QImage

DEFAULT_MAX_BYTES = 384 * 1024 * 1024  # about 370 tiles of 512² RGB32: several screens at every level


def image_bytes(image: QImage) -> int:
    return int(image.sizeInBytes())


class TileCache:
    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES, pinned: Optional[Callable[[Hashable], bool]] = None):
        self.max_bytes = int(max_bytes)
        self.floor_bytes = 0  # the view raises this to hold one screenful, whatever the budget
        self._pinned = pinned or (lambda key: False)
        self._items: OrderedDict[Hashable, QImage] = OrderedDict()
        self._bytes = 0
        self.evictions = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    def get(self, key: Hashable) -> Optional[QImage]:
        """The tile, marked as just used; None when absent."""
        image = self._items.get(key)
        if image is not None:
            self._items.move_to_end(key)
        return image

    def peek(self, key: Hashable) -> Optional[QImage]:
        """The tile without touching its recency (for fallbacks, which should not keep stale levels alive)."""
        return self._items.get(key)

    def put(self, key: Hashable, image: QImage) -> None:
        old = self._items.pop(key, None)
        if old is not None:
            self._bytes -= image_bytes(old)
        self._items[key] = image
        self._bytes += image_bytes(image)
        self._evict()

    def set_pinned(self, pinned: Callable[[Hashable], bool]) -> None:
        self._pinned = pinned
        self._evict()

    def clear(self, keep_pinned: bool = False) -> None:
        """Drop every tile (or every unpinned one: the benchmark's "cold cache", as the app always holds the
        coarsest level)."""
        if not keep_pinned:
            self._items.clear()
            self._bytes = 0
            return
        for key in [k for k in self._items if not self._pinned(k)]:
            self._bytes -= image_bytes(self._items.pop(key))

    def keys(self) -> list:
        return list(self._items)

    @property
    def limit(self) -> int:
        return max(self.max_bytes, self.floor_bytes)

    def set_floor(self, floor_bytes: int) -> None:
        """Hold at least ``floor_bytes`` whatever the budget (the view: one screenful and its ring)."""
        self.floor_bytes = int(floor_bytes)
        self._evict()

    def _evict(self) -> None:
        limit = self.limit
        if self._bytes <= limit:
            return
        for key in list(self._items):  # oldest first
            if self._bytes <= limit:
                break
            if self._pinned(key):
                continue
            self._bytes -= image_bytes(self._items.pop(key))
            self.evictions += 1
