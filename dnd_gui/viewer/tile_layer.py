"""The slide's pixels in the scene: each tile of the wanted level, or the best stand-in while it decodes.

Painting never waits for a decode. For each tile of the wanted level that is not cached yet, the finest cached
tile of a coarser level is drawn in its place (failing that, the thumbnail), so the user always sees the slide,
sharpening as tiles arrive (QuPath's and ASAP's behaviour). Each pixel is drawn once, from its best source, so a
paint costs one screenful of pixels whatever is cached. Scene units are level-0 pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from PySide6.QtCore import QRectF
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QGraphicsItem, QStyleOptionGraphicsItem

from .tile_cache import TileCache
from .tile_source import TileGrid, TileKey

# more tiles than this on screen means a slide without a coarse enough level (a one-level 50k-pixel image zoomed
# out): decoding them all would take minutes and show nothing the thumbnail does not, so the thumbnail is drawn
MAX_TILES_PER_VIEW = 256


@dataclass
class PaintStats:
    """What the last paint drew; the view and the tests read it."""

    level: int = 0
    wanted: int = 0                 # tiles of the wanted level in the painted area
    drawn: int = 0                  # ... of which were cached and drawn
    fallback: int = 0               # coarser tiles drawn in place of missing ones
    missing_keys: list = field(default_factory=list)


class TileLayer(QGraphicsItem):
    def __init__(self, grid: TileGrid, cache: TileCache, thumbnail: QImage):
        super().__init__()
        self.grid = grid
        self.cache = cache
        self.thumbnail = thumbnail
        w0, h0 = grid.dimensions
        self._bounds = QRectF(0, 0, w0, h0)
        self._thumb_ds = (w0 / max(1, thumbnail.width()), h0 / max(1, thumbnail.height()))
        self.device_pixel_ratio = 1.0
        self.stats = PaintStats()
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)  # exposedRect is exact
        self.setZValue(0)

    def boundingRect(self) -> QRectF:
        return self._bounds

    def level_for_painter(self, painter: QPainter) -> int:
        return self.grid.level_for_scale(abs(painter.worldTransform().m11()) * self.device_pixel_ratio)

    def paint(self, painter: QPainter, option: QStyleOptionGraphicsItem, widget=None) -> None:
        area = option.exposedRect.intersected(self._bounds)
        if area.isEmpty():
            return
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        level = self.level_for_painter(painter)
        keys = self.grid.keys_in_rect(level, area.left(), area.top(), area.right(), area.bottom())
        stats = PaintStats(level=level, wanted=len(keys))
        if len(keys) > MAX_TILES_PER_VIEW:
            self._draw_thumbnail(painter, area)
            self.stats = PaintStats(level=level)
            return
        # every pixel is drawn once, from the best source at hand: painting cost stays one screenful
        for key in keys:
            image = self.cache.get(key)
            if image is not None:
                self._draw_tile(painter, key, image, area)
                stats.drawn += 1
                continue
            stats.missing_keys.append(key)
            # stand-ins are on screen for a fraction of a second: nearest-neighbour scaling costs a third of
            # bilinear and keeps the paint short while the real tile decodes
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
            drawn = self._draw_fallback(painter, key, area)
            if drawn:
                stats.fallback += drawn
            else:
                x, y, w, h = self.grid.tile_rect(key)
                self._draw_thumbnail(painter, QRectF(x, y, w, h).intersected(area))
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, True)
        self.stats = stats

    def _draw_thumbnail(self, painter: QPainter, area: QRectF) -> None:
        if area.isEmpty():
            return
        sx, sy = self._thumb_ds
        src = QRectF(area.left() / sx, area.top() / sy, area.width() / sx, area.height() / sy)
        painter.drawImage(area, self.thumbnail, src)

    def _draw_tile(self, painter: QPainter, key: TileKey, image: QImage, area: QRectF) -> None:
        x, y, w, h = self.grid.tile_rect(key)
        target = QRectF(x, y, w, h)
        part = target.intersected(area)
        if part.isEmpty():
            return
        kx, ky = image.width() / w, image.height() / h
        src = QRectF((part.left() - x) * kx, (part.top() - y) * ky, part.width() * kx, part.height() * ky)
        painter.drawImage(part, image, src)

    def _draw_fallback(self, painter: QPainter, key: TileKey, area: QRectF) -> int:
        """Draw the finest cached coarser tiles over ``key``'s area; returns how many were drawn."""
        x, y, w, h = self.grid.tile_rect(key)
        region = QRectF(x, y, w, h).intersected(area)
        ds = self.grid.level_downsamples[key.level]
        coarser = sorted((d, lvl) for lvl, d in enumerate(self.grid.level_downsamples) if d > ds)
        for _d, lvl in coarser:
            cover = self.grid.keys_in_rect(lvl, region.left(), region.top(), region.right(), region.bottom())
            images = [(k, self.cache.peek(k)) for k in cover]
            if cover and all(img is not None for _k, img in images):
                for k, img in images:
                    self._draw_tile(painter, k, img, region)
                return len(images)
        return 0

    def visible_keys(self, level: int, rect: QRectF, margin: int = 0) -> list[TileKey]:
        r = rect.intersected(self._bounds)
        if r.isEmpty():
            return []
        return self.grid.keys_in_rect(level, r.left(), r.top(), r.right(), r.bottom(), margin)

    def coarsest_keys(self) -> list[TileKey]:
        """Every tile of the coarsest level (pinned in the cache; loaded first at open)."""
        lvl = self.grid.coarsest_level
        w0, h0 = self.grid.dimensions
        return self.grid.keys_in_rect(lvl, 0, 0, w0, h0)
