"""The attention heatmap as a scene item: per-patch scores painted in level-0 coordinates over the tiles.

The raw scores are kept and everything the user can change — which model's scores, normalisation, colormap,
threshold — is applied when the small score raster is rebuilt (one cell per half patch, a few hundred pixels a
side even for a 100k-pixel slide), so every control answers at once; opacity is the item's own opacity and
costs nothing (Slideflow's lesson: keep the raw grid, colour at render time). Cells are drawn without smoothing:
each square is exactly one patch the model saw, at every zoom. Given the tissue mask the extraction found, the
colour is kept to tissue (composited once per change at the mask's resolution), so the glass stays clean. The raster comes from the engine's
:func:`~dnd_engine.heatmaps.score_map` (CLAM's per-pixel mean over overlapping patches), the colours from its
colormap tables, so the overlay matches the exported PNG.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Optional

import cv2
import numpy as np
from PySide6.QtCore import QPointF, QRectF
from PySide6.QtGui import QImage, QPainter
from PySide6.QtWidgets import QGraphicsItem

from dnd_engine.heatmaps import apply_colormap, normalise_scores, score_map
from dnd_engine.heatmaps.style import MAX_MASK_SIDE, HeatmapStyle

MAX_RASTER_SIDE = 4096


@dataclass(frozen=True)
class PatchScore:
    index: int
    raw: float
    normalised: float


class HeatmapLayer(QGraphicsItem):
    """Scores of one slide for one or more models (``student``, ``base``, ``expert_0`` …)."""

    def __init__(self, coords: np.ndarray, patch_size_level0: float, scores: Dict[str, np.ndarray],
                 slide_size: tuple[int, int], style: HeatmapStyle = HeatmapStyle(), model: Optional[str] = None,
                 tissue: Optional[np.ndarray] = None):
        super().__init__()
        if not scores:
            raise ValueError("a heatmap needs the scores of at least one model")
        self.coords = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
        self.patch_size = float(patch_size_level0)
        self.scores = {name: np.asarray(s, dtype=np.float64).reshape(-1) for name, s in scores.items()}
        self.slide_size = (int(slide_size[0]), int(slide_size[1]))
        self.model = model if model in self.scores else next(iter(self.scores))
        self.style = style
        w0, h0 = self.slide_size
        self.cell = self.patch_size / 2.0
        if max(w0, h0) / self.cell > MAX_RASTER_SIDE:
            self.cell = max(w0, h0) / MAX_RASTER_SIDE
        self._raster_size = (max(1, math.ceil(w0 / self.cell)), max(1, math.ceil(h0 / self.cell)))
        self._normalised = np.zeros(0)
        self._image = QImage()
        self._drawn = QImage()      # what paint() draws: the cell raster, or it clipped to tissue at mask size
        self._maps: dict = {}
        self._tissue_alpha = self._alpha_image(tissue)
        self.painted_cells = 0
        self.setFlag(QGraphicsItem.GraphicsItemFlag.ItemUsesExtendedStyleOption, True)
        self.setZValue(10)
        self._rebuild()

    # --- state -------------------------------------------------------------------------------------------
    @property
    def model_names(self) -> list[str]:
        return list(self.scores)

    @property
    def raw(self) -> np.ndarray:
        return self.scores[self.model]

    @property
    def normalised(self) -> np.ndarray:
        return self._normalised

    def image(self) -> QImage:
        """The coloured raster (one pixel per cell, transparent where nothing is drawn)."""
        return self._image

    @property
    def clipped_to_tissue(self) -> bool:
        return self._tissue_alpha is not None

    @staticmethod
    def _alpha_image(tissue: Optional[np.ndarray]) -> Optional[QImage]:
        """The tissue mask as an alpha channel, at most ``MAX_MASK_SIDE`` a side (the composite is redone on
        every threshold or colormap change, on the UI thread: it must take milliseconds)."""
        if tissue is None:
            return None
        m = np.asarray(tissue, bool)
        if m.ndim != 2 or not m.any():
            return None
        a = m.astype(np.uint8) * 255
        k = MAX_MASK_SIDE / max(a.shape)
        if k < 1:
            a = cv2.resize(a, (max(1, round(a.shape[1] * k)), max(1, round(a.shape[0] * k))),
                           interpolation=cv2.INTER_AREA)
            a = np.where(a >= 128, 255, 0).astype(np.uint8)
        a = np.ascontiguousarray(a)
        h, w = a.shape
        return QImage(a.data, w, h, w, QImage.Format.Format_Alpha8).copy()

    def set_model(self, name: str) -> None:
        if name not in self.scores:
            raise KeyError(f"no heatmap for model {name!r} (have {', '.join(self.scores)})")
        if name != self.model:
            self.model = name
            self._rebuild()

    def set_style(self, style: HeatmapStyle) -> None:
        old, self.style = self.style, style
        if (old.colormap, old.threshold, old.normalise) != (style.colormap, style.threshold, style.normalise):
            self._rebuild()
        elif old.smooth != style.smooth:
            if self._tissue_alpha is not None:
                self._drawn = self._clip_to_tissue(self._image)
            self.update()
        self.setOpacity(style.opacity)
        self.setVisible(style.visible)

    def _scores_and_map(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(normalised scores, cell map, covered) for the current model and normalisation, computed once each:
        a threshold or colormap change then only recolours the small raster."""
        key = (self.model, self.style.normalise)
        if key not in self._maps:
            s01 = normalise_scores(self.raw, self.style.normalise)
            w, h = self._raster_size
            smap, covered = score_map(self.coords, self.patch_size, s01, (h, w), self.cell)
            self._maps[key] = (s01, np.nan_to_num(smap, nan=-1.0), covered)
        return self._maps[key]

    def _rebuild(self) -> None:
        s01, smap, covered = self._scores_and_map()
        self._normalised = s01
        w, h = self._raster_size
        paint = covered & (smap >= self.style.threshold)
        rgba = np.zeros((h, w, 4), np.uint8)
        rgba[paint, :3] = apply_colormap(smap[paint], self.style.colormap)
        rgba[paint, 3] = 255
        self.painted_cells = int(paint.sum())
        self._image = QImage(rgba.data, w, h, 4 * w, QImage.Format.Format_RGBA8888_Premultiplied).copy()
        self._drawn = self._clip_to_tissue(self._image) if self._tissue_alpha is not None else self._image
        self.setOpacity(self.style.opacity)
        self.setVisible(self.style.visible)
        self.update()

    def _clip_to_tissue(self, cells: QImage) -> QImage:
        """The cell raster drawn at the tissue mask's resolution and kept only where the mask is tissue: the
        glass stays clean, as in CLAM's overlays and the exported PNG."""
        mask = self._tissue_alpha
        mw, mh = mask.width(), mask.height()
        w0, h0 = self.slide_size
        out = QImage(mw, mh, QImage.Format.Format_ARGB32_Premultiplied)
        out.fill(0)
        p = QPainter(out)
        p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.style.smooth)
        cw, ch = self._raster_size
        p.drawImage(QRectF(0, 0, cw * self.cell * mw / w0, ch * self.cell * mh / h0), cells)
        p.setCompositionMode(QPainter.CompositionMode.CompositionMode_DestinationIn)
        p.drawImage(0, 0, mask)
        p.end()
        return out

    # --- queries -----------------------------------------------------------------------------------------
    def score_at(self, point: QPointF) -> Optional[PatchScore]:
        """The patch under a level-0 point (the one whose centre is nearest when patches overlap)."""
        if len(self.coords) == 0:
            return None
        x, y = point.x(), point.y()
        c = self.coords
        inside = np.flatnonzero((c[:, 0] <= x) & (x < c[:, 0] + self.patch_size)
                                & (c[:, 1] <= y) & (y < c[:, 1] + self.patch_size))
        if inside.size == 0:
            return None
        half = self.patch_size / 2.0
        d = (c[inside, 0] + half - x) ** 2 + (c[inside, 1] + half - y) ** 2
        i = int(inside[int(np.argmin(d))])
        return PatchScore(i, float(self.raw[i]), float(self._normalised[i]))

    def patch_rect(self, index: int) -> QRectF:
        x, y = self.coords[int(index)]
        return QRectF(float(x), float(y), self.patch_size, self.patch_size)

    def count_at_or_above(self, threshold: float) -> int:
        return int((self._normalised >= threshold).sum())

    # --- QGraphicsItem -----------------------------------------------------------------------------------
    def boundingRect(self) -> QRectF:
        w, h = self._raster_size
        return QRectF(0, 0, w * self.cell, h * self.cell)

    def paint(self, painter: QPainter, option, widget=None) -> None:
        image = self._drawn
        if image.isNull():
            return
        slide = QRectF(0, 0, *self.slide_size)
        area = option.exposedRect.intersected(self.boundingRect()).intersected(slide)
        if area.isEmpty():
            return
        painter.setClipRect(slide)  # patches padded past the slide's edge are drawn up to the edge only
        if self._tissue_alpha is not None:  # the composited image covers exactly the slide
            kx, ky = self.slide_size[0] / image.width(), self.slide_size[1] / image.height()
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, False)
        else:
            kx = ky = self.cell
            painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform, self.style.smooth)
        # whole source pixels only, so nearest-neighbour sampling keeps every square where its patch is
        x0, y0 = math.floor(area.left() / kx), math.floor(area.top() / ky)
        x1 = min(image.width(), math.ceil(area.right() / kx))
        y1 = min(image.height(), math.ceil(area.bottom() / ky))
        if x1 <= x0 or y1 <= y0:
            return
        painter.drawImage(QRectF(x0 * kx, y0 * ky, (x1 - x0) * kx, (y1 - y0) * ky), image,
                          QRectF(x0, y0, x1 - x0, y1 - y0))
