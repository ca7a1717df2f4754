"""MIL slide classifiers: the six methods D&D wraps, on one interface (``build_model``)."""

from .base import ALIASES, MILModel, MILOutput, ModelInputError, build_model, model_class, model_names

# importing each module registers its model under its name
from . import pooling, abmil, transmil, s4mil, mambamil  # noqa: E402,F401

__all__ = ["ALIASES", "MILModel", "MILOutput", "ModelInputError", "build_model", "model_class", "model_names"]
