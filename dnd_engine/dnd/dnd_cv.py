"""D&D on every fold, with the base model and the distilled student tested on the same slides.

The loop, the checks and the files are ``training/folds.py``'s (shared with plain ``dnd train``); this module is
the fold function (the four D&D stages, then base, student and each expert tested, and the fold's deployable
student) and the run's comparison of the two arms.

Layout: as ``training/folds.py`` says, and::

    run/fold_{i}/                                a D&D run folder (dnd/pipeline.py) + results.json, predictions.csv
    run/fold_{i}/model.safetensors               that fold's student with its model card
    run/model.safetensors                        the deployable model: the student of the fold with the best
                                                 validation accuracy (ties: the lowest fold)
    run/summary.csv, summary.json                base vs D&D per fold, mean ± std, difference, paired test
"""

from __future__ import annotations

import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from .. import __version__
from ..atomic import atomic_path
from ..device import resolve_device
from ..predictions import cv_predictions_text
from ..progress import CancelFn, ProgressFn
from ..training.folds import (Fold, SplitSpec, finish_run, fold_metrics, fold_predictions, load_cohort,
                              nan_if_none, run_folds, start_run, summary_table)
from ..training.metrics import mean_std
from ..training.trainer import evaluate, finite_or_none
from .card import features_provenance, make_card, save_deployable
from .pipeline import expected_steps, run_dnd
from .presets import DnDConfig
from .stats import paired_comparison

METRICS = ("acc", "auc", "balanced_acc")
ARMS = ("base", "dnd")

#: the split settings of a D&D run (the same four as plain cross-validation's: one definition)
CVSettings = SplitSpec


@dataclass
class DnDCVResult:
    out_dir: Path
    class_names: List[str]
    folds: List[Dict[str, object]]
    summary: Dict[str, object]
    model_path: Path


_SAME_RUN = ("kind", "class_names", "folds", "split_seed", "val_frac", "dnd")


