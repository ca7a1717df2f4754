"""The main job on the bundled data, end to end: what ``dnd demo`` (the README's first command) runs.

A synthetic cohort with planted lesions stands in for a real one (real cohorts are gigabytes and cannot ship);
the bundled real slide shows the chain on a true scan. Everything is weight-free (``stain_stats`` features), so
it runs offline in a few minutes on two CPU cores. The epochs are cut from the paper's 200/200/300 to fit; the
method and the code path are the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np

from .errors import DnDError
from .progress import CancelFn, ProgressFn

DEMO_EPOCHS = {"base": 40, "expert": 40, "student": 60}
DEMO_LR = 5e-4
DEMO_NOTE = ("DEMO MODEL, not for diagnosis: trained by `dnd demo` on synthetic slides with planted lesions "
             "(weight-free stain_stats features); it shows the workflow, it knows nothing about real tissue.")


def bundled_slides() -> List[Path]:
    d = Path(__file__).resolve().parents[1] / "resources" / "sample_slides"
    return sorted(p for p in d.glob("*") if p.suffix.lower() in (".svs", ".tif", ".tiff", ".ndpi"))


@dataclass
class DemoResult:
    out_dir: Path
    seconds: float
    paths: Dict[str, Path] = field(default_factory=dict)
    table: str = ""
    heatmap_auc: float = float("nan")
    predictions: list = field(default_factory=list)


def run_demo(out_dir: str | Path = "demo_output", *, n_slides: int = 24, size: int = 3072, seed: int = 0,
             folds: int = 3, model: str = "abmil", epochs: Optional[Dict[str, int]] = None,
             progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None,
             log: Optional[Callable[[str], None]] = None) -> DemoResult:
    from .bags import find_bags
    from .dnd import CVSettings, preset_config, run_dnd_cv
    from .dnd.bench import markdown_table, table_row, write_tables
    from .dnd.card import save_deployable
    from .features import ExtractConfig, extract_cohort, feature_dir_for
    from .predict import load_deployable, predict_slides
    from .synth import make_synthetic_cohort
    say = log or (lambda m: None)
    out = Path(out_dir)
    t0 = time.perf_counter()
    real = bundled_slides()
    if not real:
        raise DnDError("the bundled sample slide is missing from resources/sample_slides")

    say(f"1/5 synthetic cohort: {n_slides} slides of {size} px with planted lesions")
    cohort = make_synthetic_cohort(out / "synthetic_cohort", n_slides=n_slides, size=size, seed=seed)

    say(f"2/5 tissue, patches and weight-free stain_stats features for {n_slides} slides")
    results = extract_cohort([s.path for s in cohort.slides], out / "extraction",
                             ExtractConfig(extractor="stain_stats"), progress=progress, cancelled=cancelled)
    failed = [r for r in results if r.status not in ("done", "skipped")]
    if failed:
        raise DnDError(f"extraction failed for {failed[0].slide_id}: {failed[0].error}")
    fdir = feature_dir_for(out / "extraction", "stain_stats")

    ep = {**DEMO_EPOCHS, **(epochs or {})}
    cfg = preset_config("paper", model)
    cfg.base.epochs, cfg.expert.epochs, cfg.student.epochs = ep["base"], ep["expert"], ep["student"]
    for part in (cfg.base, cfg.expert, cfg.student):
        # the paper's SGD/Adam at lr 1e-4 need its 200/300 epochs; with a fifth of them Adam at 5e-4 gets there
        part.optimizer, part.lr, part.device = "adam", DEMO_LR, "cpu"
    say(f"3/5 D&D ({model}, paper preset, Adam lr {DEMO_LR:g} in every stage, epochs {ep['base']}/{ep['expert']}/{ep['student']}, {folds} folds): "
        "base → clusters → experts → student")
    run = run_dnd_cv(fdir, cohort.labels_csv, out / "dnd_run", cfg, CVSettings(folds=folds, split_seed=seed + 1),
                     progress=progress, cancelled=cancelled, log=lambda m: say("  " + m))
    rows = [table_row(model, run)]
    write_tables(out / "dnd_run", rows, f"synthetic demo cohort ({n_slides} slides), {folds} folds, "
                                        f"epochs {ep['base']}/{ep['expert']}/{ep['student']}")
    say("4/5 base vs D&D on the held-out folds")

    say("5/5 prediction and heatmaps: the bundled real slide and the held-out lesion slides of the deployed fold")
    lm = load_deployable(run.model_path, "cpu", with_teachers=True)
    demo_model = out / "demo_model.safetensors"
    save_deployable(lm.model, demo_model, {**lm.card, "demo": True, "notes": DEMO_NOTE})
    fold = run.summary["deployed_fold"]
    test_ids = {p["slide_id"] for p in run.folds[fold]["predictions"]}
    lesion = [s for s in cohort.slides if s.slide_id in test_ids and s.label_index > 0]
    preds = predict_slides(lm, real + [s.path for s in lesion[:1]], out / "predictions", heatmaps="all",
                           device="cpu", cancelled=cancelled)
    auc = _heatmap_auc(lm, lesion, find_bags(fdir))
    res = DemoResult(out, time.perf_counter() - t0, table=markdown_table(rows), heatmap_auc=auc, predictions=preds)
    res.paths.update({
        "synthetic slides": cohort.out_dir / "slides", "labels CSV": cohort.labels_csv,
        "lesion masks (ground truth)": cohort.out_dir / "masks",
        "tissue GeoJSON / QC images": out / "extraction" / "tissue",
        "patch coordinates (.h5)": out / "extraction" / "patches",
        "features (.h5 / .pt)": fdir, "D&D run (every stage, per fold)": run.out_dir,
        "base vs D&D table": run.out_dir / "table.md", "deployable model": run.model_path,
        "demo model (labelled as such)": demo_model,
        "predictions CSV": out / "predictions" / "predictions.csv", "heatmaps (PNG + GeoJSON)": out / "predictions" / "heatmaps"})
    return res


def _heatmap_auc(lm, slides, bags) -> float:
    """Patch-level AUC of the student's scores against the planted-lesion masks, pooled over ``slides``."""
    from sklearn.metrics import roc_auc_score

    from .bags import load_bag
    from .heatmaps import normalise_scores, patch_truth
    from .patching.h5io import read_coords_h5
    from .predict import model_scores
    from .synth import read_lesion_mask
    ys, ss = [], []
    for s in slides:
        path = bags.get(s.slide_id)
        if path is None or path.suffix != ".h5":
            continue
        bag, coords = load_bag(path, with_coords=True)
        _, attrs = read_coords_h5(path)
        _, scores = model_scores(lm.model, bag, "cpu")
        mask, ds = read_lesion_mask(s.mask_path)
        truth = patch_truth(coords, float(attrs["patch_size_level0"]), mask, ds)
        if truth.any() and not truth.all():
            ys.append(truth)
            ss.append(normalise_scores(scores, "percentile"))   # what the heatmap shows
    if not ys:
        return float("nan")
    return float(roc_auc_score(np.concatenate(ys), np.concatenate(ss)))


__all__ = ["DEMO_EPOCHS", "DEMO_LR", "DEMO_NOTE", "DemoResult", "bundled_slides", "run_demo"]
