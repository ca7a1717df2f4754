"""Tissue segmentation on a thumbnail (the CLAM method) and its GeoJSON export."""

from .segment import TissueParams, TissueMask, segment_tissue, PRESETS
from .geojson import tissue_to_geojson, write_tissue_geojson

__all__ = ["TissueParams", "TissueMask", "segment_tissue", "PRESETS", "tissue_to_geojson", "write_tissue_geojson"]
