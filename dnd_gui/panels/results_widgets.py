"""Small widgets and formatting shared by the Results page's panels: table cells, segmented buttons, fixed-height
captions and legends, and the HTML keys under the plots. Pure presentation; no state."""

from __future__ import annotations

from typing import Sequence

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QButtonGroup, QFrame, QHBoxLayout, QLabel, QPushButton, QSizePolicy,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from dnd_engine.dnd.results import ARM_NAMES, ARMS

from .plots import category_colour
from .results_model import RunResults

ARM_COLOURS = {"base": "#E69F00", "dnd": "#0072B2"}
SEGMENT_STYLE = ("QPushButton { padding: 3px 12px; }"
                 "QPushButton:checked { background-color: palette(highlight); color: palette(highlighted-text);"
                 " border: 1px solid palette(highlight); border-radius: 3px; }")


def table_item(text: str, align=Qt.AlignmentFlag.AlignCenter, tip: str = "") -> QTableWidgetItem:
    it = QTableWidgetItem(text)
    it.setTextAlignment(align | Qt.AlignmentFlag.AlignVCenter)
    it.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    if tip:
        it.setToolTip(tip)
    return it


def segmented(options: Sequence[tuple[str, str]], parent: QWidget) -> tuple[QWidget, QButtonGroup]:
    """Adjacent checkable buttons, exactly one checked; each button's objectName is its key."""
    box = QWidget(parent)
    lay = QHBoxLayout(box)
    lay.setContentsMargins(0, 0, 0, 0)
    lay.setSpacing(0)
    box.setStyleSheet(SEGMENT_STYLE)
    group = QButtonGroup(box)
    group.setExclusive(True)
    for i, (key, text) in enumerate(options):
        b = QPushButton(text, box)
        b.setObjectName(key)
        b.setCheckable(True)
        b.setChecked(i == 0)
        b.setFocusPolicy(Qt.FocusPolicy.TabFocus)
        group.addButton(b, i)
        lay.addWidget(b)
    return box, group


def bold_label(text: str) -> QLabel:
    label = QLabel(text)
    font = label.font()
    font.setBold(True)
    label.setFont(font)
    return label


def panel(parent: QWidget, title: str) -> tuple[QFrame, QVBoxLayout, QHBoxLayout]:
    """A framed panel with a bold title row; returns (frame, its layout, the title row for extra controls)."""
    frame = QFrame(parent)
    frame.setFrameShape(QFrame.Shape.StyledPanel)
    lay = QVBoxLayout(frame)
    lay.setContentsMargins(6, 6, 6, 6)
    lay.setSpacing(4)
    head = QHBoxLayout()
    head.addWidget(bold_label(title))
    head.addStretch(1)
    lay.addLayout(head)
    return frame, lay, head


def two_lines(text: str) -> str:
    """``0.812 ± 0.041`` → ``0.812`` over ``± 0.041``; ``+0.012 (p = 0.430)`` → ``+0.012`` over ``p=0.430``."""
    text = text.replace(" \u00b1 ", "\n\u00b1 ")
    if " (p" in text and text.endswith(")"):
        mean, p = text[:-1].split(" (", 1)
        text = mean + "\n" + p.replace(" = ", "=").replace(" < ", "<")
    return text


def fixed_lines(label: QLabel, lines: int) -> QLabel:
    """Room for ``lines`` lines whatever the text: a label that grows or shrinks with its text would re-lay the
    plots out (a costly pyqtgraph resize) every time the run or fold changes."""
    label.setWordWrap(True)
    label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
    label.setFixedHeight(label.fontMetrics().lineSpacing() * lines + 2)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
    return label


def caption(lines: int) -> QLabel:
    label = QLabel("")
    label.setEnabled(False)
    return fixed_lines(label, lines)


def legend_label(lines: int) -> QLabel:
    label = QLabel("")
    label.setTextFormat(Qt.TextFormat.RichText)
    return fixed_lines(label, lines)


def esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def swatch_html(colour: QColor | str, glyph: str) -> str:
    return f'<span style="color:{QColor(colour).name()}; font-weight:bold">{glyph}</span>'


def roc_legend_html(res: RunResults) -> str:
    """A key under the plot (never over the curves): line style per arm, colour per class, AUCs."""
    dashed, solid = "- - -", "\u2014\u2014"
    names = res.run.class_names
    if len(names) == 2:
        return "&nbsp;&nbsp;&nbsp; ".join(
            swatch_html(ARM_COLOURS[arm], dashed if arm == "base" else solid) + f"&nbsp;{esc(ARM_NAMES[arm])}&nbsp;"
            f"(AUC&nbsp;{res.roc[arm][0].auc:.3f})" for arm in ARMS if res.roc[arm])
    auc = {arm: {c.class_name: c.auc for c in res.roc[arm]} for arm in ARMS}
    entries = [f"{dashed}&nbsp;base&nbsp;&nbsp;{solid}&nbsp;D&amp;D"]
    for i, c in enumerate(names):
        if c in auc["dnd"] or c in auc["base"]:
            b, d = auc["base"].get(c, float("nan")), auc["dnd"].get(c, float("nan"))
            entries.append(swatch_html(category_colour(i), "\u25a0")
                           + f"&nbsp;{esc(c)}&nbsp;AUC&nbsp;{b:.3f}&nbsp;\u2192&nbsp;{d:.3f}")
    return "&nbsp;&nbsp;&nbsp; ".join(entries)


def blend(a: QColor, b: QColor, t: float) -> QColor:
    t = min(1.0, max(0.0, t))
    return QColor(round(a.red() + (b.red() - a.red()) * t), round(a.green() + (b.green() - a.green()) * t),
                  round(a.blue() + (b.blue() - a.blue()) * t))
