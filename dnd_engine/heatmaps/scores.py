"""Per-patch scores (e.g. ABMIL's pre-softmax attention) turned into [0, 1], into a map, and checked against truth.

Scores and coordinates come in the same order: score ``i`` belongs to the patch whose level-0 top-left corner is
``coords[i]`` and whose side is ``patch_size_level0`` level-0 pixels.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
from scipy.stats import rankdata

from ..errors import DnDError
from ..slides import Slide

NORMALISATIONS = ("percentile", "minmax", "none")


def as_scores(scores, what: str = "scores") -> np.ndarray:
    """``scores`` as a finite 1-D float64 array; (N, 1) is accepted, as a model's attention often comes."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim == 2 and s.shape[1] == 1:
        s = s[:, 0]
    if s.ndim != 1:
        raise DnDError(f"{what} must be one value per patch, got an array of shape {s.shape}")
    bad = ~np.isfinite(s)
    if bad.any():
        raise DnDError(f"{what}: {int(bad.sum())} of {len(s)} values are NaN or infinite "
                       f"(first at patch {int(np.flatnonzero(bad)[0])})")
    return s


def as_coords(coords, n_scores: Optional[int] = None) -> np.ndarray:
    """``coords`` as an (N, 2) float64 array of level-0 (x, y), checked against the number of scores."""
    c = np.asarray(coords, dtype=np.float64)
    if c.size == 0:
        c = c.reshape(0, 2)
    if c.ndim != 2 or c.shape[1] != 2:
        raise DnDError(f"coords must be an (N, 2) array of level-0 x, y, got shape {c.shape}")
    if n_scores is not None and len(c) != n_scores:
        raise DnDError(f"{len(c)} patch coordinates but {n_scores} scores: they must be one per patch, same order")
    return c


def _positive(value: float, what: str) -> float:
    v = float(value)
    if not (np.isfinite(v) and v > 0):
        raise DnDError(f"{what} must be a positive number, got {value}")
    return v


def normalise_scores(scores, method: str = "percentile") -> np.ndarray:
    """Scores in [0, 1], so heatmaps of different slides and models share one colour scale.

    ``percentile`` is CLAM's ``rankdata(scores, 'average') / N``: ties share their mean rank and the top score is
    1.0; ``minmax`` maps min..max to 0..1 (all equal → 0.5, no contrast to show); ``none`` only clips to [0, 1],
    for scores that already are probabilities.
    """
    s = as_scores(scores)
    if method not in NORMALISATIONS:
        raise DnDError(f"unknown score normalisation {method!r} (choose from {', '.join(NORMALISATIONS)})")
    if s.size == 0:
        return s
    if method == "percentile":
        return rankdata(s, method="average") / s.size
    if method == "minmax":
        lo, hi = float(s.min()), float(s.max())
        return np.full_like(s, 0.5) if hi == lo else (s - lo) / (hi - lo)
    return np.clip(s, 0.0, 1.0)


def _footprints(coords: np.ndarray, size0: float, downsample: float, shape: tuple[int, int]):
    """Each patch's pixel box [x0, x1) × [y0, y1) on a canvas at ``downsample``, clipped to ``shape``.

    Edges are rounded, so patches that touch at level 0 touch on the canvas too (no gaps, no double counting),
    and every patch keeps at least one pixel before clipping.
    """
    H, W = shape
    x0 = np.rint(coords[:, 0] / downsample).astype(np.int64)
    y0 = np.rint(coords[:, 1] / downsample).astype(np.int64)
    x1 = np.maximum(np.rint((coords[:, 0] + size0) / downsample).astype(np.int64), x0 + 1)
    y1 = np.maximum(np.rint((coords[:, 1] + size0) / downsample).astype(np.int64), y0 + 1)
    return np.clip(x0, 0, W), np.clip(y0, 0, H), np.clip(x1, 0, W), np.clip(y1, 0, H)


def score_map(coords, patch_size_level0: float, scores01, shape: tuple[int, int],
              downsample: float) -> tuple[np.ndarray, np.ndarray]:
    """(map, covered) on an H×W canvas at ``downsample``: each pixel holds the mean score of the patches over it.

    This is CLAM's accumulation (sum over each footprint, divided by the overlap count), done with a 2-D
    difference array so its cost does not grow with the patch size. ``map`` is float32, NaN where no patch lies;
    ``covered`` is the boolean union of the footprints.
    """
    s = as_scores(scores01)
    c = as_coords(coords, len(s))
    size0 = _positive(patch_size_level0, "patch_size_level0")
    ds = _positive(downsample, "downsample")
    H, W = int(shape[0]), int(shape[1])
    if H <= 0 or W <= 0:
        raise DnDError(f"heatmap canvas must be at least 1x1, got {W}x{H}")
    x0, y0, x1, y1 = _footprints(c, size0, ds, (H, W))
    keep = (x1 > x0) & (y1 > y0)                # patches entirely off the canvas add nothing
    x0, y0, x1, y1, s = x0[keep], y0[keep], x1[keep], y1[keep], s[keep]
    total = np.zeros((H + 1, W + 1), np.float64)
    count = np.zeros((H + 1, W + 1), np.int64)
    for (ys, xs), sign in (((y0, x0), 1), ((y0, x1), -1), ((y1, x0), -1), ((y1, x1), 1)):
        np.add.at(total, (ys, xs), sign * s)
        np.add.at(count, (ys, xs), sign)
    total = total.cumsum(0).cumsum(1)[:H, :W]
    count = count.cumsum(0).cumsum(1)[:H, :W]
    covered = count > 0
    out = np.full((H, W), np.nan, np.float32)
    out[covered] = total[covered] / count[covered]
    return out, covered


