"""Train/val/test splits: from the labels CSV, or stratified k-fold generated from a seed and saved.

Saved as the authors' ``splits_{i}.csv`` (columns ``train,val,test``, one slide id per cell, short columns
padded with empty cells), so splits move between their code, CLAM and ours in both directions.
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from ..atomic import write_text_atomic
from .labels import LabelTable, LabelsError


@dataclass
class Split:
    train: List[str]
    val: List[str]
    test: List[str]

    def as_dict(self) -> Dict[str, List[str]]:
        return {"train": self.train, "val": self.val, "test": self.test}


def split_from_column(table: LabelTable) -> Split:
    if table.splits is None:
        raise LabelsError("the labels CSV has no split column")
    parts = {k: [s for s, sp in zip(table.slide_ids, table.splits) if sp == k] for k in ("train", "val", "test")}
    return Split(**parts)


def stratified_kfold(table: LabelTable, folds: int, seed: int = 1, val_frac: float = 0.1) -> List[Split]:
    """k stratified folds: fold i tests on part i; ``val_frac`` of each class (of the whole set, at least one
    slide when the class has two or more left) is drawn from the rest for validation; the remainder trains."""
    if folds < 2:
        raise LabelsError(f"cross-validation needs at least 2 folds, got {folds}")
    if not 0.0 <= val_frac < 0.5:
        raise LabelsError(f"val_frac must be in [0, 0.5), got {val_frac}")
    table.check(folds=folds)
    rng = np.random.default_rng(seed)
    by_class: Dict[str, List[str]] = {}
    for sid, lab in zip(table.slide_ids, table.labels):
        by_class.setdefault(lab, []).append(sid)
    parts: List[List[str]] = [[] for _ in range(folds)]
    offset = 0
    for lab in table.classes:
        ids = list(by_class[lab])
        rng.shuffle(ids)
        # round-robin, continuing where the previous class stopped, keeps fold sizes within one of each other
        for j, sid in enumerate(ids):
            parts[(offset + j) % folds].append(sid)
        offset = (offset + len(ids)) % folds
    order = {s: i for i, s in enumerate(table.slide_ids)}
    label_of = dict(zip(table.slide_ids, table.labels))
    out = []
    for i in range(folds):
        test = sorted(parts[i], key=order.get)
        rest = [s for j in range(folds) if j != i for s in parts[j]]
        val: List[str] = []
        if val_frac > 0:
            for lab in table.classes:
                pool = sorted((s for s in rest if label_of[s] == lab), key=order.get)
                n_val = int(round(val_frac * len(by_class[lab])))
                if len(pool) >= 2:
                    n_val = min(max(n_val, 1), len(pool) - 1)
                else:
                    n_val = 0
                pick = rng.permutation(len(pool))[:n_val]
                val += [pool[k] for k in sorted(pick)]
        vs = set(val)
        train = sorted((s for s in rest if s not in vs), key=order.get)
        out.append(Split(train, sorted(val, key=order.get), test))
    return out


def write_split(split: Split, path: str | os.PathLike) -> Path:
    cols = [split.train, split.val, split.test]
    n = max(len(c) for c in cols)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["", "train", "val", "test"])
    for i in range(n):
        w.writerow([i] + [c[i] if i < len(c) else "" for c in cols])
    return write_text_atomic(path, buf.getvalue())


def read_split(path: str | os.PathLike) -> Split:
    """Read a ``splits_{i}.csv`` (ours or the authors'); ids are kept as strings so zero padding survives."""
    p = Path(path)
    try:
        rows = list(csv.reader(p.read_text(encoding="utf-8-sig").splitlines()))
    except OSError as e:
        raise LabelsError(f"cannot read split file {p}: {e}") from None
    if not rows:
        raise LabelsError(f"split file {p} is empty")
    header = [h.strip().lower() for h in rows[0]]
    try:
        cols = {k: header.index(k) for k in ("train", "val", "test")}
    except ValueError:
        raise LabelsError(f"split file {p} needs train, val and test columns; found {rows[0]}") from None
    parts: Dict[str, List[str]] = {k: [] for k in cols}
    for r in rows[1:]:
        for k, c in cols.items():
            if c < len(r) and r[c].strip():
                parts[k].append(r[c].strip())
    return Split(**parts)


def read_splits_dir(folder: str | os.PathLike, folds: Optional[int] = None) -> List[Split]:
    d = Path(folder)
    files = sorted(d.glob("splits_*.csv"), key=lambda q: int(q.stem.split("_")[-1]) if q.stem.split("_")[-1]
                   .isdigit() else 10 ** 9)
    if not files:
        raise LabelsError(f"no splits_<i>.csv files in {d}")
    if folds is not None:
        files = files[:folds]
    return [read_split(f) for f in files]


def check_split(split: Split, table: LabelTable, available: Optional[Sequence[str]] = None) -> None:
    """One-line error when a split names unknown slides, overlaps, or trains on a single class."""
    known = set(table.slide_ids)
    for k, ids in split.as_dict().items():
        unknown = [s for s in ids if s not in known]
        if unknown:
            raise LabelsError(f"the {k} split names {len(unknown)} slide(s) not in the labels CSV: {unknown[:3]}")
    a, b, c = set(split.train), set(split.val), set(split.test)
    if a & b or a & c or b & c:
        raise LabelsError("a slide appears in more than one of train/val/test")
    labels = dict(zip(table.slide_ids, table.labels))
    if len({labels[s] for s in split.train}) < 2:
        raise LabelsError("the training split holds only one class")
