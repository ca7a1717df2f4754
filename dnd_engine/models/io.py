"""Model files: safetensors weights with the model's config (and any card fields) in the metadata.

A model file is self-describing — ``load_model(path)`` rebuilds the architecture from the metadata — and
holds no pickled code. The authors' ``.pt`` checkpoints (plain state dicts) load through
``load_authors_checkpoint`` with ``weights_only=True`` and ``strict=True``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, Optional, Tuple

import torch

from ..atomic import atomic_path
from ..errors import DnDError
from ..text import one_line
from ..state_dicts import load_state_dict
from .base import MILModel, build_model
from .schema import CONFIG_KEY as _META_KEY
from .schema import validate_metadata


class ModelFileError(DnDError):
    """A model file that is missing, unreadable, or not one of ours."""


def save_model(model: MILModel, path: str | os.PathLike, card: Optional[Dict[str, object]] = None,
               state: Optional[Dict[str, torch.Tensor]] = None) -> Path:
    """Write ``model``'s weights (or ``state``, weights of the same architecture) and config atomically;
    ``card`` (JSON-able) travels in the metadata."""
    from safetensors.torch import save_file
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in (state or model.state_dict()).items()}
    meta = {_META_KEY: json.dumps(model.config()), "card": json.dumps(card or {}, default=str)}
    validate_metadata(meta, Path(path).name)      # the same schema as the reader: never write what it refuses
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def read_model_file(path: str | os.PathLike) -> Tuple[Dict[str, torch.Tensor], Dict[str, object], Dict[str, object]]:
    """(state dict, model config, card) of a model file; the metadata is checked against the schema
    (:mod:`dnd_engine.models.schema`): a bad field raises :class:`ModelMetadataError` naming it."""
    from safetensors import safe_open
    p = Path(path)
    if not p.is_file():
        raise ModelFileError(f"model file not found: {p}")
    try:
        with safe_open(str(p), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if _META_KEY not in meta:
                raise ModelFileError(f"{p.name} is a safetensors file but not a D&D Studio model (no model config)")
            cfg, card = validate_metadata(meta, p.name)    # before any tensor is read: the header is untrusted
            sd = {k: f.get_tensor(k) for k in f.keys()}
    except DnDError:
        raise
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        reason = one_line(e, None)
        raise ModelFileError(f"cannot read model file {p}: not a safetensors model file ({reason})") from None
    return sd, cfg, card


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> Tuple[MILModel, Dict[str, object]]:
    """Rebuild and load a saved model in eval mode; returns (model, card).

    The architecture is first built without memory (torch's ``meta`` device) and its tensor names and shapes
    compared with the file's, so a config that does not describe the file's tensors costs nothing to refuse."""
    sd, cfg, card = read_model_file(path)
    cfg = dict(cfg)
    name = cfg.pop("name")
    with torch.device("meta"):
        _check_tensors(Path(path).name, _build(Path(path).name, name, cfg).state_dict(), sd)
    model = _build(Path(path).name, name, cfg)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ModelFileError(f"{Path(path).name} does not match its own config: {one_line(e, None)}") from None
    return model.to(device).eval(), card


def _build(filename: str, name: str, cfg: Dict[str, object]) -> MILModel:
    try:
        return build_model(name, **cfg)
    except (TypeError, ValueError) as e:      # an option the schema passed but the constructor refuses
        raise ModelFileError(f"{filename}: its model config cannot be built: {one_line(e, None)}") from None


def _check_tensors(filename: str, want: Dict[str, torch.Tensor], have: Dict[str, torch.Tensor]) -> None:
    missing = [k for k in want if k not in have]
    extra = [k for k in have if k not in want]
    wrong = [k for k in want if k in have and tuple(want[k].shape) != tuple(have[k].shape)]
    if missing or extra or wrong:
        what = (f"tensor '{wrong[0]}' is {tuple(have[wrong[0]].shape)}, the config needs {tuple(want[wrong[0]].shape)}"
                if wrong else f"missing tensor '{missing[0]}'" if missing else f"unexpected tensor '{extra[0]}'")
        raise ModelFileError(f"{filename} does not match its own config: {what}")


def load_authors_checkpoint(name: str, path: str | os.PathLike, in_dim: int = 1024, n_classes: int = 2,
                            **options) -> MILModel:
    """A checkpoint saved by the D&D authors' code (``torch.save(model.state_dict())``), loaded strictly."""
    p = Path(path)
    sd = load_state_dict(p, ModelFileError)
    model = build_model(name, in_dim=in_dim, n_classes=n_classes, **options)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ModelFileError(f"{p.name} does not fit {model.name} (in_dim {in_dim}, {n_classes} classes): "
                             f"{one_line(e, None)}") from None
    return model.eval()
