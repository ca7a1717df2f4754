"""Write small Aperio-style pyramidal TIFFs for tests (derived from real pixels where a test needs realism)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from dnd_engine.synth import write_aperio_tiff


def write_pyramid(path: Path, level0: np.ndarray, downsamples: Sequence[int] = (1, 4, 16),
                  mpp: float | None = 0.5, app_mag: float | None = 20) -> Path:
    """An SVS-like tiled JPEG pyramid that OpenSlide's aperio driver and tiffslide both read."""
    write_aperio_tiff(path, level0, mpp, app_mag, name=path.name, downsamples=downsamples)
    return path


def tissue_like(width: int, height: int, seed: int = 0, blobs: int = 3) -> np.ndarray:
    """White background with pink/purple elliptical tissue pieces: enough for segmentation tests."""
    rng = np.random.default_rng(seed)
    img = np.full((height, width, 3), 242, np.uint8)
    yy, xx = np.mgrid[0:height, 0:width]
    for _ in range(blobs):
        cx, cy = rng.uniform(0.25, 0.75) * width, rng.uniform(0.25, 0.75) * height
        rx, ry = rng.uniform(0.15, 0.3) * width, rng.uniform(0.15, 0.3) * height
        inside = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        noise = rng.integers(-20, 20, size=(int(inside.sum()), 3))
        img[inside] = np.clip(np.array([200, 120, 170]) + noise, 0, 255).astype(np.uint8)
    return img
