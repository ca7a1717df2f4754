"""Projects: a folder that links slides and holds labels, features, runs, models and the jobs that made them."""

from .jobs import JobBook, JobRecord
from .manifest import MANIFEST, Project, ProjectError
from .tasks import (ExtractionPlan, TrainingPlan, WorkEstimate, check_weights, estimate_work, plan_warnings,
                    run_extraction, run_training)

__all__ = ["ExtractionPlan", "JobBook", "JobRecord", "MANIFEST", "Project", "ProjectError", "TrainingPlan",
           "WorkEstimate", "check_weights", "estimate_work", "plan_warnings", "run_extraction", "run_training"]
