"""Reading finished D&D cross-validation runs back for the Results page (and anything else that reports them).

A run folder is what ``run_dnd_cv`` writes (see dnd_cv.py): ``config.json`` and ``splits/`` first, then one
``fold_<i>/`` per fold, and only at the very end ``summary.json``, ``predictions.csv`` and the deployable
``model.safetensors``. So ``summary.json`` is the mark of a finished run; a folder without it is reported as
unfinished with how many folds are done, never read half-way.

Everything here is plain numpy/scikit-learn (never Qt). scikit-learn is imported inside the functions that need
it: importing it costs over a second, which the app pays on a worker thread, not at start.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
# imported here, not where used: the app loads results on a worker thread, and a first import there holds
# Python's GIL long enough to freeze the window (measured 400 ms)
from safetensors import SafetensorError, safe_open
from sklearn.decomposition import PCA
from sklearn.metrics import auc, confusion_matrix, roc_curve

from ..errors import DnDError
from ..text import one_line

ARMS = ("base", "dnd")
ARM_NAMES = {"base": "base", "dnd": "D&D"}


@dataclass(frozen=True)
class Prediction:
    """One test slide's prediction by one arm in one fold (a row of the run's ``predictions.csv``)."""

    fold: int
    arm: str
    slide_id: str
    label: str
    predicted: str
    probs: Tuple[float, ...]


@dataclass
class DnDRun:
    """A finished D&D cross-validation run: settings, per-fold and summary metrics, every test prediction."""

    path: Path
    class_names: List[str]
    method: str
    preset: str
    folds: List[Dict[str, object]]
    summary: Dict[str, object]
    predictions: List[Prediction]
    config: Dict[str, object] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The name the user gave the run (a project's run name, not the method folder inside it)."""
        from ..run_names import run_name
        return run_name(self.path)

    @property
    def key(self) -> str:
        """Unique to the run folder: ``<run name>/<method>`` for a project or bench run (see run_names)."""
        from ..run_names import run_key
        return run_key(self.path)

    @property
    def n_folds(self) -> int:
        return len(self.folds)

    @property
    def model_path(self) -> Path:
        """The deployable student (the fold with the best validation accuracy)."""
        return self.path / "model.safetensors"

    def fold_dir(self, fold: int) -> Path:
        return self.path / f"fold_{int(fold)}"

    def cluster_folds(self) -> List[int]:
        """Folds whose clustering was saved with its representations (what the cluster explorer can show)."""
        return [int(f["fold"]) for f in self.folds
                if (self.fold_dir(int(f["fold"])) / "clusters" / "representations.safetensors").is_file()]


def _read_json(path: Path) -> Dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise DnDError(f"cannot read {path}: {one_line(e, None)}") from None
    if not isinstance(data, dict):
        raise DnDError(f"{path} is not a JSON object")
    return data


def _folds_done(path: Path, n_folds: int) -> int:
    return sum((path / f"fold_{i}" / "results.json").is_file() for i in range(n_folds))


def _label(path: Path) -> str:
    """How messages name a run folder: ``<run name>/<method>`` rather than a bare method folder."""
    from ..run_names import run_key
    return run_key(path)


def check_run(path: str | Path) -> Path:
    """The run folder if it holds a finished D&D cross-validation run; otherwise a one-line DnDError saying why."""
    p = Path(path)
    if not p.is_dir():
        raise DnDError(f"{p} is not a folder")
    if not (p / "config.json").is_file():
        raise DnDError(f"{_label(p)} is not a D&D run folder (no config.json)")
    config = _read_json(p / "config.json")
    if config.get("kind") != "dnd":
        raise DnDError(f"{_label(p)} is a training run without D&D; the Results page needs a "
                       "`dnd train --preset` run (base vs D&D)")
    if not (p / "summary.json").is_file():
        n = int(config.get("folds") or 0)
        done = f" ({_folds_done(p, n)} of {n} folds done)" if n else ""
        raise DnDError(f"the D&D run in {_label(p)} has not finished{done}: no summary.json yet")
    if not (p / "predictions.csv").is_file():
        raise DnDError(f"the D&D run in {_label(p)} has no predictions.csv; run it again to finish it")
    return p


