"""Reading a weights file without unpickling code: safetensors, or ``torch.load(weights_only=True)``."""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Type

import torch

from .errors import DnDError
from .text import one_line


def torch_file_problem(path: Path) -> "str | None":
    """Why ``path`` cannot be a ``torch.save`` file, judged by its first bytes, or None when it may be one.

    torch.load calls any file it cannot parse "unpickling" trouble; a text file renamed ``.pt`` must not be
    described as a pickled object. A ``.pt`` is a zip archive (torch ≥ 1.6) or, in the legacy format, a pickle
    stream (first byte 0x80); anything else is not a PyTorch file at all."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or type(exc).__name__})"
    if not head:
        return "is empty (0 bytes)"
    if head.startswith(b"PK") or head[:1] == b"\x80":
        return None
    return "is not a PyTorch file (a .pt/.pth file is the zip archive torch.save writes)"


def load_state_dict(path: str | os.PathLike, error: Type[DnDError] = DnDError) -> dict:
    """A flat state dict from ``path``; wrappers (``state_dict``, ``model``, ``teacher``) and ``module.`` /
    ``model.`` key prefixes are removed. Any failure raises ``error`` with a one-line message."""
    path = Path(path)
    problem = None if path.suffix == ".safetensors" else torch_file_problem(path)
    if problem:
        raise error(f"cannot load weights file {path}: it {problem}")
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
        raise error(f"cannot load weights file {path}: {one_line(exc, 200)}") from None
    for key in ("state_dict", "model", "teacher"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict) or not sd:
        raise error(f"weights file {path} holds no state dict")
    return {k.removeprefix("module.").removeprefix("model."): v for k, v in sd.items()}
