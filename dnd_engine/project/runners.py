"""The engine calls that carry out a plan inside a project: extraction into the project's features folder and
one cross-validated D&D run per method."""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Optional

from ..dnd.dnd_cv import CVSettings, DnDCVResult, run_dnd_cv
from ..features.extract import extract_cohort, feature_dir_for
from ..features.registry import build_extractor
from ..device import resolve_device
from ..features.settings import SettingsMismatch, settings_folder
from ..progress import CancelFn, ProgressFn
from .manifest import Project, ProjectError
from .plans import FEATURES, ExtractionPlan, TrainingPlan


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

