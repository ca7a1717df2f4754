"""Per-patch scores as GeoJSON tiles that QuPath's File ▸ Import objects reads.

One Feature per patch: a closed square ring in level-0 pixel coordinates (QuPath's image coordinates),
``objectType`` "tile", and ``measurements`` as a name → number dict, so QuPath can colour the tiles by
attention (Measure ▸ Show measurement maps). Slide-level facts ride along: the class probabilities as one
measurement per class, the predicted class as each tile's classification.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Optional, Sequence

from ..atomic import write_text_atomic
from ..errors import DnDError
from .scores import as_coords, as_scores, normalise_scores

# measurement name of the normalised score, per normalisation ("none" only clips)
_NORMALISED_NAME = {"percentile": "attention_percentile", "minmax": "attention_minmax", "none": "attention_clipped"}
# distinct, readable on H&E: the class's position in class_names picks one
_CLASS_COLORS = ((214, 39, 40), (31, 119, 180), (44, 160, 44), (255, 127, 14), (148, 103, 189),
                 (140, 86, 75), (227, 119, 194), (23, 190, 207))


def _num(v: float):
    f = float(v)
    return int(f) if f.is_integer() else round(f, 3)


def _class_color(name: str, class_names: Optional[Sequence[str]]) -> list[int]:
    """The colour of ``name``: by its index in ``class_names``, else by a stable hash of the name."""
    names = list(class_names or [])
    i = names.index(name) if name in names else zlib.crc32(name.encode("utf-8"))
    return list(_CLASS_COLORS[i % len(_CLASS_COLORS)])


def _slide_measurements(probs, class_names: Optional[Sequence[str]]) -> dict:
    if probs is None:
        return {}
    p = as_scores(probs, "probs")
    names = [str(n) for n in class_names] if class_names is not None else [str(i) for i in range(len(p))]
    if len(names) != len(p):
        raise DnDError(f"{len(p)} class probabilities but {len(names)} class names")
    return {f"p_{n}": float(v) for n, v in zip(names, p)}


def heatmap_geojson(coords, patch_size_level0: float, scores, *, probs=None,
                    class_names: Optional[Sequence[str]] = None, predicted: Optional[str] = None,
                    model_name: Optional[str] = None, normalise: str = "percentile") -> dict:
    """A FeatureCollection with one tile per patch carrying its raw and normalised score.

    ``probs`` (the slide's class probabilities, named by ``class_names`` or by index) become ``p_<class>``
    measurements on every tile; ``predicted`` becomes every tile's classification. ``model_name`` and the
    normalisation are recorded in the collection's ``dnd_studio`` member (QuPath ignores it).
    """
    raw = as_scores(scores)
    norm = normalise_scores(raw, normalise)
    c = as_coords(coords, len(raw))
    size = float(patch_size_level0)
    if not size > 0:
        raise DnDError(f"patch_size_level0 must be positive, got {patch_size_level0}")
    extra = _slide_measurements(probs, class_names)
    classification = None
    if predicted is not None:
        classification = {"name": str(predicted), "color": _class_color(str(predicted), class_names)}
    norm_name = _NORMALISED_NAME[normalise]

    features = []
    for i, ((x, y), r, n) in enumerate(zip(c, raw, norm)):
        x0, y0, x1, y1 = _num(x), _num(y), _num(x + size), _num(y + size)
        props = {
            "objectType": "tile",
            "name": f"patch {i}",
            "measurements": {"attention": float(r), norm_name: float(n), **extra},
        }
        if classification is not None:
            props["classification"] = classification
        features.append({
            "type": "Feature",
            "geometry": {"type": "Polygon", "coordinates": [[[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]]},
            "properties": props,
        })
    return {
        "type": "FeatureCollection",
        "dnd_studio": {"score": "attention", "model": model_name, "normalise": normalise,
                       "patch_size_level0": _num(size), "n_patches": len(features)},
        "features": features,
    }


def write_heatmap_geojson(path: str | os.PathLike, coords, patch_size_level0: float, scores, **kwargs) -> Path:
    """Write :func:`heatmap_geojson` (same keyword arguments) atomically, compact: it can hold 100k tiles."""
    fc = heatmap_geojson(coords, patch_size_level0, scores, **kwargs)
    return write_text_atomic(path, json.dumps(fc, separators=(",", ":")))
