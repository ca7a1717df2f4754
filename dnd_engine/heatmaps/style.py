"""How a heatmap looks, in one record shared by the app's overlay, its PNG export and :func:`render_heatmap`.

The app's controls fill a :class:`HeatmapStyle`; the exported PNG passes the same record to the renderer
(``render_heatmap(..., style=...)``), so no caller translates names (opacity → alpha, smooth → blur) by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

#: The long side, in pixels, of a tissue mask used to clip a heatmap to tissue: finer adds nothing visible
#: at overlay scale and costs a composite per style change.
MAX_MASK_SIDE = 1024


@dataclass(frozen=True)
class HeatmapStyle:
    colormap: str = "jet"
    opacity: float = 0.45
    threshold: float = 0.0        # normalised scores below it are not drawn
    normalise: str = "percentile"
    visible: bool = True          # the app's show/hide toggle (a renderer draws what it is asked to)
    smooth: bool = False          # interpolate between patch centres instead of drawing squares

    def render_options(self) -> dict:
        """The style as :func:`~dnd_engine.heatmaps.render_heatmap` keywords (0 threshold = none)."""
        threshold: Optional[float] = self.threshold or None
        return {"colormap": self.colormap, "alpha": self.opacity, "normalise": self.normalise,
                "threshold": threshold, "blur": self.smooth}
