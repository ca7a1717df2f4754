"""The patch grid at a target magnification and its CLAM/TRIDENT-compatible coordinates file."""

from .grid import PatchGrid, PatchParams, make_patch_grid
from .h5io import write_coords_h5, read_coords_h5, COORD_ATTRS

__all__ = ["PatchGrid", "PatchParams", "make_patch_grid", "write_coords_h5", "read_coords_h5", "COORD_ATTRS"]
