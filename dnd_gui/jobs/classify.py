"""Models and classification jobs: what the app runs on worker threads around :mod:`dnd_engine.predict`.

A model is checked when it is loaded, not when the first slide is dropped: its card must name an extractor whose
weights are on this machine and whose feature size is the model's (``prepare_extractor``), so a model that
cannot work is refused at once with the engine's one-line reason, and the previous model stays active.

A classification job calls ``predict_slides`` one slide at a time, so each slide's prediction reaches the window
as soon as it exists and a cancel keeps the slides already done. Outputs go to one folder per model, named by
its run (``dnd_engine.run_names``: two runs of one method never share it): features are reused when a slide is
classified again, and ``predictions.csv`` there lists every slide classified with that model (the engine's one
writer, ``dnd_engine.predictions``, adds each slide's row; the app merges nothing itself).

Nothing here imports torch at module level: the window must not wait for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PySide6.QtCore import QObject, Signal

from dnd_engine.errors import DnDError
from dnd_engine.heatmaps.style import MAX_MASK_SIDE
from dnd_engine.text import first_line

from ..resources import resources_dir
from ..workers import LatestOnly
from .background import READER_START
from .queue import JobContext, JobFn

DEMO_MODEL = resources_dir() / "models" / "demo_abmil_stain_stats.safetensors"
STEPS_PER_SLIDE = 100


@dataclass
class ReadyModel:
    """A deployable model that passed the checks, with what the window shows about it."""

    loaded: object          # dnd_engine.predict.LoadedModel (typed loosely: torch is imported lazily)
    path: Path
    device: str
    extractor_dim: int

    @property
    def card(self) -> dict:
        return dict(self.loaded.card)

    @property
    def class_names(self) -> list[str]:
        return list(self.loaded.class_names)

    @property
    def is_demo(self) -> bool:
        return bool(self.card.get("demo"))

    @property
    def heatmaps(self) -> str:
        """'all' (student, base and each expert) when the model came with its run folder's teachers."""
        return "all" if self.loaded.teachers else "student"

    @property
    def name(self) -> str:
        """The run's name (``<run>/<method>`` for a project run), else the file's stem; it also names the
        model's predictions folder."""
        from dnd_engine.run_names import model_key
        return model_key(self.path)

    @property
    def architecture(self) -> str:
        dnd = self.card.get("dnd") or {}
        return str(dnd.get("model") or type(self.loaded.model).__name__)

    def summary(self) -> str:
        c = self.card
        mag = c.get("magnification")
        parts = [f"{self.architecture} \u00b7 {', '.join(self.class_names)}",
                 f"{c.get('extractor', '?')} features ({self.extractor_dim}-d)"
                 + (f" at {float(mag):g}\u00d7, {c.get('patch_size', '?')} px" if mag else "")]
        if self.loaded.teachers:
            parts.append("heatmaps: student, " + ", ".join(self.loaded.teachers))
        return "\n".join(parts)


def load_model_checked(path: str | Path) -> ReadyModel:
    """Load a model file or run folder and check it can run here; raises a one-line :class:`DnDError`."""
    from dnd_engine.device import resolve_device
    from dnd_engine.predict import load_deployable, prepare_extractor, resolve_model_path

    resolved = resolve_model_path(path)
    device = resolve_device("auto")
    loaded = load_deployable(resolved, device, with_teachers=True)
    _cfg, extractor = prepare_extractor(loaded, device=device)
    return ReadyModel(loaded, resolved, str(device), int(extractor.dim))


def _model_message(exc: BaseException) -> str:
    """The one line a failed load shows: the engine's message, or an unexpected library error named briefly."""
    if isinstance(exc, DnDError):
        return str(exc).strip()
    detail = first_line(exc)
    return f"cannot load the model ({type(exc).__name__}{': ' + detail if detail else ''})"


class ModelLoader(QObject):
    """Loads and checks models on a worker thread; only the newest request reports (:class:`LatestOnly`)."""

    loaded = Signal(object)     # ReadyModel
    failed = Signal(str, str)   # path, message

    def __init__(self, parent: Optional[QObject] = None):
        super().__init__(parent)
        self._worker = LatestOnly(self)
        self._pending: Optional[int] = None   # the request whose outcome has not arrived yet

    def load(self, path: str | Path) -> int:
        path = str(path)
        self._pending = self._worker.submit(load_model_checked, path, on_done=self._on_done,
                                            on_error=lambda exc: self._on_failed(path, exc))
        return self._pending

    def busy(self) -> bool:
        """A model is being loaded (its outcome is still to come)."""
        return self._pending is not None

    def shutdown(self) -> None:
        self._pending = None
        self._worker.shutdown()

    def _on_done(self, model: ReadyModel) -> None:
        self._pending = None
        self.loaded.emit(model)

    def _on_failed(self, path: str, exc: BaseException) -> None:
        self._pending = None
        self.failed.emit(path, _model_message(exc))


