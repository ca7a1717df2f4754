"""The training wizard: data → preprocessing → model → review, then launch.

Nothing touches the project until Launch: the pages work on the user's choices (a CSV read, a folder listed),
and the review's estimate runs on an in-memory copy of the project. Launch hands the data choices to the
project's :meth:`~dnd_engine.project.Project.apply_data`, which applies them all or none, so a failed launch
leaves the project as it was. The plans go out through ``launch_requested``; the window that owns the job queue
decides how to run them.
"""

from __future__ import annotations

import html
from typing import List, Optional, Tuple

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QWidget, QWizard

from dnd_engine.errors import DnDError
from dnd_engine.features.registry import get_spec
from dnd_engine.models import model_class
from dnd_engine.project import ExtractionPlan, Project, TrainingPlan
from dnd_engine.project.manifest import LABELS
from dnd_engine.text import one_line

from .data_page import DataPage
from .model_page import ModelPage
from .preprocess_page import PreprocessPage
from .review_page import ReviewPage
from .widgets import PAGE_DATA, PAGE_MODEL, PAGE_PREPROCESS, PAGE_REVIEW, PRESET_LABELS, located_weights


def _method_title(name: str) -> str:
    try:
        return model_class(name).title or name
    except DnDError:
        return name


class TrainingWizard(QWizard):
    """Data, preprocessing, model, review → ``launch_requested(extraction plan or None, training plan)``."""

    launch_requested = Signal(object, object)

    def __init__(self, project: Project, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.project = project
        self.setWindowTitle(f"Train a model — {project.name}")
        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnStartPage, True)
        self.setOption(QWizard.WizardOption.HaveHelpButton, False)
        self.setButtonText(QWizard.WizardButton.FinishButton, "Launch")
        self.data_page = DataPage(project)
        self.preprocess_page = PreprocessPage(project)
        self.model_page = ModelPage(project)
        self.review_page = ReviewPage(project)
        for pid, page in ((PAGE_DATA, self.data_page), (PAGE_PREPROCESS, self.preprocess_page),
                          (PAGE_MODEL, self.model_page), (PAGE_REVIEW, self.review_page)):
            self.setPage(pid, page)
        self.setStartId(PAGE_DATA)
        self.model_page.folds_spin.valueChanged.connect(lambda *_: self.data_page.refresh())
        self.resize(900, 650)
        self.setMinimumSize(760, 560)

    # --- what was chosen -----------------------------------------------------------------------------------
    def plans(self) -> Tuple[Optional[ExtractionPlan], TrainingPlan]:
        training = self.model_page.plan()
        extraction = None
        if self.data_page.mode() == DataPage.MODE_SLIDES:
            extraction = self.preprocess_page.plan(device=training.device)
        return extraction, training

    def preview_project(self) -> Project:
        """An in-memory copy with the data choices applied, for the estimate: never saved, nothing copied."""
        d = self.data_page
        if d.mode() == DataPage.MODE_FEATURES:
            return self.project.preview_data(labels=d.labels_path.path(), features=d.source_path())
        return self.project.preview_data(labels=d.labels_path.path(), slides=d.slide_files)

    def summary_html(self) -> str:
        extraction, training = self.plans()
        d = self.data_page
        rows: List[Tuple[str, str]] = [("Project", str(self.project.root))]
        if d.mode() == DataPage.MODE_FEATURES:
            rows.append(("Features", f"{d.source_path()} (existing; no extraction)"))
        else:
            rows.append(("Slides", f"{d.source_path()} ({len(d.slide_files)} slide files, linked)"))
        rows.append(("Labels", f"{d.labels_path.path()} (copied into the project as {LABELS})"))
        if d.table is not None:
            rows.append(("Classes", " · ".join(f"{c} {n}" for c, n in d.table.counts().items())))
        if extraction is not None:
            check = self.preprocess_page.check_result()
            located = located_weights(extraction.extractor)
            weights = extraction.weights or (str(located) if located else "none needed")
            rows += [("Extractor", f"{extraction.extractor} ({get_spec(extraction.extractor).dim}-d)"),
                     ("Weights", weights + ("" if not get_spec(extraction.extractor).needs_weights else
                                            " — checked, loads" if check and check[0] else " — not checked")),
                     ("Patches", f"{extraction.patch_size} px at {extraction.magnification:g}×, kept with ≥ "
                                 f"{extraction.min_tissue:.0%} tissue")]
        try:
            cfg = training.dnd_config(training.methods[0] if training.methods else "abmil")
        except DnDError:
            cfg = None
        rows += [("Run name", f"{training.name} (runs/{training.name}/<method>)"),
                 ("MIL methods", ", ".join(_method_title(m) for m in training.methods) or "none"),
                 ("Preset", PRESET_LABELS.get(training.preset, training.preset))]
        if cfg is not None:
            def mark(value, own):
                return f"{value}" + ("" if own is not None else " (preset)")
            rows += [("Clusters (C)", mark(cfg.n_clusters, training.n_clusters)),
                     ("λ base / λ experts", f"{mark(f'{cfg.lambda_base:g}', training.lambda_base)} / "
                                            f"{mark(f'{cfg.lambda_expert:g}', training.lambda_expert)}"),
                     ("Temperature", mark(f"{cfg.temperature:g}", training.temperature)),
                     ("Epochs base / experts / student",
                      f"{mark(cfg.base.epochs, training.epochs_base)} / "
                      f"{mark(cfg.expert.epochs, training.epochs_expert)} / "
                      f"{mark(cfg.student.epochs, training.epochs_student)}"),
                     ("Optimisers", f"base and experts {cfg.base.optimizer.upper()}, student "
                                    f"{cfg.student.optimizer.upper()} (preset)")]
        split = d.table is not None and d.table.splits is not None
        rows += [("Validation", "the CSV's split column" if split else f"{training.folds}-fold cross-validation"),
                 ("Seed", str(training.seed)), ("Device", training.device)]
        body = "".join(f"<tr><td style='padding:2px 14px 2px 0'><b>{html.escape(k)}</b></td>"
                       f"<td style='padding:2px 0'>{html.escape(v)}</td></tr>"
                       for k, v in rows)
        return f"<table>{body}</table>"

    # --- launch --------------------------------------------------------------------------------------------
    def problems(self) -> List[str]:
        """What blocks the launch now: the data (re-checked), the folds, the plans, the weights."""
        d = self.data_page
        d.refresh()
        extraction, training = self.plans()
        problems = list(d.errors) + d.fold_problems(training.folds)
        for plan in (extraction, training):
            if plan is None:
                continue
            try:
                plan.validate()
            except DnDError as exc:
                problems.append(str(exc))
        if extraction is not None:
            weights = self.preprocess_page.weights_problem()
            if weights:
                problems.append(weights)
        return problems

    def choices(self) -> tuple:
        """Everything the work estimate depends on; equal choices give an equal estimate."""
        d = self.data_page
        labels = d.labels_path.path()
        try:
            stamp = (labels.stat().st_mtime_ns, labels.stat().st_size) if labels is not None else None
        except OSError:
            stamp = None
        return (self.plans(), d.mode(), d.source_path(), labels, stamp, tuple(d.slide_files))

    def apply_to_project(self) -> None:
        """Link the data and copy the labels in, all or nothing (the project's transaction)."""
        d = self.data_page
        source = {"features": d.source_path()} if d.mode() == DataPage.MODE_FEATURES else {"slides": d.source_path()}
        self.project.apply_data(labels=d.labels_path.path(), **source)

    def accept(self) -> None:
        self.review_page.refresh()
        if not self.review_page.isComplete():
            return
        extraction, training = self.plans()
        try:
            self.apply_to_project()
        except Exception as exc:
            self.review_page.show_error(one_line(exc, None))
            return
        self.launch_requested.emit(extraction, training)
        super().accept()