def run_dnd_cv(features_dir: str | Path, labels_csv: str | Path, out_dir: str | Path, cfg: DnDConfig,
               cv: SplitSpec = SplitSpec(), *, progress: Optional[ProgressFn] = None,
               cancelled: Optional[CancelFn] = None, on_epoch: Optional[Callable[[Dict[str, object]], None]] = None,
               log: Optional[Callable[[str], None]] = None) -> DnDCVResult:
    """Train base + D&D on each fold and test both; finished folds are skipped, an unfinished one resumes."""
    cfg.validate()
    cohort = load_cohort(features_dir, labels_csv, cv, cancelled)
    ds_all, in_dim, class_names = cohort.data, cohort.in_dim, cohort.class_names
    device = resolve_device(cfg.base.device)
    settings = cfg.to_dict()
    for part in ("base", "expert", "student"):
        settings[part].pop("device", None)
    config = {"kind": "dnd", "version": __version__, "features_dir": str(Path(features_dir).resolve()),
              "labels_csv": str(Path(labels_csv).resolve()), "class_names": class_names, "in_dim": in_dim,
              "folds": len(cohort.splits), "val_frac": cv.val_frac, "split_seed": cv.split_seed,
              "split_source": cv.source(cohort.table),
              "dnd": settings, "device": str(device), "torch": torch.__version__,
              "python": platform.python_version()}
    out = start_run(out_dir, config, lambda c: {k: c.get(k) for k in _SAME_RUN}, cohort.splits)
    provenance = features_provenance(ds_all.paths)
    counts = dict(zip(class_names, ds_all.class_counts()))

    def fit(fold: Fold) -> Dict[str, object]:
        i, split, test_ds = fold.index, fold.split, fold.test
        result = run_dnd(fold.train, fold.val, cfg, fold.dir,
                         progress=lambda done, total, msg: fold.progress(done, total, f"fold {i} {msg}"),
                         cancelled=cancelled, on_epoch=fold.on_epoch, log=lambda m: fold.say(f"fold {i}: {m}"))
        res: Dict[str, object] = {"fold": i, "n_train": len(split.train), "n_val": len(split.val),
                                  "n_test": len(split.test), "cluster_sizes": result.clustering.sizes(),
                                  "cluster_method": result.clustering.method}
        preds: List[Dict[str, object]] = []
        for arm, model in (("base", result.base), ("dnd", result.student)):
            val_ev = evaluate(model, fold.val, device) if fold.val is not None else None
            test_ev = evaluate(model, test_ds, device, cancelled) if len(test_ds) else None
            res.update(fold_metrics(f"{arm}_val", val_ev, METRICS))
            res.update(fold_metrics(f"{arm}_test", test_ev, METRICS))
            if test_ev is not None:
                preds += fold_predictions(i, test_ds, test_ev, class_names, arm)
        for c, expert in enumerate(result.experts):
            if len(test_ds):
                ev = evaluate(expert, test_ds, device, cancelled)
                res[f"expert_{c}_test_acc"] = finite_or_none(float(ev["acc"]))
                res[f"expert_{c}_test_auc"] = finite_or_none(float(ev["auc"]))
        res["predictions"] = preds
        card = make_card(class_names=class_names, feature_dim=in_dim, provenance=provenance,
                         dnd={"preset": cfg.preset, "model": cfg.model, "n_clusters": cfg.n_clusters,
                              "cluster_on": cfg.cluster_on, "temperature": cfg.temperature,
                              "legacy_random_partition": cfg.legacy_random_partition},
                         cohort={"n_slides": len(ds_all), "class_counts": counts, "fold": i,
                                 "n_train": len(split.train), "n_val": len(split.val), "n_test": len(split.test),
                                 "labels_csv": Path(labels_csv).name},
                         metrics={k: v for k, v in res.items() if k.startswith(("dnd_", "base_"))
                                  and not k.endswith("confusion")})
        save_deployable(result.student, fold.dir / "model.safetensors", card)
        return res

    folds = run_folds(cohort, out, fit, steps=[expected_steps(cfg, len(s.train)) for s in cohort.splits],
                      with_model=True, report=_report, progress=progress, cancelled=cancelled, on_epoch=on_epoch,
                      log=log)
    summary = summarise(folds)
    best = max(range(len(folds)), key=lambda k: (folds[k].get("dnd_val_acc") or -1.0, -k))
    model_path = out / "model.safetensors"
    with atomic_path(model_path) as tmp:
        shutil.copyfile(out / f"fold_{best}" / "model.safetensors", tmp)
    summary["deployed_fold"] = best
    finish_run(out, folds, class_names, with_model=True, summary=summary, summary_text=summary_csv(folds, summary),
               extra={"dnd": settings})
    return DnDCVResult(out, class_names, folds, summary, model_path)


def _report(res: Dict[str, object]) -> str:
    return (f"fold {res['fold']}: base acc {_fmt(res.get('base_test_acc'))} auc {_fmt(res.get('base_test_auc'))} | "
            f"D&D acc {_fmt(res.get('dnd_test_acc'))} auc {_fmt(res.get('dnd_test_auc'))}")


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def summarise(folds: List[Dict[str, object]]) -> Dict[str, object]:
    """Mean ± std per arm and metric, and the paired D&D − base difference over folds."""
    out: Dict[str, object] = {}
    for part in ("test", "val"):
        for k in METRICS:
            for arm in ARMS:
                m, s = mean_std([nan_if_none(f.get(f"{arm}_{part}_{k}")) for f in folds])
                out[f"{arm}_{part}_{k}"] = {"mean": m, "std": s}
    for k in ("acc", "auc"):
        base = [nan_if_none(f.get(f"base_test_{k}")) for f in folds]
        dnd = [nan_if_none(f.get(f"dnd_test_{k}")) for f in folds]
        out[f"diff_test_{k}"] = paired_comparison(base, dnd)
    return out


def predictions_csv(rows: List[Dict[str, object]], class_names: List[str]) -> str:
    """The text of a D&D run's predictions file holding ``rows`` (``fold,model,slide_id,label,predicted,p_*``)."""
    return cv_predictions_text(rows, class_names, with_model=True)


def summary_csv(folds: List[Dict[str, object]], summary: Dict[str, object]) -> str:
    return summary_table(folds, summary, ["base_test_acc", "dnd_test_acc", "base_test_auc", "dnd_test_auc",
                                          "base_val_acc", "dnd_val_acc"])


__all__ = ["CVSettings", "DnDCVResult", "predictions_csv", "run_dnd_cv", "summarise", "summary_csv"]
