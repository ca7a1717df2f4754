"""``dnd-studio --selftest``: check that an install (a source checkout or a frozen bundle) can do its job, without
a screen.

It opens the bundled sample slide with OpenSlide the way the app does (``load_slide``: the slide and its
thumbnail as a ``QImage``), loads the bundled demo model with the checks the app makes (``load_model_checked``),
classifies the slide through ``predict_slides`` as the app's classification job does, prints one line —
``selftest ok: CMU-1-Small-Region → tumor (p=0.93) with demo model …, N patches, X s`` — and returns 0. Any
failure prints ``selftest FAILED: <reason>`` and returns 1. The outputs go to a temporary folder, removed after.

A Qt application is created with the ``offscreen`` platform unless ``QT_QPA_PLATFORM`` says otherwise, so a
bundle whose Qt platform plugins were left out fails here too.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from dnd_engine.text import one_line

from .resources import resources_dir

SAMPLE_SLIDE_NAME = "CMU-1-Small-Region.svs"


def sample_slide() -> Path:
    return resources_dir() / "sample_slides" / SAMPLE_SLIDE_NAME


@dataclass
class SelftestResult:
    slide: str
    predicted: str
    probability: float
    model: str
    n_patches: int
    backend: str
    device: str
    seconds: float

    def line(self) -> str:
        return (f"selftest ok: {Path(self.slide).stem} \u2192 {self.predicted} (p={self.probability:.2f}) "
                f"with demo model {self.model}, {self.n_patches} patches, {self.backend} backend, "
                f"{self.device}, {self.seconds:.1f} s")


class SelftestError(RuntimeError):
    pass


def _ensure_qt_app():
    """The Qt application (offscreen unless the environment picks a platform): proves the platform plugin loads.
    A QApplication, as the app's own, so that a caller (a test) that goes on with widgets still can."""
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtWidgets import QApplication
    return QApplication.instance() or QApplication(["dnd-studio-selftest"])


def run_selftest(slide: Optional[Path] = None, model: Optional[Path] = None,
                 out_dir: Optional[Path] = None) -> SelftestResult:
    """Open, load, classify; raises :class:`SelftestError` with a one-line reason."""
    from dnd_engine.errors import DnDError

    from .jobs.classify import DEMO_MODEL, load_model_checked
    from .jobs.slide_loader import load_slide

    t0 = time.perf_counter()
    slide = Path(slide) if slide else sample_slide()
    model = Path(model) if model else DEMO_MODEL
    for what, p in (("sample slide", slide), ("demo model", model)):
        if not p.is_file():
            raise SelftestError(f"the bundled {what} is missing: {p}")
    app = _ensure_qt_app()  # kept alive (referenced) while the thumbnail is made
    assert app is not None
    try:
        loaded = load_slide(str(slide))
    except DnDError as exc:
        raise SelftestError(f"cannot open {slide.name}: {exc}") from None
    try:
        backend = loaded.slide.backend
        if loaded.thumbnail.isNull():
            raise SelftestError(f"{slide.name}: empty thumbnail")
    finally:
        loaded.slide.close()
    if backend != "openslide":
        raise SelftestError(f"OpenSlide could not open {slide.name} (the {backend} fallback did): is the OpenSlide "
                            "library from openslide-bin bundled?")
    try:
        ready = load_model_checked(model)
    except DnDError as exc:
        raise SelftestError(f"cannot load the demo model: {exc}") from None

    from dnd_engine.predict import predict_slides

    with tempfile.TemporaryDirectory(prefix="dnd-selftest-") as tmp:
        out = Path(out_dir) if out_dir else Path(tmp)
        preds = predict_slides(ready.loaded, [slide], out, heatmaps=ready.heatmaps, device=ready.device)
    p = preds[0]
    if p.status != "done":
        raise SelftestError(f"classifying {slide.name} failed: {p.error}")
    _check_training_libraries()
    return SelftestResult(str(slide), p.predicted, float(max(p.probs)), ready.name, int(p.n_patches), backend,
                          ready.device, time.perf_counter() - t0)


def _check_training_libraries() -> None:
    """The wizard's D&D runs need size-constrained k-means (k-means-constrained, ortools): a bundle that left
    them out would fail only at a run's clustering stage, an hour in."""
    import numpy as np

    from dnd_engine.dnd.clustering import fit_clusters
    x = np.random.default_rng(0).normal(size=(9, 4))
    try:
        clustering = fit_clusters(x, [f"s{i}" for i in range(9)], 3, constrained=True, size_min=2, size_max=4)
    except Exception as exc:  # an ImportError in a bundle, most likely
        raise SelftestError("size-constrained clustering (training) does not work: "
                            f"{one_line(exc, 200, typed=True)}") from None
    if sorted(clustering.sizes()) != [3, 3, 3] and not all(2 <= n <= 4 for n in clustering.sizes()):
        raise SelftestError(f"size-constrained clustering gave sizes {clustering.sizes()}")


def main() -> int:
    """Run the self-test; print one line (``selftest ok: …`` or ``selftest FAILED: …``); 0 when it passed."""
    try:
        result = run_selftest()
    except SelftestError as exc:
        _say(f"selftest FAILED: {exc}")
        return 1
    except Exception as exc:  # a missing library in a bundle shows up here: say what it was, on one line
        _say(f"selftest FAILED: {one_line(exc, typed=True)}")
        return 1
    _say(result.line())
    return 0


def _say(line: str) -> None:
    enc = getattr(sys.stdout, "encoding", None) or "ascii"
    try:
        line.encode(enc)
    except (UnicodeEncodeError, LookupError):
        line = line.replace("\u2192", "->")
    print(line, flush=True)
