"""Training one MIL model: trainer with resumable checkpoints, metrics, the one cross-validation fold loop
(``folds.py``, shared with D&D) and plain cross-validated runs (``mil_cv.py``)."""

from .folds import SplitSpec, run_folds
from .mil_cv import CVConfig, CVResult, run_cross_validation
from .metrics import auc_score, classification_metrics, mean_std
from ..device import resolve_device
from .trainer import TrainConfig, TrainResult, evaluate, train_model

__all__ = ["CVConfig", "CVResult", "SplitSpec", "TrainConfig", "TrainResult", "auc_score", "classification_metrics",
           "evaluate", "mean_std", "resolve_device", "run_cross_validation", "run_folds", "train_model"]
