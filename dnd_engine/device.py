"""The ``--device`` choice (auto, cpu, cuda, cuda:N) turned into a torch device, with a one-line error."""

from __future__ import annotations

import torch

from .errors import DnDError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DnDError(f"unknown device '{device}' (auto, cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DnDError(f"device '{device}' asked for, but CUDA is not available on this machine "
                       "(use --device cpu or auto)")
    return dev
