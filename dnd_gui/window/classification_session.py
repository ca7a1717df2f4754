"""What this session knows about each listed slide, and classifying them with the loaded model.

One :class:`SlideRecord` per listed slide (its prediction, the job classifying it, the heatmap model shown); the
model (loaded and checked off the UI thread by :class:`~dnd_gui.jobs.classify.ModelLoader`); the queue of slides
dropped while a model was still loading. The slide list, the predictions table and the inspector show what the
records say; nothing here decides what a prediction means (the engine's ``SlidePrediction`` says it).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from PySide6.QtCore import QObject, Signal
from PySide6.QtWidgets import QFileDialog

from dnd_engine.errors import DnDError

from ..dialogs import magnification as magnification_dialog
from ..jobs.classify import ClassifiedSlide, ModelLoader, ReadyModel, classify_job, labels_near, read_labels_csv
from ..jobs.queue import Job, JobState

if TYPE_CHECKING:  # pragma: no cover
    from .main_window import MainWindow


@dataclass
class SlideRecord:
    """What the session knows about one slide."""

    path: str
    prediction: object = None           # dnd_engine.predict.SlidePrediction
    class_names: list = field(default_factory=list)
    model_name: str = ""
    demo: bool = False
    heatmap_model: str = "student"
    tissue: object = None               # bool mask over the whole slide (np.ndarray) or None
    job: Optional[Job] = None


class ClassificationSession(QObject):
    """The records, the model and the classification jobs of one window."""

    changed = Signal()   # the model or a prediction changed (the window's actions follow)

    def __init__(self, win: "MainWindow"):
        super().__init__(win)
        self.win = win
        self.records: dict[str, SlideRecord] = {}
        self.model: Optional[ReadyModel] = None
        self.waiting_for_model: list[str] = []
        self.loader = ModelLoader(self)
        self.loader.loaded.connect(self._on_model_loaded)
        self.loader.failed.connect(self._on_model_failed)
        win.jobs.job_finished.connect(self._on_job_finished)

    # --- records -----------------------------------------------------------------------------------------
    def add_record(self, path: str) -> SlideRecord:
        """The session's record of ``path`` (an absolute path), listed in the slide list from now on."""
        if path not in self.records:
            self.records[path] = SlideRecord(path)
            self.win.slide_list.add_slide(path)
            self.win.slide_actions.listed(path)
        return self.records[path]

    def current_record(self) -> Optional[SlideRecord]:
        path = self.win.current_path
        return self.records.get(path) if path else None

    # --- the model ---------------------------------------------------------------------------------------
    def _choose_file(self, title: str, kind: str, filters: str) -> Optional[str]:
        """A file from the open dialog, starting in (and remembering) the last folder used for ``kind``."""
        win = self.win
        path, _ = QFileDialog.getOpenFileName(win, title, win.settings.last_dir(kind), filters)
        if path:
            win.settings.set_last_dir(kind, path)
        return path or None

    def choose_model(self) -> None:
        path = self._choose_file("Load Model", "models", "D&D models (*.safetensors);;All files (*)")
        if path:
            self.load_model(path)

    def load_model(self, path) -> None:
        """Load and check a model in the background; the current model stays active until it passes."""
        self.win.slide_list.model_box.show_loading(str(path))
        self.win.statusBar().showMessage(f"Loading model {Path(str(path)).name}\u2026")
        self.loader.load(str(path))

    def _on_model_loaded(self, model: ReadyModel) -> None:
        win = self.win
        self.model = model
        notes = str(model.card.get("notes", ""))
        win.slide_list.model_box.show_model(model.name, model.summary(), model.is_demo, notes)
        win.statusBar().showMessage(f"Model {model.name} ready" + (" (demo model, not for diagnosis)"
                                                                   if model.is_demo else ""), 6000)
        self.changed.emit()
        win.model_ready.emit(model)
        waiting, self.waiting_for_model = self.waiting_for_model, []
        if waiting:
            self.classify(waiting)

    def _on_model_failed(self, path: str, message: str) -> None:
        win = self.win
        keep = f" ({self.model.name} stays active)" if self.model is not None else ""
        name = Path(path).name          # engine messages about a file's content already start with its name
        win.slide_list.model_box.show_error(f"{message if message.startswith(name) else f'{name}: {message}'}{keep}")
        win._show_error("Cannot use this model", message, f"{Path(path).name} cannot be used")
        if self.waiting_for_model and self.model is None:
            for p in self.waiting_for_model:
                win.slide_list.set_status(p, "not classified: no model", "failed")
            self.waiting_for_model = []
        self.changed.emit()
        win.model_failed.emit(message)

    def choose_labels(self) -> None:
        path = self._choose_file("Load Labels", "labels", "CSV files (*.csv);;All files (*)")
        if path:
            self.load_labels(path)

    def load_labels(self, path: str) -> Optional[dict]:
        """True labels from a labels CSV (read by the engine: the columns ``dnd train`` accepts) for the table
        and the slide list; a one-line message when the file cannot be used."""
        win = self.win
        try:
            labels = read_labels_csv(path)
        except (DnDError, OSError) as exc:
            win._show_error("Cannot read labels", str(exc))
            return None
        win.predictions.model.set_true_labels(labels)
        win.slide_list.set_labels(labels)
        win.statusBar().showMessage(f"{len(labels)} true labels loaded from {Path(path).name}", 6000)
        return labels

    # --- classifying -------------------------------------------------------------------------------------
    def choose_and_classify(self) -> None:
        win = self.win
        paths, _ = QFileDialog.getOpenFileNames(win, "Classify Slides", win.settings.last_dir("slides"),
                                                win.slide_file_filter())
        if paths:
            win.settings.set_last_dir("slides", paths[0])
            win.handle_dropped_files(paths)

    def classify(self, paths: Sequence[str]) -> Optional[Job]:
        """Queue a job that classifies ``paths`` with the loaded model; None (with a message) without one."""
        win = self.win
        paths = [os.path.abspath(str(p)) for p in paths]
        for p in paths:
            self.add_record(p)
        if self.model is None:
            if self.loader.busy():
                self.waiting_for_model.extend(paths)
                for p in paths:
                    win.slide_list.set_status(p, "waiting for the model\u2026", "running")
                return None
            win._show_error("No model", "load a model first (File \u25b8 Load Model\u2026)", "Cannot classify")
            return None
        paths, cancelled, answered = win.scales.ask_missing(win, paths)
        for p in cancelled:
            win.slide_list.set_status(p, "cancelled: magnification unknown", "failed")
        if cancelled:
            win._show_error("Classification cancelled", magnification_dialog.cancelled_message(cancelled))
        if win.slide_loader.pending_path in answered:       # show the new scale (panel, scale bar) at once
            win.open_slide(win.slide_loader.pending_path)
        if not paths:
            return None
        model = self.model
        names = [Path(p).name for p in paths]
        title = f"Classify {names[0]}" if len(paths) == 1 else f"Classify {len(paths)} slides"
        out_dir = win.output_root / model.name
        job = Job(f"{title} \u2014 {model.name}", classify_job(model, paths, out_dir, win.scales.for_paths(paths)))
        job.result.connect(lambda result, m=model: self._on_prediction(result, m))
        job.changed.connect(lambda j=job: self._on_job_progress(j))
        for p in paths:
            record = self.add_record(p)
            record.job = job
            win.slide_list.set_status(p, "queued", "running")
            labels = labels_near(p)
            if labels:
                win.predictions.model.set_true_labels(labels)
        win.jobs.submit(job)
        win.jobs_dock.raise_()
        win.statusBar().showMessage(f"{title}: queued", 4000)
        if win.current_path in paths:
            win.inspector.prediction.show_running("Queued")
        return job

    def _on_job_progress(self, job: Job) -> None:
        if job.state != JobState.RUNNING:
            return
        for path, record in self.records.items():
            if record.job is job and record.prediction is None:
                self.win.slide_list.set_status(path, f"classifying\u2026 {job.fraction * 100:.0f} %", "running")
        current = self.current_record()
        if current is not None and current.job is job and current.prediction is None:
            self.win.inspector.prediction.show_running(job.message)

    def _on_prediction(self, result: ClassifiedSlide, model: ReadyModel) -> None:
        self.add_prediction(result.prediction, model.class_names, model.name, model.is_demo, result.tissue)

    def add_prediction(self, prediction, class_names: Sequence[str], model_name: str, demo: bool = False,
                       tissue=None) -> None:
        """Record an engine ``SlidePrediction`` and show it (inspector, heatmap) if its slide is on screen;
        ``tissue`` (a boolean mask over the whole slide) keeps the heatmap's colour on tissue."""
        win = self.win
        path = os.path.abspath(prediction.path)
        record = self.add_record(path)
        record.prediction = prediction
        record.class_names = list(class_names)
        record.model_name = model_name
        record.demo = demo
        record.heatmap_model = "student"
        record.tissue = tissue
        record.job = None
        win.predictions.add_prediction(prediction, list(class_names), model_name, demo)
        if prediction.status == "done":
            p = max(prediction.probs)
            win.slide_list.set_status(path, f"{prediction.predicted} \u00b7 {p * 100:.0f} %", "done")
            win.statusBar().showMessage(f"{Path(path).name}: {prediction.predicted} ({p * 100:.1f} %)"
                                        + (" \u2014 demo model, not for diagnosis" if demo else ""), 10000)
        else:
            win.slide_list.set_status(path, "failed", "failed")
            win.statusBar().showMessage(f"{Path(path).name} not classified: {prediction.error}", 10000)
        if path == win.current_path and win.view.has_slide():
            win.heatmap.show_record(record)
        self.changed.emit()

    def _on_job_finished(self, job: Job) -> None:
        """Any job ended: the slides it was classifying and got no prediction say why (the window reports the
        job itself)."""
        win = self.win
        for path, record in self.records.items():
            if record.job is job:
                record.job = None
                if record.prediction is None:
                    word = "cancelled" if job.state == JobState.CANCELLED else "not classified"
                    win.slide_list.set_status(path, word, "failed" if job.state == JobState.FAILED else "")
                    if path == win.current_path:
                        if job.state == JobState.FAILED:
                            win.inspector.prediction.show_failure(job.error)
                        else:
                            win.inspector.prediction.show_none("Cancelled" if job.state == JobState.CANCELLED
                                                               else "Not classified")

    def shutdown(self) -> None:
        self.loader.shutdown()


__all__ = ["ClassificationSession", "SlideRecord"]
