"""Cross-validated training of one MIL method: the run folder ``dnd train`` writes and can resume.

Layout::

    run/config.json                 everything needed to repeat the run (classes, splits seed, settings)
    run/splits/splits_{i}.csv       the authors' split format (train,val,test columns)
    run/fold_{i}/                   trainer output (best/last safetensors, metrics.jsonl, state.json),
                                    predictions.csv (test slides), results.json (val + test metrics)
    run/predictions.csv             every fold's test predictions
    run/summary.csv, summary.json   per-fold metrics with mean and std (ddof=1) rows
"""

from __future__ import annotations

import csv
import io
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from .. import __version__
from ..atomic import ensure_dir, write_json_atomic, write_text_atomic
from ..bags import (BagDataset, Split, check_split, find_bags, read_labels, read_splits_dir,
                    split_from_column, stratified_kfold, write_split)
from ..errors import DnDError
from ..models import build_model
from ..progress import CancelFn, ProgressFn, check_cancelled
from .metrics import mean_std
from ..device import resolve_device
from .trainer import EpochFn, TrainConfig, evaluate, train_model

METRIC_KEYS = ("acc", "balanced_acc", "auc")


@dataclass
class CVConfig:
    model: str = "abmil"
    model_options: Dict[str, object] = field(default_factory=dict)
    folds: int = 5
    val_frac: float = 0.1
    split_seed: int = 1
    splits_dir: Optional[str] = None        # reuse saved splits_{i}.csv instead of generating them
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


def prepare_splits(table, cfg: CVConfig) -> List[Split]:
    if cfg.splits_dir:
        splits = read_splits_dir(cfg.splits_dir, None)
    elif table.splits is not None:
        splits = [split_from_column(table)]
    else:
        splits = stratified_kfold(table, cfg.folds, cfg.split_seed, cfg.val_frac)
    for s in splits:
        check_split(s, table)
    return splits


