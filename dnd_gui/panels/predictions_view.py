"""The Predictions panel: every classified slide in a sortable table, exportable as CSV; a row opens its slide.

Probabilities sort as numbers (the sort role holds floats); a slide classified again by the same model replaces
its row, and the same slide classified by another model (another run) gets a row of its own. The true label
column fills in from a labels CSV (File ▸ Load Labels…, or a ``labels.csv`` found beside the slides), and a
row whose prediction disagrees with it is marked. A demo model's rows say DEMO in the table and in the exported
CSV. Right-click a row to open its slide or copy the row (tab-separated, as a spreadsheet pastes it).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPoint, QSortFilterProxyModel, Qt, Signal
from PySide6.QtGui import QColor, QFont, QGuiApplication
from PySide6.QtWidgets import (QAbstractItemView, QHBoxLayout, QHeaderView, QLabel, QMenu, QPushButton,
                               QTableView, QVBoxLayout, QWidget)

from dnd_engine.atomic import write_text_atomic
from dnd_engine.predictions import DEMO_MARK

DEMO_TAG = "DEMO"

SORT_ROLE = Qt.ItemDataRole.UserRole + 1


@dataclass
class PredictionRow:
    slide_id: str
    path: str
    status: str
    predicted: str
    probs: dict[str, float]
    n_patches: int
    model: str
    error: str = ""
    demo: bool = False
    note: str = ""          # the engine's note on a done prediction (little tissue)

    @property
    def model_text(self) -> str:
        """The model as the table shows it: a demo model's name carries the DEMO tag."""
        return f"{self.model} [{DEMO_TAG}]" if self.demo else self.model


class PredictionsModel(QAbstractTableModel):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: list[PredictionRow] = []
        self.class_names: list[str] = []
        self.true_labels: dict[str, str] = {}

    # --- content -----------------------------------------------------------------------------------------
    def columns(self) -> list[str]:
        return ["Slide", "Status", "Predicted"] + [f"p({c})" for c in self.class_names] + \
            ["True label", "Patches", "Model"]

    def add(self, row: PredictionRow) -> None:
        for c in row.probs:
            if c not in self.class_names:
                self.beginResetModel()
                self.class_names.append(c)
                self.endResetModel()
        for i, old in enumerate(self.rows):
            if old.path == row.path and old.model == row.model:
                self.rows[i] = row
                self.dataChanged.emit(self.index(i, 0), self.index(i, self.columnCount() - 1))
                return
        self.beginInsertRows(QModelIndex(), len(self.rows), len(self.rows))
        self.rows.append(row)
        self.endInsertRows()

    def set_true_labels(self, labels: dict[str, str]) -> None:
        self.true_labels.update(labels)
        if self.rows:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self.rows) - 1, self.columnCount() - 1))

    def row_for_path(self, path: str) -> Optional[int]:
        """The slide's latest row (a slide classified by two models has two)."""
        return next((i for i in reversed(range(len(self.rows))) if self.rows[i].path == path), None)

    def row_text(self, row: int) -> str:
        """One row as the table shows it, tab-separated (what Copy row puts on the clipboard)."""
        r = self.rows[row]
        return "\t".join(self._value(r, c)[0] for c in range(self.columnCount()))

    def to_csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["slide_id", "status", "predicted"] + [f"p_{c}" for c in self.class_names]
                   + ["true_label", "correct", "n_patches", "model", "demo", "error", "path"])
        for r in self.rows:
            truth = self.true_labels.get(r.slide_id, "")
            correct = "" if not truth or r.status != "done" else str(truth == r.predicted).lower()
            w.writerow([r.slide_id, r.status, r.predicted]
                       + [f"{r.probs[c]:.6f}" if c in r.probs else "" for c in self.class_names]
                       + [truth, correct, r.n_patches or "", r.model, DEMO_MARK if r.demo else "", r.error,
                          r.path])
        return buf.getvalue()

    # --- Qt model ----------------------------------------------------------------------------------------
    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.rows)

    def columnCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self.columns())

    def headerData(self, section: int, orientation, role=Qt.ItemDataRole.DisplayRole) -> Any:
        if orientation == Qt.Orientation.Horizontal and role == Qt.ItemDataRole.DisplayRole:
            return self.columns()[section]
        return None

    def _value(self, row: PredictionRow, col: int) -> tuple[str, Any]:
        """(display text, sort key) of one cell."""
        n_class = len(self.class_names)
        if col == 0:
            return row.slide_id, row.slide_id.lower()
        if col == 1:
            return row.status, row.status
        if col == 2:
            return row.predicted or "\u2014", row.predicted
        if 3 <= col < 3 + n_class:
            p = row.probs.get(self.class_names[col - 3])
            return ("\u2014", -1.0) if p is None else (f"{p:.3f}", p)
        col -= 3 + n_class
        if col == 0:
            truth = self.true_labels.get(row.slide_id, "")
            return truth, truth
        if col == 1:
            return (str(row.n_patches) if row.n_patches else ""), row.n_patches
        return row.model_text, row.model_text

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole) -> Any:
        if not index.isValid():
            return None
        row = self.rows[index.row()]
        text, key = self._value(row, index.column())
        if role == Qt.ItemDataRole.DisplayRole:
            return text
        if role == SORT_ROLE:
            return key
        if role == Qt.ItemDataRole.ToolTipRole:
            tip = row.error or (f"{row.note}\n{row.path}" if row.note else row.path)
            return f"{tip}\n{row.model}: demo model, not for diagnosis" if row.demo else tip
        if role == Qt.ItemDataRole.ForegroundRole and row.demo and index.column() == self.columnCount() - 1:
            return QColor(0xE0, 0x8A, 0x00)
        if role == Qt.ItemDataRole.TextAlignmentRole and 3 <= index.column() < 3 + len(self.class_names):
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        if role == Qt.ItemDataRole.ForegroundRole and row.status == "failed":
            return QColor(0xD9, 0x48, 0x3B)
        if role == Qt.ItemDataRole.FontRole and index.column() == 2 and row.status == "done":
            font = QFont()
            font.setBold(True)
            return font
        if role == Qt.ItemDataRole.ForegroundRole and index.column() == 2:
            truth = self.true_labels.get(row.slide_id)
            if truth and row.status == "done" and truth != row.predicted:
                return QColor(0xE0, 0x8A, 0x00)
        return None


