"""D&D on every fold, with the base model and the distilled student tested on the same slides.

Layout::

    run/config.json, run/splits/splits_{i}.csv   as ``dnd train`` without D&D (training/cv.py)
    run/fold_{i}/                                a D&D run folder (dnd/pipeline.py) + results.json, predictions.csv
    run/fold_{i}/model.safetensors               that fold's student with its model card
    run/model.safetensors                        the deployable model: the student of the fold with the best
                                                 validation accuracy (ties: the lowest fold)
    run/summary.csv, summary.json                base vs D&D per fold, mean ± std, difference, paired test
"""

from __future__ import annotations

import csv
import io
import json
import platform
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from .. import __version__
from ..atomic import atomic_path, ensure_dir, write_json_atomic, write_text_atomic
from ..bags import BagDataset, find_bags, read_labels, write_split
from ..device import resolve_device
from ..errors import DnDError
from ..progress import CancelFn, ProgressFn, check_cancelled
from ..training.cv import CVConfig, prepare_splits
from ..training.metrics import mean_std
from ..training.trainer import evaluate, finite_or_none
from .card import features_provenance, make_card, save_deployable
from .pipeline import expected_steps, run_dnd
from .presets import DnDConfig
from .stats import paired_comparison

METRICS = ("acc", "auc", "balanced_acc")
ARMS = ("base", "dnd")


@dataclass
class CVSettings:
    folds: int = 5
    val_frac: float = 0.1
    split_seed: int = 1
    splits_dir: Optional[str] = None


@dataclass
class DnDCVResult:
    out_dir: Path
    class_names: List[str]
    folds: List[Dict[str, object]]
    summary: Dict[str, object]
    model_path: Path


def _fold_metrics(prefix: str, ev: Optional[Dict[str, object]]) -> Dict[str, object]:
    if ev is None:
        return {}
    out = {f"{prefix}_{k}": finite_or_none(float(ev[k])) for k in METRICS + ("loss",)}
    out[f"{prefix}_confusion"] = ev["confusion"]
    return out


