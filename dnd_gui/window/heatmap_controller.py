"""The heatmap of the slide on screen: one layer, one style, and the views that follow them.

The style (colormap, scale, opacity, threshold, smoothing, visible) is one value held here. The inspector's
controls and the View ▸ Show Heatmap action both *ask* for a change (:meth:`set_style`, :meth:`set_visible`);
the controller applies it to the layer and then shows it in the controls (signals blocked) and the action
(through the window's action rules). Before, the action set the checkbox, whose signal set the style, which set
the action again: three hops that had to end where they began.

The exports (PNG, GeoJSON of the heatmap; the predictions CSV) live here too: they export what is shown.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from PySide6.QtCore import QObject, QPointF, QRectF, Signal
from PySide6.QtGui import QColor, QPen
from PySide6.QtWidgets import QFileDialog, QGraphicsRectItem

from dnd_engine.heatmaps.style import HeatmapStyle

from ..jobs.exports import heatmap_geojson_job, heatmap_png_job
from ..panels.inspector import model_label
from ..jobs.queue import Job, JobState
from ..viewer.heatmap_layer import HeatmapLayer

if TYPE_CHECKING:  # pragma: no cover
    from .main_window import MainWindow


class HeatmapController(QObject):
    """Owns ``layer`` (the current slide's :class:`HeatmapLayer`, or None), ``style`` and the patch marker."""

    changed = Signal()   # a layer was added or removed, or the style changed

    def __init__(self, win: "MainWindow"):
        super().__init__(win)
        self.win = win
        self.layer: Optional[HeatmapLayer] = None
        self.style = HeatmapStyle()
        self.patch_marker: Optional[QGraphicsRectItem] = None
        controls = win.inspector.heatmap
        controls.style_changed.connect(self.set_style)
        controls.model_changed.connect(self.set_model)
        controls.export_png.connect(self.choose_export_png)
        controls.export_geojson.connect(self.choose_export_geojson)
        win.inspector.gallery.patch_clicked.connect(self.centre_on_patch)

    # --- the layer ---------------------------------------------------------------------------------------
    def remove(self) -> None:
        view = self.win.view
        had = self.layer is not None
        if self.layer is not None:
            view.remove_overlay(self.layer)
            self.layer = None
        if self.patch_marker is not None:
            view.remove_overlay(self.patch_marker)
            self.patch_marker = None
        if had:
            self.changed.emit()

    def show_record(self, record) -> None:
        """Show ``record``'s prediction (a ``SlideRecord`` or None) in the inspector and its heatmap on the slide."""
        win = self.win
        self.remove()
        box, controls, gallery = win.inspector.prediction, win.inspector.heatmap, win.inspector.gallery
        pred = record.prediction if record is not None else None
        if pred is None:
            if record is not None and record.job is not None:
                box.show_running(record.job.message)
            else:
                box.show_none()
            controls.set_models([])
            gallery.clear()
            return
        if pred.status != "done":
            box.show_failure(pred.error)
            controls.set_models([])
            gallery.clear("No patches: the slide was not classified.")
            return
        box.show_prediction(pred.predicted, record.class_names, pred.probs, pred.n_patches, record.model_name,
                            record.demo, note=pred.note)
        if not pred.scores or pred.coords is None or len(pred.coords) == 0:
            controls.set_models([])
            gallery.clear("This prediction has no per-patch scores.")
            win.prediction_shown.emit(record.path)
            return
        layer = HeatmapLayer(pred.coords, pred.patch_size_level0, pred.scores, tuple(win.slide_info["dimensions"]),
                             self.style, record.heatmap_model, record.tissue)
        self.layer = layer
        win.view.add_overlay(layer)
        controls.set_models(layer.model_names, layer.model)
        controls.set_heatmap_style(self.style)
        self._refresh_details()
        self.changed.emit()
        win.prediction_shown.emit(record.path)

    def _refresh_details(self) -> None:
        layer = self.layer
        if layer is None:
            return
        self.win.inspector.heatmap.set_counts(layer.count_at_or_above(self.style.threshold), len(layer.raw))
        self.win.inspector.gallery.show_patches(self.win.current_path, layer.coords, layer.patch_size, layer.raw,
                                                layer.normalised, self.style.colormap)

    # --- the style: one state, the controls and the action follow it ------------------------------------
    def set_style(self, style: HeatmapStyle) -> None:
        old, self.style = self.style, style
        self.win.inspector.heatmap.set_heatmap_style(style)     # blocks its signals: no echo
        if self.layer is not None:
            self.layer.set_style(style)
            self.win.inspector.heatmap.set_counts(self.layer.count_at_or_above(style.threshold), len(self.layer.raw))
            if (old.colormap, old.normalise) != (style.colormap, style.normalise):
                self._refresh_details()
        self.changed.emit()

    def set_visible(self, visible: bool) -> None:
        self.set_style(replace(self.style, visible=bool(visible)))

    def set_model(self, name: str) -> None:
        record = self.win.classification.current_record()
        if self.layer is None or record is None:
            return
        self.layer.set_model(name)
        record.heatmap_model = name
        self._refresh_details()

    # --- pointing at patches -----------------------------------------------------------------------------
    def hover(self, point: Optional[QPointF]) -> None:
        """The inspector's line about the patch under the pointer."""
        layer, controls = self.layer, self.win.inspector.heatmap
        if layer is None:
            return
        if point is None:
            controls.set_hover("Point at the slide to read a patch's score.")
            return
        hit = layer.score_at(point)
        if hit is None:
            controls.set_hover("No patch here (not tissue, or not scored).")
        else:
            controls.set_hover(f"Patch {hit.index}: attention {hit.normalised:.3f} "
                               f"({'percentile' if layer.style.normalise == 'percentile' else 'scaled'}), "
                               f"raw {hit.raw:.4g} \u2014 {model_label(layer.model)}")

    def centre_on_patch(self, index: int) -> None:
        """Centre the viewer on patch ``index``, large enough to judge (a third of the view), outlined."""
        layer, view = self.layer, self.win.view
        if layer is None:
            return
        rect = layer.patch_rect(index)
        vp = view.viewport().rect()
        zoom = min(vp.width(), vp.height()) / 3.0 / rect.width()
        view.centre_on(rect.center(), zoom)
        if self.patch_marker is None:
            marker = QGraphicsRectItem()
            pen = QPen(QColor(255, 214, 0), 3)
            pen.setCosmetic(True)
            marker.setPen(pen)
            marker.setZValue(20)
            self.patch_marker = marker
            view.add_overlay(marker)
        self.patch_marker.setRect(QRectF(rect))
        score = layer.raw[index]
        self.win.statusBar().showMessage(f"Patch {index}: attention {layer.normalised[index]:.3f} "
                                         f"(raw {score:.4g})", 6000)

    # --- exports -----------------------------------------------------------------------------------------
    def _export_target(self, title: str, suffix: str, filt: str) -> Optional[str]:
        win = self.win
        record = win.classification.current_record()
        if self.layer is None or record is None:
            win._show_error("Nothing to export", "classify the slide first: it has no heatmap yet")
            return None
        default = Path(win.settings.last_dir("exports") or str(Path.home())) / \
            f"{Path(record.path).stem}_{self.layer.model}_heatmap{suffix}"
        path, _ = QFileDialog.getSaveFileName(win, title, str(default), filt)
        if path:
            win.settings.set_last_dir("exports", path)
        return path or None

    def choose_export_png(self) -> None:
        path = self._export_target("Export Heatmap PNG", ".png", "PNG images (*.png)")
        if path:
            self.export_png(path)

    def choose_export_geojson(self) -> None:
        path = self._export_target("Export Heatmap GeoJSON", ".geojson", "GeoJSON (*.geojson *.json)")
        if path:
            self.export_geojson(path)

    def choose_export_csv(self) -> None:
        win = self.win
        if not win.predictions.model.rows:
            win._show_error("Nothing to export", "no slide has been classified yet")
            return
        default = Path(win.settings.last_dir("exports") or str(Path.home())) / "predictions.csv"
        path, _ = QFileDialog.getSaveFileName(win, "Export Predictions", str(default), "CSV files (*.csv)")
        if path:
            win.settings.set_last_dir("exports", path)
            try:
                win.predictions.export_csv(path)
            except Exception as exc:
                win._show_error("Export failed", str(exc))
            else:
                win.statusBar().showMessage(f"Predictions written to {path}", 6000)

    def export_png(self, path: str) -> Optional[Job]:
        """Render the heatmap as shown over the slide and write it as a PNG, as a job."""
        layer, record = self.layer, self.win.classification.current_record()
        if layer is None or record is None:
            return None
        fn = heatmap_png_job(path, record.path, layer.coords, layer.patch_size, layer.raw, self.style,
                             record.tissue, demo=record.demo)
        return self._submit_export(f"Export {Path(path).name}", fn)

    def export_geojson(self, path: str) -> Optional[Job]:
        """Write one QuPath tile per patch with its attention and the slide's class probabilities, as a job."""
        layer, record = self.layer, self.win.classification.current_record()
        if layer is None or record is None:
            return None
        pred = record.prediction
        probs = pred.model_probs.get(layer.model, pred.probs)
        fn = heatmap_geojson_job(path, layer.coords, layer.patch_size, layer.raw, probs, record.class_names,
                                 layer.model, self.style.normalise)
        return self._submit_export(f"Export {Path(path).name}", fn)

    def _submit_export(self, title: str, fn) -> Job:
        job = Job(title, fn)
        job.finished.connect(lambda j: j.state == JobState.DONE and
                             self.win.statusBar().showMessage(f"Written: {j.value}", 8000))
        return self.win.jobs.submit(job)


__all__ = ["HeatmapController"]