def top_patches(scores, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(top, bottom): indices of the ``k`` highest scores (highest first) and ``k`` lowest (lowest first).

    Ties keep patch order (stable sort), so a gallery does not reshuffle between runs. With fewer than ``2k``
    patches the two lists share patches.
    """
    s = as_scores(scores)
    if int(k) < 0:
        raise DnDError(f"k must be zero or more, got {k}")
    k = min(int(k), len(s))
    return np.argsort(-s, kind="stable")[:k], np.argsort(s, kind="stable")[:k]


def _area_below(ii: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mask area in [0, x) × [0, y) for fractional x, y (mask pixels): bilinear interpolation of the integral
    image is exact here, because the mask is constant over each pixel. Outside the mask counts as empty."""
    H, W = ii.shape[0] - 1, ii.shape[1] - 1
    x, y = np.clip(x, 0, W), np.clip(y, 0, H)
    xi = np.minimum(np.floor(x).astype(np.int64), W - 1)
    yi = np.minimum(np.floor(y).astype(np.int64), H - 1)
    fx, fy = x - xi, y - yi
    return (ii[yi, xi] * (1 - fx) * (1 - fy) + ii[yi, xi + 1] * fx * (1 - fy)
            + ii[yi + 1, xi] * (1 - fx) * fy + ii[yi + 1, xi + 1] * fx * fy)


def patch_truth(coords, patch_size_level0: float, mask: np.ndarray, mask_downsample: float,
                min_fraction: float = 0.5) -> np.ndarray:
    """Which patches are lesion: at least ``min_fraction`` of the footprint lies in the ground-truth ``mask``.

    The fraction is the exact covered area (also for patches not aligned with the mask's pixels); parts of a
    patch beyond the mask count as non-lesion. Used to score a heatmap against synthetic lesion masks
    (patch-level AUC).
    """
    c = as_coords(coords)
    size0 = _positive(patch_size_level0, "patch_size_level0")
    ds = _positive(mask_downsample, "mask_downsample")
    m = np.asarray(mask)
    if m.ndim != 2 or m.size == 0:
        raise DnDError(f"the truth mask must be a non-empty 2-D array, got shape {m.shape}")
    if not 0.0 < float(min_fraction) <= 1.0:
        raise DnDError(f"min_fraction must be in (0, 1], got {min_fraction}")
    ii = np.zeros((m.shape[0] + 1, m.shape[1] + 1), np.float64)
    ii[1:, 1:] = (m > 0).cumsum(0).cumsum(1)
    x0, y0 = c[:, 0] / ds, c[:, 1] / ds
    x1, y1 = x0 + size0 / ds, y0 + size0 / ds
    area = (_area_below(ii, x1, y1) - _area_below(ii, x0, y1) - _area_below(ii, x1, y0)
            + _area_below(ii, x0, y0))
    # a hair of tolerance: an exactly-half patch must not fail 0.5 on floating-point noise
    return area / (size0 / ds) ** 2 >= float(min_fraction) - 1e-9


def patch_size_level0_from_attrs(attrs: dict, slide: Optional[Slide] = None) -> float:
    """The patch side in level-0 pixels from a coords `.h5`'s attributes (D&D Studio, TRIDENT or CLAM).

    D&D Studio and TRIDENT store ``patch_size_level0``. CLAM stores ``patch_size`` at ``patch_level`` and that
    level's ``downsample``; without it, ``slide`` gives the level's downsample.
    """
    if "patch_size_level0" in attrs:
        return _positive(attrs["patch_size_level0"], "patch_size_level0")
    if "patch_size" not in attrs:
        raise DnDError("the coordinates file gives no patch size (neither 'patch_size_level0' nor 'patch_size')")
    size = _positive(attrs["patch_size"], "patch_size")
    if "downsample" in attrs:
        return size * _positive(np.ravel(attrs["downsample"])[0], "downsample")
    level = int(attrs.get("patch_level", 0))
    if level == 0:
        return size
    if slide is None:
        raise DnDError(f"patches are at level {level} but the coordinates file has no 'downsample': "
                       "open the slide to read that level's downsample")
    if not 0 <= level < slide.level_count:
        raise DnDError(f"{slide.path.name}: patch level {level} is not one of its {slide.level_count} levels")
    return size * slide.level_downsamples[level]
