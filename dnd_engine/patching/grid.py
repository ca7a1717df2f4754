"""A global patch grid at a target magnification, correct for any base magnification and pyramid.

The grid is global (origin at the slide's level-0 top-left, step = patch size × (1 − overlap)), padded to the
slide's right and bottom edges (CLAM's ``use_padding``; the part beyond the edge reads as white and counts as
background in the tissue fraction) and row-major, as TRIDENT; CLAM instead starts one grid per tissue contour and orders it column-major. A global grid has no
duplicate patches where contours' boxes overlap. Patches are read at the nearest *finer* pyramid level and
resized to ``patch_size``, so a 256 px patch at 10x is 512 px at level 0 of a 20x slide, 1024 px of a 40x slide,
or 256 px at level 1 of a 40x slide with a 4x level.
"""

from __future__ import annotations

from dataclasses import dataclass, asdict
from typing import Optional

import numpy as np

from ..errors import NoTissueError, SlideError
from ..slides import Slide
from ..tissue import TissueMask


#: with ``keep_best``, the least tissue the best patch must hold: below it the "tissue" is a few stained pixels
#: (dust, a pen mark's edge) and a prediction from it would mean nothing
LITTLE_TISSUE_FLOOR = 0.01


@dataclass
class PatchParams:
    magnification: float = 10.0
    patch_size: int = 256             # output pixels at `magnification`
    overlap: float = 0.0              # fraction of patch_size, in [0, 1)
    min_tissue: float = 0.25          # minimum tissue fraction of a kept patch
    allow_upsample: bool = False      # allow a target finer than the scan (interpolated pixels)
    keep_best: bool = False           # no patch reaches min_tissue: keep the ones with the most tissue instead
    #                                   of failing (a single slide a user asked to classify, never a cohort)

    def validate(self) -> None:
        if not self.magnification > 0:
            raise ValueError(f"magnification must be positive, got {self.magnification}")
        if not 16 <= int(self.patch_size) <= 4096:
            raise ValueError(f"patch size must be within 16..4096 px, got {self.patch_size}")
        if not 0 <= self.overlap < 1:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap}")
        if not 0 <= self.min_tissue <= 1:
            raise ValueError(f"minimum tissue fraction must be in [0, 1], got {self.min_tissue}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PatchGrid:
    """Kept patches of one slide and how to read them."""

    coords: np.ndarray        # (N, 2) int64, level-0 top-left (x, y), row-major
    patch_size: int           # output size in pixels at the target magnification
    patch_level: int          # pyramid level to read
    read_size: int            # pixels to read at patch_level (CLAM's `patch_size` attribute)
    patch_size_level0: int    # footprint in level-0 pixels
    level_downsample: float   # downsample of patch_level
    magnification: float
    base_magnification: float
    tissue_fraction: np.ndarray  # (N,) tissue fraction of each kept patch
    overlap_px: int = 0          # overlap at the target magnification, pixels (TRIDENT's `overlap`)
    little_tissue: bool = False  # kept by ``keep_best``: no patch reached min_tissue (recorded in the attributes)

    def __len__(self) -> int:
        return int(self.coords.shape[0])

    def attrs(self, slide: Slide) -> dict:
        """Attributes for the `coords` dataset: CLAM's names plus TRIDENT's, so either tool reads them."""
        W, H = slide.dimensions
        return {
            # CLAM: patch_size is in pixels at patch_level; readers call read_region(c, patch_level, (ps, ps))
            "patch_size": int(self.read_size),
            "patch_level": int(self.patch_level),
            "downsample": np.array([self.level_downsample, self.level_downsample], dtype=np.float64),
            "downsampled_level_dim": np.array(slide.level_dimensions[self.patch_level], dtype=np.int64),
            "level_dim": np.array(slide.level_dimensions[self.patch_level], dtype=np.int64),
            "name": slide.id,
            # CLAM resizes to this (target_patch_size) / TRIDENT's notion of patch size at the target magnification
            "target_patch_size": int(self.patch_size),
            "custom_downsample": float(self.read_size / self.patch_size),
            # TRIDENT
            "target_magnification": float(self.magnification),
            "patch_size_level0": int(self.patch_size_level0),
            "level0_magnification": float(self.base_magnification),
            "level0_width": int(W),
            "level0_height": int(H),
            "overlap": int(self.overlap_px),
            **({"little_tissue": float(self.tissue_fraction.max())} if self.little_tissue else {}),
        }


def make_patch_grid(slide: Slide, tissue: TissueMask, params: Optional[PatchParams] = None) -> PatchGrid:
    """Every patch on the global grid whose tissue fraction reaches ``params.min_tissue``."""
    p = params or PatchParams()
    p.validate()
    level, _ = slide.best_level_for_magnification(p.magnification)
    if slide.downsample_for_magnification(p.magnification) < 0.99 and not p.allow_upsample:
        raise SlideError(
            f"{slide.path.name}: target {p.magnification:g}x is finer than the scan's {slide.objective_power:g}x "
            f"(base magnification from {slide.magnification_source}); choose a lower --magnification")
    ds0 = slide.downsample_for_magnification(p.magnification)   # level-0 px per output px
    size0 = int(round(p.patch_size * ds0))
    level_ds = slide.level_downsamples[level]
    read_size = max(1, int(round(size0 / level_ds)))
    step0 = max(1, int(round(size0 * (1.0 - p.overlap))))
    W, H = slide.dimensions
    # padded grid (CLAM's use_padding): edge patches may run past the slide and are read as white there
    xs = np.arange(0, W, step0, dtype=np.int64)
    ys = np.arange(0, H, step0, dtype=np.int64)
    gy, gx = np.meshgrid(ys, xs, indexing="ij")          # row-major: y outer, x inner
    gx, gy = gx.ravel(), gy.ravel()
    frac = tissue.fraction_in_boxes(gx.astype(np.float64), gy.astype(np.float64), float(size0))
    keep = frac >= max(p.min_tissue, 1e-9)
    best = float(frac.max()) if len(frac) else 0.0
    little = p.keep_best and not keep.any() and best >= LITTLE_TISSUE_FLOOR
    if little:
        keep = frac >= best / 2
    coords = np.stack([gx[keep], gy[keep]], axis=1).astype(np.int64)
    if len(coords) == 0:
        raise NoTissueError(f"{slide.path.name}: no patch has ≥ {p.min_tissue:.0%} tissue at "
                            f"{p.magnification:g}x ({slide.objective_power:g}x scan); try a lower --min-tissue")
    return PatchGrid(coords=coords, patch_size=int(p.patch_size), patch_level=level, read_size=read_size,
                     patch_size_level0=size0, level_downsample=level_ds, magnification=float(p.magnification),
                     base_magnification=float(slide.objective_power), tissue_fraction=frac[keep].astype(np.float32),
                     overlap_px=int(round(p.patch_size * p.overlap)), little_tissue=bool(little))
