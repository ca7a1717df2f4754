"""Tissue polygons as GeoJSON in level-0 pixel coordinates: the layout QuPath's File ▸ Import objects reads."""

from __future__ import annotations

import json
import os
import uuid

import numpy as np

from ..atomic import write_text_atomic
from .segment import TissueMask


def _ring(points: np.ndarray) -> list:
    # rounded in numpy: a large slide's contours have 10⁵ points, and per-point Python rounding cost ~1 s
    pts = np.round(np.asarray(points, dtype=np.float64).reshape(-1, 2), 2).tolist()
    if pts and pts[0] != pts[-1]:
        pts.append(pts[0])
    return pts


def tissue_to_geojson(tissue: TissueMask, name: str = "Tissue") -> dict:
    features = []
    for i, (ext, holes) in enumerate(tissue.polygons):
        if len(ext) < 3:
            continue
        rings = [_ring(ext)] + [_ring(h) for h in holes if len(h) >= 3]
        features.append({
            "type": "Feature",
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"dnd-studio/tissue/{name}/{i}")),
            "geometry": {"type": "Polygon", "coordinates": rings},
            "properties": {
                "objectType": "annotation",
                "classification": {"name": name, "color": [0, 160, 80]},
            },
        })
    return {"type": "FeatureCollection", "features": features}


def write_tissue_geojson(tissue: TissueMask, path: str | os.PathLike, name: str = "Tissue") -> None:
    write_text_atomic(path, json.dumps(tissue_to_geojson(tissue, name)))
