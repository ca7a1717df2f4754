"""Finding extractor weights on this machine: an explicit file, our cache folder, or the standard caches.

Nothing is ever downloaded. When no candidate exists, :class:`WeightsMissingError` lists every place looked
and the exact file name to put there.
"""

from __future__ import annotations

import glob
import hashlib
import os
from pathlib import Path
from typing import Optional, Sequence

import torch

from ..errors import WeightsMissingError
from ..state_dicts import load_state_dict as _load_state_dict


def dnd_weights_dir() -> Path:
    """Our own weights folder: $DND_WEIGHTS_DIR, else ~/.cache/dnd-studio/weights."""
    env = os.environ.get("DND_WEIGHTS_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dnd-studio" / "weights"


def torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def hf_hub_dir() -> Path:
    env = os.environ.get("HF_HUB_CACHE") or (os.environ.get("HF_HOME") and os.path.join(os.environ["HF_HOME"], "hub"))
    return Path(env).expanduser() if env else Path.home() / ".cache" / "huggingface" / "hub"


def locate_weights(name: str, explicit: Optional[str | os.PathLike], candidates: Sequence[str | os.PathLike],
                   suggestion: Path, how_to_get: str) -> Path:
    """The first existing file among ``explicit`` then ``candidates`` (glob patterns allowed)."""
    if explicit:
        p = Path(explicit).expanduser()
        if p.is_file() and p.stat().st_size > 0:
            return p
        raise WeightsMissingError(f"weights for '{name}' not found at {p} (no such file, or empty)")
    looked = []
    for c in candidates:
        c = str(c)
        looked.append(c)
        hits = sorted(glob.glob(c)) if any(ch in c for ch in "*?[") else ([c] if os.path.isfile(c) else [])
        for h in hits:
            if os.path.getsize(h) > 0:
                return Path(h)
    raise WeightsMissingError(
        f"weights for extractor '{name}' are missing: put the file at {suggestion} "
        f"(or pass --weights FILE); {how_to_get}. Looked in: " + "; ".join(looked))


def load_state_dict(path: Path) -> dict:
    """An extractor's state dict, safely (see ``dnd_engine.state_dicts``); failures are WeightsMissingError."""
    return _load_state_dict(path, WeightsMissingError)


_HASH_CACHE: dict[tuple[str, float, int], str] = {}


def file_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime, st.st_size)
    if key not in _HASH_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        _HASH_CACHE[key] = h.hexdigest()
    return _HASH_CACHE[key]
