"""The Results page: base vs D&D for every finished run, and a closer look at one run.

- the comparison table: one row per run (its name, as the project named it, and its MIL method), test ACC and
  AUC as mean ± std over folds for the base model and the D&D student, the mean difference and its paired p,
  exactly as the run's summary.json holds them;
- for the run picked in the selector (or the table): ROC curves of both arms, the confusion matrix of either,
  and the cluster explorer — the fold's training slides in 2-D (PCA of what was clustered), coloured by cluster
  or by class; clicking a point asks the window to open that slide;
- "Use this model for classification" hands the run's deployable model to the window.

The page fits a 1366×768 screen beside the docks: below ``WIDE_LAYOUT`` px the cluster explorer moves under the
ROC and confusion panels (the page then scrolls down, never sideways). Clusters are numbered from 1, as the
experts they train are everywhere a user reads them.

Reading runs, the ROC curves, the confusion matrices and every fold's projection happen on a worker thread
(scikit-learn alone takes over a second to import); the GUI thread only fills widgets with the results.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from PySide6.QtCore import QEvent, QSize, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QFont
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLabel, QPushButton,
                               QSizePolicy, QSplitter, QStackedWidget, QTableWidget, QTableWidgetItem, QVBoxLayout,
                               QWidget)

from dnd_engine.dnd.results import ClusterProjection, format_diff, format_mean_std
from dnd_engine.dnd.stats import PAIRED_TEST
from dnd_engine.text import one_line

from .plots import style_plot
from .results_model import RunResults, cluster_label, compute_results, run_titles
from .results_panels import ClusterPanel, ConfusionPanel, RocPanel
from .results_widgets import SEGMENT_STYLE, bold_label, table_item, two_lines
from ..workers import LatestOnly

EMPTY_MESSAGE = ("No finished D&D run yet.\n\nTrain base vs D&D with  dnd train --preset paper  (or compare "
                 "several methods with  dnd bench); each finished run appears here.")
WIDE_LAYOUT = 980   # px of page width from which the three panels sit side by side
NARROW_MIN_WIDTH = 560
TABLE_COLUMNS = ["Run", "Method", "Preset", "Folds", "ACC base", "ACC D&D", "\u0394ACC (p)", "AUC base", "AUC D&D",
                 "\u0394AUC (p)"]


class ResultsView(RocPanel, ConfusionPanel, ClusterPanel, QWidget):
    slide_requested = Signal(str)  # slide id of the clicked point in the cluster explorer
    model_chosen = Signal(str)     # path of the run's deployable model.safetensors
    loaded = Signal()              # the runs of the latest set_runs() are shown (or the empty state is)

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.results: List[RunResults] = []
        self.problems: List[str] = []
        self._worker = LatestOnly(self)   # compute_results off the GUI thread; the newest set_runs() wins
        self._colour_by = "cluster"
        self._arm = "dnd"
        self._brushes: Dict[str, QBrush] = {}

        self.stack = QStackedWidget(self)
        self.empty_label = QLabel(EMPTY_MESSAGE)
        self.empty_label.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.empty_label.setWordWrap(True)
        self.empty_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.empty_label.setContentsMargins(40, 40, 40, 40)
        self.stack.addWidget(self.empty_label)
        self.stack.addWidget(self._build_content())
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        outer.addWidget(self.stack)
        self._show_empty()

    # --- building -------------------------------------------------------------------------------------------
    def _build_content(self) -> QWidget:
        page = QWidget(self)
        lay = QVBoxLayout(page)
        lay.setContentsMargins(8, 8, 8, 8)
        lay.setSpacing(6)

        top = QHBoxLayout()
        top.addWidget(bold_label("Base vs D&D (test slides, mean \u00b1 std over folds)"))
        top.addStretch(1)
        self.test_note = QLabel(f"\u0394 = D&D \u2212 base; p: {PAIRED_TEST}")
        self.test_note.setEnabled(False)
        top.addWidget(self.test_note)
        lay.addLayout(top)

        self.table = QTableWidget(0, len(TABLE_COLUMNS), page)
        self.table.setHorizontalHeaderLabels(TABLE_COLUMNS)
        self.table.verticalHeader().hide()
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.setAlternatingRowColors(True)
        self.table.setVerticalScrollMode(QAbstractItemView.ScrollMode.ScrollPerPixel)
        self.table.verticalHeader().setDefaultSectionSize(self.fontMetrics().height() + 10)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        for c in (0, 1, 2, 3):
            header.setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        self.table.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.table.itemSelectionChanged.connect(self._on_table_selection)
        lay.addWidget(self.table)

        self.problems_label = QLabel("")
        self.problems_label.setWordWrap(True)
        self.problems_label.setStyleSheet("color: #c77700;")
        self.problems_label.hide()
        lay.addWidget(self.problems_label)

        bar = QHBoxLayout()
        bar.addWidget(bold_label("Run"))
        self.run_combo = QComboBox(page)
        self.run_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.run_combo.currentIndexChanged.connect(self._on_run_changed)
        bar.addWidget(self.run_combo)
        self.run_info = QLabel("")
        self.run_info.setEnabled(False)
        self.run_info.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # never widens the page
        bar.addWidget(self.run_info, 1)
        self.model_button = QPushButton("Use this model for classification")
        self.model_button.clicked.connect(self._on_model_button)
        bar.addWidget(self.model_button)
        lay.addLayout(bar)
        self.warnings_label = QLabel("")    # the engine's warnings about this run's cohort and clusters
        self.warnings_label.setWordWrap(True)
        self.warnings_label.setStyleSheet("color: #c77700;")
        self.warnings_label.setToolTip("Checks made when the clusters were formed: numbers they flag are noise")
        self.warnings_label.hide()
        lay.addWidget(self.warnings_label)

        # wide: ROC | confusion | clusters in one row; narrow: the cluster explorer in a second row (see resizeEvent)
        self._rows = QSplitter(Qt.Orientation.Vertical, page)
        self._rows.setChildrenCollapsible(False)
        split = QSplitter(Qt.Orientation.Horizontal, self._rows)
        split.setChildrenCollapsible(False)
        split.addWidget(self._build_roc_panel(split))
        split.addWidget(self._build_confusion_panel(split))
        self._cluster_frame = self._build_cluster_panel(split)
        split.addWidget(self._cluster_frame)
        split.setStretchFactor(0, 4)
        split.setStretchFactor(1, 3)
        split.setStretchFactor(2, 5)
        split.setSizes([420, 300, 520])
        self._split = split
        self._rows.addWidget(split)
        self._wide = True
        lay.addWidget(self._rows, 1)
        return page

    def is_wide(self) -> bool:
        """True while the three panels sit side by side."""
        return self._wide

    def _arrange(self, width: int) -> None:
        wide = width >= WIDE_LAYOUT
        if wide == self._wide:
            return
        self._wide = wide
        if wide:
            self._split.addWidget(self._cluster_frame)
            self._split.setSizes([420, 300, 520])
        else:
            self._rows.addWidget(self._cluster_frame)
        if self.results:
            self._fill_table()   # two-line cells when narrow: the numbers stay whole instead of elided
        self.updateGeometry()

    def minimumSizeHint(self) -> QSize:
        """Narrow enough for the page beside the docks at 1366 px: below ``WIDE_LAYOUT`` the panels rearrange
        into two rows rather than asking the scroll area for a sideways scroll."""
        hint = super().minimumSizeHint()
        return QSize(min(hint.width(), NARROW_MIN_WIDTH), hint.height())

    def resizeEvent(self, event) -> None:
        self._arrange(event.size().width())
        super().resizeEvent(event)

    # --- public ---------------------------------------------------------------------------------------------
    def set_runs(self, paths: Sequence[str | Path]) -> None:
        """Show these run folders (one table row each); reading happens on a worker, ``loaded`` says when done."""
        paths = [str(p) for p in paths]
        if not paths:
            self._worker.cancel()
            self._apply([], [])
            return
        if not self.results:
            self.empty_label.setText("Loading results\u2026")
            self.stack.setCurrentIndex(0)
        self._worker.submit(compute_results, paths, on_done=lambda outcome: self._apply(*outcome),
                            on_error=lambda exc: self._apply([], [f"unexpected error ({one_line(exc, typed=True)})"]))

    def current(self) -> Optional[RunResults]:
        i = self.run_combo.currentIndex()
        return self.results[i] if 0 <= i < len(self.results) else None

    def current_projection(self) -> Optional[ClusterProjection]:
        res = self.current()
        fold = self.fold_combo.currentData()
        return res.projections.get(fold) if res is not None and fold is not None else None

    def message(self) -> str:
        """The text shown instead of the page when there is nothing to show (empty state)."""
        return self.empty_label.text() if self.stack.currentIndex() == 0 else ""

    def shutdown(self) -> None:
        """Drop queued loads and wait for a running one (call before the window closes)."""
        self._worker.shutdown()

    # --- loading --------------------------------------------------------------------------------------------
    def _apply(self, results: List[RunResults], problems: List[str]) -> None:
        shown = self.current()
        self.results, self.problems = list(results), list(problems)
        if not self.results:
            self._show_empty()
        else:
            self._fill_table()
            self.problems_label.setText("Not shown: " + "; ".join(self.problems) if self.problems else "")
            self.problems_label.setVisible(bool(self.problems))
            self.run_combo.blockSignals(True)
            self.run_combo.clear()
            for text, r in zip(run_titles([r.run for r in self.results]), self.results):
                self.run_combo.addItem(text, str(r.run.path))
                self.run_combo.setItemData(self.run_combo.count() - 1, str(r.run.path),
                                           Qt.ItemDataRole.ToolTipRole)
            self.run_combo.blockSignals(False)
            self.stack.setCurrentIndex(1)
            # a refresh (e.g. after another run finished) keeps the run the user was looking at
            paths = [r.run.path for r in self.results]
            index = paths.index(shown.run.path) if shown is not None and shown.run.path in paths else 0
            self.run_combo.setCurrentIndex(index)
            self._on_run_changed(index)
        self.loaded.emit()

    def _show_empty(self) -> None:
        text = EMPTY_MESSAGE
        if self.problems:
            text += "\n\n" + "\n".join(self.problems)
        self.empty_label.setText(text)
        self.stack.setCurrentIndex(0)
        self.run_combo.blockSignals(True)
        self.run_combo.clear()
        self.run_combo.blockSignals(False)
        self.table.setRowCount(0)

    # --- the comparison table ----------------------------------------------------------------------------
    def _fill_table(self) -> None:
        t = self.table
        lines = 1 if self._wide else 2
        t.verticalHeader().setDefaultSectionSize(self.fontMetrics().lineSpacing() * lines + 10)
        two = (lambda text: text) if self._wide else two_lines
        t.blockSignals(True)
        t.setRowCount(len(self.results))
        good, bad = QColor("#2e9d57"), QColor("#d9483b")
        bold = QFont()
        bold.setBold(True)
        for i, res in enumerate(self.results):
            row = res.row
            tip = str(row.path)
            cells = [table_item(row.run or res.run.name, Qt.AlignmentFlag.AlignLeft, tip),
                     table_item(row.method, Qt.AlignmentFlag.AlignLeft, tip), table_item(row.preset, tip=tip),
                     table_item(str(row.n_folds), tip=tip),
                     table_item(two(format_mean_std(*row.base_acc))), table_item(two(format_mean_std(*row.dnd_acc))),
                     self._diff_item(row.diff_acc, res.run.summary.get("diff_test_acc"), good, bad, two),
                     table_item(two(format_mean_std(*row.base_auc))), table_item(two(format_mean_std(*row.dnd_auc))),
                     self._diff_item(row.diff_auc, res.run.summary.get("diff_test_auc"), good, bad, two)]
            cells[0].setFont(bold)
            for c, cell in enumerate(cells):
                t.setItem(i, c, cell)
        t.blockSignals(False)
        rows_h = t.verticalHeader().defaultSectionSize() * min(len(self.results), 6)
        t.setFixedHeight(t.horizontalHeader().height() + rows_h + 2 * t.frameWidth() + 2)

    @staticmethod
    def _diff_item(diff, detail, good: QColor, bad: QColor, two=lambda text: text) -> QTableWidgetItem:
        mean, p = diff
        detail = detail or {}
        tip = f"{PAIRED_TEST}, {detail.get('n', '?')} folds"
        w = detail.get("p_wilcoxon")
        if w is not None and isinstance(w, (int, float)) and math.isfinite(w):
            tip += f"; Wilcoxon signed-rank p = {w:.3f}"
        it = table_item(two(format_diff(mean, p)), tip=tip)
        if math.isfinite(mean) and math.isfinite(p) and p < 0.05 and mean != 0:
            it.setForeground(good if mean > 0 else bad)
        return it

    def _on_table_selection(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows and rows[0].row() != self.run_combo.currentIndex():
            self.run_combo.setCurrentIndex(rows[0].row())

    # --- one run ----------------------------------------------------------------------------------------
    def _on_run_changed(self, index: int) -> None:
        res = self.current()
        if res is None:
            return
        if self.table.currentRow() != index:
            self.table.blockSignals(True)
            self.table.selectRow(index)
            self.table.blockSignals(False)
        run = res.run
        deployed = run.summary.get("deployed_fold")
        self.run_info.setText(f"{run.n_folds} folds \u00b7 {len(run.class_names)} classes"
                              + (f" \u00b7 deployed model: fold {deployed}" if deployed is not None else ""))
        self.run_info.setToolTip(f"{self.run_info.text()}\n{run.path}")  # the label may be cut on a small screen
        has_model = run.model_path.is_file()
        self.model_button.setEnabled(has_model)
        self.model_button.setToolTip(str(run.model_path) if has_model else "this run has no model.safetensors")
        self.warnings_label.setText("\n".join(f"\u26a0 {w}" for w in res.warnings))
        self.warnings_label.setVisible(bool(res.warnings))
        self._show_roc(res)
        self._show_confusion()
        self.fold_combo.blockSignals(True)
        self.fold_combo.clear()
        for f in sorted(set(res.projections) | set(res.projection_errors)):
            self.fold_combo.addItem(f"fold {f}" + (" (deployed)" if f == deployed else ""), f)
        pick = self.fold_combo.findData(deployed) if deployed is not None else -1
        self.fold_combo.setCurrentIndex(max(0, pick) if self.fold_combo.count() else -1)
        self.fold_combo.blockSignals(False)
        self._show_projection()

    def _on_model_button(self) -> None:
        res = self.current()
        if res is not None and res.run.model_path.is_file():
            self.model_chosen.emit(str(res.run.model_path))

    # --- theme ----------------------------------------------------------------------------------------------
    def changeEvent(self, event: QEvent) -> None:
        if event.type() == QEvent.Type.PaletteChange and hasattr(self, "cluster_plot"):
            for plot in (self.roc_plot, self.cluster_plot):
                style_plot(plot, self.palette())
            for group in (self.arm_group, self.colour_group):  # style sheets keep the old palette until re-set
                box = group.button(0).parentWidget()
                box.setStyleSheet("")
                box.setStyleSheet(SEGMENT_STYLE)
            if self.current() is not None:
                self._show_confusion()
                self._show_projection()
        super().changeEvent(event)


__all__ = ["ResultsView", "RunResults", "cluster_label", "compute_results", "run_titles"]
