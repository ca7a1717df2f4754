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

import csv
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot

from dnd_engine.errors import DnDError

from .background import READER_START
from .jobs import JobContext, JobFn
from .viewer.heatmap_layer import MAX_MASK_SIDE

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "resources" / "models" / "demo_abmil_stain_stats.safetensors"
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


class _LoadModelTask(QRunnable):
    def __init__(self, owner: "ModelLoader", request: int, path: str):
        super().__init__()
        self._owner, self._request, self._path = owner, request, path

    def run(self) -> None:
        try:
            model = load_model_checked(self._path)
        except DnDError as exc:
            self._owner._failed.emit(self._request, self._path, str(exc).strip())
        except Exception as exc:  # an unexpected library error is still a message, never a crash
            detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            self._owner._failed.emit(self._request, self._path,
                                     f"cannot load the model ({type(exc).__name__}{': ' + detail if detail else ''})")
        else:
            self._owner._done.emit(self._request, model)


class ModelLoader(QObject):
    """Loads and checks models on a worker thread; only the newest request reports."""

    loaded = Signal(object)     # ReadyModel
    failed = Signal(str, str)   # path, message

    _done = Signal(int, object)
    _failed = Signal(int, str, str)

    def __init__(self, parent: Optional[QObject] = None):
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._latest = 0
        self._done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)
        self._failed.connect(self._on_failed, Qt.ConnectionType.QueuedConnection)

    def load(self, path: str | Path) -> int:
        self._latest += 1
        self._pool.start(_LoadModelTask(self, self._latest, str(path)))
        return self._latest

    def busy(self) -> bool:
        return self._pool.activeThreadCount() > 0

    def shutdown(self) -> None:
        self._latest += 1
        self._pool.clear()
        self._pool.waitForDone()

    @Slot(int, object)
    def _on_done(self, request: int, model: ReadyModel) -> None:
        if request == self._latest:
            self.loaded.emit(model)

    @Slot(int, str, str)
    def _on_failed(self, request: int, path: str, message: str) -> None:
        if request == self._latest:
            self.failed.emit(path, message)


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
    """``slide_id → label`` from a CSV with ``slide_id`` and ``label`` columns (the file ``dnd train`` reads)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise DnDError(f"cannot read {p.name}: {exc.strerror or exc}") from None
    reader = csv.DictReader(io.StringIO(text))
    fields = [f.strip().lower() for f in (reader.fieldnames or [])]
    if "slide_id" not in fields or "label" not in fields:
        raise DnDError(f"{p.name}: a labels file needs 'slide_id' and 'label' columns (found: {', '.join(fields)})")
    out: dict[str, str] = {}
    for row in reader:
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        if row.get("slide_id"):
            out[row["slide_id"]] = row.get("label", "")
    return out


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
