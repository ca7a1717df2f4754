"""Attention heatmaps: per-patch MIL scores drawn over the slide (PNG) and exported as QuPath tiles (GeoJSON)."""

from .scores import (NORMALISATIONS, normalise_scores, score_map, top_patches, patch_truth,
                     patch_size_level0_from_attrs)
from .colormaps import COLORMAPS, colormap_lut, apply_colormap
from .render import Heatmap, render_heatmap, save_heatmap_png
from .style import MAX_MASK_SIDE, HeatmapStyle
from .geojson import heatmap_geojson, write_heatmap_geojson

__all__ = ["NORMALISATIONS", "normalise_scores", "score_map", "top_patches", "patch_truth",
           "patch_size_level0_from_attrs", "COLORMAPS", "colormap_lut", "apply_colormap", "Heatmap",
           "render_heatmap", "save_heatmap_png", "HeatmapStyle", "MAX_MASK_SIDE", "heatmap_geojson", "write_heatmap_geojson"]
