"""The central slide canvas: a thumbnail placed in level-0 scene coordinates, wheel zoom and drag-to-pan.

Scene units are level-0 pixels, so later overlays (tiles, heatmaps, annotations) can be drawn in slide
coordinates whatever resolution the shown image has.
"""

from __future__ import annotations

from PySide6.QtCore import QPoint, QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QPainter, QPixmap, QTransform
from PySide6.QtWidgets import QFrame, QGraphicsPixmapItem, QGraphicsScene, QGraphicsView, QWidget

EMPTY_MESSAGE = "Open a slide with File \u25b8 Open Slide\u2026 (Ctrl+O)\nor drop a slide file here"


class SlideView(QGraphicsView):
    """Shows one slide image; stays in fit-to-window mode (refitting on resize) until the user zooms."""

    ZOOM_STEP = 1.25  # per wheel notch / keyboard step
    MAX_THUMBNAIL_MAGNIFICATION = 4.0  # at most 4 screen pixels per thumbnail pixel
    FIT_MARGIN = 0.02  # fraction of the image kept free around it when fitting

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self._item: QGraphicsPixmapItem | None = None
        self._downsample = 1.0  # level-0 pixels per thumbnail pixel
        self._message = EMPTY_MESSAGE
        self._fit_mode = True
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.NoAnchor)  # zoom_by anchors itself
        self.setResizeAnchor(QGraphicsView.ViewportAnchor.AnchorViewCenter)
        self.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setBackgroundBrush(QColor(0x2B, 0x2D, 0x30))
        # Drops are handled by the main window; without this the view would swallow them.
        self.setAcceptDrops(False)
        self.viewport().setAcceptDrops(False)

    # --- content ---------------------------------------------------------------------------------------
    def set_slide_image(self, image: QImage, level0_size: tuple[int, int] | list[int]) -> None:
        """Show ``image`` stretched over a ``level0_size`` scene rectangle and fit it to the window."""
        self.scene().clear()
        w0, h0 = int(level0_size[0]), int(level0_size[1])
        item = QGraphicsPixmapItem(QPixmap.fromImage(image))
        item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        item.setTransform(QTransform.fromScale(w0 / max(1, image.width()), h0 / max(1, image.height())))
        self.scene().addItem(item)
        self._item = item
        self._downsample = max(w0 / max(1, image.width()), h0 / max(1, image.height()))
        pad = max(w0, h0) * 0.5  # room to pan an edge to the middle of the window
        self.setSceneRect(QRectF(-pad, -pad, w0 + 2 * pad, h0 + 2 * pad))
        self.fit_to_window()

    def clear_image(self, message: str = EMPTY_MESSAGE) -> None:
        self.scene().clear()
        self._item = None
        self._message = message
        self.resetTransform()
        self.viewport().update()

    def set_message(self, message: str) -> None:
        """Text shown in the middle of the view while no slide is shown (e.g. 'Opening …')."""
        self._message = message
        self.viewport().update()

    def pixmap(self) -> QPixmap | None:
        return self._item.pixmap() if self._item is not None else None

    def image_rect(self) -> QRectF:
        """The slide's rectangle in scene (level-0) coordinates; empty when nothing is shown."""
        return self._item.sceneBoundingRect() if self._item is not None else QRectF()

    # --- zoom ------------------------------------------------------------------------------------------
    @property
    def zoom(self) -> float:
        """Screen pixels per level-0 pixel."""
        return self.transform().m11()

    @property
    def fit_mode(self) -> bool:
        return self._fit_mode

    def fit_to_window(self) -> None:
        if self._item is None:
            return
        rect = self.image_rect()
        m = max(rect.width(), rect.height()) * self.FIT_MARGIN
        self.fitInView(rect.adjusted(-m, -m, m, m), Qt.AspectRatioMode.KeepAspectRatio)
        self._fit_mode = True

    def _fit_zoom(self) -> float:
        rect, vp = self.image_rect(), self.viewport().rect()
        if rect.isEmpty() or vp.isEmpty():
            return 1.0
        return min(vp.width() / rect.width(), vp.height() / rect.height())

    def zoom_by(self, factor: float, anchor: QPointF | QPoint | None = None) -> None:
        """Zoom keeping the slide point under ``anchor`` (viewport coordinates; default: centre) in place."""
        if self._item is None or factor <= 0:
            return
        lo = self._fit_zoom() * 0.5
        hi = max(self.MAX_THUMBNAIL_MAGNIFICATION / self._downsample, self._fit_zoom())
        current = self.zoom
        target = min(max(current * factor, lo), hi)
        if abs(target / current - 1.0) < 1e-6:
            return
        pos = (anchor if anchor is not None else QPointF(self.viewport().rect().center()))
        pos = pos.toPoint() if isinstance(pos, QPointF) else pos
        scene_point = self.mapToScene(pos)
        self.scale(target / current, target / current)
        shift = self.mapFromScene(scene_point) - pos
        self.horizontalScrollBar().setValue(self.horizontalScrollBar().value() + shift.x())
        self.verticalScrollBar().setValue(self.verticalScrollBar().value() + shift.y())
        self._fit_mode = False

    def zoom_in(self) -> None:
        self.zoom_by(self.ZOOM_STEP)

    def zoom_out(self) -> None:
        self.zoom_by(1.0 / self.ZOOM_STEP)

    # --- events ----------------------------------------------------------------------------------------
    def wheelEvent(self, event) -> None:
        delta = event.angleDelta().y()
        if delta == 0 or self._item is None:
            event.ignore()
            return
        self.zoom_by(self.ZOOM_STEP ** (delta / 120.0), event.position())
        event.accept()

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        if self._fit_mode:
            self.fit_to_window()

    def paintEvent(self, event) -> None:
        super().paintEvent(event)
        if self._item is None and self._message:
            painter = QPainter(self.viewport())
            painter.setPen(QColor(0xB8, 0xBB, 0xC0))
            font = QFont(self.font())
            font.setPointSizeF(font.pointSizeF() * 1.3)
            painter.setFont(font)
            painter.drawText(self.viewport().rect(), Qt.AlignmentFlag.AlignCenter | Qt.TextFlag.TextWordWrap,
                             self._message)
            painter.end()
