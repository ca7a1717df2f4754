"""The one cross-validation fold loop, shared by plain MIL training (``mil_cv.py``) and D&D (``dnd/dnd_cv.py``).

Both runs are one skeleton around one varying step, as scikit-learn's ``cross_validate`` serves every estimator:
read the labels and bags and check them (:func:`load_cohort`), settle the splits (:class:`SplitSpec`), refuse a
run folder that holds other settings and record this run's (:func:`start_run`), then for each fold either read
back its ``results.json`` (a finished fold: a rerun resumes) or fit and test it (:func:`run_folds`, the kind's
``fit`` function) and write its predictions and results, ``results.json`` last because it marks the fold done;
finally the run's predictions, ``summary.csv`` and ``summary.json`` (:func:`finish_run`).

Layout (both kinds)::

    run/config.json                 everything needed to repeat the run (classes, splits seed, settings)
    run/splits/splits_{i}.csv       the authors' split format (train,val,test columns)
    run/fold_{i}/                   the kind's training output, predictions.csv (test slides), results.json
    run/predictions.csv             every fold's test predictions
    run/summary.csv, summary.json   per-fold metrics with mean and std (ddof=1) rows
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..atomic import ensure_dir, write_json_atomic, write_text_atomic
from ..bags import (BagDataset, Split, check_split, find_bags, read_labels, read_splits_dir, split_from_column,
                    stratified_kfold, write_split)
from ..bags.labels import LabelTable
from ..errors import DnDError
from ..predictions import write_cv_predictions
from ..progress import CancelFn, ProgressFn, check_cancelled
from .trainer import finite_or_none

EpochFn = Callable[[Dict[str, object]], None]


@dataclass
class SplitSpec:
    """How a cohort is cut into folds: the four settings plain and D&D cross-validation share.

    The splits come from ``splits_dir`` (saved ``splits_{i}.csv``), else from the labels' split column, else from
    a seeded stratified k-fold with ``val_frac`` of each class held out for validation."""
    folds: int = 5
    val_frac: float = 0.1
    split_seed: int = 1
    splits_dir: Optional[str] = None        # reuse saved splits_{i}.csv instead of generating them

    def source(self, table: LabelTable) -> str:
        """Where the splits come from, as ``config.json`` records it."""
        if self.splits_dir:
            return "splits_dir"
        return "labels column" if table.splits is not None else "stratified k-fold"


def prepare_splits(table: LabelTable, spec: SplitSpec) -> List[Split]:
    """The splits ``spec`` gives for ``table``, each checked against it (one-line error)."""
    if spec.splits_dir:
        splits = read_splits_dir(spec.splits_dir, None)
    elif table.splits is not None:
        splits = [split_from_column(table)]
    else:
        splits = stratified_kfold(table, spec.folds, spec.split_seed, spec.val_frac)
    for s in splits:
        check_split(s, table)
    return splits


@dataclass
class Cohort:
    """The labelled bags of a run, checked, and its splits."""
    table: LabelTable
    splits: List[Split]
    data: BagDataset
    in_dim: int

    @property
    def class_names(self) -> List[str]:
        return self.data.class_names


def load_cohort(features_dir: str | Path, labels_csv: str | Path, spec: SplitSpec,
                cancelled: Optional[CancelFn] = None) -> Cohort:
    """Labels, bags, the checks between them, the splits, and every bag read once (its feature size)."""
    table = read_labels(labels_csv)
    bags = find_bags(features_dir)
    table.check(available=list(bags), folds=0 if (spec.splits_dir or table.splits) else spec.folds)
    splits = prepare_splits(table, spec)
    data = BagDataset(bags, table)
    in_dim = data.validate(cancelled=cancelled)
    return Cohort(table, splits, data, in_dim)


def start_run(out_dir: str | Path, config: Dict[str, object], same: Callable[[Dict[str, object]], object],
              splits: Sequence[Split]) -> Path:
    """Create the run folder, refuse it when its ``config.json`` holds other settings (``same(old) !=
    same(config)``: what a resumed run must share), then write this run's config and splits."""
    out = ensure_dir(out_dir)
    cfg_path = out / "config.json"
    if cfg_path.is_file():
        if same(json.loads(cfg_path.read_text())) != same(config):
            raise DnDError(f"{out} holds a run with other settings; choose another --out folder or delete it")
    write_json_atomic(cfg_path, config)
    for i, s in enumerate(splits):
        write_split(s, out / "splits" / f"splits_{i}.csv")
    return out


@dataclass
class Fold:
    """One fold as the fit function gets it: its data, its folder, and the run's callbacks scoped to it."""
    index: int
    split: Split
    dir: Path
    train: BagDataset
    val: Optional[BagDataset]
    test: BagDataset
    progress: ProgressFn        # (done, total, message) of this fold, reported as the whole run's
    on_epoch: EpochFn           # an epoch record, reported with "fold" added
    say: Callable[[str], None]


#: trains and tests one fold; returns its results (the metrics, and "predictions": the test rows)
FitFn = Callable[[Fold], Dict[str, object]]


