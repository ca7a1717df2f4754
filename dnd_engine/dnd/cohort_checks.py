"""Warnings for cohorts too small for D&D to mean anything, in words a user can act on.

A 12-slide cohort trained "fine": clustering the base model's embeddings split the slides by class, so every
expert saw one class only, and a fold tested on two slides reported ACC 1.000 while the model predicted at chance.
Nothing failed, so nothing said so. These checks say it: once before training (from the label counts, for the
wizard and the work estimate) and once the clusters are made (saved with them in ``clusters.json``, printed by
`dnd train`, shown on the Results page).

The minimums are rules of thumb, not statistics, chosen so that a warning means "this number is noise":

* ``MIN_CLUSTER_SLIDES`` = 10 training slides per cluster: an expert on fewer learns its slides by heart, and
  its selection (best validation accuracy) has nothing to choose on.
* ``MIN_CLASS_SLIDES`` = 2 slides of each class per cluster: with one, the expert has a single example of it.
* ``MIN_TEST_SLIDES`` = 10 test slides per fold: below, a fold's accuracy moves in steps of more than 0.1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence

MIN_CLUSTER_SLIDES = 10
MIN_CLASS_SLIDES = 2
MIN_TEST_SLIDES = 10

ONE_CLASS, FEW_OF_CLASS, SMALL_CLUSTER, SMALL_TEST = "one_class", "few_of_class", "small_cluster", "small_test"

MEANING = {
    ONE_CLASS: "its expert never sees the other class, so its accuracy says nothing and its soft targets teach "
               "the student only 'this is {cls}'",
    FEW_OF_CLASS: "its expert has a single example of that class to learn it from",
    SMALL_CLUSTER: f"an expert on fewer than {MIN_CLUSTER_SLIDES} slides learns them by heart; its accuracy and "
                   "the D&D gain are noise",
    SMALL_TEST: "a fold's accuracy moves in steps of 1/{n}, so even ACC 1.000 says little; use more slides or "
                "fewer folds",
}


def _fmt_counts(counts: Dict[str, int]) -> str:
    return ", ".join(f"{n} {c}" for c, n in counts.items())


def cluster_warnings(counts: Sequence[Dict[str, int]]) -> List[Dict[str, object]]:
    """Warnings for clusters with ``counts[c]`` = {class: training slides}; each has ``kind``, ``cluster``,
    ``n_slides`` and ``text`` (one sentence with what it means). Empty when the clusters look usable."""
    out: List[Dict[str, object]] = []
    for c, by_class in enumerate(counts):
        n = int(sum(by_class.values()))
        present = [k for k, v in by_class.items() if v > 0]
        if len(by_class) > 1 and len(present) == 1:
            out.append({"kind": ONE_CLASS, "cluster": c, "n_slides": n, "class": present[0],
                        "text": f"cluster {c + 1} holds only class '{present[0]}' ({n} slides): "
                                + MEANING[ONE_CLASS].format(cls=present[0])})
        elif n >= MIN_CLUSTER_SLIDES:      # in a smaller cluster the size warning below says it already
            few = [k for k in present if by_class[k] < MIN_CLASS_SLIDES]
            for k in few:
                out.append({"kind": FEW_OF_CLASS, "cluster": c, "n_slides": n, "class": k,
                            "class_slides": int(by_class[k]),
                            "text": f"cluster {c + 1} has {by_class[k]} slide of class '{k}' ({_fmt_counts(by_class)}):"
                                    f" {MEANING[FEW_OF_CLASS]}"})
        if 0 < n < MIN_CLUSTER_SLIDES:
            out.append({"kind": SMALL_CLUSTER, "cluster": c, "n_slides": n,
                        "text": f"cluster {c + 1} has {n} training slide{'s' if n != 1 else ''}: "
                                + MEANING[SMALL_CLUSTER]})
    return out


def cohort_warnings(class_counts: Dict[str, int], n_clusters: int, folds: int, val_frac: float = 0.1,
                    train_counts: Optional[Dict[str, int]] = None,
                    n_test: Optional[int] = None) -> List[str]:
    """Before training: is this cohort big enough for C clusters and k folds? One line per problem.

    ``class_counts``: labelled slides per class. With a split column, ``train_counts`` (training slides per
    class) and ``n_test`` replace the k-fold estimate (train ≈ N·(k−1)/k·(1−val_frac), test ≈ N/k)."""
    n = sum(class_counts.values())
    if n == 0 or n_clusters < 1:
        return []
    if train_counts is None:
        train_counts = {c: int(v * (folds - 1) / folds * (1 - val_frac)) for c, v in class_counts.items()}
    if n_test is None:
        n_test = n // max(folds, 1)
    n_train = sum(train_counts.values())
    out = []
    per_cluster = n_train / n_clusters
    if per_cluster < MIN_CLUSTER_SLIDES:
        out.append(f"{n} slides are too few for {n_clusters} clusters: each fold trains on about {n_train} "
                   f"slides, about {per_cluster:.0f} per cluster (fewer than {MIN_CLUSTER_SLIDES}); "
                   f"{MEANING[SMALL_CLUSTER]}. Lower C or add slides")
    thin = [c for c, v in train_counts.items() if v / n_clusters < MIN_CLASS_SLIDES]
    if thin and len(class_counts) > 1:
        out.append(f"class{'es' if len(thin) > 1 else ''} {', '.join(repr(c) for c in thin)} would have fewer than "
                   f"{MIN_CLASS_SLIDES} training slides per cluster: clusters are likely to hold one class only, "
                   "and then their experts never see the other class")
    if 0 < n_test < MIN_TEST_SLIDES:
        out.append(f"each fold tests on about {n_test} slides: " + MEANING[SMALL_TEST].format(n=n_test))
    return out


def run_warnings(run_dir: str | Path) -> List[str]:
    """A finished (or running) D&D run's warnings, gathered over its folds: one line per kind, with what it means.

    Reads ``fold_<i>/clusters/clusters.json`` (written when the clusters are made) and the folds' test sizes
    (``fold_<i>/results.json``); a run made before the checks existed has none to show."""
    run = Path(run_dir)
    by_kind: Dict[str, List[str]] = {}
    sizes: Dict[str, List[int]] = {}
    tests: List[int] = []
    for fold in sorted(run.glob("fold_*"), key=lambda p: int(p.name.split("_")[1]) if p.name[5:].isdigit() else 0):
        data = _read(fold / "clusters" / "clusters.json")
        for w in data.get("warnings") or []:
            kind = str(w.get("kind"))
            detail = f"cluster {int(w.get('cluster') or 0) + 1}"   # stored 0-based as the files; said 1-based
            if kind == ONE_CLASS:
                detail += f" ('{w.get('class')}', {w.get('n_slides')} slides)"
            elif kind == FEW_OF_CLASS:
                detail += f" ({w.get('class_slides')} '{w.get('class')}' of {w.get('n_slides')} slides)"
            by_kind.setdefault(kind, []).append(f"{fold.name.replace('_', ' ')} {detail}")
            sizes.setdefault(kind, []).append(int(w.get("n_slides") or 0))
        res = _read(fold / "results.json")
        if isinstance(res.get("n_test"), int):
            tests.append(res["n_test"])
    out = []
    if ONE_CLASS in by_kind:
        items = by_kind[ONE_CLASS]
        out.append(f"{len(items)} cluster{'s' if len(items) > 1 else ''} hold one class only "
                   f"({'; '.join(items[:6])}{'; …' if len(items) > 6 else ''}): their experts never see the other "
                   "class, so their accuracy says nothing")
    if FEW_OF_CLASS in by_kind:
        items = by_kind[FEW_OF_CLASS]
        out.append(f"{len(items)} cluster{'s' if len(items) > 1 else ''} have a single slide of a class "
                   f"({'; '.join(items[:6])}{'; …' if len(items) > 6 else ''}): " + MEANING[FEW_OF_CLASS])
    if SMALL_CLUSTER in by_kind:
        s = sizes[SMALL_CLUSTER]
        span = f"{min(s)}" if min(s) == max(s) else f"{min(s)}–{max(s)}"
        out.append(f"{len(s)} cluster{'s' if len(s) > 1 else ''} have fewer than {MIN_CLUSTER_SLIDES} training "
                   f"slides ({span}): " + MEANING[SMALL_CLUSTER])
    if tests and min(tests) < MIN_TEST_SLIDES:
        span = f"{min(tests)}" if min(tests) == max(tests) else f"{min(tests)}–{max(tests)}"
        out.append(f"folds test on {span} slides: " + MEANING[SMALL_TEST].format(n=min(tests)))
    return out


def _read(path: Path) -> Dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


__all__ = ["MIN_CLASS_SLIDES", "MIN_CLUSTER_SLIDES", "MIN_TEST_SLIDES", "cluster_warnings", "cohort_warnings",
           "run_warnings"]
