"""How much work a plan is: slides, patches (an upper bound from each slide's size until extracted), runs and
epochs. It opens every slide, so callers run it off any UI thread."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

from ..bags import find_bags
from ..bags.store import bag_info
from ..errors import DnDError
from ..slides.overrides import open_with_override
from .manifest import Project
from .plans import ExtractionPlan, TrainingPlan, plan_warnings


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
