"""The deployable model: the student's weights plus a model card that says what it expects and how it did.

``dnd predict`` and the app read the card to refuse a slide the model cannot be applied to (another feature
extractor, a magnification the slide lacks) before spending minutes on extraction.
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path
from typing import Dict, Iterable, Optional

import h5py

from .. import __version__
from ..errors import DnDError
from ..models import MILModel
from ..models.io import save_model

CARD_FORMAT = 1


def features_provenance(paths: Iterable[Path]) -> Dict[str, object]:
    """Extractor, weights hash, magnification and patch size from the first ``.h5`` bag that records them.

    ``.pt`` bags carry no attributes; then the fields are None and ``dnd predict`` needs ``--extractor``.
    """
    for p in paths:
        p = Path(p)
        if p.suffix != ".h5" or not p.is_file():
            continue
        try:
            with h5py.File(p, "r") as f:
                attrs = {k: f.attrs[k] for k in f.attrs}
                coord_attrs = {k: f["coords"].attrs[k] for k in f["coords"].attrs} if "coords" in f else {}
        except OSError:
            continue
        if "extractor" in attrs:
            def _num(v):
                return None if v is None else float(v)
            return {"extractor": str(attrs["extractor"]),
                    "weights_sha256": str(attrs.get("weights_sha256", "")) or None,
                    "magnification": _num(attrs.get("magnification", coord_attrs.get("target_magnification"))),
                    "patch_size": int(attrs.get("patch_size", coord_attrs.get("target_patch_size", 0))) or None,
                    "precision": str(attrs.get("precision", "")) or None}
    return {"extractor": None, "weights_sha256": None, "magnification": None, "patch_size": None, "precision": None}


def make_card(*, class_names, feature_dim: int, provenance: Dict[str, object], dnd: Dict[str, object],
              cohort: Dict[str, object], metrics: Dict[str, object], notes: str = "") -> Dict[str, object]:
    return {"format": CARD_FORMAT, "kind": "dnd-student", "class_names": list(class_names),
            "feature_dim": int(feature_dim), **{k: provenance.get(k) for k in
                                                ("extractor", "weights_sha256", "magnification", "patch_size")},
            "dnd": dnd, "cohort": cohort, "metrics": metrics, "created": _dt.datetime.now().isoformat(timespec="seconds"),
            "dnd_version": __version__, "notes": notes}


def save_deployable(model: MILModel, path: str | Path, card: Dict[str, object]) -> Path:
    return save_model(model, path, card)


def check_card(card: Dict[str, object], *, feature_dim: Optional[int] = None, extractor: Optional[str] = None) -> None:
    """Refuse a pairing the model was not trained for, with the reason in one line."""
    if card.get("feature_dim") and feature_dim is not None and int(card["feature_dim"]) != int(feature_dim):
        raise DnDError(f"the model expects {card['feature_dim']}-d features but these are {feature_dim}-d "
                       f"(extracted with another extractor?)")
    if card.get("extractor") and extractor is not None and card["extractor"] != extractor:
        raise DnDError(f"the model was trained on '{card['extractor']}' features, not '{extractor}'")


__all__ = ["CARD_FORMAT", "check_card", "features_provenance", "make_card", "save_deployable"]
