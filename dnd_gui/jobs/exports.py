"""Heatmap exports as job functions: they read the slide and write files, so they run on the job thread.

Both take copies of what the window shows (the model's raw scores, the style, the tissue mask) when the user
asks, so changing the controls while an export runs cannot change the file being written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from dnd_engine.heatmaps.style import HeatmapStyle

from .queue import JobContext, JobFn


def heatmap_png_job(path: str | Path, slide_path: str, coords: np.ndarray, patch_size_level0: float,
                    scores: np.ndarray, style: HeatmapStyle, tissue: Optional[np.ndarray],
                    demo: bool = False) -> JobFn:
    """The heatmap as shown (colormap, opacity, threshold, scale, smoothing; on tissue when the mask is known)
    blended over the whole slide, long side 2048 px, by the engine's renderer (as ``dnd predict`` writes it).
    A demo model's heatmap carries the DEMO banner in its pixels: the PNG travels without the app."""
    coords, scores = np.array(coords, copy=True), np.array(scores, copy=True)

    def run(ctx: JobContext) -> str:
        from dnd_engine.heatmaps import render_heatmap, save_heatmap_png
        from dnd_engine.slides import open_slide
        from dnd_engine.tissue import TissueMask
        ctx.progress(0, 2, "rendering\u2026")
        with open_slide(slide_path) as slide:
            mask = None if tissue is None else TissueMask(tissue, slide.dimensions[0] / tissue.shape[1])
            heatmap = render_heatmap(slide, coords, patch_size_level0, scores, style=style, tissue=mask)
        if demo:
            from dnd_engine.demo_mark import stamp_demo
            heatmap.overlay = stamp_demo(heatmap.overlay)
        ctx.progress(1, 2, "writing\u2026")
        save_heatmap_png(heatmap, path)
        return str(path)

    return run


def heatmap_geojson_job(path: str | Path, coords: np.ndarray, patch_size_level0: float, scores: np.ndarray,
                        probs: Sequence[float], class_names: Sequence[str], model_name: str,
                        normalise: str) -> JobFn:
    """One QuPath tile per patch with its raw and normalised attention and the slide's class probabilities."""
    coords, scores = np.array(coords, copy=True), np.array(scores, copy=True)
    probs, names = list(probs), list(class_names)

    def run(ctx: JobContext) -> str:
        from dnd_engine.heatmaps import write_heatmap_geojson
        ctx.progress(0, 1, "writing\u2026")
        predicted = names[int(np.argmax(probs))] if probs and len(probs) == len(names) else None
        write_heatmap_geojson(path, coords, patch_size_level0, scores, probs=probs or None,
                              class_names=names if probs else None, predicted=predicted, model_name=model_name,
                              normalise=normalise)
        return str(path)

    return run
