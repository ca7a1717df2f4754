"""pyqtgraph plots that follow the app's light/dark palette, and the categorical colours shared by the pages.

pyqtgraph draws on black by default whatever the Qt palette says; these helpers take the background, axes and
text colours from the widget's palette, and re-apply them when the theme changes.
"""

from __future__ import annotations

import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPalette, QPen, QPixmap

# Okabe–Ito: distinguishable with the common colour-vision deficiencies, readable on light and dark backgrounds
CATEGORY_COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#8C6D31", "#7F7F7F",
                    "#F0E442", "#332288")
UNKNOWN_COLOUR = "#9aa0a8"


def category_colour(i: int) -> QColor:
    return QColor(CATEGORY_COLOURS[i % len(CATEGORY_COLOURS)])


def style_plot(plot: pg.PlotWidget, palette: QPalette) -> None:
    """Background, axes, labels and legend text in the palette's colours."""
    bg = palette.color(QPalette.ColorRole.Base)
    fg = palette.color(QPalette.ColorRole.Text)
    plot.setBackground(bg)
    item = plot.getPlotItem()
    for name in ("left", "bottom"):
        axis = item.getAxis(name)
        axis.setPen(pg.mkPen(palette.color(QPalette.ColorRole.Dark)))
        axis.setTextPen(pg.mkPen(fg))  # ticks and the axis label
    if item.titleLabel is not None:
        item.titleLabel.item.setDefaultTextColor(fg)
    legend = item.legend
    if legend is not None:
        legend.setBrush(pg.mkBrush(QColor(bg.red(), bg.green(), bg.blue(), 215)))
        legend.setPen(pg.mkPen(palette.color(QPalette.ColorRole.Mid)))
        legend.setLabelTextColor(fg)


def themed_plot(palette: QPalette, *, left: str = "", bottom: str = "") -> pg.PlotWidget:
    """A PlotWidget with axis labels, no context menu and no auto-range button, in the palette's colours."""
    plot = pg.PlotWidget()
    item = plot.getPlotItem()
    item.setMenuEnabled(False)
    item.hideButtons()
    if left:
        item.setLabel("left", left)
    if bottom:
        item.setLabel("bottom", bottom)
    style_plot(plot, palette)
    return plot


__all__ = ["CATEGORY_COLOURS", "UNKNOWN_COLOUR", "category_colour", "style_plot", "themed_plot"]


def line_swatch(colour: str, size: int = 14) -> QIcon:
    """A short thick line in ``colour``: a legend entry for a curve."""
    pix = QPixmap(size, size)
    pix.fill(Qt.GlobalColor.transparent)
    p = QPainter(pix)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setPen(QPen(QColor(colour), 3))
    p.drawLine(1, size // 2, size - 1, size // 2)
    p.end()
    return QIcon(pix)
