"""What the training wizard asks for, how much work it is, and the engine calls that do it inside a project.

The plans are plain dataclasses that round-trip through JSON, because a job's record keeps its plan: a job
interrupted by a crash is resumed from that record alone, with the same output folder, so the engine's own
checkpoints (finished slides, stage checkpoints) make it continue rather than start again.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Dict, List, Optional

from ..bags import find_bags
from ..bags.labels import LabelTable
from ..bags.store import bag_info
from ..dnd.cohort_checks import cohort_warnings
from ..dnd.dnd_cv import CVSettings, DnDCVResult, run_dnd_cv
from ..dnd.presets import PRESETS, apply_overrides, preset_config
from ..errors import DnDError
from ..features.extract import ExtractConfig, extract_cohort, feature_dir_for
from ..features.registry import build_extractor, get_spec, list_extractors
from ..device import resolve_device
from ..features.settings import SettingsMismatch, settings_folder
from ..models import model_names
from ..progress import CancelFn, ProgressFn
from ..slides.overrides import open_with_override
from .manifest import Project, ProjectError

FEATURES = "features"


class _JsonPlan:
    """A plan kept in a job record: plain JSON out, and back in with unknown settings refused."""

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data):
        data = dict(data)
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise ProjectError(f"unknown {cls.__name__} setting(s): {', '.join(unknown)}")
        return cls(**data)


@dataclass
class ExtractionPlan(_JsonPlan):
    extractor: str = "resnet50_trunc"
    magnification: float = 10.0
    patch_size: int = 256
    weights: Optional[str] = None
    device: str = "auto"
    min_tissue: float = 0.25
    ray_address: str = ""        # a Ray cluster to extract on (auto | local | HOST:PORT); "": this computer

    def validate(self) -> "ExtractionPlan":
        if self.extractor not in list_extractors():
            raise ProjectError(f"unknown extractor {self.extractor!r} (choose from {', '.join(list_extractors())})")
        if not (self.magnification > 0 and math.isfinite(self.magnification)):
            raise ProjectError(f"magnification must be > 0, got {self.magnification}")
        if self.patch_size < 16:
            raise ProjectError(f"patch size must be at least 16 pixels, got {self.patch_size}")
        if self.ray_address:
            from ..features.ray_runner import check_address
            try:
                check_address(self.ray_address)
            except DnDError as exc:
                raise ProjectError(str(exc)) from None
        return self

    def config(self) -> ExtractConfig:
        return ExtractConfig(extractor=self.extractor, weights=self.weights or None,
                             magnification=self.magnification, patch_size=self.patch_size, device=self.device,
                             min_tissue=self.min_tissue, ray=self.ray_address.strip() or None)


@dataclass
class TrainingPlan(_JsonPlan):
    name: str = "run"
    methods: List[str] = field(default_factory=lambda: ["abmil"])
    preset: str = "paper"
    # None: the preset's value (paper C = 3, authors-code C = 5), the rule `dnd train --preset` follows too
    n_clusters: Optional[int] = None
    lambda_base: Optional[float] = None
    lambda_expert: Optional[float] = None
    temperature: Optional[float] = None
    epochs_base: Optional[int] = None         # None: the preset's (paper: 200 / 200 / 300)
    epochs_expert: Optional[int] = None
    epochs_student: Optional[int] = None
    folds: int = 5
    seed: int = 1
    device: str = "auto"

    def validate(self) -> "TrainingPlan":
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", self.name or ""):
            raise ProjectError(f"run name {self.name!r}: use letters, digits, '.', '_' or '-' (it names a folder)")
        if not self.methods:
            raise ProjectError("choose at least one MIL method")
        bad = [m for m in self.methods if m not in model_names()]
        if bad:
            raise ProjectError(f"unknown MIL method(s) {bad} (choose from {', '.join(model_names())})")
        if self.preset not in PRESETS:
            raise ProjectError(f"unknown preset {self.preset!r} (choose from {', '.join(PRESETS)})")
        if self.folds < 2:
            raise ProjectError(f"cross-validation needs at least 2 folds, got {self.folds}")
        for m in self.methods:
            self.dnd_config(m)  # the engine's own checks (clusters, λs, epochs)
        return self

    def dnd_config(self, method: str):
        """The preset's settings with what this plan sets on top, by the CLI's rule (``apply_overrides``)."""
        return apply_overrides(preset_config(self.preset, model=method), {
            "n_clusters": self.n_clusters, "lambda_base": self.lambda_base, "lambda_expert": self.lambda_expert,
            "temperature": None if self.temperature is None else float(self.temperature),
            "base.epochs": self.epochs_base, "expert.epochs": self.epochs_expert,
            "student.epochs": self.epochs_student, "seed": self.seed, "device": self.device})

    def run_dir(self, project: Project, method: str) -> Path:
        return project.runs_root() / self.name / method


# --- estimate --------------------------------------------------------------------------------------------
@dataclass
class WorkEstimate:
    slides: int
    patches: int                # exact for existing bags, else an upper bound (the whole slide's grid)
    patches_exact: bool
    slides_to_extract: int
    runs: int                   # methods × folds
    trainings: int              # models trained: per run a base, C experts and a student
    epochs: int                 # summed over every model trained
    notes: List[str] = field(default_factory=list)
    warnings: List[str] = field(default_factory=list)   # the cohort is too small for the plan (plan_warnings)

    def lines(self) -> List[str]:
        pat = f"{self.patches:,}" if self.patches_exact else f"up to {self.patches:,}"
        out = [f"{self.slides} slides, {pat} patches",
               f"{self.slides_to_extract} slides to extract" if self.slides_to_extract else "features ready",
               f"{self.runs} cross-validation runs, {self.trainings} models to train, {self.epochs:,} epochs"]
        return out + self.notes


def estimate_work(project: Project, extraction: Optional[ExtractionPlan], training: TrainingPlan) -> WorkEstimate:
    """Counts, not times: slides, patches, runs and epochs, cheap enough to refresh as the user edits."""
    notes: List[str] = []
    table = project.label_table()
    labelled = set(table.slide_ids) if table is not None else None
    bags: Dict[str, Path] = {}
    if project.features_dir is not None and project.features_dir.is_dir():
        try:
            bags = find_bags(project.features_dir)
        except DnDError:
            bags = {}
    slides = project.slide_paths()
    ids = sorted(set(bags) | set(slides))
    if labelled is not None:
        ids = [s for s in ids if s in labelled]
    patches, exact, todo = 0, True, 0
    overrides = None
    for sid in ids:
        if sid in bags:
            try:
                patches += bag_info(bags[sid]).n
            except DnDError:
                notes.append(f"{sid}: unreadable bag")
            continue
        todo += 1
        exact = False
        if extraction is not None and sid in slides:
            if overrides is None:
                overrides = project.overrides_by_path()
            patches += _grid_upper_bound(slides[sid], extraction, overrides)
    cfgs = [training.dnd_config(m) for m in training.methods]
    runs = len(training.methods) * training.folds
    trainings = training.folds * sum(2 + c.n_clusters for c in cfgs)
    epochs = sum(training.folds * (c.base.epochs + c.n_clusters * c.expert.epochs + c.student.epochs) for c in cfgs)
    return WorkEstimate(len(ids), patches, exact, todo, runs, trainings, epochs, notes,
                        plan_warnings(table, training))


def plan_warnings(table: Optional[LabelTable], training: TrainingPlan) -> List[str]:
    """The cohort checks (``cohort_checks``) for this labels table and plan: warnings, not problems (the run
    still trains), shown by the wizard before launch. The largest C of the plan's methods is the one checked."""
    if table is None or not len(table):
        return []
    try:
        n_clusters = max(training.dnd_config(m).n_clusters for m in (training.methods or ["abmil"]))
    except DnDError:
        return []
    train_counts = n_test = None
    if table.splits is not None:
        train_counts = {c: 0 for c in table.classes}
        for label, split in zip(table.labels, table.splits):
            if split == "train":
                train_counts[label] += 1
        n_test = sum(s == "test" for s in table.splits)
    return cohort_warnings(table.counts(), n_clusters, training.folds, CVSettings().val_frac, train_counts, n_test)


