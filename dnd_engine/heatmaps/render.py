"""CLAM-style attention heatmaps (``WholeSlideImage.visHeatmap``): scores painted over the slide thumbnail.

Scores are normalised (CLAM: percentiles), averaged over each patch footprint, coloured with a colormap only
where patches lie (and, given a tissue mask, only inside it, holes excluded) and blended as
``heat·α + slide·(1−α)`` (CLAM: α = 0.4).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
from PIL import Image

from ..atomic import atomic_path
from ..errors import DnDError
from ..slides import Slide
from ..tissue import TissueMask
from .colormaps import apply_colormap, colormap_lut
from .scores import as_coords, normalise_scores, score_map
from .style import HeatmapStyle


@dataclass
class Heatmap:
    """A rendered heatmap; every array has the same H×W, at ``downsample`` level-0 pixels per pixel."""

    overlay: np.ndarray      # H×W×3 uint8: the slide with the heat blended in where it is painted
    heat_rgba: np.ndarray    # H×W×4 uint8: the heat alone, alpha round(255·α) where painted and 0 elsewhere,
                             # so drawing it over the slide gives the overlay (to rounding)
    scores01: np.ndarray     # H×W float32: normalised mean score per pixel, NaN where no patch lies
    downsample: float        # level-0 pixels per heatmap pixel
    level: int               # the pyramid level the slide image was read from
    painted: np.ndarray      # H×W bool: where the heat is drawn (covered, in tissue, at or above the threshold)


def _slide_image(slide: Slide, level: Optional[int], max_side: int) -> tuple[np.ndarray, float, int]:
    """(RGB image, downsample, level read): a given level as it is, else the whole slide in ``max_side`` px."""
    if level is not None:
        if not 0 <= int(level) < slide.level_count:
            raise DnDError(f"{slide.path.name}: level {level} out of range 0..{slide.level_count - 1}")
        return slide.read_level(int(level)), slide.level_downsamples[int(level)], int(level)
    if int(max_side) < 1:
        raise DnDError(f"max_side must be at least 1 pixel, got {max_side}")
    W0, H0 = slide.dimensions
    ds = max(1.0, max(W0, H0) / float(max_side))
    rgb, ds_actual = slide.thumbnail_at_downsample(ds)
    return rgb, ds_actual, slide.best_level_for_downsample(ds)


def _blur(smap: np.ndarray, covered: np.ndarray, patch_px: float) -> np.ndarray:
    """Gaussian-smoothed scores, averaged over covered pixels only so uncovered pixels neither pull scores
    towards 0 nor gain any; kernel 2·patch+1 px, CLAM's size for non-overlapping patches."""
    k = 2 * max(1, int(round(patch_px))) + 1
    w = covered.astype(np.float32)
    num = cv2.GaussianBlur(np.where(covered, smap, 0.0).astype(np.float32), (k, k), 0)
    den = cv2.GaussianBlur(w, (k, k), 0)
    out = np.full(smap.shape, np.nan, np.float32)
    ok = covered & (den > 0)
    out[ok] = num[ok] / den[ok]
    return out


def render_heatmap(slide: Slide, coords, patch_size_level0: float, scores, *, level: Optional[int] = None,
                   max_side: int = 2048, colormap: str = "jet", alpha: float = 0.4, normalise: str = "percentile",
                   threshold: Optional[float] = None, tissue: Optional[TissueMask | np.ndarray] = None,
                   blur: bool = False, style: Optional[HeatmapStyle] = None) -> Heatmap:
    """Render ``scores`` (one per patch, same order as ``coords``) over ``slide``.

    ``style`` (the app's :class:`HeatmapStyle`), when given, supplies colormap, alpha, normalise, threshold and
    blur instead of those five keywords.

    Without ``level`` the whole slide is drawn with its long side ``max_side`` px (read from the nearest finer
    pyramid level, then shrunk). Colour is clipped to ``tissue`` (a ``TissueMask``, or a mask array of the whole
    slide at any scale, e.g. extraction's ``tissue/<slide>_mask.png``; rescaled to the heatmap) and to the patch
    footprints; ``threshold`` in [0, 1] hides normalised scores below it; ``blur`` smooths the scores first.
    """
    if style is not None:
        opts = style.render_options()
        colormap, alpha, normalise, threshold, blur = (opts["colormap"], opts["alpha"], opts["normalise"],
                                                       opts["threshold"], opts["blur"])
    colormap_lut(colormap)                      # an unknown name fails before any pixel is read
    if not 0.0 <= float(alpha) <= 1.0:
        raise DnDError(f"alpha must be in [0, 1], got {alpha}")
    if threshold is not None and not 0.0 <= float(threshold) <= 1.0:
        raise DnDError(f"threshold must be in [0, 1], got {threshold}")
    s01 = normalise_scores(scores, normalise)
    c = as_coords(coords, len(s01))             # a mismatch fails before any pixel is read

    rgb, ds, lvl = _slide_image(slide, level, max_side)
    H, W = rgb.shape[:2]
    smap, covered = score_map(c, patch_size_level0, s01, (H, W), ds)
    if blur:
        smap = _blur(smap, covered, float(patch_size_level0) / ds)

    paint = covered.copy()
    if tissue is not None:
        mask = tissue.mask if isinstance(tissue, TissueMask) else np.asarray(tissue)
        paint &= cv2.resize((mask > 0).astype(np.uint8), (W, H), interpolation=cv2.INTER_NEAREST) > 0
    if threshold is not None:
        paint &= np.nan_to_num(smap, nan=-1.0) >= float(threshold)

    heat = apply_colormap(smap, colormap)
    blend = cv2.addWeighted(heat, float(alpha), rgb, 1.0 - float(alpha), 0.0)
    overlay = np.where(paint[..., None], blend, rgb)
    heat_rgba = np.zeros((H, W, 4), np.uint8)
    heat_rgba[paint, :3] = heat[paint]
    heat_rgba[paint, 3] = int(round(255 * float(alpha)))
    return Heatmap(overlay=overlay, heat_rgba=heat_rgba, scores01=smap, downsample=float(ds), level=lvl,
                   painted=paint)


def save_heatmap_png(heatmap: Heatmap, path: str | os.PathLike, which: str = "overlay") -> Path:
    """Write the blended ``overlay`` (RGB) or the ``heat`` layer alone (RGBA) as a PNG, atomically."""
    arrays = {"overlay": heatmap.overlay, "heat": heatmap.heat_rgba}
    if which not in arrays:
        raise DnDError(f"which must be 'overlay' or 'heat', got {which!r}")
    with atomic_path(path) as tmp:
        Image.fromarray(arrays[which]).save(tmp, format="PNG")
    return Path(path)
