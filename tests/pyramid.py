"""Write small Aperio-style pyramidal TIFFs for tests (derived from real pixels where a test needs realism)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import tifffile
from PIL import Image


def write_pyramid(path: Path, level0: np.ndarray, downsamples: Sequence[int] = (1, 4, 16),
                  mpp: float | None = 0.5, app_mag: float | None = 20, tile: int = 256) -> Path:
    """An SVS-like tiled JPEG pyramid that OpenSlide's aperio driver and tiffslide both read."""
    H, W = level0.shape[:2]
    desc = f"Aperio Image Library v12.0.0\n{W}x{H} [0,0 {W}x{H}] ({tile}x{tile}) JPEG/RGB Q=90"
    if app_mag is not None:
        desc += f"|AppMag = {app_mag:g}"
    if mpp is not None:
        desc += f"|MPP = {mpp:g}"
    with tifffile.TiffWriter(path, bigtiff=False) as tw:
        for i, ds in enumerate(downsamples):
            if ds == 1:
                arr = level0
            else:
                arr = np.asarray(Image.fromarray(level0).resize((max(1, W // ds), max(1, H // ds)),
                                                                 Image.Resampling.BOX))
            tw.write(arr, tile=(tile, tile), compression="jpeg", compressionargs={"level": 90},
                     photometric="rgb", description=desc if i == 0 else None, subfiletype=0,
                     metadata=None)
            if i == 0:  # Aperio puts a stripped thumbnail second; tifffile's SVS series expects it there
                thumb = np.asarray(Image.fromarray(level0).resize((max(1, W // 32), max(1, H // 32))))
                tw.write(thumb, photometric="rgb", compression="jpeg", metadata=None, description=desc)
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
