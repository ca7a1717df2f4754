"""The epoch history of a D&D run, read back from its folder: what the live curves showed, for a reopened project.

A run folder holds ``fold_<i>/`` (or is one fold's D&D folder), each with ``base/``, ``experts/expert_<k>/`` and
``student/``, each with the trainer's ``metrics.jsonl``. That layout is the pipeline's, so reading it lives here
beside the pipeline and not in the app that draws the curves.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import List

__all__ = ["read_history", "read_jsonl"]

_FOLD = re.compile(r"fold_(\d+)")
_EXPERT = re.compile(r"expert_(\d+)")


def read_jsonl(path: str | os.PathLike) -> List[dict]:
    """The JSON objects of a ``.jsonl`` file, one per line; a damaged line costs that line, a missing file none."""
    records = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError:
        return records
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue   # a damaged line costs that epoch, not the whole curve
        if isinstance(rec, dict):
            records.append(rec)
    return records


def read_history(run_dir: str | os.PathLike) -> List[dict]:
    """Every epoch record a D&D run wrote, with ``fold`` and ``stage`` added as ``on_epoch`` would.

    ``run_dir`` is a cross-validation run (``fold_{i}/``) or one fold's D&D folder (taken as fold 0). Pure file
    reading, so it may run off the GUI thread. Only checkpointed epochs are on disk: an interrupted run shows up
    to its last checkpoint.
    """
    run = Path(run_dir)
    folds = []
    for p in run.glob("fold_*"):
        m = _FOLD.fullmatch(p.name)
        if m and p.is_dir():
            folds.append((int(m.group(1)), p))
    if not folds and (run / "base").is_dir():
        folds = [(0, run)]
    out: List[dict] = []
    for fold, folder in sorted(folds):
        stages = [("base", folder / "base")]
        experts = []
        for p in (folder / "experts").glob("expert_*"):
            m = _EXPERT.fullmatch(p.name)
            if m and p.is_dir():
                experts.append((int(m.group(1)), p))
        stages += [(p.name, p) for _, p in sorted(experts)]
        stages.append(("student", folder / "student"))
        for stage, sub in stages:
            for rec in read_jsonl(sub / "metrics.jsonl"):
                out.append({**rec, "fold": fold, "stage": stage})
    return out
