"""The overview in the viewer's corner: the thumbnail with the viewport's outline; click or drag to jump there.

It knows only the thumbnail, the slide size and the visible rectangle, so it costs nothing while panning.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QImage, QPainter, QPen
from PySide6.QtWidgets import QWidget


class Minimap(QWidget):
    jump_requested = Signal(QPointF)  # level-0 point to centre the view on

    MAX_SIDE = 170
    PAD = 4

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self._thumb: Optional[QImage] = None
        self._size0 = (1.0, 1.0)
        self._visible = QRectF()
        self.wanted = True  # the user's View ▸ Overview choice
        self.setCursor(Qt.CursorShape.PointingHandCursor)
        self.setToolTip("Overview: click or drag to move the view")
        self.hide()

    def set_thumbnail(self, image: Optional[QImage], level0_size: tuple[float, float] = (1, 1)) -> None:
        self._thumb = image
        self._size0 = (float(level0_size[0]), float(level0_size[1]))
        if image is None or image.isNull():
            self.hide()
            return
        w0, h0 = self._size0
        k = self.MAX_SIDE / max(w0, h0)
        self.resize(round(w0 * k) + 2 * self.PAD, round(h0 * k) + 2 * self.PAD)
        self.update()

    def set_visible_rect(self, rect: QRectF) -> None:
        self._visible = QRectF(rect)
        self.update()

    def image_rect(self) -> QRectF:
        return QRectF(self.PAD, self.PAD, self.width() - 2 * self.PAD, self.height() - 2 * self.PAD)

    def to_level0(self, pos: QPointF) -> QPointF:
        r = self.image_rect()
        w0, h0 = self._size0
        x = (pos.x() - r.left()) / r.width() * w0
        y = (pos.y() - r.top()) / r.height() * h0
        return QPointF(min(max(x, 0.0), w0), min(max(y, 0.0), h0))

    def from_level0(self, rect: QRectF) -> QRectF:
        r = self.image_rect()
        w0, h0 = self._size0
        kx, ky = r.width() / w0, r.height() / h0
        return QRectF(r.left() + rect.left() * kx, r.top() + rect.top() * ky, rect.width() * kx, rect.height() * ky)

    def paintEvent(self, event) -> None:
        if self._thumb is None:
            return
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(0, 0, 0, 160))
        p.drawRoundedRect(QRectF(self.rect()), 4, 4)
        p.drawImage(self.image_rect(), self._thumb)
        whole = QRectF(0, 0, *self._size0)
        if not self._visible.isEmpty() and not self._visible.contains(whole):  # no outline when all is in view
            box = self.from_level0(self._visible).intersected(self.image_rect())
            if box.width() < 4 or box.height() < 4:  # deep zoom: mark the spot with a small square instead
                c = self.from_level0(self._visible).center()
                box = QRectF(c.x() - 3, c.y() - 3, 6, 6)
            p.setBrush(Qt.BrushStyle.NoBrush)
            p.setPen(QPen(QColor(0, 0, 0, 160), 3))
            p.drawRect(box)
            p.setPen(QPen(QColor(255, 214, 0), 1.5))
            p.drawRect(box)
        p.end()

    def mousePressEvent(self, event) -> None:
        if event.button() == Qt.MouseButton.LeftButton:
            self.jump_requested.emit(self.to_level0(event.position()))
            event.accept()

    def mouseMoveEvent(self, event) -> None:
        if event.buttons() & Qt.MouseButton.LeftButton:
            self.jump_requested.emit(self.to_level0(event.position()))
            event.accept()
