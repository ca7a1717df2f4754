"""Colormaps as 256-entry RGB lookup tables, so heatmaps need no matplotlib.

Each map is piecewise-linear between anchors and sampled at 256 points as matplotlib samples its maps; a value
v in [0, 1] takes entry ``min(floor(v * 256), 255)``, matplotlib's rule. ``jet`` uses matplotlib's own
segment data (CLAM's heatmap config default); ``coolwarm`` (CLAM's function default) is Kenneth Moreland's
33-point diverging table, which matplotlib's coolwarm interpolates too; ``viridis`` and ``magma`` go through
every 8th entry of matplotlib's 256-entry tables and stay within 2 levels of them.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from ..errors import DnDError

# matplotlib's _jet_data: per channel, (position, value) anchors
_JET = (((0.0, 0.0), (0.35, 0.0), (0.66, 1.0), (0.89, 1.0), (1.0, 0.5)),
        ((0.0, 0.0), (0.125, 0.0), (0.375, 1.0), (0.64, 1.0), (0.91, 0.0), (1.0, 0.0)),
        ((0.0, 0.5), (0.11, 1.0), (0.34, 1.0), (0.65, 0.0), (1.0, 0.0)))

# Moreland, "Diverging Color Maps for Scientific Visualization" (2009), CoolWarmFloat33 in 8-bit, evenly spaced
_COOLWARM = (
    (59, 76, 192), (68, 90, 204), (77, 104, 215), (87, 117, 225), (98, 130, 234), (108, 142, 241),
    (119, 154, 247), (130, 165, 251), (141, 176, 254), (152, 185, 255), (163, 194, 255), (174, 201, 253),
    (184, 208, 249), (194, 213, 244), (204, 217, 238), (213, 219, 230), (221, 221, 221), (229, 216, 209),
    (236, 211, 197), (241, 204, 185), (245, 196, 173), (247, 187, 160), (247, 177, 148), (247, 166, 135),
    (244, 154, 123), (241, 141, 111), (236, 127, 99), (229, 112, 88), (222, 96, 77), (213, 80, 66),
    (203, 62, 56), (192, 40, 47), (180, 4, 38))

# matplotlib's _viridis_data / _magma_data at entries 0, 8, ..., 248 and 255, in 8-bit
_EVERY_8TH = tuple(range(0, 256, 8)) + (255,)
_VIRIDIS = (
    (68, 1, 84), (71, 13, 96), (72, 24, 106), (72, 35, 116), (71, 45, 123), (69, 55, 129), (66, 64, 134),
    (62, 73, 137), (59, 82, 139), (55, 91, 141), (51, 99, 141), (47, 107, 142), (44, 114, 142), (41, 122, 142),
    (38, 130, 142), (35, 137, 142), (33, 145, 140), (31, 152, 139), (31, 160, 136), (34, 167, 133),
    (40, 174, 128), (50, 182, 122), (63, 188, 115), (78, 195, 107), (94, 201, 98), (112, 207, 87),
    (132, 212, 75), (152, 216, 62), (173, 220, 48), (194, 223, 35), (216, 226, 25), (236, 229, 27),
    (253, 231, 37))
_MAGMA = (
    (0, 0, 4), (3, 3, 18), (10, 8, 34), (19, 13, 52), (29, 17, 71), (41, 17, 90), (54, 16, 107), (68, 15, 118),
    (81, 18, 124), (93, 23, 127), (106, 28, 129), (118, 33, 129), (131, 38, 129), (144, 42, 129),
    (156, 46, 127), (170, 51, 125), (183, 55, 121), (196, 60, 117), (208, 65, 111), (220, 72, 105),
    (231, 82, 99), (239, 93, 94), (245, 107, 92), (249, 121, 93), (252, 137, 97), (253, 152, 105),
    (254, 167, 114), (254, 182, 124), (254, 196, 136), (254, 211, 149), (253, 226, 163), (252, 240, 178),
    (252, 253, 191))

COLORMAPS = ("jet", "coolwarm", "viridis", "magma", "gray")


def _from_table(rows, positions) -> np.ndarray:
    table = np.asarray(rows, np.float64) / 255.0
    x = np.linspace(0.0, 1.0, 256)
    return np.stack([np.interp(x, positions, table[:, ch]) for ch in range(3)], axis=1)


@lru_cache(maxsize=None)
def colormap_lut(name: str) -> np.ndarray:
    """The (256, 3) uint8 table of ``name`` (read-only: it is shared between calls)."""
    x = np.linspace(0.0, 1.0, 256)
    if name == "jet":
        rgb = np.stack([np.interp(x, *zip(*anchors)) for anchors in _JET], axis=1)
    elif name == "coolwarm":
        rgb = _from_table(_COOLWARM, np.linspace(0.0, 1.0, len(_COOLWARM)))
    elif name == "viridis":
        rgb = _from_table(_VIRIDIS, np.asarray(_EVERY_8TH) / 255.0)
    elif name == "magma":
        rgb = _from_table(_MAGMA, np.asarray(_EVERY_8TH) / 255.0)
    elif name == "gray":
        rgb = np.stack([x, x, x], axis=1)
    else:
        raise DnDError(f"unknown colormap {name!r} (choose from {', '.join(COLORMAPS)})")
    lut = np.round(rgb * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


def apply_colormap(values01: np.ndarray, name: str = "jet") -> np.ndarray:
    """RGB uint8 (shape + (3,)) for values in [0, 1]; values outside are clipped, NaN takes the low end."""
    v = np.clip(np.nan_to_num(np.asarray(values01, np.float64), nan=0.0), 0.0, 1.0)
    idx = np.minimum((v * 256.0).astype(np.int64), 255)
    return colormap_lut(name)[idx]
