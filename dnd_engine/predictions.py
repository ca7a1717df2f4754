"""The one writer of predictions CSVs: rows accumulate, one per slide and model (and fold, in a run folder).

``dnd predict --out`` and the app classify a few slides at a time into the same folder; a file rewritten from
the latest call alone would lose every earlier slide. So the new rows are merged into what the file holds: a
slide classified again by the same model replaces its row (in place), any other row is kept, and the file is
replaced atomically. Rows of another model (another ``model`` value) stay beside them; a class column the file
lacks is added (empty for the rows that have no such class). A file written before the ``model`` column existed
held one model's rows: they are taken as the model now writing.

A cross-validation run folder (``training/folds.py``) writes its fold and run ``predictions.csv`` through the same
merge, keyed by (fold, model, slide_id), so a resumed run that refits a fold replaces that fold's rows and keeps
the rest. Every merge reads, merges and replaces the file under a lock (this process's threads, and other
processes through an advisory lock on the folder), so two writers never lose each other's rows.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import threading
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

from .atomic import ensure_dir, write_text_atomic
from .errors import DnDError

PREDICTIONS_FILE = "predictions.csv"
DEMO_MARK = "DEMO (not for diagnosis)"
LEAD = ["slide_id", "status", "predicted"]
TAIL = ["n_patches", "heatmap_png", "heatmap_geojson", "error", "note", "path", "model", "demo"]

_lock = threading.Lock()   # the app may finish two classifications at once; each merge sees the other's rows


def prediction_row(result, class_names: Sequence[str], model: str = "", demo: bool = False) -> Dict[str, str]:
    """One ``SlidePrediction`` as a CSV row (probabilities to 6 decimals; a failed slide has none)."""
    row = {"slide_id": result.slide_id, "status": result.status, "predicted": result.predicted or ""}
    for c, p in zip(class_names, result.probs or []):
        row[f"p_{c}"] = f"{float(p):.6f}"
    row.update({"n_patches": str(result.n_patches or ""), "heatmap_png": result.outputs.get("student_png", ""),
                "heatmap_geojson": result.outputs.get("student_geojson", ""), "error": result.error or "",
                "note": getattr(result, "note", "") or "", "path": str(result.path), "model": model, "demo": DEMO_MARK if demo else ""})
    return row


def read_predictions(path: str | Path) -> tuple[List[str], List[Dict[str, str]]]:
    """(columns, rows) of a predictions file; ([], []) when there is none. A file that is not one (no
    ``slide_id`` column) gives a one-line :class:`DnDError` rather than being overwritten."""
    p = Path(path)
    if not p.is_file():
        return [], []
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DnDError(f"cannot read {p}: {getattr(e, 'strerror', None) or e}") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = list(reader.fieldnames or [])
    if not columns:
        return [], []
    if "slide_id" not in columns:
        raise DnDError(f"{p} is not a predictions file (no slide_id column); move it or choose another --out")
    return columns, [{k: (v or "") for k, v in r.items() if k is not None} for r in reader if r.get("slide_id")]


def check_predictions_file(path: str | Path) -> None:
    """Raise the one-line error ``write_predictions`` would, before any slide is classified."""
    read_predictions(path)


def merge_by(old: Sequence[Dict[str, str]], new: Sequence[Dict[str, str]], key: Sequence[str]) -> List[Dict[str, str]]:
    """``old`` with each row of ``new`` replacing the row of the same ``key`` values (in place), else appended."""
    rows = list(old)
    where = {tuple(r.get(k, "") for k in key): i for i, r in enumerate(rows)}
    for r in new:
        k = tuple(r.get(c, "") for c in key)
        if k in where:
            rows[where[k]] = r
        else:
            where[k] = len(rows)
            rows.append(r)
    return rows


def merge_rows(old: List[Dict[str, str]], new: List[Dict[str, str]], model: str) -> List[Dict[str, str]]:
    """``old`` with each row of ``new`` replacing the row of the same (slide_id, model), else appended; an old
    row without a model is taken as ``model``'s."""
    return merge_by([dict(r, model=r.get("model") or model) for r in old], new, ("slide_id", "model"))


