"""The start screen: what a user sees before any slide or project is open.

Three ways in, in the order people need them: reopen a recent project, start a new one (a folder that will hold
features, runs and models), or just look at a slide. Recent projects that no longer exist are shown greyed with
the reason, not silently dropped, so a moved folder is noticed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton, QVBoxLayout,
                               QWidget)

from dnd_engine.project import MANIFEST, Project, ProjectError

PATH_ROLE = Qt.ItemDataRole.UserRole


def describe_project(path: str) -> tuple[str, str, bool]:
    """(title, detail line, usable) for one recent project, read from its manifest without side effects."""
    try:
        p = Project.open(path)
    except ProjectError as exc:
        reason = "folder not found" if not Path(path).exists() else str(exc).split(": ")[-1]
        return Path(path).name, f"{path} \u2014 {reason}", False
    n_runs = len(p.runs)
    bits = [f"{len(p.slides)} slides" if p.slides else "no slides linked",
            "features ready" if p.features else "no features yet",
            f"{n_runs} run{'s' if n_runs != 1 else ''}"]
    return p.name, f"{path} \u2014 {', '.join(bits)}", True


class StartScreen(QWidget):
    new_project_requested = Signal()
    open_project_requested = Signal()
    open_slide_requested = Signal()
    recent_project_chosen = Signal(str)

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        title = QLabel("D&D Studio")
        font = QFont(self.font())
        font.setPointSizeF(font.pointSizeF() * 2.2)
        font.setBold(True)
        title.setFont(font)
        subtitle = QLabel("Whole-slide classification with multiple-instance learning and Divide-and-Distill. "
                          "Research software: not for diagnosis.")
        subtitle.setWordWrap(True)
        subtitle.setEnabled(False)

        self.new_button = QPushButton("New Project\u2026")
        self.new_button.setToolTip("Create a project folder: it links your slides (never copies them) and holds "
                                   "labels, features, training runs and models")
        self.open_button = QPushButton("Open Project\u2026")
        self.open_button.setToolTip(f"Open a folder that holds a {MANIFEST}")
        self.slide_button = QPushButton("Open a Slide\u2026")
        self.slide_button.setToolTip("Look at one slide, or drop slides anywhere on the window to classify them "
                                     "with the loaded model")
        for b in (self.new_button, self.open_button, self.slide_button):
            b.setMinimumHeight(34)
        self.new_button.setDefault(True)
        self.new_button.clicked.connect(self.new_project_requested)
        self.open_button.clicked.connect(self.open_project_requested)
        self.slide_button.clicked.connect(self.open_slide_requested)

        recent_title = QLabel("Recent projects")
        bold = QFont(self.font())
        bold.setBold(True)
        recent_title.setFont(bold)
        self.recent = QListWidget()
        self.recent.setFrameShape(QFrame.Shape.StyledPanel)
        self.recent.setMinimumWidth(320)
        self.recent.itemActivated.connect(self._on_activated)
        self.recent.itemClicked.connect(self._on_activated)
        self.empty = QLabel("No recent projects. Create one to train a model on your slides.")
        self.empty.setEnabled(False)

        buttons = QVBoxLayout()
        for b in (self.new_button, self.open_button, self.slide_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        recent_box = QVBoxLayout()
        recent_box.addWidget(recent_title)
        recent_box.addWidget(self.recent, 1)
        recent_box.addWidget(self.empty)
        row = QHBoxLayout()
        row.addLayout(buttons)
        row.addSpacing(24)
        row.addLayout(recent_box, 1)

        inner = QVBoxLayout()
        inner.addWidget(title)
        inner.addWidget(subtitle)
        inner.addSpacing(18)
        inner.addLayout(row, 1)
        hint = QLabel("Tip: drop slide files on this window to classify them with the bundled demo model, or a "
                      "folder to list its slides.")
        hint.setEnabled(False)
        hint.setWordWrap(True)
        inner.addWidget(hint)
        card = QWidget()
        card.setLayout(inner)
        card.setMaximumWidth(900)
        card.setMaximumHeight(560)
        outer = QHBoxLayout(self)
        outer.addStretch(1)
        col = QVBoxLayout()
        col.addStretch(1)
        col.addWidget(card)
        col.addStretch(2)
        outer.addLayout(col, 4)
        outer.addStretch(1)

    def set_recent(self, paths: Sequence[str]) -> None:
        self.recent.clear()
        for path in paths:
            title, detail, usable = describe_project(path)
            item = QListWidgetItem(f"{title}\n{detail}")
            item.setData(PATH_ROLE, path)
            item.setToolTip(detail)
            if not usable:
                item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEnabled)
            self.recent.addItem(item)
        self.empty.setVisible(not paths)
        self.recent.setVisible(bool(paths))

    def _on_activated(self, item: QListWidgetItem) -> None:
        if item.flags() & Qt.ItemFlag.ItemIsEnabled:
            self.recent_project_chosen.emit(str(item.data(PATH_ROLE)))


__all__ = ["StartScreen", "describe_project"]
