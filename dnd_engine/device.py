"""The ``--device`` choice (auto, cpu, cuda, cuda:N) turned into a torch device, with a one-line error."""

from __future__ import annotations

import os
from typing import List

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


def list_devices() -> List[str]:
    """The ``--device`` values that work on this machine: auto, cpu, then each CUDA GPU ("cuda" when there is one,
    "cuda:0", "cuda:1", … when there are several). Never raises: a broken CUDA set-up lists none."""
    try:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:   # a driver that fails to answer is "no GPU here", not a crash in a settings dialog
        n = 0
    return ["auto", "cpu"] + (["cuda"] if n == 1 else [f"cuda:{i}" for i in range(n)])


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity mask: a job scheduler's share, not the whole box)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
