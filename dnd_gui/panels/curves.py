"""Live training curves of a D&D run: training loss, validation loss and validation AUC per epoch, one line per
stage (base model, each expert, the distilled student), one fold at a time.

Records come from the engine's ``on_epoch`` (``run_dnd_cv`` adds ``fold`` and ``stage`` to the trainer's epoch
record), usually through ``Job.epoch``; :func:`read_history` reads the same records back from a run folder's
``metrics.jsonl`` files, so a reopened project shows finished and interrupted runs.

Kept cheap because epochs can come by the hundred a second (tiny cohorts) and the window must not stutter:
adding a record only stores it; a timer redraws at most ten times a second, and only the stages that changed;
new stages get their plot items one per tick; the axis ranges are set here in steps (not by pyqtgraph's
auto-range, which rebuilds every axis on every epoch and paints twice), and the axes are cached between steps;
lines are one pixel wide (wider pens go through Qt's much slower stroker).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QEvent, QSize, Qt, QTimer, Signal, Slot
from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import (QCheckBox, QComboBox, QGraphicsItem, QLabel, QSizePolicy, QToolButton, QVBoxLayout,
                               QWidget, QWidgetItem)
from superqt import QFlowLayout

from dnd_engine.dnd.history import read_history

from .curve_series import (BASE_COLOUR, EXPERT_COLOURS, METRICS, OTHER_COLOUR, STUDENT_COLOUR, Series,  # noqa: F401
                           nice_ceiling, stage_colour, stage_key, stage_label)
from .plots import line_swatch

REDRAW_MS = 100   # at most 10 redraws a second, however fast the epochs come
NEW_STAGES_PER_REDRAW = 1
STRUCTURE_PAUSE_MS = 15   # between making a stage's items and filling them: room for the event loop


def _insert_widget(flow: QFlowLayout, index: int, widget: QWidget) -> None:
    """``widget`` at ``index`` of ``flow`` (superqt's flow layout only appends): the legend keeps its stage order."""
    items = [flow.takeAt(0) for _ in range(flow.count())]
    flow.addChildWidget(widget)
    items.insert(max(0, min(index, len(items))), QWidgetItem(widget))
    for item in items:
        flow.addItem(item)
    flow.invalidate()


class TrainingCurves(QWidget):
    """Training loss, validation loss and validation AUC per epoch, for every stage of one fold."""

    fold_changed = Signal(object)   # the fold now shown (int), or None before any record

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self._data: Dict[int, Dict[str, Series]] = {}
        self._latest_fold: Optional[int] = None
        self._latest: Optional[Tuple[int, str, dict]] = None
        self._fold_choice: Optional[int] = None      # None: follow the latest fold
        self._drawn_fold: Optional[int] = None
        self._dirty: set = set()                     # stages of the shown fold with new points
        self._full = True                            # everything must be redrawn (fold switch, clear, load)
        self._structure = True                       # new folds or stages: the selector and legend change
        self._hidden: set = set()
        self._curves: Dict[str, Dict[str, pg.PlotCurveItem]] = {}
        self._boxes: Dict[str, QCheckBox] = {}
        self._vertical: Optional[bool] = None
        self.redraws = 0
        self._auto_fit = True    # the plots follow the data until the user pans or zooms
        self._refit = False

        self.fold_box = QComboBox()
        self.fold_box.setToolTip("Which fold's curves to show; \u201clatest\u201d follows the fold in training")
        self.fold_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.fold_box.addItem("Latest fold", None)
        self.fold_box.activated.connect(lambda i: self.set_fold(self.fold_box.itemData(i)))
        self.status = QLabel("No training epochs yet.")
        self.status.setEnabled(False)   # the muted colour
        self.status.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)  # never widens us
        self.fit_button = QToolButton()
        self.fit_button.setText("Fit")
        self.fit_button.setToolTip("Fit the plots to the curves and follow new epochs again "
                                   "(after panning or zooming with the mouse)")
        self.fit_button.clicked.connect(self.fit)
        # selector, one check box per stage (the legend), Fit: wraps in a narrow dock instead of widening it
        self._bar = QFlowLayout()
        self._bar.setHorizontalSpacing(10)
        self._bar.setVerticalSpacing(4)
        self._bar.setContentsMargins(0, 0, 0, 0)
        fold_label = QLabel("Fold")
        fold_label.setAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)
        self._bar.addWidget(self._on_line(fold_label))
        self._bar.addWidget(self.fold_box)
        self._bar.addWidget(self.fit_button)
        self._legend_at = 2   # where the first stage's box goes

        self.graphics = pg.GraphicsLayoutWidget()
        self.graphics.setMinimumSize(QSize(320, 200))
        self.plots: Dict[str, pg.PlotItem] = {}
        for metric, title in METRICS:
            plot = pg.PlotItem()
            plot.setTitle(title, size="10pt")
            plot.showGrid(x=True, y=True, alpha=0.15)
            for name in ("left", "bottom"):   # grid lines at every tick level cost more to paint than the curves
                plot.getAxis(name).setStyle(maxTickLevel=1)
            plot.setLabel("bottom", "epoch")
            plot.setMenuEnabled(False)
            plot.hideButtons()
            # Ranges are set here, not by pyqtgraph's auto-range: that one moves every axis on every new
            # epoch (each move rebuilds the axis: most of a redraw's cost) and is computed during the paint,
            # which then paints twice. Here they move in steps, and the axes are cached between moves.
            plot.getViewBox().disableAutoRange()
            plot.getViewBox().sigRangeChangedManually.connect(self._user_moved)
            for name in ("left", "bottom"):
                plot.getAxis(name).setCacheMode(QGraphicsItem.CacheMode.DeviceCoordinateCache)
            plot.getAxis("left").setWidth(46)   # fixed: a wider tick label would relayout and paint again
            plot.getViewBox().setLimits(xMin=0)
            if metric == "val_auc":
                plot.getViewBox().setLimits(yMin=-0.02, yMax=1.02)
            if self.plots:
                plot.setXLink(next(iter(self.plots.values())))
            self.plots[metric] = plot
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.setSpacing(4)
        layout.addLayout(self._bar)
        layout.addWidget(self.graphics, 1)
        layout.addWidget(self.status)
        self._arrange()
        self._apply_palette()

        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(REDRAW_MS)
        self._timer.timeout.connect(self._redraw)

    # --- data ------------------------------------------------------------------------------------------------
    @Slot(object)
    def add_record(self, rec: dict) -> None:
        """Store one epoch record; the picture follows within ``REDRAW_MS``."""
        epoch = rec.get("epoch")
        if epoch is None:
            return
        try:
            epoch = float(epoch)
            fold = int(rec.get("fold") or 0)
        except (TypeError, ValueError):
            return
        stage = str(rec.get("stage") or "model")
        stages = self._data.get(fold)
        if stages is None:
            stages = self._data[fold] = {}
            self._structure = True
        series = stages.get(stage)
        if series is None:
            series = stages[stage] = Series()
            self._structure = True
        series.add(epoch, rec)
        self._latest_fold = fold
        self._latest = (fold, stage, rec)
        if fold == self._drawn_fold:
            self._dirty.add(stage)
        elif fold == self.shown_fold():
            self._full = True
        self._schedule()

    def add_records(self, records: Iterable[dict]) -> None:
        for rec in records:
            self.add_record(rec)

    def clear(self) -> None:
        """Forget every record (a new run follows its latest fold again); stage visibility is kept."""
        self._data.clear()
        self._latest_fold = self._latest = None
        self._fold_choice = None
        self.fold_box.setCurrentIndex(0)
        self._dirty.clear()
        self._full = self._structure = True
        self._schedule()

    def load_history(self, run_dir: str | Path) -> int:
        """Show a run's curves from its files (replacing what is shown); returns the number of epochs read."""
        records = read_history(run_dir)
        self.clear()
        self.add_records(records)
        return len(records)

    # --- what is shown ---------------------------------------------------------------------------------------
    def folds(self) -> List[int]:
        return sorted(self._data)

    def stages(self, fold: Optional[int] = None) -> List[str]:
        """Stages of ``fold`` (default: the fold shown) in pipeline order."""
        fold = self.shown_fold() if fold is None else fold
        return sorted(self._data.get(fold, {}), key=stage_key)

    def shown_fold(self) -> Optional[int]:
        return self._fold_choice if self._fold_choice is not None else self._latest_fold

    def set_fold(self, fold: Optional[int]) -> None:
        """Show ``fold``; None follows the latest fold."""
        self._fold_choice = None if fold is None else int(fold)
        i = self.fold_box.findData(self._fold_choice) if self._fold_choice is not None else 0
        if i >= 0 and self.fold_box.currentIndex() != i:
            self.fold_box.setCurrentIndex(i)
        self._full = True
        self._schedule()

    def set_stage_visible(self, stage: str, visible: bool) -> None:
        """Hide or show a stage in every fold (the choice outlives fold switches)."""
        if visible:
            self._hidden.discard(stage)
        else:
            self._hidden.add(stage)
        for item in self._curves.get(stage, {}).values():
            item.setVisible(visible)
        self._refit = True
        self._schedule()
        box = self._boxes.get(stage)
        if box is not None and box.isChecked() != visible:
            box.setChecked(visible)

    def stage_visible(self, stage: str) -> bool:
        return stage not in self._hidden

    def curve(self, stage: str, metric: str) -> Optional[pg.PlotCurveItem]:
        """The plot item drawing ``metric`` of ``stage`` (None before that stage was drawn)."""
        return self._curves.get(stage, {}).get(metric)

    def flush(self) -> None:
        """Redraw now instead of at the next tick (tests, screenshots)."""
        while True:   # the passes that would be spread over ticks (new stages, then their data) run now
            self._timer.stop()
            self._redraw()
            if not self._timer.isActive():
                break

    # --- drawing ---------------------------------------------------------------------------------------------
    def _schedule(self) -> None:
        if not self._timer.isActive():
            self._timer.start(REDRAW_MS)

    def _redraw(self) -> None:
        self.redraws += 1
        fold = self.shown_fold()
        if fold != self._drawn_fold:
            self._full = True
        if self._structure:
            created = self._update_structure()
            if created:
                # the new items are painted empty now and filled a moment later: setting up a stage and
                # refitting the axes each cost a good share of a frame, and together they would be one stall
                self._dirty |= created
                self._timer.start(STRUCTURE_PAUSE_MS)
                return
        series = self._data.get(fold, {}) if fold is not None else {}
        todo = set(self._curves) if self._full else self._dirty
        waiting = set()
        for stage in todo:
            items = self._curves.get(stage)
            if items is None:
                waiting.add(stage)   # its plot items come at a later tick
                continue
            s = series.get(stage)
            for metric, item in items.items():
                if s is None or not s.x[metric]:
                    item.setData([], [])
                else:
                    item.setData(np.asarray(s.x[metric], dtype=float), np.asarray(s.y[metric], dtype=float))
        changed = fold != self._drawn_fold
        self._drawn_fold = fold
        self._dirty = waiting
        self._full = False
        if self._auto_fit and (todo or self._refit):
            self._fit_ranges()
        self._refit = False
        self._update_status()
        self.graphics.scene().prepareForPaint()   # anything left to settle settles before the one paint
        if self._structure:
            self._schedule()
        if changed:
            self.fold_changed.emit(fold)

    def fit(self) -> None:
        """Fit the plots to the visible curves and follow new epochs again."""
        self._auto_fit = True
        self._refit = True
        self._schedule()

    def _user_moved(self, *_) -> None:
        self._auto_fit = False

    def _fit_ranges(self) -> None:
        fold = self.shown_fold()
        series = self._data.get(fold, {}) if fold is not None else {}
        shown = [s for stage, s in series.items() if stage not in self._hidden and stage in self._curves]
        last = max((s.x[m][-1] for s in shown for m, _ in METRICS if s.x[m]), default=None)
        first_plot = next(iter(self.plots.values()))
        if last is not None:
            hi = nice_ceiling(last)
            (x0, x1), _ = first_plot.getViewBox().viewRange()
            if (x0, x1) != (0.0, hi):
                first_plot.setXRange(0, hi, padding=0)   # the other plots are linked
        for metric, _ in METRICS:
            ys = [s.y[metric] for s in shown if s.y[metric]]
            if not ys:
                continue
            lo, hi = min(min(y) for y in ys), max(max(y) for y in ys)
            vb = self.plots[metric].getViewBox()
            _, (y0, y1) = vb.viewRange()
            span = max(hi - lo, 1e-3 * max(1.0, abs(hi)))
            # keep the range while the data fills most of it: a new minimum every epoch must not move the axis
            # every epoch; when it no longer fits, refit with room to spare (10 % below, 5 % above)
            if y0 <= lo and hi <= y1 and (hi - lo) >= 0.6 * (y1 - y0):
                continue
            new_lo, new_hi = lo - 0.10 * span, hi + 0.05 * span
            if metric == "val_auc":
                new_lo, new_hi = max(-0.02, new_lo), min(1.02, new_hi)
            vb.setYRange(new_lo, new_hi, padding=0)

    def _update_structure(self) -> set:
        """Bring the fold selector and the stages' plot items up to date; returns the stages created."""
        self._structure = False
        # the fold selector: "Latest fold (k)" then every fold seen
        folds = self.folds()
        have = [self.fold_box.itemData(i) for i in range(1, self.fold_box.count())]
        if have != folds:
            self.fold_box.blockSignals(True)
            while self.fold_box.count() > 1:
                self.fold_box.removeItem(1)
            for f in folds:
                self.fold_box.addItem(f"Fold {f}", f)
            i = self.fold_box.findData(self._fold_choice) if self._fold_choice is not None else 0
            self.fold_box.setCurrentIndex(max(0, i))
            self.fold_box.blockSignals(False)
        # a curve trio and a legend entry per stage seen in any fold, in pipeline order; a stage costs a few
        # ms to set up, so a burst of new ones (a history read, a tiny fast run) is spread over several ticks
        stages = sorted({s for per in self._data.values() for s in per}, key=stage_key)
        if list(self._curves) == stages:
            return set()
        for stage in [s for s in self._curves if s not in stages]:
            self._remove_stage(stage)
        missing = [s for s in stages if s not in self._curves]
        created = set(missing[:NEW_STAGES_PER_REDRAW])
        for stage in missing[:NEW_STAGES_PER_REDRAW]:
            self._add_stage(stage)
        self._structure = len(missing) > NEW_STAGES_PER_REDRAW
        ordered = [s for s in stages if s in self._curves]
        for i, stage in enumerate(ordered):   # re-inserted in order: experts stay between base and student
            self._bar.removeWidget(self._boxes[stage])
            _insert_widget(self._bar, self._legend_at + i, self._boxes[stage])
        self._curves = {s: self._curves[s] for s in ordered}
        return created

    def _add_stage(self, stage: str) -> None:
        colour = stage_colour(stage)
        items = {}
        for metric, _ in METRICS:
            # one-pixel pens on purpose: wider ones go through Qt's stroker and make a 300-epoch fold cost
            # several times as much to paint; the student stands out by colour and by being drawn on top
            # the bare curve item: a PlotDataItem (curve + symbols + transforms) costs five times as much to
            # create, which a burst of new stages would pay at once
            item = pg.PlotCurveItem(pen=pg.mkPen(colour, width=1), antialias=True, name=stage_label(stage),
                                    skipFiniteCheck=True)
            item.setZValue(2 if stage == "student" else 1 if stage == "base" else 0)
            item.setVisible(stage not in self._hidden)
            self.plots[metric].addItem(item)
            items[metric] = item
        self._curves[stage] = items
        box = self._on_line(QCheckBox(stage_label(stage)))
        box.setIcon(line_swatch(colour))
        box.setChecked(stage not in self._hidden)
        box.setToolTip(f"Show or hide the {stage_label(stage)} curves")
        box.toggled.connect(lambda on, s=stage: self.set_stage_visible(s, on))
        self._boxes[stage] = box
        _insert_widget(self._bar, self._legend_at, box)   # put in its place by _update_structure

    def _on_line(self, widget: QWidget) -> QWidget:
        """As tall as the fold selector, so its text sits on the selector's line (the flow layout top-aligns)."""
        widget.setMinimumHeight(self.fold_box.sizeHint().height())
        return widget

    def _remove_stage(self, stage: str) -> None:
        for metric, item in self._curves.pop(stage).items():
            self.plots[metric].removeItem(item)
        box = self._boxes.pop(stage)
        self._bar.removeWidget(box)
        box.deleteLater()

    def _update_status(self) -> None:
        shown = self.shown_fold()
        self.fold_box.setItemText(0, "Latest fold" if self._latest_fold is None
                                  else f"Latest fold ({self._latest_fold})")
        if self._latest is None:
            self.status.setText("No training epochs yet.")
            return
        fold, stage, rec = self._latest
        parts = [f"fold {fold}", stage_label(stage), f"epoch {rec.get('epoch')}"]
        for key, name in (("val_auc", "val AUC"), ("val_loss", "val loss"), ("train_loss", "loss")):
            v = rec.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                parts.append(f"{name} {v:.3f}")
                break
        self.status.setText("Latest: " + " \u00b7 ".join(parts) + ("" if shown == fold else
                                                                    f"  (showing fold {shown})"))

    # --- look ------------------------------------------------------------------------------------------------
    def _arrange(self) -> None:
        """Three plots side by side in a wide dock, stacked in a tall one."""
        vertical = self.width() < 1.4 * self.height() and self.width() < 700
        if vertical == self._vertical:
            return
        self._vertical = vertical
        ci = self.graphics.ci
        for plot in self.plots.values():
            if plot.scene() is not None:
                ci.removeItem(plot)
        for i, plot in enumerate(self.plots.values()):
            ci.addItem(plot, row=i if vertical else 0, col=0 if vertical else i)

    def _apply_palette(self) -> None:
        pal = self.palette()
        self.graphics.setBackground(pal.color(QPalette.ColorRole.Base))
        text = pal.color(QPalette.ColorRole.Text)
        axis = QColor(text)
        axis.setAlpha(150)
        for plot in self.plots.values():
            for name in ("left", "bottom"):
                ax = plot.getAxis(name)
                ax.setPen(pg.mkPen(axis))
                ax.setTextPen(pg.mkPen(text))
            plot.titleLabel.setText(plot.titleLabel.text, color=text.name())

    def resizeEvent(self, event) -> None:
        super().resizeEvent(event)
        self._arrange()

    def changeEvent(self, event) -> None:
        super().changeEvent(event)
        if event.type() in (QEvent.Type.PaletteChange, QEvent.Type.ApplicationPaletteChange):
            self._apply_palette()
