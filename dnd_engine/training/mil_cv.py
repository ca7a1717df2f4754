"""Cross-validated training of one MIL method: the run folder plain ``dnd train`` writes and can resume.

The loop, the checks and the files are :mod:`.folds`' (shared with D&D); this module is the fold function (seed,
build the model, train it with resumable checkpoints, test it on validation and test slides) and the settings.

Layout: as ``folds.py`` says, with ``run/fold_{i}/`` holding the trainer's output (best/last safetensors,
metrics.jsonl, state.json) beside the fold's predictions.csv (test slides) and results.json (val + test metrics).
"""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from .. import __version__
from ..device import resolve_device
from ..models import build_model
from ..progress import CancelFn, ProgressFn
from .folds import (Fold, SplitSpec, finish_run, fold_metrics, fold_predictions, load_cohort, nan_if_none,
                    run_folds, start_run, summary_table)
from .metrics import mean_std
from .trainer import EpochFn, TrainConfig, evaluate, train_model

METRIC_KEYS = ("acc", "balanced_acc", "auc")


@dataclass
class CVConfig(SplitSpec):
    """One MIL method's settings on top of the split settings (:class:`SplitSpec`: folds, val_frac, split_seed,
    splits_dir)."""
    model: str = "abmil"
    model_options: Dict[str, object] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class CVResult:
    out_dir: Path
    class_names: List[str]
    folds: List[Dict[str, object]]
    summary: Dict[str, Dict[str, float]]


def _seed_everything(seed: int) -> None:
    import random
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)


def _same_run(config: Dict[str, object]) -> object:
    """What a resumed run must share with the folder's: the model, classes and splits, and the training
    settings but the device."""
    return ({k: config.get(k) for k in ("model", "class_names", "folds", "split_seed", "val_frac")},
            {k: v for k, v in config.get("train", {}).items() if k != "device"})


def run_cross_validation(features_dir: str | Path, labels_csv: str | Path, out_dir: str | Path, cfg: CVConfig,
                         *, progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None,
                         on_epoch: Optional[EpochFn] = None, log=None) -> CVResult:
    """Train and test ``cfg.model`` on every fold; finished folds are skipped and an unfinished one resumes."""
    cohort = load_cohort(features_dir, labels_csv, cfg, cancelled)
    in_dim, class_names = cohort.in_dim, cohort.class_names
    model_probe = build_model(cfg.model, in_dim=in_dim, n_classes=len(class_names), **cfg.model_options)
    device = resolve_device(cfg.train.device)
    config = {"version": __version__, "features_dir": str(Path(features_dir).resolve()),
              "labels_csv": str(Path(labels_csv).resolve()), "model": model_probe.config(),
              "class_names": class_names, "folds": len(cohort.splits), "val_frac": cfg.val_frac,
              "split_seed": cfg.split_seed, "split_source": cfg.source(cohort.table),
              "train": asdict(cfg.train), "device": str(device), "torch": torch.__version__,
              "python": platform.python_version()}
    out = start_run(out_dir, config, _same_run, cohort.splits)

    def fit(fold: Fold) -> Dict[str, object]:
        i, split = fold.index, fold.split
        _seed_everything(cfg.train.seed + i)
        model = build_model(cfg.model, in_dim=in_dim, n_classes=len(class_names), **cfg.model_options)
        result = train_model(model, fold.train, fold.val, cfg.train, fold.dir, progress=fold.progress,
                             cancelled=cancelled, on_epoch=fold.on_epoch, tag=f"fold {i} ")
        val_ev = evaluate(model, fold.val, device) if fold.val is not None else None
        test_ev = evaluate(model, fold.test, device, cancelled) if len(fold.test) else None
        res = {"fold": i, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
               "n_train": len(split.train), "n_val": len(split.val), "n_test": len(split.test)}
        res.update(fold_metrics("val", val_ev, METRIC_KEYS))
        res.update(fold_metrics("test", test_ev, METRIC_KEYS))
        res["predictions"] = fold_predictions(i, fold.test, test_ev, class_names) if test_ev is not None else []
        return res

    folds = run_folds(cohort, out, fit, steps=[cfg.train.epochs * len(s.train) for s in cohort.splits],
                      with_model=False, report=lambda r: f"fold {r['fold']}: test acc {r.get('test_acc')}, auc "
                      f"{r.get('test_auc')}, best epoch {r['best_epoch']}", progress=progress, cancelled=cancelled,
                      on_epoch=on_epoch, log=log)
    summary = {}
    for part in ("val", "test"):
        for k in METRIC_KEYS:
            m, s = mean_std([nan_if_none(f.get(f"{part}_{k}")) for f in folds])
            summary[f"{part}_{k}"] = {"mean": m, "std": s}
    finish_run(out, folds, class_names, with_model=False, summary=summary, summary_text=summary_csv(folds, summary),
               extra={"model": config["model"]})
    return CVResult(out, class_names, folds, summary)


def summary_csv(folds: List[Dict[str, object]], summary: Dict[str, Dict[str, float]]) -> str:
    return summary_table(folds, summary, ["test_acc", "test_balanced_acc", "test_auc", "val_acc", "val_auc"],
                         extra=["best_epoch"])


__all__ = ["CVConfig", "CVResult", "SplitSpec", "run_cross_validation", "summary_csv"]
