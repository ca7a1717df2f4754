"""Projects: a folder that links slides and holds labels, features, runs, models and the jobs that made them.

The names below are loaded on first use (PEP 562), not on import: the start screen only reads manifests, and the
plans and runners behind ``TrainingPlan``/``run_training`` pull in torch. ``from dnd_engine.project import X``
works as before and loads only the submodule that holds ``X``.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_WHERE = {
    "JobBook": "job_book", "JobRecord": "job_book",
    "MANIFEST": "manifest", "Project": "manifest", "ProjectError": "manifest",
    "ExtractionPlan": "plans", "TrainingPlan": "plans", "check_weights": "plans", "plan_warnings": "plans",
    "WorkEstimate": "estimate", "estimate_work": "estimate", "run_extraction": "runners", "run_training": "runners",
}

__all__ = sorted(_WHERE)

__getattr__, __dir__ = lazy_exports(__name__, _WHERE)
