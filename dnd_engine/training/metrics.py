"""Slide-level metrics as the D&D authors report them, computed with scikit-learn.

ACC is plain accuracy (not balanced); AUC is the binary ROC AUC on p(class 1), or for more classes the
macro average of one-vs-rest AUCs over the classes present in ``y_true`` (the authors' ``summary()``: classes
absent from a split are skipped, so a BRACS fold missing a class still gets an AUC).
"""

from __future__ import annotations

import math
from typing import Dict, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score


def auc_score(y_true: Sequence[int], probs: np.ndarray) -> float:
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(probs, dtype=np.float64)
    if len(y) == 0:
        return float("nan")
    n_classes = p.shape[1]
    if n_classes == 2:
        if len(np.unique(y)) < 2:
            return float("nan")
        return float(roc_auc_score(y, p[:, 1]))
    aucs = []
    for c in range(n_classes):
        pos = y == c
        if pos.any() and (~pos).any():
            aucs.append(roc_auc_score(pos.astype(int), p[:, c]))
    return float(np.mean(aucs)) if aucs else float("nan")


def classification_metrics(y_true: Sequence[int], probs: np.ndarray) -> Dict[str, object]:
    """``acc``, ``balanced_acc``, ``auc`` (NaN when undefined), ``confusion`` (rows true, columns predicted)."""
    y = np.asarray(y_true, dtype=int)
    p = np.asarray(probs, dtype=np.float64)
    n_classes = p.shape[1]
    if len(y) == 0:
        return {"acc": float("nan"), "balanced_acc": float("nan"), "auc": float("nan"),
                "confusion": np.zeros((n_classes, n_classes), dtype=int).tolist(), "n": 0}
    pred = p.argmax(axis=1)
    conf = np.bincount(y * n_classes + pred, minlength=n_classes * n_classes).reshape(n_classes, n_classes)
    support = conf.sum(axis=1)
    present = support > 0          # balanced accuracy: mean recall over the classes present (as scikit-learn)
    return {
        "acc": float((pred == y).mean()),
        "balanced_acc": float((np.diag(conf)[present] / support[present]).mean()),
        "auc": auc_score(y, p),
        "confusion": conf.tolist(),
        "n": int(len(y)),
    }


def mean_std(values: Sequence[float]) -> tuple:
    """Mean and sample std (ddof=1, as pandas in the authors' summary) ignoring NaN."""
    v = np.asarray([x for x in values if x is not None and not math.isnan(x)], dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
