"""The slide viewer: a QGraphicsView whose scene is the slide in level-0 pixels, drawn from pyramid tiles.

Every pan, zoom or resize asks the tile loader for the tiles now visible at the level that matches the zoom
(plus a one-tile ring to pan into), nearest to the centre first; decoding happens on worker threads and each
arriving tile repaints only its own rectangle. Heatmaps and other overlays are scene items in the same level-0
coordinates, so they stay registered with the tissue at every zoom. The minimap and the scale bar are child
widgets over the canvas. ``fully_painted`` fires once after each view change, when the last visible tile of the
right level is on screen: the benchmark and the tests time and wait on it.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QPoint, QPointF, QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPixmap
from PySide6.QtWidgets import QFrame, QGraphicsItem, QGraphicsScene, QGraphicsView, QWidget

from .minimap import Minimap
from .scale_bar import ScaleBar
from .tile_cache import DEFAULT_MAX_BYTES, TileCache
from .tile_layer import MAX_TILES_PER_VIEW, TileLayer
from .tile_loader import TileLoader
from .tile_source import TileGrid, TileKey, TileSource

EMPTY_MESSAGE = "Open a slide with File \u25b8 Open Slide\u2026 (Ctrl+O)\nor drop slides here to classify them"
MAGNIFICATION_PRESETS = (1, 2, 5, 10, 20, 40)
MAX_PINNED_TILES = 64  # the coarsest level is pinned in the cache only when it is this small
CANVAS_COLOR = QColor(0x2B, 0x2D, 0x30)


class SlideViewer(QGraphicsView):
    view_changed = Signal()          # zoom, position or size changed
    cursor_moved = Signal(object)    # QPointF in level-0 pixels, or None when the cursor left the slide
    fully_painted = Signal()         # every visible tile of the wanted level is on screen
    tile_error = Signal(str)         # a tile failed to decode (the coarser level stays in its place)
    reader_crashed = Signal(str)     # the slide's reader process died: the view now shows this one-line message

    ZOOM_STEP = 1.25                 # per wheel notch / keyboard step
    MAX_ZOOM = 2.0                   # screen pixels per level-0 pixel: 2× digital zoom beyond the scan (a 20×
                                     # scan reaches 40×); the magnification presets stop at the same place
    FIT_MARGIN = 0.02                # fraction of the slide kept free around it when fitting
    PREFETCH_RING = 1                # tiles loaded around the visible ones, to pan into
    PAN_FRACTION = 0.125             # of the viewport, per arrow key

    def __init__(self, parent: Optional[QWidget] = None, cache_bytes: int = DEFAULT_MAX_BYTES,
                 threads: Optional[int] = None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.cache = TileCache(cache_bytes)
        self.loader = TileLoader(self, threads)
        self.loader.tile_ready.connect(self._on_tile)
        self.loader.tile_failed.connect(self._on_tile_failed)
        self.grid: Optional[TileGrid] = None
        self.layer: Optional[TileLayer] = None
        self.info: Optional[dict] = None
        self._source: Optional[TileSource] = None
        self._thumbnail: Optional[QImage] = None
        self._thumb_pixmap: Optional[QPixmap] = None
        self._overlays: list[QGraphicsItem] = []
        self._message = EMPTY_MESSAGE
        self._fit_mode = True
        self._complete_pending = False
        self._reported_errors = 0

        self._request_timer = QTimer(self)
        self._request_timer.setSingleShot(True)
        self._request_timer.setInterval(0)  # coalesce a burst of scroll events into one request
        self._request_timer.timeout.connect(self.request_visible_tiles)

        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)  # zoom_by anchors itself
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setOptimizationFlag(QGraphicsView.OptimizationFlag.DontAdjustForAntialiasing, True)
        self.setBackgroundBrush(CANVAS_COLOR)
        self.viewport().setMouseTracking(True)
        # Drops are handled by the main window; without this the view would swallow them.
        self.setAcceptDrops(False)
        self.viewport().setAcceptDrops(False)

        self.minimap = Minimap(self)
        self.minimap.jump_requested.connect(self.centre_on)
        self.scale_bar = ScaleBar(self)
        self.scale_bar.hide()

    # --- content -----------------------------------------------------------------------------------------
    def set_slide(self, path: str, info: dict, thumbnail: QImage, reader=None) -> None:
        """Show the slide at ``path`` (``info`` as :meth:`Slide.info`), fitted to the window. The thumbnail is
        drawn under the tiles until they arrive. ``reader``: the slide's open
        :class:`~dnd_engine.slides.isolated.IsolatedSlide` to read tiles through (the caller keeps owning it);
        without one the view starts its own reader process."""
        self._drop_slide()
        self.info = info
        self.grid = TileGrid.from_info(info)
        self._source = TileSource(path, self.grid, reader)
        self._thumbnail = thumbnail
        self._thumb_pixmap = None
        self.cache.clear()
        coarsest = self.grid.coarsest_level
        if self.grid.tile_count(coarsest) <= MAX_PINNED_TILES:
            self.cache.set_pinned(lambda key: isinstance(key, TileKey) and key.level == coarsest)
        else:
            self.cache.set_pinned(lambda key: False)
        self.layer = TileLayer(self.grid, self.cache, thumbnail)
        self.layer.device_pixel_ratio = self.devicePixelRatioF()
        self.scene().addItem(self.layer)
        w0, h0 = self.grid.dimensions
        pad = max(w0, h0) * 0.5  # room to pan an edge to the middle of the window
        self.setSceneRect(QRectF(-pad, -pad, w0 + 2 * pad, h0 + 2 * pad))
        self.loader.set_source(self._source)
        self.minimap.set_thumbnail(thumbnail, (w0, h0))
        self.minimap.setVisible(self.minimap.wanted)
        self._reported_errors = 0
        self.fit_to_window()
        self._view_changed()

    def clear_slide(self, message: str = EMPTY_MESSAGE) -> None:
        self._drop_slide()
        self._message = message
        self.resetTransform()
        self.minimap.hide()
        self.scale_bar.hide()
        self.viewport().update()
        self.view_changed.emit()

    def _drop_slide(self) -> None:
        self.loader.set_source(None)
        if self._source is not None:
            self._source.close()  # handles still reading close when their read ends
        for item in self._overlays:
            self.scene().removeItem(item)
        self._overlays = []
        self.scene().clear()
        self.layer = None
        self.grid = None
        self.info = None
        self._source = None
        self._thumbnail = None
        self._thumb_pixmap = None
        self.cache.clear()
        self._complete_pending = False

    def set_message(self, message: str) -> None:
        """Text shown in the middle of the view while no slide is shown (e.g. 'Opening …')."""
        self._message = message
        self.viewport().update()

    def has_slide(self) -> bool:
        return self.layer is not None

    def message(self) -> str:
        """The text shown while no slide is (an error, 'Opening …', the empty-canvas hint)."""
        return self._message

    @property
    def source(self) -> Optional[TileSource]:
        return self._source

    def thumbnail(self) -> Optional[QImage]:
        return self._thumbnail

    def pixmap(self) -> Optional[QPixmap]:
        """The thumbnail as a pixmap (made once per slide)."""
        if self._thumbnail is None:
            return None
        if self._thumb_pixmap is None:
            self._thumb_pixmap = QPixmap.fromImage(self._thumbnail)
        return self._thumb_pixmap

    def image_rect(self) -> QRectF:
        """The slide's rectangle in scene (level-0) coordinates; empty when nothing is shown."""
        return self.layer.boundingRect() if self.layer is not None else QRectF()

    def add_overlay(self, item: QGraphicsItem) -> None:
        """Add a scene item in level-0 coordinates above the tiles; removed when the slide changes."""
        self.scene().addItem(item)
        self._overlays.append(item)

    def remove_overlay(self, item: QGraphicsItem) -> None:
        if item in self._overlays:
            self._overlays.remove(item)
            self.scene().removeItem(item)

    # --- geometry ----------------------------------------------------------------------------------------
    @property
    def zoom(self) -> float:
        """Screen pixels per level-0 pixel."""
        return self.transform().m11()

    @property
    def fit_mode(self) -> bool:
        return self._fit_mode

    @property
    def objective_power(self) -> Optional[float]:
        return self.info.get("objective_power") if self.info else None

    @property
    def mpp(self) -> Optional[float]:
        return self.info.get("mpp") if self.info else None

    @property
    def magnification(self) -> Optional[float]:
        """The apparent objective power on screen (20 on a 20× scan at 1:1), None without metadata."""
        power = self.objective_power
        return power * self.zoom if power else None

    @property
    def level(self) -> Optional[int]:
        """The pyramid level drawn at the current zoom."""
        if self.grid is None:
            return None
        return self.grid.level_for_scale(self.zoom * self.devicePixelRatioF())

    def visible_rect(self) -> QRectF:
        """The level-0 rectangle the viewport shows (may reach beyond the slide)."""
        return self.mapToScene(self.viewport().rect()).boundingRect()

    def visible_keys(self, margin: int = 0) -> list[TileKey]:
        if self.layer is None:
            return []
        return self.layer.visible_keys(self.level, self.visible_rect(), margin)

    def missing_tiles(self) -> list[TileKey]:
        """Visible tiles of the wanted level not decoded yet (tiles that failed to decode do not count; none are
        wanted when the level has too many tiles on screen, see :data:`MAX_TILES_PER_VIEW`)."""
        keys = self.visible_keys()
        if len(keys) > MAX_TILES_PER_VIEW:
            return []
        return [k for k in keys if k not in self.cache and k not in self.loader.failed_keys]

    @property
    def paint_pending(self) -> bool:
        """True from a view change until ``fully_painted`` has fired for it."""
        return self._complete_pending

    def is_fully_loaded(self) -> bool:
        return self.layer is not None and not self.missing_tiles()

    def max_magnification(self) -> Optional[float]:
        """The highest apparent magnification the wheel reaches (the scan's × ``MAX_ZOOM``); None without
        metadata."""
        power = self.objective_power
        return power * max(self.MAX_ZOOM, self._fit_zoom()) if power else None

    def available_presets(self) -> list[int]:
        """The magnification presets this slide reaches: the same limit as the wheel (:meth:`zoom_limits`), so a
        preset is never greyed out at a magnification the wheel zooms past."""
        top = self.max_magnification()
        return [m for m in MAGNIFICATION_PRESETS if top and m <= top * 1.0001]

    # --- zoom and pan ------------------------------------------------------------------------------------
    def _fit_zoom(self) -> float:
        rect, vp = self.image_rect(), self.viewport().rect()
        if rect.isEmpty() or vp.isEmpty():
            return 1.0
        return min(vp.width() / rect.width(), vp.height() / rect.height())

    def zoom_limits(self) -> tuple[float, float]:
        fit = self._fit_zoom()
        return fit * 0.5, max(self.MAX_ZOOM, fit)

    def fit_to_window(self) -> None:
        if self.layer is None:
            return
        rect = self.image_rect()
        m = max(rect.width(), rect.height()) * self.FIT_MARGIN
        self.fitInView(rect.adjusted(-m, -m, m, m), Qt.AspectRatioMode.KeepAspectRatio)
        self._fit_mode = True
        self._view_changed()

    def zoom_by(self, factor: float, anchor: QPointF | QPoint | None = None) -> None:
        """Zoom keeping the slide point under ``anchor`` (viewport coordinates; default: centre) in place."""
        if self.layer is None or factor <= 0:
            return
        self.set_zoom(self.zoom * factor, anchor)

    def set_zoom(self, zoom: float, anchor: QPointF | QPoint | None = None) -> None:
        if self.layer is None:
            return
        lo, hi = self.zoom_limits()
        target = min(max(zoom, lo), hi)
        current = self.zoom
        if abs(target / current - 1.0) < 1e-9:
            return
        pos = anchor if anchor is not None else QPointF(self.viewport().rect().center())
        pos = pos.toPoint() if isinstance(pos, QPointF) else pos
        scene_point = self.mapToScene(pos)
        self.scale(target / current, target / current)
        shift = self.mapFromScene(scene_point) - pos
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() + shift.x())
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() + shift.y())
        self._fit_mode = False
        self._view_changed()

    def zoom_in(self) -> None:
        self.zoom_by(self.ZOOM_STEP)

    def zoom_out(self) -> None:
        self.zoom_by(1.0 / self.ZOOM_STEP)

    def set_magnification(self, magnification: float) -> None:
        """Show the slide at ``magnification`` (e.g. 10 = a 10× objective), around the centre of the view."""
        if self.objective_power:
            self.set_zoom(float(magnification) / self.objective_power)

    def centre_on(self, point: QPointF, zoom: Optional[float] = None) -> None:
        """Centre the view on a level-0 point, at ``zoom`` when given."""
        if self.layer is None:
            return
        if zoom is not None:
            lo, hi = self.zoom_limits()
            z = min(max(zoom, lo), hi)
            self.scale(z / self.zoom, z / self.zoom)
        self.centerOn(point)
        self._fit_mode = False
        self._view_changed()

    def pan_by(self, dx: float, dy: float) -> None:
        """Move the view by (dx, dy) screen pixels (positive: the slide moves left/up)."""
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() + round(dx))
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() + round(dy))
        self._fit_mode = False

    # --- tiles -------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Repaint the whole view; ``fully_painted`` fires again once every visible tile is on screen."""
        if self.layer is None:
            return
        self._complete_pending = True
        self.request_visible_tiles()
        self.viewport().update()

    def _view_changed(self) -> None:
        if self.layer is None:
            return
        self._complete_pending = True
        self._request_timer.start()
        self.minimap.set_visible_rect(self.visible_rect())
        self.scale_bar.set_scale(self.mpp, self.zoom)
        self._place_overlays()
        self.view_changed.emit()

    def request_visible_tiles(self) -> None:
        """Queue what the view needs now: the coarsest level first (the picture under everything), then the
        visible tiles nearest the centre, then the ring around them."""
        if self.layer is None:
            return
        rect = self.visible_rect()
        c = rect.center()
        level = self.level
        visible = self.layer.visible_keys(level, rect)
        if len(visible) > MAX_TILES_PER_VIEW:  # a one-level giant zoomed out: the thumbnail is all one can see
            visible = []
        ring = [k for k in self.layer.visible_keys(level, rect, self.PREFETCH_RING) if k not in set(visible)] \
            if visible else []
        # a budget smaller than one screen (plus its ring) would evict tiles the view is about to draw
        t = self.grid.tile_size
        self.cache.set_floor(2 * 4 * t * t * (len(visible) + len(ring)))
        wanted = [k for k in self.layer.coarsest_keys() if k not in self.cache] \
            if self.grid.tile_count(self.grid.coarsest_level) <= MAX_PINNED_TILES else []
        wanted += [k for k in self.grid.by_distance(visible, c.x(), c.y()) if k not in self.cache]
        wanted += [k for k in self.grid.by_distance(ring, c.x(), c.y()) if k not in self.cache]
        seen: set = set()
        self.loader.want([k for k in wanted if not (k in seen or seen.add(k))])
        if not self.missing_tiles():
            self.viewport().update()  # everything is cached: the repaint completes the view

    def _on_tile(self, key: TileKey, image: QImage) -> None:
        self.cache.put(key, image)
        if self.layer is None:
            return
        x, y, w, h = self.grid.tile_rect(key)
        area = self.mapFromScene(QRectF(x, y, w, h)).boundingRect().adjusted(-1, -1, 1, 1)
        if area.intersects(self.viewport().rect()):
            self.viewport().update(area)

    def _on_tile_failed(self, key: TileKey, error: str) -> None:
        crash = self._source.crashed if self._source is not None else None
        if crash:  # nothing of this slide can be read any more: say so where the slide was
            self.clear_slide(crash)
            self.reader_crashed.emit(crash)
            return
        self._reported_errors += 1
        if self._reported_errors == 1:  # once per slide: a corrupt region usually spans many tiles
            self.tile_error.emit(f"some tiles could not be decoded ({error}); a coarser level is shown there")
        self.viewport().update()

    # --- events ------------------------------------------------------------------------------------------
    def scrollContentsBy(self, dx: int, dy: int) -> None:
        super().scrollContentsBy(dx, dy)
        self._view_changed()

    def wheelEvent(self, event) -> None:
        delta = event.angleDelta().y()
        if delta == 0 or self.layer is None:
            event.ignore()
            return
        self.zoom_by(self.ZOOM_STEP ** (delta / 120.0), event.position())
        event.accept()

    def mouseDoubleClickEvent(self, event) -> None:
        if self.layer is not None and event.button() == Qt.MouseButton.LeftButton:
            self.zoom_by(2.0, event.position())
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def mouseMoveEvent(self, event) -> None:
        super().mouseMoveEvent(event)
        if self.layer is None:
            return
        point = self.mapToScene(event.position().toPoint())
        self.cursor_moved.emit(point if self.image_rect().contains(point) else None)

    def leaveEvent(self, event) -> None:
        super().leaveEvent(event)
        self.cursor_moved.emit(None)

    def keyPressEvent(self, event) -> None:
        step_x = self.viewport().width() * self.PAN_FRACTION
        step_y = self.viewport().height() * self.PAN_FRACTION
        moves = {Qt.Key.Key_Left: (-step_x, 0), Qt.Key.Key_Right: (step_x, 0),
                 Qt.Key.Key_Up: (0, -step_y), Qt.Key.Key_Down: (0, step_y)}
        if self.layer is not None and event.key() in moves:
            self.pan_by(*moves[event.key()])
            event.accept()
            return
        super().keyPressEvent(event)

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fit_mode:
            self.fit_to_window()
        else:
            self._view_changed()
        self._place_overlays()

    def _place_overlays(self) -> None:
        vp = self.viewport().geometry()
        m = 10
        self.minimap.move(vp.right() - self.minimap.width() - m, vp.top() + m)
        self.scale_bar.move(vp.left() + m, vp.bottom() - self.scale_bar.height() - m)
        self.minimap.raise_()
        self.scale_bar.raise_()

    def paintEvent(self, event) -> None:
        super().paintEvent(event)
        if self.layer is None:
            if self._message:
                painter = QPainter(self.viewport())
                painter.setPen(QColor(0xB8, 0xBB, 0xC0))
                font = QFont(self.font())
                font.setPointSizeF(font.pointSizeF() * 1.3)
                painter.setFont(font)
                painter.drawText(self.viewport().rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                                 self._message)
                painter.end()
            return
        if self._complete_pending and not self.missing_tiles():
            self._complete_pending = False
            self.fully_painted.emit()

    def shutdown(self) -> None:
        """Stop decoding and close the slide handles (call before the window goes away)."""
        self.loader.shutdown()
        self._drop_slide()