def _read_predictions(path: Path, class_names: Sequence[str]) -> List[Prediction]:
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as e:
        raise DnDError(f"cannot read {path}: {e}") from None
    cols = [f"p_{c}" for c in class_names]
    out = []
    try:
        for r in rows:
            out.append(Prediction(int(r["fold"]), r["model"], r["slide_id"], r["label"], r["predicted"],
                                  tuple(float(r[c]) for c in cols)))
    except (KeyError, TypeError, ValueError) as e:
        raise DnDError(f"{path} is not a D&D predictions file (bad or missing column {e})") from None
    return out


def load_run(path: str | Path) -> DnDRun:
    """Read a finished run folder; a folder that is not one gives a one-line DnDError (see ``check_run``)."""
    p = check_run(path)
    config = _read_json(p / "config.json")
    summary = _read_json(p / "summary.json")
    class_names = [str(c) for c in (config.get("class_names") or summary.get("class_names") or [])]
    if len(class_names) < 2:
        raise DnDError(f"{_label(p)}/config.json names fewer than two classes")
    dnd = config.get("dnd") or summary.get("dnd") or {}
    if "summary" not in summary or "folds" not in summary:
        raise DnDError(f"{_label(p)}/summary.json has no folds or summary; the run did not finish cleanly")
    return DnDRun(path=p, class_names=class_names, method=str(dnd.get("model", "?")),
                  preset=str(dnd.get("preset", "?")), folds=list(summary["folds"]), summary=dict(summary["summary"]),
                  predictions=_read_predictions(p / "predictions.csv", class_names), config=config)


def find_runs(folder: str | Path) -> List[Path]:
    """D&D run folders (finished or not) at ``folder`` or one level below (``dnd bench`` writes ``out/<method>/``)."""
    root = Path(folder)
    candidates = [root] + (sorted(q for q in root.iterdir() if q.is_dir()) if root.is_dir() else [])
    out = []
    for q in candidates:
        cfg = q / "config.json"
        if cfg.is_file():
            try:
                if json.loads(cfg.read_text(encoding="utf-8")).get("kind") == "dnd":
                    out.append(q)
            except (OSError, UnicodeDecodeError, ValueError, AttributeError):
                continue
    return out


# --- the comparison table ------------------------------------------------------------------------------------

@dataclass
class ComparisonRow:
    """Base vs D&D of one run: mean ± std over folds of test ACC and AUC, the mean difference and its paired p."""

    method: str
    preset: str
    path: Path
    n_folds: int
    base_acc: Tuple[float, float]
    dnd_acc: Tuple[float, float]
    diff_acc: Tuple[float, float]      # (mean D&D − base, paired t-test p)
    base_auc: Tuple[float, float]
    dnd_auc: Tuple[float, float]
    diff_auc: Tuple[float, float]
    run: str = ""                      # the run's name: two runs of one method are told apart by it


def _num(v) -> float:
    return float("nan") if v is None else float(v)


def _mean_std(summary: Dict[str, object], key: str) -> Tuple[float, float]:
    d = summary.get(key) or {}
    return _num(d.get("mean")), _num(d.get("std"))


def _diff(summary: Dict[str, object], key: str) -> Tuple[float, float]:
    d = summary.get(key) or {}
    return _num(d.get("mean")), _num(d.get("p"))


def comparison_rows(runs: Sequence[DnDRun]) -> List[ComparisonRow]:
    """One row per run, numbers exactly as in its ``summary.json`` (nothing recomputed)."""
    rows = []
    for r in runs:
        s = r.summary
        rows.append(ComparisonRow(r.method, r.preset, r.path, r.n_folds,
                                  _mean_std(s, "base_test_acc"), _mean_std(s, "dnd_test_acc"),
                                  _diff(s, "diff_test_acc"),
                                  _mean_std(s, "base_test_auc"), _mean_std(s, "dnd_test_auc"),
                                  _diff(s, "diff_test_auc"), run=r.name))
    return rows


def format_mean_std(mean: float, std: float, digits: int = 3) -> str:
    """``0.812 ± 0.041``; an undefined mean (e.g. AUC of a fold with one class) shows as a dash."""
    if not math.isfinite(mean):
        return "\u2014"
    return f"{mean:.{digits}f}" + ("" if not math.isfinite(std) else f" \u00b1 {std:.{digits}f}")


