"""What the training wizard asks for: the extraction and training plans, their warnings, the weights check.

The plans are plain dataclasses that round-trip through JSON, because a job's record keeps its plan: a job
interrupted by a crash is resumed from that record alone, with the same output folder, so the engine's own
checkpoints (finished slides, stage checkpoints) make it continue rather than start again.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Dict, List, Optional

from ..bags.labels import LabelTable
from ..dnd.cohort_checks import cohort_warnings
from ..dnd.dnd_cv import CVSettings
from ..dnd.presets import PRESETS, apply_overrides, preset_config
from ..errors import DnDError
from ..features.extract import ExtractConfig
from ..features.registry import get_spec, list_extractors
from ..models import model_names
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
