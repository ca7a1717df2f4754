"""Reading a weights file without unpickling code: safetensors, or ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Type

import torch

from .errors import DnDError


def load_state_dict(path: str | os.PathLike, error: Type[DnDError] = DnDError) -> dict:
    """A flat state dict from ``path``; wrappers (``state_dict``, ``model``, ``teacher``) and ``module.`` /
    ``model.`` key prefixes are removed. Any failure raises ``error`` with a one-line message."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False, which would run code from the file: never say that
        raise error(f"cannot load weights file {path}: not a plain PyTorch state dict or safetensors file (files "
                    "that need unpickling arbitrary objects are refused)") from None
    except Exception as exc:
        raise error(f"cannot load weights file {path}: {str(exc).splitlines()[0][:200]}") from None
    for key in ("state_dict", "model", "teacher"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd:
        raise error(f"weights file {path} holds no state dict")
    return {k.removeprefix("module.").removeprefix("model."): v for k, v in sd.items()}