def format_p(p: float) -> str:
    if not math.isfinite(p):
        return "p n/a"
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


def format_diff(mean: float, p: float, digits: int = 3) -> str:
    """``+0.012 (p = 0.430)``: the signed mean D&D − base difference and its paired-test p."""
    if not math.isfinite(mean):
        return "\u2014"
    return f"{mean:+.{digits}f} ({format_p(p)})"


# --- ROC curves and confusion matrices -----------------------------------------------------------------------

@dataclass
class RocCurve:
    """One class against the rest, pooled over every fold's test predictions of one arm."""

    class_name: str
    fpr: np.ndarray
    tpr: np.ndarray
    auc: float
    n_pos: int
    n_neg: int


def _arm_arrays(run: DnDRun, arm: str) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(true class index, predicted class index, probabilities) of one arm's test predictions, all folds."""
    if arm not in ARMS:
        raise DnDError(f"unknown arm {arm!r}; choose base or dnd")
    index = {c: i for i, c in enumerate(run.class_names)}
    rows = [p for p in run.predictions if p.arm == arm and p.label in index]
    y = np.array([index[p.label] for p in rows], dtype=np.int64)
    pred = np.array([index.get(p.predicted, -1) for p in rows], dtype=np.int64)
    probs = np.array([p.probs for p in rows], dtype=np.float64).reshape(len(rows), len(run.class_names))
    return y, pred, probs


def roc_curves(run: DnDRun, arm: str) -> List[RocCurve]:
    """Per class one-vs-rest (binary: the positive class, the second, only); a class with no positive or no
    negative test slide has no ROC curve and is left out."""
    y, _, probs = _arm_arrays(run, arm)
    classes = [1] if len(run.class_names) == 2 else range(len(run.class_names))
    out = []
    for c in classes:
        pos = y == c
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if n_pos == 0 or n_neg == 0:
            continue
        fpr, tpr, _ = roc_curve(pos.astype(np.int64), probs[:, c])
        out.append(RocCurve(run.class_names[c], fpr, tpr, float(auc(fpr, tpr)), n_pos, n_neg))
    return out


def confusion(run: DnDRun, arm: str) -> np.ndarray:
    """Counts summed over the folds' test slides: rows the true class, columns the predicted, every class kept."""
    y, pred, _ = _arm_arrays(run, arm)
    k = len(run.class_names)
    if len(y) == 0:
        return np.zeros((k, k), dtype=np.int64)
    return confusion_matrix(y, pred, labels=list(range(k))).astype(np.int64)


# --- the cluster explorer ------------------------------------------------------------------------------------

@dataclass
class ClusterProjection:
    """The training slides of one fold, projected to 2-D, with their cluster and class."""

    fold: int
    slide_ids: List[str]
    xy: np.ndarray                   # (N, 2)
    clusters: np.ndarray             # (N,) cluster index
    labels: List[str]                # class name per slide ("unknown" when no source names it)
    n_clusters: int
    explained: Tuple[float, float]   # variance ratio of the two axes (0 where an axis carries none)
    input: str = "embedding"         # what was clustered: embedding or logits


def _read_representations(path: Path) -> Tuple[List[str], np.ndarray, str]:
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            keys = list(f.keys())
            if "representations" in keys and "slide_ids" in meta:
                ids = [str(s) for s in json.loads(meta["slide_ids"])]
                x = np.asarray(f.get_tensor("representations"), dtype=np.float64)
            else:  # one vector per slide id
                ids = keys
                x = np.stack([np.asarray(f.get_tensor(k), dtype=np.float64).reshape(-1) for k in keys]) \
                    if keys else np.zeros((0, 0))
    except (OSError, SafetensorError, ValueError) as e:
        raise DnDError(f"cannot read {path}: {one_line(e, None)}") from None
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[0] != len(ids):
        raise DnDError(f"{path} holds {x.shape[0]} vectors for {len(ids)} slide ids")
    return ids, x, str(meta.get("input", "embedding"))


