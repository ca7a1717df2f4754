"""The one writer of a predictions folder's ``predictions.csv``: rows accumulate, one per slide and model.

``dnd predict --out`` and the app classify a few slides at a time into the same folder; a file rewritten from
the latest call alone would lose every earlier slide. So the new rows are merged into what the file holds: a
slide classified again by the same model replaces its row (in place), any other row is kept, and the file is
replaced atomically. Rows of another model (another ``model`` value) stay beside them; a class column the file
lacks is added (empty for the rows that have no such class). A file written before the ``model`` column existed
held one model's rows: they are taken as the model now writing.
"""

from __future__ import annotations

import csv
import io
import threading
from pathlib import Path
from typing import Dict, List, Sequence

from .atomic import write_text_atomic
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


def merge_rows(old: List[Dict[str, str]], new: List[Dict[str, str]], model: str) -> List[Dict[str, str]]:
    """``old`` with each row of ``new`` replacing the row of the same (slide_id, model), else appended."""
    rows = [dict(r, model=r.get("model") or model) for r in old]
    where = {(r["slide_id"], r["model"]): i for i, r in enumerate(rows)}
    for r in new:
        key = (r["slide_id"], r.get("model", ""))
        if key in where:
            rows[where[key]] = r
        else:
            where[key] = len(rows)
            rows.append(r)
    return rows


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


def write_predictions(path: str | Path, results: Sequence, class_names: Sequence[str], *, model: str = "",
                      demo: bool = False) -> Path:
    """Merge ``results`` (engine ``SlidePrediction``s of one model) into the predictions file at ``path``,
    atomically; see the module docstring for what is kept."""
    new = [prediction_row(r, class_names, model, demo) for r in results]
    with _lock:
        old_columns, old = read_predictions(path)
        rows = merge_rows(old, new, model)
        return write_text_atomic(path, predictions_text(_columns(old_columns, class_names), rows))


__all__ = ["DEMO_MARK", "PREDICTIONS_FILE", "check_predictions_file", "merge_rows", "prediction_row",
           "predictions_text", "read_predictions", "write_predictions"]
