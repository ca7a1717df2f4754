"""Training one MIL model: trainer with resumable checkpoints, metrics, and cross-validated runs."""

from .cv import CVConfig, CVResult, run_cross_validation
from .metrics import auc_score, classification_metrics, mean_std
from ..device import resolve_device
from .trainer import TrainConfig, TrainResult, evaluate, train_model

__all__ = ["CVConfig", "CVResult", "TrainConfig", "TrainResult", "auc_score", "classification_metrics", "evaluate",
           "mean_std", "resolve_device", "run_cross_validation", "train_model"]
