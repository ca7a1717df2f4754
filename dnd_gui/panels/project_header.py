"""The open project's name and its next step, at the top of the project panel.

A new project is an empty folder; a first-time user should not have to guess what comes next. The engine says
which step is next (:meth:`dnd_engine.project.Project.next_step`); this header names it in words and offers the
button that does it. Hidden while no project is open.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Signal
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QPushButton, QVBoxLayout, QWidget

NEXT_STEP_TEXT = {
    "add slides": "Next: add slides \u2014 drop a folder of slides on the window, or click Add Slides\u2026",
    "train": "Next: train a model \u2014 Train a Model\u2026 asks for the labels and the method.",
    "classify": "A model is ready: drop slides to classify them, or train another model.",
}


class ProjectHeader(QFrame):
    add_slides_requested = Signal()
    train_requested = Signal()

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.name = QLabel("")
        font = QFont(self.font())
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 1.25)
        self.name.setFont(font)
        self.name.setWordWrap(True)
        self.detail = QLabel("")
        self.detail.setEnabled(False)
        self.next_step = QLabel("")
        self.next_step.setWordWrap(True)
        self.add_button = QPushButton("Add Slides\u2026")
        self.add_button.setToolTip("Link slide files or a folder of slides to this project (they are not copied)")
        self.add_button.clicked.connect(self.add_slides_requested)
        self.train_button = QPushButton("Train a Model\u2026")
        self.train_button.clicked.connect(self.train_requested)
        buttons = QHBoxLayout()
        buttons.setContentsMargins(0, 0, 0, 0)
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.train_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        for w in (self.name, self.detail, self.next_step):
            layout.addWidget(w)
        layout.addLayout(buttons)
        self.step = ""
        self.hide()

    def show_project(self, name: str, n_slides: int, n_runs: int, step: str) -> None:
        self.step = step
        self.name.setText(f"Project: {name}")
        self.detail.setText(f"{n_slides} slide{'s' if n_slides != 1 else ''} \u00b7 "
                            f"{n_runs} run{'s' if n_runs != 1 else ''}")
        self.next_step.setText(NEXT_STEP_TEXT.get(step, ""))
        self.next_step.setStyleSheet("font-weight: bold;" if step in ("add slides", "train") else "")
        # the button of the next step is the default-looking one
        self.add_button.setDefault(step == "add slides")
        self.train_button.setDefault(step == "train")
        self.train_button.setEnabled(step != "add slides")
        self.show()

    def show_none(self) -> None:
        self.step = ""
        self.hide()


__all__ = ["NEXT_STEP_TEXT", "ProjectHeader"]
