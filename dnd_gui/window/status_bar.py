"""The status bar's permanent fields: where the cursor is on the slide (µm), the apparent magnification, the
zoom and the pyramid level being drawn."""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QPointF, Qt
from PySide6.QtWidgets import QLabel, QStatusBar

from ..viewer import SlideViewer


def cursor_text(point: QPointF, mpp: Optional[float]) -> str:
    if mpp:
        return f"x {point.x() * mpp:,.1f} \u00b5m  y {point.y() * mpp:,.1f} \u00b5m"
    return f"x {point.x():,.0f} px  y {point.y():,.0f} px"


class ViewerStatus:
    def __init__(self, bar: QStatusBar):
        self.cursor = QLabel()
        self.magnification = QLabel()
        self.zoom = QLabel()
        self.level = QLabel()
        # widths fixed from the widest text each field shows, so the fields do not jitter as the numbers change
        for w, tip, widest in ((self.cursor, "Cursor position on the slide", "x 99,999.9 \u00b5m  y 99,999.9 \u00b5m"),
                               (self.magnification, "Apparent objective magnification on screen", "99.9\u00d7"),
                               (self.zoom, "Screen pixels per scanned pixel", "zoom 99.9 %"),
                               (self.level, "Pyramid level being drawn", "level 9 of 9")):
            w.setToolTip(tip)
            w.setMinimumWidth(w.fontMetrics().horizontalAdvance(widest) + 8)
            w.setAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            bar.addPermanentWidget(w)

    def show_view(self, view: SlideViewer) -> None:
        if not view.has_slide():
            for w in (self.cursor, self.magnification, self.zoom, self.level):
                w.setText("")
            return
        mag = view.magnification
        self.magnification.setText(f"{mag:.1f}\u00d7" if mag else "magnification unknown")
        self.zoom.setText(f"zoom {view.zoom * 100:.3g} %")
        level = view.level
        self.level.setText(f"level {level} of {view.grid.level_count}" if level is not None else "")

    def show_cursor(self, point: Optional[QPointF], mpp: Optional[float]) -> None:
        self.cursor.setText("" if point is None else cursor_text(point, mpp))
