"""What every wizard page draws with: colours, form rows whose words carry the tooltip, notes, a path field.

Presentation only: the engine decides what is wrong, these show it.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import List, Optional

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (QFileDialog, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QPushButton, QSizePolicy,
                               QWidget)

from dnd_engine.features.registry import get_spec

PAGE_DATA, PAGE_PREPROCESS, PAGE_MODEL, PAGE_REVIEW = range(4)

# readable on both themes' backgrounds
RED, AMBER, GREEN = "#e0524c", "#d08a00", "#3fa34d"
PROBLEM_ROW = QColor(224, 82, 76, 60)

PRESET_LABELS = {"paper": "Paper", "authors-code": "Authors' code"}


def default_run_name(now: Optional[_dt.datetime] = None) -> str:
    return (now or _dt.datetime.now()).strftime("run-%Y%m%d-%H%M")


def located_weights(extractor: str) -> Optional[Path]:
    """The weights file the engine would use without being told one, or None (the engine's lookup)."""
    return get_spec(extractor).located()


def tip(widget: QWidget, text: str) -> QWidget:
    widget.setToolTip(text)
    return widget


def form_row(form: QFormLayout, label: str, field: QWidget, tip_text: str) -> QLabel:
    """A form row whose label carries the field's tooltip too: users hover the words, not the box."""
    lab = QLabel(label)
    lab.setToolTip(tip_text)
    field.setToolTip(tip_text)
    lab.setBuddy(field)
    form.addRow(lab, field)
    return lab


def note(colour: Optional[str] = None) -> QLabel:
    lab = QLabel()
    lab.setWordWrap(True)
    lab.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
    lab.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Preferred)   # wrap at the page's width
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    if colour:
        lab.setStyleSheet(f"color: {colour};")
    return lab


def bullets(lines: List[str], limit: int = 10) -> str:
    shown = lines[:limit] + ([f"… and {len(lines) - limit} more"] if len(lines) > limit else [])
    return "\n".join(f"• {s}" for s in shown)


def show_lines(label: QLabel, lines: List[str]) -> None:
    """Bullets in ``label``, hidden when there are none."""
    label.setText(bullets(lines))
    label.setVisible(bool(lines))


class PathEdit(QWidget):
    """A path field with a Browse button; ``kind`` is 'dir' or a file-dialog filter."""

    changed = Signal(str)

    def __init__(self, kind: str, caption: str, placeholder: str, start_dir: str = ""):
        super().__init__()
        self.kind, self.caption, self.start_dir = kind, caption, start_dir
        self.edit = QLineEdit()
        self.edit.setPlaceholderText(placeholder)
        self.edit.setClearButtonEnabled(True)
        self.button = QPushButton("Browse…")
        lay = QHBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(self.edit, 1)
        lay.addWidget(self.button)
        self.button.clicked.connect(self.browse)
        self.edit.textChanged.connect(self.changed)

    def setToolTip(self, text: str) -> None:  # noqa: N802 (Qt naming)
        super().setToolTip(text)
        self.edit.setToolTip(text)
        self.button.setToolTip(text)

    def text(self) -> str:
        return self.edit.text().strip()

    def setText(self, text: str) -> None:  # noqa: N802
        self.edit.setText(text)

    def path(self) -> Optional[Path]:
        return Path(self.text()).expanduser() if self.text() else None

    def browse(self) -> None:
        here = self.text() or self.start_dir
        start = str(Path(here).parent) if here and Path(here).is_file() else here
        if self.kind == "dir":
            chosen = QFileDialog.getExistingDirectory(self, self.caption, start)
        else:
            chosen, _ = QFileDialog.getOpenFileName(self, self.caption, start, self.kind)
        if chosen:
            self.edit.setText(chosen)
