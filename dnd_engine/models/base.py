"""What every MIL model shares: the output record, bag checks, the registry and ``build_model``.

All models follow the batch-size-1 convention of the authors' code: one bag ``(N, D)`` (or ``(1, N, D)``) in,
one slide out. Each model keeps the authors' ``state_dict`` names so their checkpoints load with ``strict=True``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Type

import torch
from torch import nn

from ..errors import DnDError


class ModelInputError(DnDError):
    """A bag the model cannot take: wrong feature dimension, empty, or not finite."""


@dataclass
class MILOutput:
    """One slide's result.

    ``logits`` (1, C); ``embedding`` (1, E), the slide vector the classifier reads (MIL_REFERENCE §2.7);
    ``instance_scores`` (N,) per-patch scores for heatmaps, or None when the caller passed ``scores=False``.
    """

    logits: torch.Tensor
    embedding: torch.Tensor
    instance_scores: Optional[torch.Tensor] = None

    @property
    def probs(self) -> torch.Tensor:
        return torch.softmax(self.logits, dim=-1)

    @property
    def prediction(self) -> int:
        return int(self.logits.argmax(dim=-1).reshape(-1)[0])


class MILModel(nn.Module):
    """Base class. Subclasses implement ``_forward(x, scores)`` on a checked ``(N, D)`` float bag.

    Class attributes describe the method so the trainer, the GUI and tests need not special-case names:
    ``order_invariant`` (a permutation of the instances leaves logits unchanged), ``memory`` ("linear" or
    "quadratic" in N), ``reference`` (where the architecture comes from), ``title`` and ``summary`` (how a
    user interface names and describes the method in one line; kept here, beside the model, as timm keeps its
    ``default_cfgs``), ``slow`` (trains markedly slower than ABMIL: worth a note before a long run).
    """

    name: str = ""
    order_invariant: bool = False
    memory: str = "linear"
    reference: str = ""
    title: str = ""
    summary: str = ""
    slow: bool = False

    def __init__(self, in_dim: int, n_classes: int):
        super().__init__()
        if int(in_dim) < 1:
            raise ValueError(f"in_dim must be ≥ 1, got {in_dim}")
        if int(n_classes) < 2:
            raise ValueError(f"a classifier needs at least 2 classes, got {n_classes}")
        self.in_dim = int(in_dim)
        self.n_classes = int(n_classes)
        self.options: Dict[str, object] = {}

    def config(self) -> Dict[str, object]:
        """Everything ``build_model`` needs to rebuild this model (saved next to checkpoints)."""
        return {"name": self.name, "in_dim": self.in_dim, "n_classes": self.n_classes, **self.options}

    def check_bag(self, bag: torch.Tensor) -> torch.Tensor:
        if bag.dim() == 3:
            if bag.shape[0] != 1:
                raise ModelInputError(f"MIL models take one bag at a time; got a batch of {bag.shape[0]}")
            bag = bag[0]
        if bag.dim() != 2:
            raise ModelInputError(f"a bag must have shape (N, D); got {tuple(bag.shape)}")
        if bag.shape[0] == 0:
            raise ModelInputError("the bag is empty (0 instances)")
        if bag.shape[1] != self.in_dim:
            raise ModelInputError(f"feature dimension {bag.shape[1]} does not match the model's {self.in_dim}")
        if not bag.is_floating_point():
            bag = bag.float()
        return bag

    def forward(self, bag: torch.Tensor, scores: bool = True) -> MILOutput:  # noqa: D401
        return self._forward(self.check_bag(bag), scores)

    def _forward(self, x: torch.Tensor, scores: bool) -> MILOutput:
        raise NotImplementedError


_REGISTRY: Dict[str, Type[MILModel]] = {}
# the names MariosPapadopoulos/DnD_MIL's --model_type uses
ALIASES = {"mean_mil": "mean", "max_mil": "max", "att_mil": "abmil", "trans_mil": "transmil",
           "s4model": "s4mil", "mamba_mil": "mambamil"}


def register(name: str) -> Callable[[Type[MILModel]], Type[MILModel]]:
    def deco(cls: Type[MILModel]) -> Type[MILModel]:
        cls.name = name
        _REGISTRY[name] = cls
        return cls
    return deco


def model_names() -> list:
    return list(_REGISTRY)


def model_class(name: str) -> Type[MILModel]:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in _REGISTRY:
        raise DnDError(f"unknown model {name!r}; choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[key]


def build_model(name: str, in_dim: int = 1024, n_classes: int = 2, **options) -> MILModel:
    """Build a model by name (ours or the authors' ``--model_type`` name) with its authors' defaults."""
    cls = model_class(name)
    try:
        return cls(in_dim=in_dim, n_classes=n_classes, **options)
    except TypeError as e:
        raise DnDError(f"{cls.name}: {e}") from None


def xavier_init(module: nn.Module) -> None:
    """The authors' ``initialize_weights``: Xavier-normal Linear weights, zero biases, unit LayerNorm."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def activation(name: str) -> nn.Module:
    name = name.lower()
    if name == "relu":
        return nn.ReLU()
    if name == "gelu":
        return nn.GELU()
    raise ValueError(f"activation must be 'relu' or 'gelu', got {name!r}")


def dropout_p(dropout) -> float:
    """The authors pass ``dropout`` as a bool (0.25 when true) or a rate; accept both."""
    if dropout is True:
        return 0.25
    if dropout is False or dropout is None:
        return 0.0
    p = float(dropout)
    if not 0.0 <= p < 1.0 or math.isnan(p):
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    return p
