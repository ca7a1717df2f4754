"""Where a model is: a ``.safetensors`` file, or a run folder holding ``model.safetensors``.

Kept apart from :mod:`dnd_engine.predict` (which imports torch) so that the app can tell a dropped model from a
slide or a project on its UI thread without waiting for torch; ``dnd predict`` and the app use the same rule.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import DnDError

MODEL_FILE = "model.safetensors"       # the deployable model in a run folder (``dnd train --preset`` writes it)
MODEL_SUFFIXES = (".safetensors",)


def resolve_model_path(model: str | os.PathLike) -> Path:
    """A model file, or a run folder holding ``model.safetensors`` (``dnd train --preset`` writes one)."""
    p = Path(model)
    if p.is_dir():
        if (p / MODEL_FILE).is_file():
            return p / MODEL_FILE
        raise DnDError(f"{p} holds no {MODEL_FILE} (is it a finished D&D run folder?)")
    if not p.is_file():
        raise DnDError(f"model not found: {p}")
    return p


def is_model_path(path: str | os.PathLike) -> bool:
    """True for a model file (by its suffix) or a run folder with a model: what a drop or a double-click loads."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() not in MODEL_SUFFIXES:
        return False
    try:
        resolve_model_path(p)
    except DnDError:
        return False
    return True


__all__ = ["MODEL_FILE", "MODEL_SUFFIXES", "is_model_path", "resolve_model_path"]