def _predictions_csv(rows: List[Dict[str, object]], class_names: List[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["fold", "slide_id", "label", "predicted"] + [f"p_{c}" for c in class_names])
    for r in rows:
        w.writerow([r["fold"], r["slide_id"], r["label"], r["predicted"]] + [f"{p:.6f}" for p in r["probs"]])
    return buf.getvalue()


def run_cross_validation(features_dir: str | Path, labels_csv: str | Path, out_dir: str | Path, cfg: CVConfig,
                         *, progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None,
                         on_epoch: Optional[EpochFn] = None, log=None) -> CVResult:
    """Train and test ``cfg.model`` on every fold; finished folds are skipped and an unfinished one resumes."""
    say = log or (lambda msg: None)
    table = read_labels(labels_csv)
    bags = find_bags(features_dir)
    table.check(available=list(bags), folds=0 if (cfg.splits_dir or table.splits) else cfg.folds)
    splits = prepare_splits(table, cfg)
    ds_all = BagDataset(bags, table)
    in_dim = ds_all.validate(cancelled=cancelled)
    class_names = ds_all.class_names
    model_probe = build_model(cfg.model, in_dim=in_dim, n_classes=len(class_names), **cfg.model_options)
    device = resolve_device(cfg.train.device)
    out = ensure_dir(out_dir)
    config = {"version": __version__, "features_dir": str(Path(features_dir).resolve()),
              "labels_csv": str(Path(labels_csv).resolve()), "model": model_probe.config(),
              "class_names": class_names, "folds": len(splits), "val_frac": cfg.val_frac,
              "split_seed": cfg.split_seed, "split_source": "splits_dir" if cfg.splits_dir else
              ("labels column" if table.splits is not None else "stratified k-fold"),
              "train": asdict(cfg.train), "device": str(device), "torch": torch.__version__,
              "python": platform.python_version()}
    cfg_path = out / "config.json"
    if cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        same = {k: old.get(k) for k in ("model", "class_names", "folds", "split_seed", "val_frac")} == \
            {k: config[k] for k in ("model", "class_names", "folds", "split_seed", "val_frac")}
        if not same or {k: v for k, v in old.get("train", {}).items() if k != "device"} != \
                {k: v for k, v in config["train"].items() if k != "device"}:
            raise DnDError(f"{out} holds a run with other settings; choose another --out folder or delete it")
    write_json_atomic(cfg_path, config)
    for i, s in enumerate(splits):
        write_split(s, out / "splits" / f"splits_{i}.csv")

    folds: List[Dict[str, object]] = []
    all_preds: List[Dict[str, object]] = []
    steps = [cfg.train.epochs * len(s.train) for s in splits]
    for i, split in enumerate(splits):
        check_cancelled(cancelled)
        fold_dir = out / f"fold_{i}"
        res_path = fold_dir / "results.json"
        test_ds = ds_all.subset(split.test)
        if res_path.is_file():
            res = json.loads(res_path.read_text())
            say(f"fold {i}: already done")
        else:
            _seed_everything(cfg.train.seed + i)
            model = build_model(cfg.model, in_dim=in_dim, n_classes=len(class_names), **cfg.model_options)
            train_ds = ds_all.subset(split.train)
            val_ds = ds_all.subset(split.val) if split.val else None

            def fold_progress(done, total, msg, _i=i):
                if progress is not None:
                    progress(sum(steps[:_i]) + done, sum(steps), msg)

            def fold_epoch(rec, _i=i):
                if on_epoch is not None:
                    on_epoch({"fold": _i, **rec})
            result = train_model(model, train_ds, val_ds, cfg.train, fold_dir, progress=fold_progress,
                                 cancelled=cancelled, on_epoch=fold_epoch, tag=f"fold {i} ")
            val_ev = evaluate(model, val_ds, device) if val_ds is not None else None
            test_ev = evaluate(model, test_ds, device, cancelled) if len(test_ds) else None
            res = {"fold": i, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
                   "n_train": len(split.train), "n_val": len(split.val), "n_test": len(split.test)}
            for name, ev in (("val", val_ev), ("test", test_ev)):
                if ev is not None:
                    for k in METRIC_KEYS + ("loss",):
                        res[f"{name}_{k}"] = None if np.isnan(ev[k]) else ev[k]
                    res[f"{name}_confusion"] = ev["confusion"]
            preds = []
            if test_ev is not None:
                for sid, y, p in zip(test_ds.slide_ids, test_ds.targets, test_ev["probs"]):
                    preds.append({"fold": i, "slide_id": sid, "label": class_names[y],
                                  "predicted": class_names[int(np.argmax(p))], "probs": [float(v) for v in p]})
            res["predictions"] = preds
            write_text_atomic(fold_dir / "predictions.csv", _predictions_csv(preds, class_names))
            write_json_atomic(res_path, res)
            say(f"fold {i}: test acc {res.get('test_acc')}, auc {res.get('test_auc')}, best epoch {result.best_epoch}")
        folds.append(res)
        all_preds += res.get("predictions", [])

    summary = {}
    for part in ("val", "test"):
        for k in METRIC_KEYS:
            vals = [f.get(f"{part}_{k}") for f in folds]
            vals = [float("nan") if v is None else v for v in vals]
            m, s = mean_std(vals)
            summary[f"{part}_{k}"] = {"mean": m, "std": s}
    write_text_atomic(out / "predictions.csv", _predictions_csv(all_preds, class_names))
    write_text_atomic(out / "summary.csv", summary_csv(folds, summary))
    write_json_atomic(out / "summary.json", {"folds": [{k: v for k, v in f.items() if k != "predictions"}
                                                       for f in folds], "summary": summary,
                                             "class_names": class_names, "model": config["model"]})
    return CVResult(out, class_names, folds, summary)


def summary_csv(folds: List[Dict[str, object]], summary: Dict[str, Dict[str, float]]) -> str:
    cols = ["test_acc", "test_balanced_acc", "test_auc", "val_acc", "val_auc"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["fold"] + cols + ["best_epoch"])
    fmt = lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"  # noqa: E731
    for f in folds:
        w.writerow([f["fold"]] + [fmt(f.get(c)) for c in cols] + [f.get("best_epoch")])
    w.writerow(["mean"] + [fmt(summary[c]["mean"]) for c in cols] + [""])
    w.writerow(["std"] + [fmt(summary[c]["std"]) for c in cols] + [""])
    return buf.getvalue()


__all__ = ["CVConfig", "CVResult", "prepare_splits", "run_cross_validation", "summary_csv"]
