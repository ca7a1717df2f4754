"""The tiled pyramid viewer: geometry and reads (:mod:`.tile_source`), a byte-bounded cache (:mod:`.tile_cache`),
off-thread decoding (:mod:`.tile_loader`), the painted layer (:mod:`.tile_layer`), the view itself (:mod:`.view`),
its overview and scale bar, and the heatmap overlay (:mod:`.heatmap_layer`)."""

from .view import EMPTY_MESSAGE, MAGNIFICATION_PRESETS, SlideViewer

__all__ = ["EMPTY_MESSAGE", "MAGNIFICATION_PRESETS", "SlideViewer"]
