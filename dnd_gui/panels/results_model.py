"""What the Results page shows about each run, computed off the GUI thread from the engine's pure functions
(:mod:`dnd_engine.dnd.results`): the widgets only fill themselves in from a :class:`RunResults`."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

from dnd_engine.dnd.cohort_checks import run_warnings
from dnd_engine.dnd.results import (ARMS, ClusterProjection, ComparisonRow, DnDRun, RocCurve, cluster_projection,
                                    comparison_rows, confusion, load_run, roc_curves)
from dnd_engine.errors import DnDError
from dnd_engine.text import one_line


@dataclass
class RunResults:
    """Everything the page shows about one run, computed off the GUI thread."""

    run: DnDRun
    row: ComparisonRow
    roc: Dict[str, List[RocCurve]]
    confusion: Dict[str, np.ndarray]
    projections: Dict[int, ClusterProjection] = field(default_factory=dict)
    projection_errors: Dict[int, str] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)   # the engine's cohort checks (run_warnings)


def compute_results(paths: Sequence[str | Path]) -> tuple[List[RunResults], List[str]]:
    """(results of the finished runs, one message per folder that is not one); never raises for a bad folder."""
    results, problems = [], []
    for path in paths:
        try:
            run = load_run(path)
            res = RunResults(run, comparison_rows([run])[0], {a: roc_curves(run, a) for a in ARMS},
                             {a: confusion(run, a) for a in ARMS})
        except DnDError as e:
            problems.append(one_line(e))
            continue
        except Exception as e:  # a damaged file must not take the page down: say which folder and why
            problems.append(f"{Path(path).name}: unexpected error ({one_line(e, typed=True)})")
            continue
        res.warnings = run_warnings(run.path)
        for fold in run.cluster_folds():
            try:
                res.projections[fold] = cluster_projection(run, fold)
            except Exception as e:
                res.projection_errors[fold] = one_line(e)
        results.append(res)
    return results, problems


def cluster_label(index: int) -> str:
    """Cluster ``index`` (0-based in the files) as a user reads it: from 1, as its expert ("Expert 1")."""
    return f"cluster {int(index) + 1}"


def run_titles(runs: Sequence[DnDRun]) -> List[str]:
    """The run selector's entries: run name · method · preset; a name shared by two runs gets its folder."""
    titles = [f"{r.name} \u00b7 {r.method} \u00b7 {r.preset}" for r in runs]
    return [f"{t} ({r.path.parent})" if titles.count(t) > 1 else t for t, r in zip(titles, runs)]
