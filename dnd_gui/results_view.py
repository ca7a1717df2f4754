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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QObject, QRunnable, QSize, Qt, QThreadPool, Signal, Slot
from PySide6.QtGui import QBrush, QColor, QFont, QPalette
from PySide6.QtWidgets import (QAbstractItemView, QButtonGroup, QComboBox, QFrame, QHBoxLayout, QHeaderView,
                               QLabel, QPushButton, QSizePolicy, QSplitter, QStackedWidget, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from dnd_engine.dnd.cohort_checks import run_warnings
from dnd_engine.text import one_line
from dnd_engine.dnd.results import (ARM_NAMES, ARMS, ClusterProjection, ComparisonRow, DnDRun, RocCurve,
                                    cluster_projection, comparison_rows, confusion, format_diff, format_mean_std,
                                    load_run, roc_curves)
from dnd_engine.dnd.stats import PAIRED_TEST
from dnd_engine.errors import DnDError

from .plots import UNKNOWN_COLOUR, category_colour, style_plot, themed_plot

EMPTY_MESSAGE = ("No finished D&D run yet.\n\nTrain base vs D&D with  dnd train --preset paper  (or compare "
                 "several methods with  dnd bench); each finished run appears here.")
ARM_COLOURS = {"base": "#E69F00", "dnd": "#0072B2"}
ROC_RANGE = (-0.05, 1.05)  # room for the 0.0 and 1.0 tick labels, which pyqtgraph drops when they would overhang
SEGMENT_STYLE = ("QPushButton { padding: 3px 12px; }"
                 "QPushButton:checked { background-color: palette(highlight); color: palette(highlighted-text);"
                 " border: 1px solid palette(highlight); border-radius: 3px; }")
WIDE_LAYOUT = 980   # px of page width from which the three panels sit side by side
NARROW_MIN_WIDTH = 560
TABLE_COLUMNS = ["Run", "Method", "Preset", "Folds", "ACC base", "ACC D&D", "\u0394ACC (p)", "AUC base", "AUC D&D",
                 "\u0394AUC (p)"]


@dataclass
class RunResults:
    """Everything the page shows about one run, computed off the GUI thread."""

    run: DnDRun
    row: ComparisonRow
    roc: Dict[str, List[RocCurve]]
    confusion: Dict[str, np.ndarray]
    projections: Dict[int, ClusterProjection] = field(default_factory=dict)
    projection_errors: Dict[int, str] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)   # the engine's cohort checks (run_warnings)


def compute_results(paths: Sequence[str | Path]) -> tuple[List[RunResults], List[str]]:
    """(results of the finished runs, one message per folder that is not one); never raises for a bad folder."""
    results, problems = [], []
    for path in paths:
        try:
            run = load_run(path)
            res = RunResults(run, comparison_rows([run])[0], {a: roc_curves(run, a) for a in ARMS},
                             {a: confusion(run, a) for a in ARMS})
        except DnDError as e:
            problems.append(one_line(e))
            continue
        except Exception as e:  # a damaged file must not take the page down: say which folder and why
            problems.append(f"{Path(path).name}: unexpected error ({one_line(e, typed=True)})")
            continue
        res.warnings = run_warnings(run.path)
        for fold in run.cluster_folds():
            try:
                res.projections[fold] = cluster_projection(run, fold)
            except Exception as e:
                res.projection_errors[fold] = one_line(e)
        results.append(res)
    return results, problems


class _Relay(QObject):
    """Carries a worker's result to the GUI thread (queued); outlives nothing but the view that owns it."""

    done = Signal(int, object, object)


class _LoadTask(QRunnable):
    def __init__(self, relay: _Relay, request_id: int, paths: List[str]):
        super().__init__()
        self._relay, self._request_id, self._paths = relay, request_id, paths

    def run(self) -> None:
        results, problems = compute_results(self._paths)
        try:
            self._relay.done.emit(self._request_id, results, problems)
        except RuntimeError:  # the view was deleted while this ran
            pass


