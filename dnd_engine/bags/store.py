"""Feature bags on disk: find them in the layouts users bring and load one safely.

Accepted layouts (the first that holds bags wins): ``DIR/*.h5|*.pt``; CLAM's ``DIR/h5_files`` and
``DIR/pt_files``; our ``DIR/features_<extractor>/...`` (one extractor); TRIDENT's
``DIR/features_<encoder>/*.h5``. ``.h5`` is preferred when both exist (it carries coordinates). ``.pt`` files
are loaded with ``weights_only=True``: a pickled object is refused, never executed.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional, Tuple

import h5py
import numpy as np
import torch

from ..errors import DnDError
from ..text import one_line
from ..state_dicts import torch_file_problem

BAG_SUFFIXES = (".h5", ".pt")


class BagError(DnDError):
    """A feature bag that is missing, unreadable, empty or not finite."""


def _bags_in(folder: Path) -> Dict[str, Path]:
    found: Dict[str, Path] = {}
    for suffix in (".pt", ".h5"):  # .h5 second so it wins
        for p in sorted(folder.glob(f"*{suffix}")):
            if p.is_file() and not p.name.startswith("."):
                sid = p.stem[:-len("_features")] if p.stem.endswith("_features") else p.stem
                found[sid] = p
    return found


def find_bags(features_dir: str | os.PathLike) -> Dict[str, Path]:
    """slide id → bag file."""
    root = Path(features_dir)
    if not root.is_dir():
        raise BagError(f"features folder not found: {root}")
    candidates = [root, root / "h5_files", root / "pt_files"]
    feats = sorted(d for d in root.glob("features_*") if d.is_dir())
    if len(feats) > 1:
        names = ", ".join(d.name for d in feats)
        if not _bags_in(root) and not (root / "h5_files").is_dir():
            raise BagError(f"{root} holds features of several extractors ({names}); pass one of those folders")
    for d in feats:
        candidates += [d / "h5_files", d, d / "pt_files"]
    for d in candidates:
        if d.is_dir():
            found = _bags_in(d)
            if found:
                return found
    raise BagError(f"no feature bags (.h5 or .pt) in {root} (looked in {', '.join(str(c) for c in candidates)})")


@dataclass
class BagInfo:
    n: int
    dim: int


def bag_info(path: Path) -> BagInfo:
    """Shape without loading the features (h5) — for .pt the tensor is loaded."""
    if path.suffix == ".h5":
        try:
            with h5py.File(path, "r") as f:
                if "features" not in f:
                    raise BagError(f"{path.name}: no 'features' dataset")
                shape = f["features"].shape
        except (OSError, KeyError) as e:
            raise BagError(f"cannot read feature bag {path}: {e}") from None
    else:
        shape = tuple(load_bag(path, check=False).shape)
    if len(shape) != 2:
        raise BagError(f"{path.name}: features must be 2-D (N, D), got shape {tuple(shape)}")
    return BagInfo(int(shape[0]), int(shape[1]))


def _load_pt(path: Path) -> torch.Tensor:
    problem = torch_file_problem(path)
    if problem:
        raise BagError(f"{path.name}: this feature bag {problem}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise BagError(f"{path.name}: refused — the .pt file holds a pickled object, not a plain tensor "
                       "(only tensors or dicts of tensors are loaded, never arbitrary code)") from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for corrupt files
        raise BagError(f"cannot read feature bag {path}: {one_line(e, None)}") \
            from None
    if isinstance(obj, dict):
        obj = obj.get("features", obj.get("feats"))
    if not isinstance(obj, torch.Tensor):
        raise BagError(f"{path.name}: expected a tensor of features (or a dict with 'features'), "
                       f"got {type(obj).__name__}")
    return obj


def load_bag(path: str | os.PathLike, check: bool = True,
             with_coords: bool = False) -> torch.Tensor | Tuple[torch.Tensor, Optional[np.ndarray]]:
    """Load one bag as float32 (N, D); ``check`` refuses empty and non-finite bags with a one-line error."""
    path = Path(path)
    coords = None
    if path.suffix == ".h5":
        try:
            with h5py.File(path, "r") as f:
                if "features" not in f:
                    raise BagError(f"{path.name}: no 'features' dataset")
                x = torch.from_numpy(np.asarray(f["features"][()], dtype=np.float32))
                if with_coords and "coords" in f:
                    coords = np.asarray(f["coords"][()])
        except OSError as e:
            raise BagError(f"cannot read feature bag {path}: {e}") from None
    elif path.suffix == ".pt":
        x = _load_pt(path).float()
    else:
        raise BagError(f"{path.name}: not a feature bag (.h5 or .pt)")
    if x.dim() == 3 and x.shape[0] == 1:
        x = x[0]
    if check:
        if x.dim() != 2:
            raise BagError(f"{path.name}: features must be 2-D (N, D), got shape {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise BagError(f"{path.name}: the bag is empty (0 patches)")
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).any(dim=1).sum())
            raise BagError(f"{path.name}: {bad} of {x.shape[0]} feature rows hold NaN or inf")
    return (x, coords) if with_coords else x
