"""D&D settings and the two presets: the paper's and the authors' released code's.

Every default carries where it comes from (``SOURCES``), because the paper (Papadopoulos et al., "Divide and
Distill") and its code (MariosPapadopoulos/DnD_MIL ``main.py`` + ``utils/dnc_utils_v2.py``) disagree on most of
them (MIL_REFERENCE §1.2, §1.10). ``paper`` follows the text and takes the code's choice where the text is silent;
``authors-code`` follows the code's argparse defaults.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from typing import Dict, List, Mapping, Optional, Tuple

from ..errors import DnDError
from ..training.trainer import TrainConfig

PRESETS = ("paper", "authors-code")
CLUSTER_INPUTS = ("embedding", "logits")
INITS = ("scratch", "base")


@dataclass
class DnDConfig:
    preset: str = "paper"
    model: str = "abmil"
    model_options: Dict[str, object] = field(default_factory=dict)
    n_clusters: int = 3
    cluster_on: str = "embedding"          # embedding (the paper's z_WSI) | logits (the code)
    constrained: bool = True               # size-constrained k-means (k-means-constrained) | plain k-means
    size_slack: float = 0.05               # sizes within int(N/C ± slack·N); the code's N/20
    size_min: Optional[int] = None         # explicit bounds override the slack
    size_max: Optional[int] = None
    legacy_random_partition: bool = False  # the released code's behaviour: experts get a random partition
    expert_init: str = "scratch"
    student_init: str = "base"
    temperature: float = 1.0
    lambda_ce: float = 1.0
    lambda_base: float = 1.0
    lambda_expert: float = 1.0
    seed: int = 1
    base: TrainConfig = field(default_factory=TrainConfig)
    expert: TrainConfig = field(default_factory=TrainConfig)
    student: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=300, optimizer="adam"))

    def validate(self) -> "DnDConfig":
        if self.preset not in PRESETS:
            raise DnDError(f"unknown preset {self.preset!r}; choose from {', '.join(PRESETS)}")
        if self.n_clusters < 1:
            raise DnDError(f"the number of clusters must be ≥ 1, got {self.n_clusters}")
        if self.cluster_on not in CLUSTER_INPUTS:
            raise DnDError(f"cluster_on must be one of {', '.join(CLUSTER_INPUTS)}, got {self.cluster_on!r}")
        for name in ("expert_init", "student_init"):
            if getattr(self, name) not in INITS:
                raise DnDError(f"{name} must be one of {', '.join(INITS)}, got {getattr(self, name)!r}")
        if not self.temperature > 0:
            raise DnDError(f"temperature must be > 0, got {self.temperature}")
        for name in ("lambda_ce", "lambda_base", "lambda_expert", "size_slack"):
            if getattr(self, name) < 0:
                raise DnDError(f"{name} must be ≥ 0, got {getattr(self, name)}")
        for t in (self.base, self.expert, self.student):
            t.validate()
        return self

    def to_dict(self) -> Dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, object]) -> "DnDConfig":
        d = dict(d)
        for k in ("base", "expert", "student"):
            if k in d:
                d[k] = TrainConfig(**d[k])
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise DnDError(f"unknown D&D settings: {', '.join(unknown)}")
        return cls(**d)

    def size_bounds(self, n: int) -> Tuple[Optional[int], Optional[int]]:
        """(min, max) cluster sizes for ``n`` slides; (None, None) for plain k-means."""
        if not self.constrained:
            return None, None
        c = self.n_clusters
        lo = self.size_min if self.size_min is not None else int(n / c - n * self.size_slack)
        hi = self.size_max if self.size_max is not None else int(n / c + n * self.size_slack)
        lo = max(1, lo)
        hi = max(hi, -(-n // c))     # the bounds must admit a partition: max·C ≥ N
        if lo * c > n or lo > hi:
            raise DnDError(f"cannot split {n} slides into {c} clusters of {lo}–{hi} slides; "
                           "lower the number of clusters or widen the size bounds")
        return lo, hi


_CODE = "authors' code (MariosPapadopoulos/DnD_MIL)"
_PAPER = "paper"
_SILENT = "paper silent → authors' code"
_OURS = "ours (not in paper or code)"

#: preset → field → (value, source). Fields not listed keep the dataclass default and share its source.
_PRESET_TABLE: Dict[str, Dict[str, Tuple[object, str]]] = {
    "paper": {
        "n_clusters": (3, _PAPER + " (C=3)"),
        "cluster_on": ("embedding", _PAPER + " (slide embeddings z_WSI)"),
        "constrained": (True, _PAPER + " (constrained k-means)"),
        "size_slack": (0.05, _SILENT + " (int(N/C ± N/20))"),
        "expert_init": ("scratch", _SILENT),
        "student_init": ("base", _SILENT + " (deepcopy of the base model)"),
        "temperature": (1.0, _PAPER + " (plain softmax; no temperature mentioned)"),
        "lambda_ce": (1.0, _PAPER),
        "lambda_base": (1.0, _PAPER + " (λ=1)"),
        "lambda_expert": (1.0, _PAPER + " (λ=1, experts averaged)"),
        "base.optimizer": ("sgd", _PAPER + " (SGD)"),
        "base.momentum": (0.9, _SILENT + " (get_optim: momentum 0.9)"),
        "base.lr": (1e-4, _PAPER),
        "base.weight_decay": (1e-5, _PAPER),
        "base.epochs": (200, _PAPER),
        "base.selection": ("best_val_acc", _SILENT + " (best val accuracy, strict)"),
        "expert.optimizer": ("sgd", _PAPER + " (same as base)"),
        "expert.momentum": (0.9, _SILENT),
        "expert.lr": (1e-4, _PAPER),
        "expert.weight_decay": (1e-5, _PAPER),
        "expert.epochs": (200, _PAPER),
        "expert.selection": ("best_val_acc", _SILENT + " (on the whole validation split)"),
        "student.optimizer": ("adam", _PAPER + " (Adam)"),
        "student.lr": (1e-4, _SILENT + " (--lr reused for distillation)"),
        "student.weight_decay": (1e-5, _SILENT + " (--reg reused)"),
        "student.epochs": (300, _PAPER),
        "student.selection": ("best_val_acc", _SILENT),
        "model_options.dropout": (0.25, _PAPER),
    },
    "authors-code": {
        "n_clusters": (5, _CODE + " --K 5"),
        "cluster_on": ("logits", _CODE + " (extract_logits)"),
        "constrained": (False, _CODE + " (--use_constrained_kmeans off: sklearn KMeans)"),
        "size_slack": (0.05, _CODE + " (used only with --use_constrained_kmeans)"),
        "expert_init": ("scratch", _CODE + " (initialize_model per expert)"),
        "student_init": ("base", _CODE + " (deepcopy(base_model); --distill_random_init off)"),
        "temperature": (0.2, _CODE + " --temperature 0.2, KL scaled by T²"),
        "lambda_ce": (1.0, _CODE + " --ce_weight 1"),
        "lambda_base": (1.0, _CODE + " --kl_weight_base 1"),
        "lambda_expert": (1.0, _CODE + " --kl_weight_expert 1 (mean over K)"),
        "base.optimizer": ("adam", _CODE + " --opt adam"),
        "base.lr": (1e-4, _CODE + " --lr"),
        "base.weight_decay": (1e-5, _CODE + " --reg"),
        "base.epochs": (200, _CODE + " --max_epochs"),
        "base.selection": ("best_val_acc", _CODE + " (val_acc > best, strict)"),
        "expert.optimizer": ("adam", _CODE + " --opt adam"),
        "expert.lr": (1e-4, _CODE),
        "expert.weight_decay": (1e-5, _CODE),
        "expert.epochs": (200, _CODE + " --max_epochs"),
        "expert.selection": ("best_val_acc", _CODE + " (whole validation split)"),
        "student.optimizer": ("sgd", _CODE + " --opt_distill sgd"),
        "student.momentum": (0.9, _CODE + " (get_optim: momentum 0.9)"),
        "student.lr": (1e-4, _CODE + " (--lr)"),
        "student.weight_decay": (1e-5, _CODE + " (--reg)"),
        "student.epochs": (400, _CODE + " --max_epochs_distill 400"),
        "student.selection": ("best_val_acc", _CODE),
        "model_options.dropout": (0.25, _CODE + " --drop_out 0.25"),
    },
}

SOURCES: Dict[str, Dict[str, str]] = {p: {k: src for k, (_, src) in t.items()} for p, t in _PRESET_TABLE.items()}


def preset_config(name: str = "paper", model: str = "abmil", **overrides) -> DnDConfig:
    """The preset's settings for ``model``; ``overrides`` set top-level fields (``base=TrainConfig(...)`` etc.)."""
    if name not in PRESETS:
        raise DnDError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    cfg = DnDConfig(preset=name, model=model)
    for key, (value, _src) in _PRESET_TABLE[name].items():
        if key.startswith("model_options."):
            cfg.model_options.setdefault(key.split(".", 1)[1], value)
        elif "." in key:
            part, attr = key.split(".", 1)
            setattr(getattr(cfg, part), attr, value)
        else:
            setattr(cfg, key, value)
    for k, v in overrides.items():
        if not hasattr(cfg, k):
            raise DnDError(f"unknown D&D setting {k!r}")
        setattr(cfg, k, copy.deepcopy(v))
    return cfg.validate()


