"""Classify raw slides with a trained model: tissue → patches → features → model → prediction and heatmaps.

The model card is checked against each slide before any patch is read (the extractor exists and its weights
are found, the slide reaches the magnification the model was trained at), so a mismatch costs seconds, not
an extraction. Used by ``dnd predict``, ``dnd demo`` and the app's drag-and-drop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from .atomic import ensure_dir
from .bags import load_bag
from .device import resolve_device
from .errors import Cancelled, DnDError
from .model_paths import resolve_model_path
from .models import MILModel
from .models.io import load_model
from .predictions import PREDICTIONS_FILE, check_predictions_file, write_predictions
from .progress import CancelFn, ProgressFn, check_cancelled, no_progress

HEATMAP_CHOICES = ("student", "all", "none")


@dataclass
class LoadedModel:
    """The deployable model, its card, and (from a run folder) the base model and experts for heatmaps."""

    model: MILModel
    card: Dict[str, object]
    path: Path
    teachers: Dict[str, MILModel] = field(default_factory=dict)

    @property
    def class_names(self) -> List[str]:
        names = self.card.get("class_names")
        return list(names) if names else [f"class_{i}" for i in range(self.model.n_classes)]


def load_deployable(model: str | Path, device="cpu", with_teachers: bool = False) -> LoadedModel:
    path = resolve_model_path(model)
    net, card = load_model(path, device)
    teachers: Dict[str, MILModel] = {}
    if with_teachers:
        fold = (card.get("cohort") or {}).get("fold")
        run = path.parent / f"fold_{fold}" if fold is not None and (path.parent / f"fold_{fold}").is_dir() \
            else path.parent
        from .dnd.pipeline import load_dnd_models
        try:
            teachers = {k: v for k, v in load_dnd_models(run, device).items() if k != "student"}
        except DnDError:
            teachers = {}
    return LoadedModel(net, card, path, teachers)


@dataclass
class SlidePrediction:
    slide_id: str
    path: str
    status: str                               # done | failed
    predicted: str = ""
    probs: List[float] = field(default_factory=list)
    n_patches: int = 0
    error: str = ""
    note: str = ""                            # what the user should know about a done prediction (little tissue)
    outputs: Dict[str, str] = field(default_factory=dict)   # name → file
    # for a viewer that draws the heatmap itself: patch grid and per-model scores / probabilities
    coords: Optional[np.ndarray] = None                     # (N, 2) level-0 top-left corners
    patch_size_level0: float = 0.0
    scores: Dict[str, np.ndarray] = field(default_factory=dict)      # model name → (N,) raw scores
    model_probs: Dict[str, List[float]] = field(default_factory=dict)


def check_slide(card: Dict[str, object], slide_path: str | Path, slide_overrides=None,
                base_magnification: Optional[float] = None, mp_context: Optional[str] = None) -> None:
    """Refuse a slide that cannot reach the model's magnification (``slide_overrides``: what users set, by path;
    ``base_magnification``: assumed for slides that say nothing). The slide is untrusted: it is opened in a
    child process (:func:`dnd_engine.child_pool.run_isolated`), whose death fails this slide only."""
    from .child_pool import run_isolated, slide_base_magnification
    mag = card.get("magnification")
    base = run_isolated(slide_base_magnification, str(slide_path), slide_overrides, base_magnification,
                        name=Path(slide_path).name, mp_context=mp_context)
    if mag and base and base + 1e-6 < float(mag):
        raise DnDError(f"{Path(slide_path).name} is scanned at {base:g}x but the model needs {float(mag):g}x")


def _extract_config(card: Dict[str, object], weights: Optional[str], device: str, extractor: Optional[str]):
    from .features import ExtractConfig
    name = extractor or card.get("extractor")
    if not name:
        raise DnDError("the model card does not say which feature extractor it was trained on; pass --extractor")
    if card.get("extractor") and extractor and extractor != card["extractor"]:
        raise DnDError(f"the model was trained on '{card['extractor']}' features, not '{extractor}'")
    return ExtractConfig(extractor=str(name), weights=weights, magnification=float(card.get("magnification") or 10.0),
                         patch_size=int(card.get("patch_size") or 256), device=device)


def prepare_extractor(lm: LoadedModel, *, weights: Optional[str] = None, device="cpu",
                      extractor: Optional[str] = None, log=None):
    """(extract config, built extractor) for ``lm``, after checking its card: the extractor is named, its weights
    are on this machine and its feature dimension is the model's. Raises a one-line :class:`DnDError` otherwise,
    so a caller (``predict_slides``, the app when a model is loaded) refuses a model before any slide is read."""
    from .features import build_extractor
    card = lm.card
    cfg = _extract_config(card, weights, str(device), extractor)
    enc = build_extractor(cfg.extractor, cfg.weights, device=device, precision=cfg.precision)  # weights missing → says so
    want = card.get("feature_dim") or getattr(lm.model, "in_dim", None)
    if want and int(want) != enc.dim:
        raise DnDError(f"the model expects {int(want)}-d features but '{enc.name}' gives {enc.dim}-d")
    if card.get("weights_sha256") and enc.weights_sha256() and card["weights_sha256"] != enc.weights_sha256():
        (log or (lambda m: None))("warning: the extractor weights differ from those the model was trained with "
                                  "(sha256 mismatch)")
    return cfg, enc


def predict_slides(model: str | Path | LoadedModel, slides: Sequence[str | Path], out_dir: str | Path, *,
                   weights: Optional[str] = None, extractor: Optional[str] = None, heatmaps: str = "student",
                   colormap: str = "jet", device: str = "auto", progress: ProgressFn = no_progress,
                   slide_progress: ProgressFn = no_progress, cancelled: Optional[CancelFn] = None,
                   log=None, model_name: Optional[str] = None,
                   slide_overrides: Optional[Dict[str, Dict[str, float]]] = None,
                   base_magnification: Optional[float] = None,
                   mp_context: Optional[str] = None) -> List[SlidePrediction]:
    """Predict every slide; a failing slide is reported (status ``failed``) and the others go on.

    Adds each slide's row to ``out_dir/predictions.csv`` (rows of earlier calls are kept; a slide classified
    again by the same model replaces its row: :mod:`dnd_engine.predictions`), writes features under
    ``out_dir/extraction`` and, per slide, ``out_dir/heatmaps/<slide>_<model>_heatmap.png`` / ``.geojson``.
    ``model_name`` fills the file's ``model`` column (default: the run's name, see :mod:`dnd_engine.run_names`).
    ``slide_overrides``: {absolute path: {objective_power, mpp}} a user set for slides whose files lack them
    (:meth:`dnd_engine.slides.overrides.OverrideTable.for_paths`); ``base_magnification``: the objective power
    assumed for the others that say nothing (``dnd predict --base-magnification``).
    ``mp_context``: how the patch-reading processes start (None: the platform's default); an app passes
    ``forkserver``: forking a process that runs Qt threads can deadlock the child, and copying it stalls the app.
    """
    say = log or (lambda m: None)
    if heatmaps not in HEATMAP_CHOICES:
        raise DnDError(f"heatmaps must be one of {', '.join(HEATMAP_CHOICES)}")
    dev = resolve_device(device)
    lm = model if isinstance(model, LoadedModel) else load_deployable(model, dev, with_teachers=heatmaps == "all")
    card = lm.card
    cfg, enc = prepare_extractor(lm, weights=weights, device=dev, extractor=extractor, log=say)
    cfg.slide_overrides, cfg.base_magnification = slide_overrides, base_magnification
    cfg.little_tissue = True    # the user asked for these slides: a speck of tissue is classified, with a note
    if mp_context:
        cfg.mp_context = mp_context
    out = ensure_dir(out_dir)
    check_predictions_file(out / PREDICTIONS_FILE)     # a foreign file there is refused before any slide is read
    if model_name is None:
        from .run_names import model_key
        model_name = model_key(lm.path)
    results: List[SlidePrediction] = []
    for k, s in enumerate(slides):
        check_cancelled(cancelled)
        sp = Path(s)
        progress(k, len(slides), sp.name)
        try:
            check_slide(card, sp, slide_overrides, base_magnification, mp_context=cfg.mp_context)
            r = _extract_one(sp, out, cfg, enc, slide_progress, cancelled, say)
            if r.status in ("failed", "locked"):        # locked: another process is extracting it now
                raise DnDError(r.error)
            written: List[Path] = []
            try:
                results.append(_classify(lm, sp, Path(r.features_h5), out, heatmaps, colormap, dev, written))
            except BaseException:
                for f in written:        # a slide that fails part-way leaves none of its outputs behind
                    f.unlink(missing_ok=True)
                raise
            p = results[-1]
            say(f"{p.slide_id}: {p.predicted} ({max(p.probs):.3f}) from {p.n_patches} patches"
                + (f" \u2014 {p.note}" if p.note else ""))
        except Cancelled:
            raise                       # the caller stops; a cancelled slide is not a failed one
        except DnDError as e:
            from .slides.slide import slide_id
            results.append(SlidePrediction(slide_id(sp), str(sp), "failed", error=str(e)))
            say(f"error: {e}" if str(e).startswith(sp.name) else f"error: {sp.name}: {e}")
        # each slide's row is in the file as soon as it exists: a cancel or a crash keeps the slides done
        write_predictions(out / PREDICTIONS_FILE, results[-1:], lm.class_names, model=model_name,
                          demo=bool(card.get("demo")))
    progress(len(slides), len(slides), "done")
    return results


def _extract_one(sp: Path, out: Path, cfg, enc, slide_progress, cancelled, say):
    """Features for one slide under ``out/extraction``, or, when that folder holds features of other settings
    (another model's magnification, patch size, extractor...), under a sibling named after this model's settings
    (``out/extraction-20x-256px-<hash>``): the user did not choose the folder's settings, so prediction
    recomputes beside them rather than refuse or mix (see ``features/settings.py``)."""
    from .features import extract_cohort
    from .features.settings import SettingsMismatch, settings_folder
    try:
        return extract_cohort([sp], out / "extraction", cfg, slide_progress=slide_progress, cancelled=cancelled,
                              extractor=enc)[0]
    except SettingsMismatch as exc:
        alt = settings_folder(out / "extraction", exc.wanted)
        say(f"{sp.name}: {out / 'extraction'} holds features of other settings; extracting into {alt.name}")
        return extract_cohort([sp], alt, cfg, slide_progress=slide_progress, cancelled=cancelled, extractor=enc)[0]


def little_tissue_note(attrs) -> str:
    """The note for a slide cut by extraction's ``little_tissue`` fallback (its ``little_tissue`` attribute: the
    best patch's tissue fraction), else ""."""
    best = attrs.get("little_tissue") if attrs is not None else None
    if best is None:
        return ""
    return (f"little tissue: no patch held the usual share, so the patches with the most were used (best "
            f"{float(best):.0%}); the prediction rests on little evidence")


def model_scores(model: MILModel, bag: torch.Tensor, device) -> tuple:
    """(probabilities (C,), per-patch scores (N,)) in eval mode, without gradients."""
    model.eval()
    with torch.no_grad():
        o = model(bag.to(device), scores=True)
    probs = torch.softmax(o.logits.float(), dim=1)[0].cpu().numpy()
    scores = o.instance_scores
    if scores is None:
        raise DnDError(f"{type(model).__name__} gives no per-patch scores for a heatmap")
    scores = scores.float().reshape(-1).cpu().numpy()
    return probs, scores


def _classify(lm: LoadedModel, slide_path: Path, features_h5: Path, out: Path, heatmaps: str, colormap: str,
              device, written: Optional[List[Path]] = None) -> SlidePrediction:
    """The slide's prediction and heatmaps; each file is added to ``written`` as soon as it exists, so that the
    caller removes them when the slide fails part-way (a failed row leaves no heatmap behind)."""
    written = [] if written is None else written
    from .heatmaps import render_heatmap, save_heatmap_png, write_heatmap_geojson
    from .patching.h5io import read_coords_h5
    from .slides import open_slide
    names = lm.class_names
    if len(names) != lm.model.n_classes:     # found now, before any output of this slide is written
        raise DnDError(f"the model card names {len(names)} classes ({', '.join(map(str, names))}) but the model "
                       f"has {lm.model.n_classes} outputs; the model file's card is wrong")
    bag, coords = load_bag(features_h5, with_coords=True)
    _, attrs = read_coords_h5(features_h5)
    if bag.shape[1] != lm.model.in_dim:
        raise DnDError(f"the model expects {lm.model.in_dim}-d features but {features_h5.name} has {bag.shape[1]}")
    probs, scores = model_scores(lm.model, bag, device)
    pred = names[int(np.argmax(probs))]
    sid = features_h5.stem
    ps0 = float(attrs["patch_size_level0"])
    res = SlidePrediction(sid, str(slide_path), "done", pred, [float(p) for p in probs], int(bag.shape[0]),
                          coords=np.asarray(coords), patch_size_level0=ps0, note=little_tissue_note(attrs))
    models = {"student": (lm.model, probs, scores)}
    if heatmaps == "all":
        for name, m in lm.teachers.items():
            p, sc = model_scores(m, bag, device)
            models[name] = (m, p, sc)
    for name, (_m, p, sc) in models.items():
        res.scores[name], res.model_probs[name] = sc, [float(v) for v in p]
    if heatmaps == "none":
        return res
    hdir = ensure_dir(out / "heatmaps")
    # opened here, in this process, only after extraction read this file's header and thumbnail in a child
    # process without dying; open_slide's precheck has refused the layouts a native reader would abort on
    with open_slide(slide_path) as slide:
        tissue = _read_mask(Path(features_h5).parents[2] / "tissue" / f"{sid}_mask.png")
        for name, (_m, p, sc) in models.items():
            hm = render_heatmap(slide, coords, ps0, sc, colormap=colormap, tissue=tissue)
            if lm.card.get("demo"):
                from .demo_mark import stamp_demo
                hm.overlay = stamp_demo(hm.overlay)
            png = hdir / f"{sid}_{name}_heatmap.png"
            save_heatmap_png(hm, png)
            written.append(png)
            gj = hdir / f"{sid}_{name}_heatmap.geojson"
            write_heatmap_geojson(gj, coords, ps0, sc, probs=p, class_names=names,
                                  predicted=names[int(np.argmax(p))], model_name=name)
            written.append(gj)
            res.outputs[f"{name}_png"] = str(png)
            res.outputs[f"{name}_geojson"] = str(gj)
    return res


def extraction_tissue_mask(out: Path, slide_id: str, max_side: Optional[int] = None) -> Optional[np.ndarray]:
    """The boolean tissue mask extraction wrote for ``slide_id`` under ``out`` (so nothing is segmented twice),
    shrunk to ``max_side`` pixels when larger; None when it is missing or unreadable. Looks in ``extraction``
    and the folders of other settings beside it (:func:`_extract_one`), the newest mask first."""
    found = [p for p in [Path(out) / "extraction"] + sorted(Path(out).glob("extraction-*"))
             if (p / "tissue" / f"{slide_id}_mask.png").is_file()]
    if not found:
        return None
    newest = max(found, key=lambda p: (p / "tissue" / f"{slide_id}_mask.png").stat().st_mtime_ns)
    return _read_mask(newest / "tissue" / f"{slide_id}_mask.png", max_side)


def _read_mask(path: Path, max_side: Optional[int] = None) -> Optional[np.ndarray]:
    from PIL import Image
    try:
        with Image.open(path) as img:
            img = img.convert("L")
            k = max_side / max(img.size) if max_side else 1.0
            if k < 1:
                img = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))),
                                 Image.Resampling.BOX)
            return np.asarray(img) >= 128
    except (OSError, ValueError):
        return None


__all__ = ["HEATMAP_CHOICES", "LoadedModel", "SlidePrediction", "check_slide", "load_deployable", "model_scores",
           "predict_slides", "prepare_extractor", "resolve_model_path", "extraction_tissue_mask"]
