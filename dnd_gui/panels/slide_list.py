"""The project panel (left): the open project and its next step, the active model, and the slides of this
session with a thumbnail, their label and where each one stands.

The model box says plainly when the bundled demo model is active, so a demo prediction is never mistaken for a
diagnosis. Selecting a slide opens it in the viewer with its prediction and heatmap; right-clicking it offers
what can be done with it (:mod:`.context_menus`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QFont, QIcon, QImage, QPixmap
from PySide6.QtWidgets import (QAbstractItemView, QGroupBox, QLabel, QListWidget, QListWidgetItem, QPushButton,
                               QVBoxLayout, QWidget)

from dnd_engine.slides.slide import slide_id

from .inspector import ERROR_COLOUR, WARNING_COLOUR
from .project_header import ProjectHeader

PATH_ROLE = Qt.ItemDataRole.UserRole
STATUS_ROLE = Qt.ItemDataRole.UserRole + 1
THUMB_ROLE = Qt.ItemDataRole.UserRole + 2  # True once the slide's own thumbnail replaced the blank icon
THUMBNAIL_PX = 48


class ModelBox(QGroupBox):
    load_requested = Signal()

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__("Model", parent)
        self.name = QLabel("No model loaded")
        font = QFont(self.font())
        font.setBold(True)
        self.name.setFont(font)
        self.name.setWordWrap(True)
        self.badge = QLabel("DEMO \u2014 not for diagnosis")
        self.badge.setStyleSheet(f"color: white; background: {WARNING_COLOUR}; border-radius: 3px; "
                                 "padding: 1px 6px; font-weight: bold;")
        self.badge.hide()
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.summary.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.load_button = QPushButton("Load Model\u2026")
        self.load_button.setToolTip("A model file (.safetensors) or a D&D run folder (Ctrl+M)")
        self.load_button.clicked.connect(self.load_requested)
        layout = QVBoxLayout(self)
        for w in (self.name, self.badge, self.summary, self.status, self.load_button):
            layout.addWidget(w, 0, Qt.AlignmentFlag.AlignLeft if w is self.badge else Qt.AlignmentFlag(0))
        self.show_none()

    def show_model(self, name: str, summary: str, demo: bool, notes: str = "") -> None:
        self.name.setText(name)
        self.badge.setVisible(demo)
        self.summary.setText(summary)
        self.summary.setToolTip(notes)
        self.summary.setVisible(bool(summary))
        self._set_status("")

    def show_none(self) -> None:
        self.name.setText("No model loaded")
        self.badge.hide()
        self.summary.hide()
        self._set_status("Load a D&D model (a .safetensors file or a run folder) to classify slides.")

    def show_loading(self, path: str) -> None:
        self._set_status(f"Loading {Path(path).name}\u2026")

    def show_error(self, message: str) -> None:
        self._set_status(message, ERROR_COLOUR)

    def _set_status(self, text: str, colour: str = "") -> None:
        self.status.setText(text)
        self.status.setStyleSheet(f"color: {colour};" if colour else "")
        self.status.setVisible(bool(text))


class SlideListPanel(QWidget):
    slide_activated = Signal(str)  # path

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.header = ProjectHeader()
        self.model_box = ModelBox()
        self.labels: dict[str, str] = {}  # slide id → true label (the project's labels CSV or one the user loaded)
        self.list = QListWidget()
        self.list.setIconSize(QSize(THUMBNAIL_PX, THUMBNAIL_PX))
        self.list.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.list.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.list.setAlternatingRowColors(True)
        self.list.setWordWrap(True)
        self.list.currentItemChanged.connect(self._on_current)
        self.empty = QLabel("Slides you open or drop appear here.")
        self.empty.setWordWrap(True)
        self.empty.setEnabled(False)
        slides_box = QGroupBox("Slides")
        box_layout = QVBoxLayout(slides_box)
        box_layout.addWidget(self.empty)
        box_layout.addWidget(self.list)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addWidget(self.header)
        layout.addWidget(self.model_box)
        layout.addWidget(slides_box, 1)

    def paths(self) -> list[str]:
        return [self.list.item(i).data(PATH_ROLE) for i in range(self.list.count())]

    def _item(self, path: str) -> Optional[QListWidgetItem]:
        for i in range(self.list.count()):
            if self.list.item(i).data(PATH_ROLE) == path:
                return self.list.item(i)
        return None

    def add_slide(self, path: str) -> None:
        if self._item(path) is None:
            item = QListWidgetItem()
            item.setData(PATH_ROLE, path)
            item.setData(STATUS_ROLE, "")
            item.setToolTip(path)
            item.setIcon(self._blank_icon())
            self.list.addItem(item)
            self._render(item)
            self.empty.hide()

    def remove_slide(self, path: str) -> bool:
        item = self._item(path)
        if item is None:
            return False
        self.list.blockSignals(True)  # removing the current row must not open the next slide
        self.list.takeItem(self.list.row(item))
        self.list.blockSignals(False)
        self.empty.setVisible(self.list.count() == 0)
        return True

    def set_thumbnail(self, path: str, image: QImage) -> None:
        item = self._item(path)
        if item is not None and not image.isNull():
            small = image.scaled(THUMBNAIL_PX, THUMBNAIL_PX, Qt.AspectRatioMode.KeepAspectRatio,
                                 Qt.TransformationMode.SmoothTransformation)
            item.setIcon(QIcon(QPixmap.fromImage(small)))
            item.setData(THUMB_ROLE, True)

    def has_thumbnail(self, path: str) -> bool:
        item = self._item(path)
        return item is not None and bool(item.data(THUMB_ROLE))

    def set_labels(self, labels: dict[str, str]) -> None:
        """True labels by slide id, shown beside each slide's name (merged with those known before)."""
        self.labels.update({str(k): str(v) for k, v in labels.items()})
        for i in range(self.list.count()):
            self._render(self.list.item(i))

    def label(self, path: str) -> str:
        return self.labels.get(slide_id(path), "")

    def _blank_icon(self) -> QIcon:
        blank = QPixmap(THUMBNAIL_PX, THUMBNAIL_PX)
        blank.fill(QColor(128, 128, 128, 40))
        return QIcon(blank)

    def _render(self, item: QListWidgetItem) -> None:
        path = item.data(PATH_ROLE)
        label = self.label(path)
        first = f"{Path(path).name}  \u00b7  {label}" if label else Path(path).name
        status = item.data(STATUS_ROLE) or ""
        item.setText(f"{first}\n{status}" if status else first)

    def set_status(self, path: str, status: str, kind: str = "") -> None:
        """Second line of the slide's entry; ``kind`` is '', 'running', 'done' or 'failed' (colours it)."""
        self.add_slide(path)
        item = self._item(path)
        item.setData(STATUS_ROLE, status)
        self._render(item)
        colours = {"failed": QColor(ERROR_COLOUR), "running": QColor(WARNING_COLOUR)}
        if kind in colours:
            item.setForeground(colours[kind])
        else:
            item.setData(Qt.ItemDataRole.ForegroundRole, None)

    def status_text(self, path: str) -> str:
        item = self._item(path)
        return item.text().split("\n", 1)[1] if item is not None and "\n" in item.text() else ""

    def select(self, path: str) -> None:
        item = self._item(path)
        if item is not None and self.list.currentItem() is not item:
            self.list.blockSignals(True)
            self.list.setCurrentItem(item)
            self.list.blockSignals(False)

    def _on_current(self, current: Optional[QListWidgetItem], _previous) -> None:
        if current is not None:
            self.slide_activated.emit(current.data(PATH_ROLE))
