"""Projects: a folder that links slides and holds labels, features, runs, models and the jobs that made them.

The names below are loaded on first use (PEP 562), not on import: the start screen only reads manifests, and the
plans and runners behind ``TrainingPlan``/``run_training`` pull in torch. ``from dnd_engine.project import X``
works as before and loads only the submodule that holds ``X``.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "JobBook": "job_book", "JobRecord": "job_book",
    "MANIFEST": "manifest", "Project": "manifest", "ProjectError": "manifest",
    "ExtractionPlan": "plans", "TrainingPlan": "plans", "check_weights": "plans", "plan_warnings": "plans",
    "WorkEstimate": "estimate", "estimate_work": "estimate", "run_extraction": "runners", "run_training": "runners",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_WHERE))
