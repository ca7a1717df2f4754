"""Divide-and-Distill: base model → clusters of its slide representations → one expert per cluster →
one student distilled from all of them (Papadopoulos et al.; the authors' code: MariosPapadopoulos/DnD_MIL)."""

from .bench import markdown_table, parse_methods, run_bench
from .card import check_card, features_provenance, make_card, save_deployable
from .clustering import (Clustering, assign_nearest, cluster_label_counts, fit_clusters, legacy_random_partition,
                         slide_representations)
from .dnd_cv import CVSettings, DnDCVResult, run_dnd_cv
from .distill import DistillLoss, distillation_loss, kl_teacher_student, teacher_logits
from .pipeline import DnDResult, expected_steps, load_dnd_models, run_dnd
from .presets import CLUSTER_INPUTS, PRESETS, SOURCES, DnDConfig, describe_preset, preset_config
from .stats import PAIRED_TEST, paired_comparison

__all__ = ["CLUSTER_INPUTS", "CVSettings", "Clustering", "DistillLoss", "DnDCVResult", "DnDConfig", "DnDResult",
           "PAIRED_TEST", "PRESETS", "SOURCES", "assign_nearest", "check_card", "cluster_label_counts",
           "describe_preset", "distillation_loss", "expected_steps", "features_provenance", "fit_clusters",
           "kl_teacher_student", "legacy_random_partition", "load_dnd_models", "make_card", "markdown_table",
           "paired_comparison", "parse_methods", "preset_config", "run_bench", "run_dnd", "run_dnd_cv",
           "save_deployable", "slide_representations", "teacher_logits"]
