"""A scale bar over the viewer: a round length (1, 2 or 5 × 10ⁿ µm) drawn at its true on-screen size.

Hidden when the slide has no pixel size: a bar in pixels would look like a measurement and is not one. When the
pixel size is only the nominal one of an objective power the user set (20× → 0.5 µm/px), the length
reads "≈ 200 µm".
"""

from __future__ import annotations

import math
from typing import Optional

from PySide6.QtCore import QRectF, Qt
from PySide6.QtGui import QColor, QFont, QFontMetrics, QPainter, QPen
from PySide6.QtWidgets import QWidget


def nice_length_um(um_per_screen_px: float, target_px: float = 120.0) -> tuple[float, float]:
    """(length in µm, length in screen pixels) of the round length nearest below ``target_px`` on screen."""
    if not um_per_screen_px > 0 or not math.isfinite(um_per_screen_px):
        raise ValueError("the pixel size must be a positive number")
    want = um_per_screen_px * target_px
    exp = math.floor(math.log10(want))
    best = 10.0 ** exp
    for m in (1.0, 2.0, 5.0, 10.0):
        if m * 10.0 ** exp <= want:
            best = m * 10.0 ** exp
    return best, best / um_per_screen_px


def format_length(um: float) -> str:
    """'250 µm', '1 mm', '2.5 mm'."""
    if um >= 1000:
        return f"{um / 1000:g} mm"
    if um >= 1:
        return f"{um:g} \u00b5m"
    return f"{um * 1000:g} nm"


class ScaleBar(QWidget):
    MARGIN = 12

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents, True)
        self.setAttribute(Qt.WidgetAttribute.WA_TranslucentBackground, True)
        self._mpp: Optional[float] = None
        self._zoom = 1.0
        self.length_um = 0.0
        self.length_px = 0.0
        self.wanted = True  # the user's View ▸ Scale Bar choice; the bar still hides without a pixel size
        self.approximate = False  # the pixel size is nominal (from an objective power), not measured
        self.resize(200, 40)

    @property
    def label(self) -> str:
        if not self.length_um:
            return ""
        return ("\u2248 " if self.approximate else "") + format_length(self.length_um)

    def set_scale(self, mpp: Optional[float], zoom: float) -> None:
        """``mpp``: µm per level-0 pixel (None hides the bar); ``zoom``: screen pixels per level-0 pixel."""
        self._mpp, self._zoom = mpp, zoom
        if mpp and zoom > 0:
            self.length_um, self.length_px = nice_length_um(mpp / zoom)
        else:
            self.length_um = self.length_px = 0.0
        bold = QFont(self.font())
        bold.setBold(True)
        text_w = QFontMetrics(bold).horizontalAdvance(self.label)
        self.resize(int(math.ceil(max(self.length_px, text_w))) + 16, 40)
        self.setVisible(bool(self.length_um) and self.wanted)
        self.update()

    def paintEvent(self, event) -> None:
        if not self.length_px:
            return
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing)
        font = QFont(self.font())
        font.setBold(True)
        p.setFont(font)
        text = self.label
        w = self.width()
        box = QRectF(0, 0, w, self.height())
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(0, 0, 0, 150))
        p.drawRoundedRect(box, 5, 5)
        x0 = 8 + (w - 16 - self.length_px) / 2
        y = self.height() - 10
        p.setPen(QPen(QColor(255, 255, 255), 3, Qt.PenStyle.SolidLine, Qt.PenCapStyle.FlatCap))
        p.drawLine(x0, y, x0 + self.length_px, y)
        p.setPen(QPen(QColor(255, 255, 255), 2))
        p.drawLine(x0, y - 5, x0, y + 2)
        p.drawLine(x0 + self.length_px, y - 5, x0 + self.length_px, y + 2)
        p.drawText(QRectF(0, 2, w, self.height() - 16), Qt.AlignmentFlag.AlignCenter, text)
        p.end()