def run_dnd_cv(features_dir: str | Path, labels_csv: str | Path, out_dir: str | Path, cfg: DnDConfig,
               cv: CVSettings = CVSettings(), *, progress: Optional[ProgressFn] = None,
               cancelled: Optional[CancelFn] = None, on_epoch: Optional[Callable[[Dict[str, object]], None]] = None,
               log: Optional[Callable[[str], None]] = None) -> DnDCVResult:
    """Train base + D&D on each fold and test both; finished folds are skipped, an unfinished one resumes."""
    cfg.validate()
    say = log or (lambda msg: None)
    table = read_labels(labels_csv)
    bags = find_bags(features_dir)
    table.check(available=list(bags), folds=0 if (cv.splits_dir or table.splits) else cv.folds)

    splits = prepare_splits(table, CVConfig(folds=cv.folds, val_frac=cv.val_frac, split_seed=cv.split_seed,
                                            splits_dir=cv.splits_dir))
    ds_all = BagDataset(bags, table)
    in_dim = ds_all.validate(cancelled=cancelled)
    class_names = ds_all.class_names
    device = resolve_device(cfg.base.device)
    out = ensure_dir(out_dir)
    settings = cfg.to_dict()
    for part in ("base", "expert", "student"):
        settings[part].pop("device", None)
    config = {"kind": "dnd", "version": __version__, "features_dir": str(Path(features_dir).resolve()),
              "labels_csv": str(Path(labels_csv).resolve()), "class_names": class_names, "in_dim": in_dim,
              "folds": len(splits), "val_frac": cv.val_frac, "split_seed": cv.split_seed,
              "split_source": "splits_dir" if cv.splits_dir else
              ("labels column" if table.splits is not None else "stratified k-fold"),
              "dnd": settings, "device": str(device), "torch": torch.__version__,
              "python": platform.python_version()}
    cfg_path = out / "config.json"
    keys = ("kind", "class_names", "folds", "split_seed", "val_frac", "dnd")
    if cfg_path.is_file():
        old = json.loads(cfg_path.read_text())
        if {k: old.get(k) for k in keys} != {k: config[k] for k in keys}:
            raise DnDError(f"{out} holds a run with other settings; choose another --out folder or delete it")
    write_json_atomic(cfg_path, config)
    for i, s in enumerate(splits):
        write_split(s, out / "splits" / f"splits_{i}.csv")
    provenance = features_provenance(ds_all.paths)
    counts = dict(zip(class_names, ds_all.class_counts()))

    steps = [expected_steps(cfg, len(s.train)) for s in splits]
    folds: List[Dict[str, object]] = []
    for i, split in enumerate(splits):
        check_cancelled(cancelled)
        fold_dir = out / f"fold_{i}"
        res_path = fold_dir / "results.json"
        if res_path.is_file():
            folds.append(json.loads(res_path.read_text()))
            say(f"fold {i}: already done")
            continue
        train_ds = ds_all.subset(split.train)
        val_ds = ds_all.subset(split.val) if split.val else None
        test_ds = ds_all.subset(split.test)

        def fold_progress(done, total, msg, _i=i):
            if progress is not None:
                progress(sum(steps[:_i]) + done, sum(steps), f"fold {_i} {msg}")

        def fold_epoch(rec, _i=i):
            if on_epoch is not None:
                on_epoch({"fold": _i, **rec})
        result = run_dnd(train_ds, val_ds, cfg, fold_dir, progress=fold_progress, cancelled=cancelled,
                         on_epoch=fold_epoch, log=lambda m, _i=i: say(f"fold {_i}: {m}"))
        res: Dict[str, object] = {"fold": i, "n_train": len(split.train), "n_val": len(split.val),
                                  "n_test": len(split.test), "cluster_sizes": result.clustering.sizes(),
                                  "cluster_method": result.clustering.method}
        preds: List[Dict[str, object]] = []
        for arm, model in (("base", result.base), ("dnd", result.student)):
            val_ev = evaluate(model, val_ds, device) if val_ds is not None else None
            test_ev = evaluate(model, test_ds, device, cancelled) if len(test_ds) else None
            res.update(_fold_metrics(f"{arm}_val", val_ev))
            res.update(_fold_metrics(f"{arm}_test", test_ev))
            if test_ev is not None:
                for sid, y, p in zip(test_ds.slide_ids, test_ds.targets, test_ev["probs"]):
                    preds.append({"fold": i, "arm": arm, "slide_id": sid, "label": class_names[y],
                                  "predicted": class_names[int(np.argmax(p))], "probs": [float(v) for v in p]})
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
        save_deployable(result.student, fold_dir / "model.safetensors", card)
        write_text_atomic(fold_dir / "predictions.csv", predictions_csv(preds, class_names))
        write_json_atomic(res_path, res)
        say(f"fold {i}: base acc {_fmt(res.get('base_test_acc'))} auc {_fmt(res.get('base_test_auc'))} | "
            f"D&D acc {_fmt(res.get('dnd_test_acc'))} auc {_fmt(res.get('dnd_test_auc'))}")
        folds.append(res)

    summary = summarise(folds)
    best = max(range(len(folds)), key=lambda k: (folds[k].get("dnd_val_acc") or -1.0, -k))
    model_path = out / "model.safetensors"
    with atomic_path(model_path) as tmp:
        shutil.copyfile(out / f"fold_{best}" / "model.safetensors", tmp)
    summary["deployed_fold"] = best
    all_preds = [p for f in folds for p in f.get("predictions", [])]
    write_text_atomic(out / "predictions.csv", predictions_csv(all_preds, class_names))
    write_text_atomic(out / "summary.csv", summary_csv(folds, summary))
    write_json_atomic(out / "summary.json", {"folds": [{k: v for k, v in f.items() if k != "predictions"}
                                                       for f in folds], "summary": summary,
                                             "class_names": class_names, "dnd": settings})
    return DnDCVResult(out, class_names, folds, summary, model_path)


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def summarise(folds: List[Dict[str, object]]) -> Dict[str, object]:
    """Mean ± std per arm and metric, and the paired D&D − base difference over folds."""
    out: Dict[str, object] = {}
    for part in ("test", "val"):
        for k in METRICS:
            for arm in ARMS:
                m, s = mean_std([_nan(f.get(f"{arm}_{part}_{k}")) for f in folds])
                out[f"{arm}_{part}_{k}"] = {"mean": m, "std": s}
    for k in ("acc", "auc"):
        base = [_nan(f.get(f"base_test_{k}")) for f in folds]
        dnd = [_nan(f.get(f"dnd_test_{k}")) for f in folds]
        out[f"diff_test_{k}"] = paired_comparison(base, dnd)
    return out


def _nan(v) -> float:
    return float("nan") if v is None else float(v)


def predictions_csv(rows: List[Dict[str, object]], class_names: List[str]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["fold", "model", "slide_id", "label", "predicted"] + [f"p_{c}" for c in class_names])
    for r in rows:
        w.writerow([r["fold"], r["arm"], r["slide_id"], r["label"], r["predicted"]] +
                   [f"{p:.6f}" for p in r["probs"]])
    return buf.getvalue()


def summary_csv(folds: List[Dict[str, object]], summary: Dict[str, object]) -> str:
    cols = ["base_test_acc", "dnd_test_acc", "base_test_auc", "dnd_test_auc", "base_val_acc", "dnd_val_acc"]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["fold"] + cols)
    fmt = lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"  # noqa: E731
    for f in folds:
        w.writerow([f["fold"]] + [fmt(f.get(c)) for c in cols])
    w.writerow(["mean"] + [fmt(summary[c]["mean"]) for c in cols])
    w.writerow(["std"] + [fmt(summary[c]["std"]) for c in cols])
    return buf.getvalue()


__all__ = ["CVSettings", "DnDCVResult", "predictions_csv", "run_dnd_cv", "summarise", "summary_csv"]