def run_folds(cohort: Cohort, out: Path, fit: FitFn, *, steps: Sequence[int], with_model: bool,
              report: Callable[[Dict[str, object]], str], progress: Optional[ProgressFn] = None,
              cancelled: Optional[CancelFn] = None, on_epoch: Optional[EpochFn] = None,
              log: Optional[Callable[[str], None]] = None) -> List[Dict[str, object]]:
    """Every fold's results: a finished fold's read back, the others fitted by ``fit`` (an interrupted one
    resumes from its own checkpoints) and written: ``fold_{i}/predictions.csv``, then ``results.json``.

    ``steps``: each fold's share of the progress total; ``report(results)``: the line logged for a fitted fold;
    ``with_model``: the predictions have a ``model`` column (the rows' ``arm``)."""
    say = log or (lambda msg: None)
    data = cohort.data
    folds: List[Dict[str, object]] = []
    for i, split in enumerate(cohort.splits):
        check_cancelled(cancelled)
        fold_dir = out / f"fold_{i}"
        res_path = fold_dir / "results.json"
        if res_path.is_file():
            folds.append(json.loads(res_path.read_text()))
            say(f"fold {i}: already done")
            continue

        def fold_progress(done, total, msg, _i=i):
            if progress is not None:
                progress(sum(steps[:_i]) + done, sum(steps), msg)

        def fold_epoch(rec, _i=i):
            if on_epoch is not None:
                on_epoch({"fold": _i, **rec})
        fold = Fold(i, split, fold_dir, data.subset(split.train), data.subset(split.val) if split.val else None,
                    data.subset(split.test), fold_progress, fold_epoch, say)
        res = fit(fold)
        write_cv_predictions(fold_dir / "predictions.csv", res.get("predictions", []), cohort.class_names,
                             with_model=with_model)
        write_json_atomic(res_path, res)
        say(report(res))
        folds.append(res)
    return folds


def finish_run(out: Path, folds: List[Dict[str, object]], class_names: List[str], *, with_model: bool,
               summary: Dict[str, object], summary_text: str, extra: Dict[str, object]) -> None:
    """The run's predictions (every fold's), ``summary.csv`` and ``summary.json`` (folds without their
    predictions, the summary, the classes, then ``extra``)."""
    all_preds = [p for f in folds for p in f.get("predictions", [])]
    write_cv_predictions(out / "predictions.csv", all_preds, class_names, with_model=with_model)
    write_text_atomic(out / "summary.csv", summary_text)
    write_json_atomic(out / "summary.json", {"folds": [{k: v for k, v in f.items() if k != "predictions"}
                                                       for f in folds], "summary": summary,
                                             "class_names": class_names, **extra})


# --- pieces of a fold's results --------------------------------------------------------------------------------
def fold_metrics(prefix: str, ev: Optional[Dict[str, object]], keys: Sequence[str]) -> Dict[str, object]:
    """``{prefix}_{key}`` for ``keys`` and the loss (None where undefined), and ``{prefix}_confusion``."""
    if ev is None:
        return {}
    out = {f"{prefix}_{k}": finite_or_none(float(ev[k])) for k in tuple(keys) + ("loss",)}
    out[f"{prefix}_confusion"] = ev["confusion"]
    return out


def fold_predictions(fold: int, ds: BagDataset, ev: Dict[str, object], class_names: Sequence[str],
                     arm: Optional[str] = None) -> List[Dict[str, object]]:
    """One prediction row per test slide of ``ds`` (as results.json keeps them; ``arm``: which model)."""
    rows = []
    for sid, y, p in zip(ds.slide_ids, ds.targets, ev["probs"]):
        row: Dict[str, object] = {"fold": fold}
        if arm is not None:
            row["arm"] = arm
        row.update({"slide_id": sid, "label": class_names[y], "predicted": class_names[int(np.argmax(p))],
                    "probs": [float(v) for v in p]})
        rows.append(row)
    return rows


def nan_if_none(v) -> float:
    return float("nan") if v is None else float(v)


def summary_table(folds: List[Dict[str, object]], summary: Dict[str, object], cols: Sequence[str],
                  extra: Sequence[str] = ()) -> str:
    """``summary.csv``: a row per fold (``cols`` to 4 decimals, ``extra`` as they are), then mean and std rows."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["fold"] + list(cols) + list(extra))
    fmt = lambda v: "" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.4f}"  # noqa: E731
    for f in folds:
        w.writerow([f["fold"]] + [fmt(f.get(c)) for c in cols] + [f.get(c) for c in extra])
    w.writerow(["mean"] + [fmt(summary[c]["mean"]) for c in cols] + [""] * len(extra))
    w.writerow(["std"] + [fmt(summary[c]["std"]) for c in cols] + [""] * len(extra))
    return buf.getvalue()


__all__ = ["Cohort", "FitFn", "Fold", "SplitSpec", "finish_run", "fold_metrics", "fold_predictions", "load_cohort",
           "nan_if_none", "prepare_splits", "run_folds", "start_run", "summary_table"]