def _item(text: str, align=Qt.AlignmentFlag.AlignCenter, tip: str = "") -> QTableWidgetItem:
    it = QTableWidgetItem(text)
    it.setTextAlignment(align | Qt.AlignmentFlag.AlignVCenter)
    it.setFlags(Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable)
    if tip:
        it.setToolTip(tip)
    return it


def _segmented(options: Sequence[tuple[str, str]], parent: QWidget) -> tuple[QWidget, QButtonGroup]:
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


def _header(text: str) -> QLabel:
    label = QLabel(text)
    font = label.font()
    font.setBold(True)
    label.setFont(font)
    return label


class ResultsView(QWidget):
    slide_requested = Signal(str)  # slide id of the clicked point in the cluster explorer
    model_chosen = Signal(str)     # path of the run's deployable model.safetensors
    loaded = Signal()              # the runs of the latest set_runs() are shown (or the empty state is)

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.results: List[RunResults] = []
        self.problems: List[str] = []
        self._request = 0
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._relay = _Relay(self)
        self._relay.done.connect(self._on_loaded, Qt.ConnectionType.QueuedConnection)
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
        top.addWidget(_header("Base vs D&D (test slides, mean \u00b1 std over folds)"))
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
        bar.addWidget(_header("Run"))
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

    def _panel(self, parent: QWidget, title: str) -> tuple[QFrame, QVBoxLayout, QHBoxLayout]:
        frame = QFrame(parent)
        frame.setFrameShape(QFrame.Shape.StyledPanel)
        lay = QVBoxLayout(frame)
        lay.setContentsMargins(6, 6, 6, 6)
        lay.setSpacing(4)
        head = QHBoxLayout()
        head.addWidget(_header(title))
        head.addStretch(1)
        lay.addLayout(head)
        return frame, lay, head

    def _build_roc_panel(self, parent: QWidget) -> QWidget:
        frame, lay, _ = self._panel(parent, "ROC curves")
        self.roc_plot = themed_plot(self.palette(), left="True positive rate", bottom="False positive rate")
        item = self.roc_plot.getPlotItem()
        item.setMouseEnabled(x=False, y=False)
        item.setRange(xRange=ROC_RANGE, yRange=ROC_RANGE, padding=0)
        ticks = [[(v / 5, f"{v / 5:.1f}") for v in range(6)]]
        for name in ("bottom", "left"):
            item.getAxis(name).setTicks(ticks)
        # a fixed grid drawn once as one path: pyqtgraph's own grid is replayed with the axes on every repaint,
        # which cost about a quarter of a run switch
        steps = [v / 5 for v in range(6)]
        gx = [x for v in steps for x in (v, v)] + [x for _ in steps for x in (0.0, 1.0)]
        gy = [y for _ in steps for y in (0.0, 1.0)] + [y for v in steps for y in (v, v)]
        self._roc_grid = pg.PlotDataItem(gx, gy, connect="pairs", pen=pg.mkPen(UNKNOWN_COLOUR, width=1),
                                         antialias=False)
        self._roc_grid.setOpacity(0.3)
        item.addItem(self._roc_grid)
        self._diagonal = pg.PlotDataItem([0, 1], [0, 1], pen=pg.mkPen(UNKNOWN_COLOUR, width=1,
                                                                        style=Qt.PenStyle.DotLine))
        item.addItem(self._diagonal)
        self._roc_items: List[pg.PlotDataItem] = []  # reused from run to run: re-creating items costs
        self.roc_plot.setMinimumSize(260, 240)
        lay.addWidget(self.roc_plot, 1)
        self.roc_legend = _legend_label(2)
        lay.addWidget(self.roc_legend)
        self.roc_caption = _caption(2)
        lay.addWidget(self.roc_caption)
        return frame

    def _build_confusion_panel(self, parent: QWidget) -> QWidget:
        frame, lay, head = self._panel(parent, "Confusion matrix")
        box, self.arm_group = _segmented([("dnd", "D&&D"), ("base", "Base")], frame)
        self.arm_group.idToggled.connect(self._on_arm_toggled)
        head.addWidget(box)
        self.confusion_table = QTableWidget(0, 0, frame)
        self.confusion_table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.confusion_table.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.confusion_table.setFocusPolicy(Qt.FocusPolicy.NoFocus)
        self.confusion_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.confusion_table.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.confusion_table.setMinimumSize(200, 160)
        axes = QLabel("rows: true class \u00b7 columns: predicted class")
        axes.setEnabled(False)
        lay.addWidget(axes)
        lay.addWidget(self.confusion_table, 1)
        self.confusion_caption = _caption(3)
        lay.addWidget(self.confusion_caption)
        return frame

    def _build_cluster_panel(self, parent: QWidget) -> QWidget:
        frame, lay, _ = self._panel(parent, "Cluster explorer")
        head = QHBoxLayout()
        lay.addLayout(head)
        head.addWidget(QLabel("Fold"))
        self.fold_combo = QComboBox(frame)
        self.fold_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.fold_combo.currentIndexChanged.connect(self._show_projection)
        head.addWidget(self.fold_combo)
        head.addSpacing(8)
        head.addWidget(QLabel("Colour by"))
        box, self.colour_group = _segmented([("cluster", "Cluster"), ("label", "Label")], frame)
        self.colour_group.idToggled.connect(self._on_colour_toggled)
        head.addWidget(box)
        head.addStretch(1)
        self.cluster_plot = themed_plot(self.palette(), left="PC 2", bottom="PC 1")
        item = self.cluster_plot.getPlotItem()
        for name in ("left", "bottom"):  # the engine scales PCs to s.d. units: no "(x0.001)" prefix on the axes
            item.getAxis(name).enableAutoSIPrefix(False)
        self.scatter = pg.ScatterPlotItem(size=9, hoverable=True, hoverSize=13,
                                          tip=lambda x, y, data: str(data))
        self.scatter.sigClicked.connect(self._on_points_clicked)
        item.addItem(self.scatter)
        self.cluster_plot.setMinimumSize(300, 240)
        lay.addWidget(self.cluster_plot, 1)
        self.cluster_legend = _legend_label(1)
        lay.addWidget(self.cluster_legend)
        self.cluster_caption = _caption(3)
        lay.addWidget(self.cluster_caption)
        return frame

    # --- public ---------------------------------------------------------------------------------------------
    def set_runs(self, paths: Sequence[str | Path]) -> None:
        """Show these run folders (one table row each); reading happens on a worker, ``loaded`` says when done."""
        self._request += 1
        paths = [str(p) for p in paths]
        if not paths:
            self._apply(self._request, [], [])
            return
        if not self.results:
            self.empty_label.setText("Loading results\u2026")
            self.stack.setCurrentIndex(0)
        self._pool.start(_LoadTask(self._relay, self._request, paths))

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
        self._request += 1
        self._pool.clear()
        self._pool.waitForDone()

    # --- loading --------------------------------------------------------------------------------------------
    @Slot(int, object, object)
    def _on_loaded(self, request_id: int, results, problems) -> None:
        if request_id == self._request:
            self._apply(request_id, results, problems)

    def _apply(self, request_id: int, results: List[RunResults], problems: List[str]) -> None:
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
        two = (lambda text: text) if self._wide else _two_lines
        t.blockSignals(True)
        t.setRowCount(len(self.results))
        good, bad = QColor("#2e9d57"), QColor("#d9483b")
        bold = QFont()
        bold.setBold(True)
        for i, res in enumerate(self.results):
            row = res.row
            tip = str(row.path)
            cells = [_item(row.run or res.run.name, Qt.AlignmentFlag.AlignLeft, tip),
                     _item(row.method, Qt.AlignmentFlag.AlignLeft, tip), _item(row.preset, tip=tip),
                     _item(str(row.n_folds), tip=tip),
                     _item(two(format_mean_std(*row.base_acc))), _item(two(format_mean_std(*row.dnd_acc))),
                     self._diff_item(row.diff_acc, res.run.summary.get("diff_test_acc"), good, bad, two),
                     _item(two(format_mean_std(*row.base_auc))), _item(two(format_mean_std(*row.dnd_auc))),
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
        it = _item(two(format_diff(mean, p)), tip=tip)
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

    # --- ROC ----------------------------------------------------------------------------------------------
    def _roc_item(self, i: int) -> pg.PlotDataItem:
        while len(self._roc_items) <= i:
            item = pg.PlotDataItem(antialias=True)
            self.roc_plot.getPlotItem().addItem(item)
            self._roc_items.append(item)
        return self._roc_items[i]

    def roc_items(self) -> List[pg.PlotDataItem]:
        """The curves on show (hidden spares excluded)."""
        return [it for it in self._roc_items if it.isVisible()]

    def _show_roc(self, res: RunResults) -> None:
        names = res.run.class_names
        binary = len(names) == 2
        k = 0
        for arm in ARMS:
            for curve in res.roc[arm]:
                colour = ARM_COLOURS[arm] if binary else category_colour(names.index(curve.class_name))
                style = Qt.PenStyle.DashLine if arm == "base" else Qt.PenStyle.SolidLine
                name = f"{ARM_NAMES[arm]}" + ("" if binary else f" {curve.class_name}") + f" (AUC {curve.auc:.3f})"
                item = self._roc_item(k)
                item.setData(curve.fpr, curve.tpr, pen=pg.mkPen(colour, width=2, style=style), name=name)
                item.show()
                k += 1
        for item in self._roc_items[k:]:
            item.setData([], [], name=None)
            item.hide()
        self.roc_legend.setText(_roc_legend_html(res))
        n = sum(1 for p in res.run.predictions if p.arm == "dnd")
        which = f"positive class {names[1]}" if binary else "each class against the rest"
        missing = (1 if binary else len(names)) - len(res.roc["dnd"])
        self.roc_caption.setText(f"{which}; {n} test predictions pooled over {res.run.n_folds} folds"
                                 + (" \u2014 a class with no positive or negative test slide has no curve"
                                    if missing > 0 else ""))

    # --- confusion matrix -----------------------------------------------------------------------------------
    def _on_arm_toggled(self, button_id: int, checked: bool) -> None:
        if checked:
            self._arm = self.arm_group.button(button_id).objectName()
            self._show_confusion()

    def _show_confusion(self) -> None:
        res = self.current()
        t = self.confusion_table
        if res is None:
            t.setRowCount(0)
            t.setColumnCount(0)
            return
        m = res.confusion[self._arm]
        names = res.run.class_names
        t.setRowCount(len(names))
        t.setColumnCount(len(names))
        t.setHorizontalHeaderLabels(names)
        t.setVerticalHeaderLabels(names)
        base = self.palette().color(QPalette.ColorRole.Base)
        hi = QColor(ARM_COLOURS[self._arm])
        text_dark = self.palette().color(QPalette.ColorRole.Text)
        for i in range(len(names)):
            total = int(m[i].sum())
            for j in range(len(names)):
                v = int(m[i, j])
                frac = v / total if total else 0.0
                it = _item(f"{v}\n{frac:.0%}" if total else f"{v}")
                it.setBackground(QBrush(_blend(base, hi, 0.12 + 0.88 * frac if v else 0.0)))
                it.setForeground(QColor("#ffffff") if frac > 0.5 else text_dark)
                it.setToolTip(f"true {names[i]}, predicted {names[j]}: {v} of {total} ({frac:.1%} of the row)")
                if i == j:
                    f = it.font()
                    f.setBold(True)
                    it.setFont(f)
                t.setItem(i, j, it)
        correct = int(np.trace(m))
        total = int(m.sum())
        self.confusion_caption.setText(f"{ARM_NAMES[self._arm]}: {correct} of {total} test predictions correct "
                                       f"({correct / total:.1%}), summed over the folds; shading = share of the row"
                                       if total else "no test predictions")

    # --- cluster explorer -----------------------------------------------------------------------------------
    def _on_colour_toggled(self, button_id: int, checked: bool) -> None:
        if checked:
            self._colour_by = self.colour_group.button(button_id).objectName()
            self._recolour()

    def _brush(self, colour: QColor | str) -> QBrush:
        key = QColor(colour).name()
        if key not in self._brushes:
            self._brushes[key] = pg.mkBrush(key)
        return self._brushes[key]

    def _groups(self, proj: ClusterProjection, res: RunResults) -> tuple[List[int], List[str], List[QColor]]:
        """(group index per point, group names, group colours) for the current colouring."""
        if self._colour_by == "cluster":
            names = [cluster_label(c) for c in range(proj.n_clusters)]
            return [int(c) for c in proj.clusters], names, [category_colour(c) for c in range(proj.n_clusters)]
        classes = list(res.run.class_names)
        extra = sorted({lab for lab in proj.labels if lab not in classes})
        names = classes + extra
        colours = [category_colour(i) for i in range(len(classes))] + [QColor(UNKNOWN_COLOUR)] * len(extra)
        return [names.index(lab) for lab in proj.labels], names, colours

    def _show_projection(self, *_args) -> None:
        res, proj = self.current(), self.current_projection()
        self.scatter.clear()
        self.cluster_legend.setText("")
        if res is None or proj is None:
            fold = self.fold_combo.currentData()
            err = res.projection_errors.get(fold) if res is not None and fold is not None else None
            self.cluster_caption.setText(err or "no clustering saved for this run")
            return
        groups, _, colours = self._groups(proj, res)
        self.scatter.setData(x=proj.xy[:, 0], y=proj.xy[:, 1], data=np.array(proj.slide_ids, dtype=object),
                             brush=[self._brush(colours[g]) for g in groups],
                             pen=pg.mkPen(self.palette().color(QPalette.ColorRole.Base), width=0.8))
        self._fill_cluster_legend(proj, res)
        self.cluster_plot.getPlotItem().autoRange(padding=0.08)
        what = "slide embeddings" if proj.input == "embedding" else proj.input
        sizes = np.bincount(proj.clusters, minlength=proj.n_clusters).tolist()
        self.cluster_caption.setText(
            f"fold {proj.fold}: {len(proj.slide_ids)} training slides in {proj.n_clusters} clusters "
            f"(sizes {', '.join(map(str, sizes))}; cluster k trains expert k); PCA of the base model's {what} — "
            f"PC1 {proj.explained[0]:.0%}, PC2 {proj.explained[1]:.0%} of the variance, axes in standard deviations "
            f"of PC1. Hover for the slide id, click to open the slide.")

    def _recolour(self) -> None:
        res, proj = self.current(), self.current_projection()
        if res is None or proj is None:
            return
        groups, _, colours = self._groups(proj, res)
        self.scatter.setBrush([self._brush(colours[g]) for g in groups])
        self._fill_cluster_legend(proj, res)

    def _fill_cluster_legend(self, proj: ClusterProjection, res: RunResults) -> None:
        groups, names, colours = self._groups(proj, res)
        counts = np.bincount(np.asarray(groups, dtype=np.int64), minlength=len(names))
        entries = [_swatch(colours[g], "\u25cf") + f"&nbsp;{_esc(name).replace(' ', '&nbsp;')}&nbsp;({int(counts[g])})"
                   for g, name in enumerate(names) if counts[g] or self._colour_by == "cluster"]
        self.cluster_legend.setText("&nbsp;&nbsp;&nbsp; ".join(entries))

    def _on_points_clicked(self, _item, points, _ev=None) -> None:
        if points is not None and len(points):
            self.slide_requested.emit(str(points[0].data()))

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


def _two_lines(text: str) -> str:
    """``0.812 ± 0.041`` → ``0.812`` over ``± 0.041``; ``+0.012 (p = 0.430)`` → ``+0.012`` over ``p=0.430``."""
    text = text.replace(" \u00b1 ", "\n\u00b1 ")
    if " (p" in text and text.endswith(")"):
        mean, p = text[:-1].split(" (", 1)
        text = mean + "\n" + p.replace(" = ", "=").replace(" < ", "<")
    return text


def cluster_label(index: int) -> str:
    """Cluster ``index`` (0-based in the files) as a user reads it: from 1, as its expert ("Expert 1")."""
    return f"cluster {int(index) + 1}"


def run_titles(runs: Sequence[DnDRun]) -> List[str]:
    """The run selector's entries: run name · method · preset; a name shared by two runs gets its folder."""
    titles = [f"{r.name} \u00b7 {r.method} \u00b7 {r.preset}" for r in runs]
    return [f"{t} ({r.path.parent})" if titles.count(t) > 1 else t for t, r in zip(titles, runs)]


def _fixed_lines(label: QLabel, lines: int) -> QLabel:
    """Room for ``lines`` lines whatever the text: a label that grows or shrinks with its text would re-lay the
    plots out (a costly pyqtgraph resize) every time the run or fold changes."""
    label.setWordWrap(True)
    label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)
    label.setFixedHeight(label.fontMetrics().lineSpacing() * lines + 2)
    label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
    return label