#: settings of the three trainings; a key "base.epochs" sets one, a bare "epochs" sets base and experts (as the
#: plain-training options of `dnd train` do), "seed" and "device" set every part
_TRAIN_PARTS = ("base", "expert", "student")
_BASE_AND_EXPERT = ("epochs", "optimizer", "lr", "weight_decay", "selection", "patience")


def apply_overrides(cfg: DnDConfig, given: Optional[Mapping[str, object]] = None, **more) -> DnDConfig:
    """``cfg`` (a preset's settings) with what the user gave set on top: the one rule of the CLI and the app.

    A value of None means "not given": the preset's value stays, as scikit-learn keeps an estimator's parameters
    as given and resolves defaults when it runs. So `dnd train --preset authors-code` and the app's plan for the
    same preset train with the same C, T, epochs, whatever either of them shows as its own default.

    Keys: a DnDConfig field (``n_clusters``, ``temperature``, ...); ``base.lr`` / ``expert.epochs`` /
    ``student.optimizer`` for one training; ``epochs`` / ``optimizer`` / ``lr`` / ``weight_decay`` / ``selection``
    / ``patience`` for base and experts together (``base.epochs`` wins over ``epochs``); ``seed`` and ``device``
    for everything; ``model_options`` (a dict) is merged into the preset's. An unknown key is refused in one line.
    """
    cfg = copy.deepcopy(cfg)
    items = dict(given or {}, **more)
    top = {f.name for f in fields(DnDConfig)} - set(_TRAIN_PARTS) - {"model_options", "seed"}
    part_fields = {f.name for f in fields(TrainConfig)}
    for key, value in sorted(items.items(), key=lambda kv: "." in kv[0]):   # one training's key wins
        if value is None:
            continue
        if key == "model_options":
            cfg.model_options.update(copy.deepcopy(dict(value)))
        elif key == "seed":
            cfg.seed = int(value)
            for part in _TRAIN_PARTS:
                getattr(cfg, part).seed = int(value)
        elif key == "device":
            for part in _TRAIN_PARTS:
                getattr(cfg, part).device = value
        elif key in _BASE_AND_EXPERT:
            for part in ("base", "expert"):
                setattr(getattr(cfg, part), key, value)
        elif "." in key and key.split(".", 1)[0] in _TRAIN_PARTS and key.split(".", 1)[1] in part_fields:
            part, attr = key.split(".", 1)
            setattr(getattr(cfg, part), attr, copy.deepcopy(value))
        elif key in top:
            setattr(cfg, key, copy.deepcopy(value))
        else:
            raise DnDError(f"unknown D&D setting {key!r}")
    return cfg.validate()


def describe_preset(name: str) -> List[Tuple[str, object, str]]:
    """(setting, value, source) rows, for ``--help`` and the README."""
    if name not in PRESETS:
        raise DnDError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    return [(k, v, src) for k, (v, src) in _PRESET_TABLE[name].items()]


__all__ = ["CLUSTER_INPUTS", "DnDConfig", "INITS", "PRESETS", "SOURCES", "apply_overrides", "describe_preset",
           "preset_config"]