def predictions_text(columns: Sequence[str], rows: Sequence[Dict[str, str]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([r.get(c, "") for c in columns])
    return buf.getvalue()


def _columns(old_columns: Sequence[str], class_names: Sequence[str]) -> List[str]:
    probs = [c for c in old_columns if c.startswith("p_")]
    probs += [f"p_{c}" for c in class_names if f"p_{c}" not in probs]
    extra = [c for c in old_columns if c not in LEAD and c not in TAIL and not c.startswith("p_")]
    return LEAD + probs + TAIL + extra


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the writers' lock for ``path``: this process's, and an advisory ``flock`` on its folder where the
    system has one (a CLI and the app writing into one folder). A folder that cannot be locked (some network
    file systems) is written under the process lock alone."""
    with _lock:
        folder = ensure_dir(path.parent)
        try:
            import fcntl
            fd = os.open(folder, os.O_RDONLY)
        except (ImportError, OSError):
            yield
            return
        try:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)                 # closing releases the flock


def merge_into(path: str | Path, new: Sequence[Dict[str, str]], key: Sequence[str],
               columns: Callable[[List[str]], List[str]],
               old_row: Optional[Callable[[Dict[str, str]], Dict[str, str]]] = None) -> Path:
    """Merge the rows ``new`` into the CSV at ``path`` (read, merge by ``key``, replace atomically, under the
    lock). ``columns(old_columns)`` gives the file's columns; ``old_row`` adapts each row the file held."""
    path = Path(path)
    with _locked(path):
        old_columns, old = read_predictions(path)
        if old_row is not None:
            old = [old_row(r) for r in old]
        return write_text_atomic(path, predictions_text(columns(old_columns), merge_by(old, new, key)))


def write_predictions(path: str | Path, results: Sequence, class_names: Sequence[str], *, model: str = "",
                      demo: bool = False) -> Path:
    """Merge ``results`` (engine ``SlidePrediction``s of one model) into the predictions file at ``path``,
    atomically; see the module docstring for what is kept."""
    new = [prediction_row(r, class_names, model, demo) for r in results]
    return merge_into(path, new, ("slide_id", "model"), lambda old: _columns(old, class_names),
                      old_row=lambda r: dict(r, model=r.get("model") or model))


# --- a cross-validation run's predictions: test slides per fold (and per model: base / dnd in a D&D run) ------
def cv_columns(class_names: Sequence[str], with_model: bool) -> List[str]:
    """``fold[,model],slide_id,label,predicted,p_<class>...``: the layout of a run folder's predictions."""
    return ["fold"] + (["model"] if with_model else []) + ["slide_id", "label", "predicted"] + \
        [f"p_{c}" for c in class_names]


def cv_rows(preds: Sequence[Dict[str, object]], class_names: Sequence[str]) -> List[Dict[str, str]]:
    """Rows of a fold's test predictions as kept in its results.json (``fold``, ``arm``, ``slide_id``, ``label``,
    ``predicted``, ``probs``) as CSV cells; probabilities to 6 decimals. ``arm`` is the ``model`` column."""
    out = []
    for r in preds:
        row = {"fold": str(r["fold"]), "slide_id": str(r["slide_id"]), "label": str(r["label"]),
               "predicted": str(r["predicted"])}
        if "arm" in r:
            row["model"] = str(r["arm"])
        row.update({f"p_{c}": f"{p:.6f}" for c, p in zip(class_names, r["probs"])})
        out.append(row)
    return out


def cv_predictions_text(preds: Sequence[Dict[str, object]], class_names: Sequence[str], with_model: bool) -> str:
    """The CSV text of ``preds`` alone (for readers and tests; a run folder's files go through the writer)."""
    return predictions_text(cv_columns(class_names, with_model), cv_rows(preds, class_names))


def write_cv_predictions(path: str | Path, preds: Sequence[Dict[str, object]], class_names: Sequence[str], *,
                         with_model: bool) -> Path:
    """Merge a run's (or one fold's) test predictions into ``path`` by (fold, model, slide_id), atomically."""
    cols = cv_columns(class_names, with_model)
    key = ("fold", "model", "slide_id") if with_model else ("fold", "slide_id")
    return merge_into(path, cv_rows(preds, class_names), key, lambda old: cols + [c for c in old if c not in cols])


__all__ = ["DEMO_MARK", "PREDICTIONS_FILE", "check_predictions_file", "cv_columns", "cv_predictions_text", "cv_rows",
           "merge_by", "merge_into", "merge_rows", "prediction_row", "predictions_text", "read_predictions",
           "write_cv_predictions", "write_predictions"]