def _caption(lines: int) -> QLabel:
    label = QLabel("")
    label.setEnabled(False)
    return _fixed_lines(label, lines)


def _legend_label(lines: int) -> QLabel:
    label = QLabel("")
    label.setTextFormat(Qt.TextFormat.RichText)
    return _fixed_lines(label, lines)


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _swatch(colour: QColor | str, glyph: str) -> str:
    return f'<span style="color:{QColor(colour).name()}; font-weight:bold">{glyph}</span>'


def _roc_legend_html(res: RunResults) -> str:
    """A key under the plot (never over the curves): line style per arm, colour per class, AUCs."""
    dashed, solid = "- - -", "\u2014\u2014"
    names = res.run.class_names
    if len(names) == 2:
        return "&nbsp;&nbsp;&nbsp; ".join(
            _swatch(ARM_COLOURS[arm], dashed if arm == "base" else solid) + f"&nbsp;{_esc(ARM_NAMES[arm])}&nbsp;"
            f"(AUC&nbsp;{res.roc[arm][0].auc:.3f})" for arm in ARMS if res.roc[arm])
    auc = {arm: {c.class_name: c.auc for c in res.roc[arm]} for arm in ARMS}
    entries = [f"{dashed}&nbsp;base&nbsp;&nbsp;{solid}&nbsp;D&amp;D"]
    for i, c in enumerate(names):
        if c in auc["dnd"] or c in auc["base"]:
            b, d = auc["base"].get(c, float("nan")), auc["dnd"].get(c, float("nan"))
            entries.append(_swatch(category_colour(i), "\u25a0")
                           + f"&nbsp;{_esc(c)}&nbsp;AUC&nbsp;{b:.3f}&nbsp;\u2192&nbsp;{d:.3f}")
    return "&nbsp;&nbsp;&nbsp; ".join(entries)


def _blend(a: QColor, b: QColor, t: float) -> QColor:
    t = min(1.0, max(0.0, t))
    return QColor(round(a.red() + (b.red() - a.red()) * t), round(a.green() + (b.green() - a.green()) * t),
                  round(a.blue() + (b.blue() - a.blue()) * t))


__all__ = ["ResultsView", "RunResults", "cluster_label", "compute_results", "run_titles"]
