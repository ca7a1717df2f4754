"""The three panels of a run on the Results page — ROC curves, the confusion matrix and the cluster explorer —
as mixins of :class:`~dnd_gui.panels.results_view.ResultsView`: each builds its widgets on the view (tests and the
window reach them as ``view.roc_plot``, ``view.scatter`` …) and draws the view's ``current()`` run."""

from __future__ import annotations

from typing import Dict, List

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QBrush, QColor, QPalette
from PySide6.QtWidgets import QAbstractItemView, QComboBox, QHBoxLayout, QHeaderView, QLabel, QTableWidget, QWidget

from dnd_engine.dnd.results import ARM_NAMES, ARMS, ClusterProjection

from .plots import UNKNOWN_COLOUR, category_colour, themed_plot
from .results_model import RunResults, cluster_label
from .results_widgets import (ARM_COLOURS, blend, caption, esc, legend_label, panel, roc_legend_html, segmented,
                              swatch_html, table_item)

ROC_RANGE = (-0.05, 1.05)  # room for the 0.0 and 1.0 tick labels, which pyqtgraph drops when they would overhang


class RocPanel:
    """ROC curves of both arms (one per class against the rest when there are more than two classes)."""

    _roc_items: List[pg.PlotDataItem]

    def _build_roc_panel(self, parent: QWidget) -> QWidget:
        frame, lay, _ = panel(parent, "ROC curves")
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
        self.roc_legend = legend_label(2)
        lay.addWidget(self.roc_legend)
        self.roc_caption = caption(2)
        lay.addWidget(self.roc_caption)
        return frame

    # --- drawing ----------------------------------------------------------------------------------------------
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
        self.roc_legend.setText(roc_legend_html(res))
        n = sum(1 for p in res.run.predictions if p.arm == "dnd")
        which = f"positive class {names[1]}" if binary else "each class against the rest"
        missing = (1 if binary else len(names)) - len(res.roc["dnd"])
        self.roc_caption.setText(f"{which}; {n} test predictions pooled over {res.run.n_folds} folds"
                                 + (" \u2014 a class with no positive or negative test slide has no curve"
                                    if missing > 0 else ""))


class ConfusionPanel:
    """The confusion matrix of either arm, summed over the folds, shaded by the share of its row."""

    _arm = "dnd"

    def _build_confusion_panel(self, parent: QWidget) -> QWidget:
        frame, lay, head = panel(parent, "Confusion matrix")
        box, self.arm_group = segmented([("dnd", "D&&D"), ("base", "Base")], frame)
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
        self.confusion_caption = caption(3)
        lay.addWidget(self.confusion_caption)
        return frame

    # --- drawing -----------------------------------------------------------------------------------
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
                it = table_item(f"{v}\n{frac:.0%}" if total else f"{v}")
                it.setBackground(QBrush(blend(base, hi, 0.12 + 0.88 * frac if v else 0.0)))
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


class ClusterPanel:
    """The cluster explorer: a fold's training slides in 2-D, coloured by cluster or by class; a click asks the
    window (``slide_requested``) to open that slide."""

    _colour_by = "cluster"
    _brushes: Dict[str, QBrush]

    def _build_cluster_panel(self, parent: QWidget) -> QWidget:
        frame, lay, _ = panel(parent, "Cluster explorer")
        head = QHBoxLayout()
        lay.addLayout(head)
        head.addWidget(QLabel("Fold"))
        self.fold_combo = QComboBox(frame)
        self.fold_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.fold_combo.currentIndexChanged.connect(self._show_projection)
        head.addWidget(self.fold_combo)
        head.addSpacing(8)
        head.addWidget(QLabel("Colour by"))
        box, self.colour_group = segmented([("cluster", "Cluster"), ("label", "Label")], frame)
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
        self.cluster_legend = legend_label(1)
        lay.addWidget(self.cluster_legend)
        self.cluster_caption = caption(3)
        lay.addWidget(self.cluster_caption)
        return frame

    # --- drawing -----------------------------------------------------------------------------------
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
        entries = [swatch_html(colours[g], "\u25cf")
                   + f"&nbsp;{esc(name).replace(' ', '&nbsp;')}&nbsp;({int(counts[g])})"
                   for g, name in enumerate(names) if counts[g] or self._colour_by == "cluster"]
        self.cluster_legend.setText("&nbsp;&nbsp;&nbsp; ".join(entries))

    def _on_points_clicked(self, _item, points, _ev=None) -> None:
        if points is not None and len(points):
            self.slide_requested.emit(str(points[0].data()))
