"""The "Slide properties" panel: what the engine knows about the open slide, as a two-column tree.

The wording lives in :func:`describe_slide` (plain data, no widgets) so the status bar and tests share it.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QHeaderView, QPushButton, QTreeWidget, QTreeWidgetItem, QWidget

SET_BY_YOU = "set by you"
SET_BUTTON_TEXT = "Set objective / pixel size\u2026"
_SOURCE_WORDS = {
    "header": "from the file header",
    "mpp": "from the pixel size",
    "override": SET_BY_YOU,
    "assumed": "assumed (no metadata)",
}


def _num(x: float) -> str:
    return f"{x:g}"


def format_size(w: int, h: int) -> str:
    return f"{w} \u00d7 {h} px"


def format_objective(info: dict) -> str:
    power = info.get("objective_power")
    if power is None:
        return "unknown"
    source = _SOURCE_WORDS.get(info.get("magnification_source", ""), info.get("magnification_source", ""))
    return f"{_num(power)}\u00d7 ({source})" if source else f"{_num(power)}\u00d7"


def format_mpp(mpp, source=None) -> str:
    """'0.499 µm/px', with where it came from when the user set it (directly, or as a nominal objective)."""
    if not mpp:
        return "unknown"
    text = f"{mpp:.4g} \u00b5m/px"
    if source == "override":
        return f"{text} ({SET_BY_YOU})"
    if source == "objective":
        return f"{text} (nominal for the objective {SET_BY_YOU})"
    return text


def is_set_by_user(info: dict) -> bool:
    return info.get("magnification_source") == "override" or info.get("mpp_source") in ("override", "objective")


def format_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def describe_slide(info: dict) -> list[tuple[str, str, list[tuple[str, str]]]]:
    """(label, value, children) rows for a :meth:`Slide.info` dict."""
    levels = [
        (f"Level {i}", f"{format_size(*dims)}, downsample {_num(ds)}")
        for i, (dims, ds) in enumerate(zip(info["level_dimensions"], info["level_downsamples"]))
    ]
    rows = [
        ("File", Path(info["path"]).name, []),
        ("Dimensions", format_size(*info["dimensions"]), []),
        ("Levels", str(info["level_count"]), levels),
        ("Pixel size", format_mpp(info.get("mpp"), info.get("mpp_source")), []),
        ("Objective", format_objective(info), []),
        ("Vendor", str(info.get("vendor", "")), []),
        ("Reader", str(info.get("backend", "")), []),
    ]
    if info.get("file_size") is not None:
        rows.append(("File size", format_bytes(info["file_size"]), []))
    return rows


def summary_line(info: dict) -> str:
    """One line for the status bar."""
    w, h = info["dimensions"]
    n = info["level_count"]
    parts = [Path(info["path"]).name, format_size(w, h), f"{n} level{'s' if n != 1 else ''}"]
    if info.get("objective_power") is not None:
        parts.append(f"{_num(info['objective_power'])}\u00d7")
    if info.get("mpp"):
        parts.append(format_mpp(info["mpp"]))
    if is_set_by_user(info):
        parts.append(SET_BY_YOU)
    elif info.get("objective_power") is None:
        parts.append("magnification unknown (Slide panel \u25b8 " + SET_BUTTON_TEXT.rstrip("\u2026") + ")")
    return "  \u00b7  ".join(parts)


class SlidePropertiesPanel(QTreeWidget):
    """Property/value tree; :meth:`value` looks a row up by its label. Under the rows, a button lets the user set
    the objective power or pixel size a file lacks (or gets wrong): the window asks and stores it."""

    set_magnification_requested = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.set_button: QPushButton | None = None
        self.setColumnCount(2)
        self.setHeaderLabels(["Property", "Value"])
        self.setAlternatingRowColors(True)
        self.setSelectionMode(QTreeWidget.SelectionMode.NoSelection)
        self.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.header().setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        self.header().setStretchLastSection(True)
        self.clear_info()

    def clear_info(self) -> None:
        self.clear()
        self.set_button = None
        item = QTreeWidgetItem(["No slide open", ""])
        item.setDisabled(True)
        self.addTopLevelItem(item)

    def show_info(self, info: dict) -> None:
        self.clear()
        for label, value, children in describe_slide(info):
            item = QTreeWidgetItem([label, value])
            item.setToolTip(1, info["path"] if label == "File" else value)
            for child_label, child_value in children:
                item.addChild(QTreeWidgetItem([child_label, child_value]))
            self.addTopLevelItem(item)
            item.setExpanded(True)
            if label == "Objective" and info.get("objective_power") is None:
                item.setForeground(1, QBrush(QColor(220, 120, 40)))
                item.setToolTip(1, "The file gives neither the objective power nor the pixel size: set one to "
                                   "classify this slide")
        row = QTreeWidgetItem(["Magnification", ""])
        row.setToolTip(0, "Set the objective power or pixel size when the file lacks them or gets them wrong")
        self.addTopLevelItem(row)
        self.set_button = QPushButton(SET_BUTTON_TEXT)
        self.set_button.setToolTip(row.toolTip(0))
        self.set_button.clicked.connect(self.set_magnification_requested)
        self.setItemWidget(row, 1, self.set_button)

    def value(self, label: str) -> str | None:
        """The value shown for a top-level ``label`` (None when absent)."""
        for i in range(self.topLevelItemCount()):
            item = self.topLevelItem(i)
            if item.text(0) == label:
                return item.text(1)
        return None

    def rows(self) -> list[tuple[str, str]]:
        """Every (label, value) shown, children included, top to bottom."""
        out: list[tuple[str, str]] = []
        for i in range(self.topLevelItemCount()):
            item = self.topLevelItem(i)
            out.append((item.text(0), item.text(1)))
            out.extend((item.child(j).text(0), item.child(j).text(1)) for j in range(item.childCount()))
        return out