# --- classification job --------------------------------------------------------------------------------------


@dataclass
class ClassifiedSlide:
    """One slide's outcome as the job hands it to the window: the engine's prediction, and the tissue mask the
    extraction found (covering the whole slide; None when unavailable), so the heatmap is coloured on tissue
    only, as CLAM and the exported PNG colour it."""

    prediction: object              # dnd_engine.predict.SlidePrediction
    tissue: Optional[np.ndarray] = None


def read_tissue_mask(out_dir: Path, slide_id: str, max_side: int = MAX_MASK_SIDE) -> Optional[np.ndarray]:
    """The tissue mask ``predict_slides`` wrote for ``slide_id``, shrunk here (on the job's thread) to what the
    heatmap layer uses, or None."""
    from dnd_engine.predict import extraction_tissue_mask
    return extraction_tissue_mask(out_dir, slide_id, max_side)


def classify_job(model: ReadyModel, slides: Sequence[str | Path], out_dir: Path,
                 slide_overrides: Optional[dict] = None) -> JobFn:
    """The job function: tissue → patches → features → model → heatmaps for each slide, in order.
    ``slide_overrides``: the magnification users set, by path (see ``dnd_engine.slides.overrides``)."""
    slides = [str(s) for s in slides]

    def run(ctx: JobContext) -> list:
        from dnd_engine.predict import predict_slides

        n = len(slides)
        total = n * STEPS_PER_SLIDE
        results = []
        for k, slide in enumerate(slides):
            name = Path(slide).name
            base = k * STEPS_PER_SLIDE
            ctx.progress(base, total, f"{name}: finding tissue\u2026" if n == 1 else
                         f"slide {k + 1} of {n} \u2014 {name}: finding tissue\u2026")

            def patches(done: int, count: int, message: str, base=base, name=name, k=k) -> None:
                step = 5 + int(85 * done / count) if count else 5
                prefix = "" if n == 1 else f"slide {k + 1} of {n} \u2014 "
                ctx.progress(base + step, total, f"{prefix}{name}: features {done}/{count} patches")

            out = predict_slides(model.loaded, [slide], out_dir, heatmaps=model.heatmaps, device=model.device,
                                 slide_progress=patches, cancelled=ctx.cancelled, log=ctx.log,
                                 model_name=model.name, slide_overrides=slide_overrides,
                                 mp_context=READER_START)
            results.extend(out)
            for r in out:
                ctx.emit(ClassifiedSlide(r, read_tissue_mask(out_dir, r.slide_id) if r.status == "done" else None))
            ctx.progress(base + STEPS_PER_SLIDE, total, f"{name}: {out[0].predicted or out[0].status}")
        # the engine's per-slide results decide how the job ended: all failed is a failed job, never "Done"
        from dnd_engine.progress import batch_outcome
        ctx.outcome(batch_outcome((Path(r.path).name, (r.error or "failed") if r.status != "done" else "")
                                  for r in results))
        return results

    return run


# --- true labels ---------------------------------------------------------------------------------------------
def read_labels_csv(path: str | Path) -> dict[str, str]:
    """``slide_id → label`` from a labels CSV, read by the engine (:func:`dnd_engine.bags.labels.read_labels`), so
    the app accepts the same columns as ``dnd train`` (``slide_id``, ``slide``, ``id`` or ``case_id``; ``label``).
    Raises a one-line :class:`DnDError` when the file cannot be read or lacks those columns."""
    from dnd_engine.bags.labels import read_labels   # dnd_engine.bags imports torch: not at module level
    table = read_labels(path)
    return dict(zip(table.slide_ids, table.labels))


def labels_near(slide_path: str | Path) -> dict[str, str]:
    """Labels from a ``labels.csv`` beside the slide or one folder up (a cohort's usual layout); {} if none."""
    p = Path(slide_path).resolve().parent
    for folder in (p, p.parent):
        candidate = folder / "labels.csv"
        if candidate.is_file():
            try:
                return read_labels_csv(candidate)
            except DnDError:
                return {}
    return {}