class PredictionsView(QWidget):
    slide_selected = Signal(str)  # path of the slide whose row was selected

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.model = PredictionsModel(self)
        self.proxy = QSortFilterProxyModel(self)
        self.proxy.setSourceModel(self.model)
        self.proxy.setSortRole(SORT_ROLE)
        self.table = QTableView()
        self.table.setModel(self.proxy)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.verticalHeader().hide()
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.selectionModel().selectionChanged.connect(self._on_selection)
        self.table.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self.table.customContextMenuRequested.connect(self._show_menu)
        self.summary = QLabel("No slides classified yet.")
        self.export_button = QPushButton("Export CSV\u2026")
        self.export_button.setEnabled(False)
        bar = QHBoxLayout()
        bar.addWidget(self.summary, 1)
        bar.addWidget(self.export_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(6, 6, 6, 6)
        layout.addLayout(bar)
        layout.addWidget(self.table)
        self.model.rowsInserted.connect(self._refresh_summary)
        self.model.dataChanged.connect(self._refresh_summary)
        self.model.modelReset.connect(self._refresh_summary)

    def add_prediction(self, prediction, class_names: list[str], model_name: str, demo: bool = False) -> None:
        """Add an engine ``SlidePrediction``; its probabilities follow ``class_names``."""
        probs = dict(zip(class_names, prediction.probs)) if prediction.probs else {}
        self.model.add(PredictionRow(prediction.slide_id, prediction.path, prediction.status, prediction.predicted,
                                     probs, int(prediction.n_patches or 0), model_name, prediction.error, demo,
                                     getattr(prediction, "note", "")))

    def export_csv(self, path: str | Path) -> Path:
        return write_text_atomic(path, self.model.to_csv())

    def select_path(self, path: str) -> None:
        """Select the row of ``path`` without emitting ``slide_selected`` (the window already shows it)."""
        row = self.model.row_for_path(path)
        if row is None:
            self.table.clearSelection()
            return
        index = self.proxy.mapFromSource(self.model.index(row, 0))
        self.blockSignals(True)
        try:
            self.table.selectRow(index.row())
        finally:
            self.blockSignals(False)

    # --- context menu ----------------------------------------------------------------------------------------
    def context_menu(self, source_row: int) -> QMenu:
        """The menu of one row (source model index): open its slide, copy the row."""
        menu = QMenu(self)
        path = self.model.rows[source_row].path
        menu.addAction("Open Slide", lambda: self.slide_selected.emit(path))
        menu.addAction("Copy Row", lambda: self.copy_row(source_row))
        menu.addSeparator()
        menu.addAction("Copy All as CSV", lambda: QGuiApplication.clipboard().setText(self.model.to_csv()))
        return menu

    def copy_row(self, source_row: int) -> str:
        text = self.model.row_text(source_row)
        QGuiApplication.clipboard().setText(text)
        return text

    def _show_menu(self, pos: QPoint) -> None:
        index = self.table.indexAt(pos)
        if not index.isValid():
            return
        self.table.selectRow(index.row())
        self.context_menu(self.proxy.mapToSource(index).row()).exec(self.table.viewport().mapToGlobal(pos))

    def _on_selection(self, *_args) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            source = self.proxy.mapToSource(rows[0])
            self.slide_selected.emit(self.model.rows[source.row()].path)

    def _refresh_summary(self, *_args) -> None:
        rows = self.model.rows
        done = [r for r in rows if r.status == "done"]
        failed = len(rows) - len(done)
        text = f"{len(done)} slide{'s' if len(done) != 1 else ''} classified"
        if failed:
            text += f", {failed} failed"
        judged = [r for r in done if self.model.true_labels.get(r.slide_id)]
        if judged:
            right = sum(self.model.true_labels[r.slide_id] == r.predicted for r in judged)
            text += f" \u00b7 {right}/{len(judged)} agree with the true label"
        if any(r.demo for r in rows):
            text += f" \u00b7 {DEMO_TAG}: rows marked [{DEMO_TAG}] are from a demo model, not for diagnosis"
        self.summary.setText(text)
        self.export_button.setEnabled(bool(rows))