def _grid_upper_bound(path: Path, plan: ExtractionPlan, overrides=None) -> int:
    try:
        slide = open_with_override(path, overrides)
    except DnDError:
        return 0
    try:
        w, h = slide.dimensions
        power = slide.objective_power or 20.0
        side = plan.patch_size * power / plan.magnification
        return int(math.ceil(w / side) * math.ceil(h / side))
    finally:
        slide.close()


# --- checks ----------------------------------------------------------------------------------------------
def check_weights(extractor: str, weights: Optional[str]) -> str:
    """Build the extractor with these weights (CPU) and say what loaded — or raise with why not."""
    from ..features.registry import build_extractor
    spec = get_spec(extractor)
    e = build_extractor(extractor, weights or None, device="cpu", precision="fp32")
    sha = e.weights_sha256()
    if spec.needs_weights:
        return f"{extractor}: weights loaded ({e.dim}-d features, sha256 {sha[:12]}…)"
    return f"{extractor}: ready ({e.dim}-d features{', no weights needed' if not sha else ''})"


# --- running inside a project ----------------------------------------------------------------------------
def run_extraction(project: Project, plan: ExtractionPlan, *, progress: Optional[ProgressFn] = None,
                   slide_progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None,
                   log: Optional[Callable[[str], None]] = None, mp_context: Optional[str] = None) -> Path:
    """Extract the project's labelled slides into ``features/``; finished slides are skipped on a rerun. When
    ``features/`` holds features of other settings, into ``features-<settings>/`` beside it (settings.py).

    ``mp_context``: how reading processes start; the app passes ``forkserver`` (forking a process that runs Qt
    threads can deadlock the child)."""
    plan.validate()
    say = log or (lambda msg: None)
    slides = project.slide_paths()
    table = project.label_table()
    if table is not None:
        labelled = set(table.slide_ids)
        slides = {s: p for s, p in slides.items() if s in labelled}
    if not slides:
        raise ProjectError("no slides to extract: link a slides folder (and check that the labels name them)")
    missing = [str(p) for p in slides.values() if not p.is_file()]
    if missing:
        raise ProjectError(f"{len(missing)} linked slide(s) are missing, e.g. {missing[0]}")
    out = project.root / FEATURES
    config = plan.config()
    config.mp_context = mp_context
    config.slide_overrides = project.overrides_by_path()
    if config.ray:
        say(f"extracting on the Ray cluster {config.ray}")
    encoder = build_extractor(config.extractor, config.weights, device=resolve_device(config.device),
                              precision=config.precision)      # built once, whichever folder it writes to

    def run(folder: Path):
        return extract_cohort([slides[s] for s in sorted(slides)], folder, config,
                              progress=progress or (lambda *a: None), slide_progress=slide_progress or
                              (lambda *a: None), cancelled=cancelled, extractor=encoder)

    try:
        results = run(out)
    except SettingsMismatch as exc:
        # features/ holds another plan's features (trained runs may rest on them): this plan's go beside them,
        # in a folder named after its settings, never mixed in (a resumed job finds the same folder)
        out = settings_folder(out, exc.wanted)
        say(f"{exc.body}; extracting this plan's features into {out.name}")
        results = run(out)
    failed = [r for r in results if r.status == "failed"]
    for r in failed:
        say(f"{r.slide_id}: failed — {r.error}")
    fdir = feature_dir_for(out, plan.extractor)
    project.features = project.relative(fdir)
    project.extraction = plan.to_dict()
    project.save()
    done = len(results) - len(failed)
    say(f"{done} of {len(results)} slides have features in {fdir}")
    if done == 0:
        raise ProjectError(f"no slide could be extracted ({failed[0].error if failed else 'no results'})")
    return fdir


def run_training(project: Project, plan: TrainingPlan, method: str, *, progress: Optional[ProgressFn] = None,
                 cancelled: Optional[CancelFn] = None, on_epoch: Optional[Callable[[Dict[str, object]], None]] = None,
                 log: Optional[Callable[[str], None]] = None) -> DnDCVResult:
    """Base vs D&D cross-validation of one method; an interrupted run continues where it stopped."""
    if project.features_dir is None:
        raise ProjectError("the project has no features yet: extract them or choose a feature folder")
    if project.labels_path is None:
        raise ProjectError("the project has no labels CSV")
    out = plan.run_dir(project, method)
    project.add_run(out)
    project.save()
    result = run_dnd_cv(project.features_dir, project.labels_path, out, plan.dnd_config(method),
                        CVSettings(folds=plan.folds, split_seed=plan.seed), progress=progress, cancelled=cancelled,
                        on_epoch=on_epoch, log=log)
    if project.model is None:
        project.set_model(result.model_path)
    project.save()
    return result


__all__ = ["ExtractionPlan", "TrainingPlan", "WorkEstimate", "check_weights", "estimate_work", "plan_warnings",
           "run_extraction", "run_training"]
