"""The wizard's first page: where the slides (or their features) are and what each one is.

The engine's :func:`check_data` reads the CSV and lists the folder; this page shows its report: every row with
its status (problems first), the class balance, what blocks and what is only worth knowing.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import List, Optional

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import (QAbstractItemView, QButtonGroup, QGridLayout, QHBoxLayout, QHeaderView, QLabel,
                               QRadioButton, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget, QWizardPage)

from dnd_engine.bags import LabelTable
from dnd_engine.project import Project, TrainingPlan
from dnd_engine.project.data_check import DataReport, check_data

from .widgets import AMBER, PAGE_MODEL, PAGE_PREPROCESS, PROBLEM_ROW, RED, PathEdit, note, show_lines, tip

DEFAULT_FOLDS = TrainingPlan().folds
PREVIEW_MAX_ROWS = 5000          # a QTableWidget stays responsive well past this; beyond, the CSV is the place
REFRESH_DELAY_MS = 250           # typing a path re-reads the folder once the user pauses, not per keystroke


class DataPage(QWizardPage):
    """Where the slides (or their features) are and what each one is; the preview flags every problem."""

    MODE_SLIDES, MODE_FEATURES = "slides", "features"

    def __init__(self, project: Project):
        super().__init__()
        self.project = project
        self.setTitle("Data")
        self.setSubTitle("Choose the slides (or features you already extracted) and a labels CSV "
                         "(slide_id,label[,split]).")
        self.report: DataReport = DataReport(kind="slide")   # the engine's answer to the last refresh
        self.table: Optional[LabelTable] = None
        self.available: Optional[List[str]] = None      # ids with a slide (slides mode) or a bag (features mode)
        self.slide_files: List[Path] = []
        self.errors: List[str] = []                     # blocking, independent of the folds
        self.notes: List[str] = []
        self._stale = True

        self.slides_radio = tip(QRadioButton("Slides folder (extract features)"),
                                 "Slide files (.svs, .tif, .ndpi, .mrxs, …) in one folder; features are extracted "
                                 "into the project. Slides are linked, never copied.")
        self.features_radio = tip(QRadioButton("Existing feature folder (ours, CLAM or TRIDENT .h5/.pt)"),
                                   "Bags you already have: a folder of <slide_id>.h5 / .pt files, CLAM's output "
                                   "(h5_files/, pt_files/) or a TRIDENT features_<encoder>/ folder. Skips "
                                   "preprocessing.")
        self.mode_group = QButtonGroup(self)
        self.mode_group.addButton(self.slides_radio)
        self.mode_group.addButton(self.features_radio)
        start = str(project.root)
        self.slides_path = PathEdit("dir", "Slides folder", "a folder of slide files", start)
        self.slides_path.setToolTip("The folder that holds the slides; the slide id is the file name without "
                                    "its extension and must match the labels CSV's slide_id.")
        self.features_path = PathEdit("dir", "Feature folder", "a folder of .h5 / .pt feature bags", start)
        self.features_path.setToolTip("A folder of feature bags named <slide_id>.h5 or .pt (CLAM's and "
                                      "TRIDENT's layouts are found inside it). Linked, never copied.")
        self.labels_path = PathEdit("CSV files (*.csv);;All files (*)", "Labels CSV",
                                    "slide_id,label[,split]", start)
        self.labels_path.setToolTip("A CSV with a header: slide_id (or slide, id, case_id), label, and "
                                    "optionally split (train/val/test). It is copied into the project at "
                                    "launch.")

        grid = QGridLayout()
        grid.addWidget(self.slides_radio, 0, 0)
        grid.addWidget(self.slides_path, 0, 1)
        grid.addWidget(self.features_radio, 1, 0)
        grid.addWidget(self.features_path, 1, 1)
        labels_label = tip(QLabel("Labels CSV"), self.labels_path.toolTip())
        grid.addWidget(labels_label, 2, 0)
        grid.addWidget(self.labels_path, 2, 1)
        grid.setColumnStretch(1, 1)

        self.preview = QTableWidget(0, 0)
        self.preview.setToolTip("The labels CSV as read: rows with a problem are highlighted and listed first")
        self.preview.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.preview.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.preview.verticalHeader().setVisible(False)
        self.preview.setAlternatingRowColors(True)
        self.summary_label = note()
        self.summary_label.setToolTip("What was found: labelled slides, slides or bags in the folder")
        self.balance_label = note()
        self.balance_label.setToolTip("Slides per class; D&D's cross-validation needs every class in every fold")
        self.problems_label = note(RED)
        self.problems_label.setToolTip("What must be fixed before training can start")
        self.notes_label = note(AMBER)
        self.notes_label.setToolTip("Worth knowing, but training can start")
        side = QVBoxLayout()
        for w in (self.summary_label, self.balance_label, self.problems_label, self.notes_label):
            side.addWidget(w)
        side.addStretch(1)
        side_box = QWidget()
        side_box.setLayout(side)
        body = QHBoxLayout()
        body.addWidget(self.preview, 3)
        body.addWidget(side_box, 2)

        lay = QVBoxLayout(self)
        lay.addLayout(grid)
        lay.addLayout(body, 1)

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REFRESH_DELAY_MS)
        self._timer.timeout.connect(self.refresh)
        for w in (self.slides_path, self.features_path, self.labels_path):
            w.changed.connect(self._schedule)
        self.mode_group.buttonToggled.connect(lambda *_: self._mode_changed())
        self._prefill()

    def _prefill(self) -> None:
        p = self.project
        if p.features is not None:
            self.features_path.setText(str(p.features_dir))
            self.features_radio.setChecked(True)
        else:
            self.slides_radio.setChecked(True)
        parents = {str(Path(s).parent) for s in p.slides}
        if len(parents) == 1:
            self.slides_path.setText(parents.pop())
        src = p.labels_source if p.labels_source and Path(p.labels_source).is_file() else None
        if src is None and p.labels_path is not None and p.labels_path.is_file():
            src = str(p.labels_path)
        if src:
            self.labels_path.setText(src)
        self._mode_changed()

    # --- state ---------------------------------------------------------------------------------------------
    def mode(self) -> str:
        return self.MODE_FEATURES if self.features_radio.isChecked() else self.MODE_SLIDES

    def set_mode(self, mode: str) -> None:
        (self.features_radio if mode == self.MODE_FEATURES else self.slides_radio).setChecked(True)

    def source_path(self) -> Optional[Path]:
        return (self.features_path if self.mode() == self.MODE_FEATURES else self.slides_path).path()

    def _mode_changed(self) -> None:
        features = self.mode() == self.MODE_FEATURES
        self.features_path.setEnabled(features)
        self.slides_path.setEnabled(not features)
        self._schedule()

    def _schedule(self) -> None:
        self._stale = True
        self.completeChanged.emit()
        self._timer.start()

    def folds(self) -> int:
        wiz = self.wizard()
        model_page = getattr(wiz, "model_page", None)   # the wizard's, when this page is in one
        return model_page.folds_spin.value() if model_page is not None else DEFAULT_FOLDS

    def fold_problems(self, folds: int) -> List[str]:
        """Problems that depend on the number of folds: fixable on the model page, so they block there."""
        return self.report.fold_problems(folds)

    def refresh(self) -> None:
        """Ask the engine about the CSV and the folder (cheap: no slide is opened), then redraw the preview."""
        self._timer.stop()
        self._stale = False
        features = self.mode() == self.MODE_FEATURES
        kind = "bag" if features else "slide"
        source = self.source_path()
        where = {} if source is None else {"features": source} if features else {"slides": source}
        r = self.report = check_data(**where, labels_csv=self.labels_path.path(), kind=kind)
        self.errors, self.notes = list(r.errors), list(r.notes)
        self.table, self.available, self.slide_files = r.table, r.available, list(r.slide_files)
        self._show(kind)
        self.completeChanged.emit()

    def _show(self, kind: str) -> None:
        folds = self.folds()
        fold_problems = self.fold_problems(folds)
        rows = sorted(self.report.rows, key=lambda row: row.status == "ok")   # problems first, then file order
        has_split = self.table is not None and self.table.splits is not None
        cols = ["line", "slide_id", "label"] + (["split"] if has_split else []) + ["status"]
        self.preview.clear()
        self.preview.setColumnCount(len(cols))
        self.preview.setHorizontalHeaderLabels(cols)
        shown = rows[:PREVIEW_MAX_ROWS]
        self.preview.setRowCount(len(shown))
        for r, row in enumerate(shown):
            values = [str(row.line), row.slide_id, row.label] + ([row.split] if has_split else []) + [row.status]
            for c, v in enumerate(values):
                item = QTableWidgetItem(v)
                if row.status != "ok":
                    item.setBackground(PROBLEM_ROW)
                    item.setToolTip(row.problem or row.status)
                self.preview.setItem(r, c, item)
        head = self.preview.horizontalHeader()
        for c in range(len(cols)):
            head.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        head.setSectionResizeMode(len(cols) - 1, QHeaderView.ResizeMode.Stretch)

        found = "" if self.available is None else f"{len(self.available)} {kind}s in the folder"
        if self.table is not None:
            bad = sum(1 for row in rows if row.status != "ok")
            self.summary_label.setText(f"{len(self.table)} labelled slides"
                                       + (f" · {found}" if found else "")
                                       + (f" · {bad} row(s) with problems" if bad else "")
                                       + (f" (showing the first {PREVIEW_MAX_ROWS})"
                                          if len(rows) > PREVIEW_MAX_ROWS else ""))
            small = set(self.report.small_classes(folds))
            parts = []
            for c, n in self.report.counts().items():
                text = f"{html.escape(c)} {n}"
                parts.append(f"<span style='color:{RED}'>{text}</span>" if c in small else text)
            self.balance_label.setText("<b>Class balance:</b> " + (" · ".join(parts) if parts else "none"))
        else:
            self.summary_label.setText(found)
            self.balance_label.setText("")
        problems = self.errors + [f"{p} — set the folds on the Model page" for p in fold_problems]
        show_lines(self.problems_label, problems)
        show_lines(self.notes_label, self.notes)

    def problems(self) -> List[str]:
        """Everything that blocks this page (fold-count problems block the model page, where folds are set)."""
        if self._stale:
            self.refresh()
        return list(self.errors)

    def initializePage(self) -> None:  # noqa: N802
        self.refresh()

    def isComplete(self) -> bool:  # noqa: N802
        return not self._stale and not self.errors

    def validatePage(self) -> bool:  # noqa: N802
        if self._stale:
            self.refresh()
        return not self.errors

    def nextId(self) -> int:  # noqa: N802
        return PAGE_MODEL if self.mode() == self.MODE_FEATURES else PAGE_PREPROCESS