def _read_clusters_csv(path: Path) -> Dict[str, int]:
    try:
        rows = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
        return {r["slide_id"]: int(r["cluster"]) for r in rows}
    except (OSError, UnicodeDecodeError, KeyError, TypeError, ValueError) as e:
        raise DnDError(f"cannot read cluster assignments from {path}: {e}") from None


def slide_labels(run: DnDRun) -> Dict[str, str]:
    """Class of every slide the run knows: its test predictions first (they travel with the run folder), then the
    labels CSV named in config.json for slides never tested (custom splits), when that file is still there."""
    labels = {p.slide_id: p.label for p in run.predictions}
    csv_path = run.config.get("labels_csv")
    if csv_path and Path(str(csv_path)).is_file():
        from ..bags import read_labels
        try:
            table = read_labels(str(csv_path))
        except DnDError:
            return labels
        for sid, lab in zip(table.slide_ids, table.labels):
            labels.setdefault(str(sid), str(lab))
    return labels


def project_2d(x: np.ndarray) -> Tuple[np.ndarray, Tuple[float, float]]:
    """PCA to two components, in units of the first component's standard deviation; fewer slides or dimensions
    than that give zero columns instead of an error.

    ARPACK (exact top components, seeded) rather than a full SVD: scipy's LAPACK SVD holds the GIL for its whole
    run (half a second for 300 × 512 on a busy 2-core machine), which would freeze the app's event loop even
    though this runs on a worker thread; ARPACK hands the GIL back between its iterations."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    n = x.shape[0]
    xy = np.zeros((n, 2))
    if n < 2 or x.shape[1] == 0:
        return xy, (0.0, 0.0)
    centred = x - x.mean(axis=0)
    if not np.isfinite(centred).all() or float((centred ** 2).sum()) <= 0.0:
        return xy, (0.0, 0.0)
    k = min(2, n - 1, x.shape[1])
    small = k >= min(n, x.shape[1])  # ARPACK needs k < min(n, d); such inputs are tiny anyway
    pca = PCA(n_components=k, svd_solver="full" if small else "arpack", random_state=0)
    xy[:, :k] = pca.fit_transform(x)
    # PCA coordinates carry the representations' own scale (±400,000 for raw logits): in units of PC1's standard
    # deviation the axes read about ±3 for any input, and one factor for both axes keeps distances true
    sd = float(xy[:, 0].std())
    if sd > 0 and math.isfinite(sd):
        xy /= sd
    ratio = [float(v) for v in np.nan_to_num(pca.explained_variance_ratio_)] + [0.0] * (2 - k)
    return xy, (ratio[0], ratio[1])


def cluster_projection(run: DnDRun | str | Path, fold: int) -> ClusterProjection:
    """Fold ``fold``'s clustered training slides: PCA of their representations, cluster from clusters.csv, class."""
    run = run if isinstance(run, DnDRun) else load_run(run)
    folder = run.fold_dir(fold) / "clusters"
    rep = folder / "representations.safetensors"
    if not rep.is_file():
        raise DnDError(f"fold {fold} of {run.key} has no saved cluster representations")
    ids, x, input_name = _read_representations(rep)
    assigned = _read_clusters_csv(folder / "clusters.csv")
    missing = [s for s in ids if s not in assigned]
    if missing:
        raise DnDError(f"clusters.csv of fold {fold} has no cluster for {len(missing)} slide(s), e.g. {missing[0]}")
    clusters = np.array([assigned[s] for s in ids], dtype=np.int64)
    n_clusters = 0
    if (folder / "clusters.json").is_file():
        n_clusters = int(_read_json(folder / "clusters.json").get("n_clusters") or 0)
    n_clusters = max(n_clusters, int(clusters.max()) + 1 if len(clusters) else 0)
    known = slide_labels(run)
    xy, explained = project_2d(x)
    return ClusterProjection(int(fold), ids, xy, clusters, [known.get(s, "unknown") for s in ids], n_clusters,
                             explained, input_name)


__all__ = ["ARMS", "ARM_NAMES", "ClusterProjection", "ComparisonRow", "DnDRun", "Prediction", "RocCurve",
           "check_run", "cluster_projection", "comparison_rows", "confusion", "find_runs", "format_diff",
           "format_mean_std", "format_p", "load_run", "project_2d", "roc_curves", "slide_labels"]
