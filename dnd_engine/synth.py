"""A labelled synthetic cohort of small pyramidal slides, for end-to-end tests and the demo.

Real cohorts are gigabytes and cannot ship with the project, yet every stage (tissue, patches, features, MIL, heatmaps)
needs slides with a known answer. This module draws them in seconds, deterministically from a seed: H&E-like tissue
(hematoxylin and eosin concentrations turned into colour by Beer-Lambert), 1-3 tissue pieces, and on lesion slides 1-3
planted regions whose nuclei differ in size, density, darkness and shape; the lesion masks are saved as ground truth.

Slides are Aperio-style TIFFs (ImageDescription ``Aperio Image Library ...|AppMag = 20|MPP = 0.5``, tiled JPEG levels
at downsamples 1, 4, 16 and a stripped thumbnail as page 1), the layout both OpenSlide's aperio driver and tiffslide
read with their pixel size and objective power.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import cv2
import numpy as np
import tifffile
from PIL import Image, PngImagePlugin

from .atomic import atomic_path, ensure_dir, write_json_atomic, write_text_atomic
from .errors import Cancelled, DnDError

MASK_DOWNSAMPLE = 16
TILE = 256
JPEG_QUALITY = 90
PYRAMID_DOWNSAMPLES = (1, 4, 16)
_MASK_TEXT_KEY = "dnd.mask_downsample"
_FIELD_DOWNSAMPLE = 4         # tissue, lesion and stroma fields are drawn at 1/4 resolution,
_NUCLEUS_DOWNSAMPLE = 2       # nuclei at 1/2, then the picture is upsampled to level 0

# Optical density per unit stain in R, G, B (typical Macenko vectors) and the faint grey of the glass.
_HEMATOXYLIN = (0.56, 0.72, 0.41)
_EOSIN = (0.22, 0.80, 0.56)
_GLASS = (0.020, 0.021, 0.016)


@dataclass
class SynthSlideInfo:
    slide_id: str
    path: Path
    label: str
    label_index: int
    mask_path: Path
    mask_downsample: float
    lesion_fraction: float


@dataclass
class SynthCohort:
    out_dir: Path
    slides: list[SynthSlideInfo]
    labels_csv: Path
    class_names: list[str]


@dataclass(frozen=True)
class _Look:
    """How the nuclei (and the stroma around them) of one tissue class look; lengths in microns."""
    radius_um: tuple[float, float]
    spacing_um: float             # mean distance between neighbouring nuclei
    aspect: tuple[float, float]   # long axis / short axis
    hema: tuple[float, float]     # hematoxylin concentration of a nucleus
    eosin: float                  # stroma eosin, relative to normal tissue
    cyto_hema: float = 0.0        # extra hematoxylin in the background of the region
    aligned: bool = False         # nuclei share one orientation (spindle cells)


_NORMAL_LOOK = _Look(radius_um=(2.0, 3.0), spacing_um=20.0, aspect=(1.0, 1.8), hema=(0.55, 0.8), eosin=1.0)
_LESION_LOOKS = (
    # tumour: large, dark, crowded, pleomorphic nuclei in a purplish background
    _Look(radius_um=(3.6, 5.8), spacing_um=10.5, aspect=(1.0, 1.6), hema=(0.9, 1.3), eosin=0.7, cyto_hema=0.08),
    # inflammatory: small, round, very dense and very dark nuclei
    _Look(radius_um=(1.6, 2.2), spacing_um=6.5, aspect=(1.0, 1.15), hema=(1.25, 1.55), eosin=0.55, cyto_hema=0.05),
    # spindle-cell: elongated nuclei with one orientation in eosin-rich stroma
    _Look(radius_um=(2.4, 3.4), spacing_um=11.0, aspect=(2.8, 4.0), hema=(0.85, 1.05), eosin=1.35, aligned=True),
)


def class_names_for(n_classes: int) -> list[str]:
    """``normal, tumor`` for two classes, else ``normal, lesion_a, lesion_b, ...``."""
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    if n_classes == 2:
        return ["normal", "tumor"]
    return ["normal"] + [f"lesion_{_letters(i)}" for i in range(n_classes - 1)]


def _letters(i: int) -> str:
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(ord("a") + r) + s
    return s


def _lesion_look(label_index: int) -> _Look:
    """The look of lesion class ``label_index`` (≥ 1): the three hand-made ones, then seeded random variations."""
    if label_index <= len(_LESION_LOOKS):
        return _LESION_LOOKS[label_index - 1]
    r = np.random.default_rng(1000 + label_index)
    lo = float(r.uniform(1.6, 4.5))
    return _Look(radius_um=(lo, lo * 1.4), spacing_um=float(r.uniform(7.0, 13.0)),
                 aspect=(1.0, float(r.uniform(1.2, 3.5))), hema=(0.9, float(r.uniform(1.1, 1.5))),
                 eosin=float(r.uniform(0.5, 1.3)), cyto_hema=float(r.uniform(0.0, 0.08)),
                 aligned=bool(r.random() < 0.3))


# --- fields ---------------------------------------------------------------------------------------------------------

def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Low-frequency noise (three octaves from a ``cells``-wide grid), zero mean, unit standard deviation."""
    h, w = shape
    sh, sw = min(h, 16 * cells), min(w, 16 * cells)   # built small, then stretched: it has no fine detail
    small = np.zeros((sh, sw), np.float32)
    for c, amp in ((cells, 1.0), (2 * cells, 0.5), (4 * cells, 0.25)):
        grid = rng.standard_normal((c + 1, c + 1)).astype(np.float32)
        small += amp * cv2.resize(grid, (sw, sh), interpolation=cv2.INTER_CUBIC)
    small = (small - small.mean()) / max(float(small.std()), 1e-6)
    return small if (sh, sw) == (h, w) else cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _blob_field(rng: np.random.Generator, shape: tuple[int, int], centers: np.ndarray, areas: np.ndarray) -> np.ndarray:
    """max over blobs of (1 - elliptical distance), each blob of about ``areas[i]`` pixels at its 0-level set."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    field = np.full(shape, -np.inf, np.float32)
    for (cy, cx), area in zip(centers, areas):
        aspect = rng.uniform(1.0, 1.7)
        ry = math.sqrt(area / math.pi / aspect)
        rx = ry * aspect
        t = rng.uniform(0, math.pi)
        dx, dy = xx - cx, yy - cy
        u, v = dx * math.cos(t) + dy * math.sin(t), -dx * math.sin(t) + dy * math.cos(t)
        field = np.maximum(field, 1.0 - np.sqrt((u / rx) ** 2 + (v / ry) ** 2))
    return field


def _tissue_and_lesion(rng: np.random.Generator, g: int, lesion: bool) -> tuple[np.ndarray, np.ndarray]:
    """Signed low-resolution fields (g×g): tissue where the first is > 0, lesion where the second is > 0."""
    coverage = rng.uniform(0.35, 0.60)
    n_pieces = int(rng.integers(1, 4))
    centers: list[np.ndarray] = []
    while len(centers) < n_pieces:                       # pieces apart from each other (relaxed if it takes long)
        c = rng.uniform(0.25, 0.75, 2) * g
        if all(np.hypot(*(c - o)) > g * 0.3 for o in centers) or rng.random() < 0.05:
            centers.append(c)
    shares = rng.dirichlet(np.full(n_pieces, 3.0))
    field = _blob_field(rng, (g, g), np.array(centers), shares * coverage * g * g)
    field += 0.35 * _smooth_noise(rng, (g, g), 4)
    yy, xx = np.mgrid[0:g, 0:g]
    edge = np.minimum(np.minimum(xx, g - 1 - xx), np.minimum(yy, g - 1 - yy)) / g
    field -= 1.5 * np.clip(0.1 - edge, 0, None) / 0.1    # keep a margin of glass around the tissue
    tissue_thr = float(np.quantile(field, 1.0 - coverage))
    tissue_field = field - tissue_thr
    if not lesion:
        return tissue_field, np.full((g, g), -1.0, np.float32)

    tissue = (tissue_field > 0).astype(np.uint8)
    depth = cv2.distanceTransform(tissue, cv2.DIST_L2, 5)
    inner = depth > max(2.0, 0.02 * g)
    frac = rng.uniform(0.05, 0.20)
    n_lesions = int(rng.integers(1, 4))
    weights = (depth * inner).ravel().astype(np.float64) ** 2
    if weights.sum() <= 0:                                # tissue too thin for a margin: anywhere in it
        weights = tissue.ravel().astype(np.float64)
    idx = rng.choice(weights.size, size=n_lesions, replace=True, p=weights / weights.sum())
    lcenters = np.stack(np.unravel_index(idx, (g, g)), axis=1).astype(np.float32)
    lshares = rng.dirichlet(np.full(n_lesions, 3.0))
    lfield = _blob_field(rng, (g, g), lcenters, lshares * frac * tissue.sum())
    lfield += 0.25 * _smooth_noise(rng, (g, g), 6)
    lfield[~inner] = -1.0
    lesion_thr = max(float(np.quantile(lfield[tissue > 0], 1.0 - frac)), -0.99)
    return tissue_field, np.clip(lfield - lesion_thr, -1.0, None).astype(np.float32)


def _clip01(x: np.ndarray) -> np.ndarray:
    return cv2.min(cv2.max(x, 0.0), 1.0)


def _fibres(rng: np.random.Generator, q: int, px_per_um: float) -> np.ndarray:
    """Wavy fibre-like texture in [0, 1]: noise blurred along two orientations, blended, then warped."""
    noise = rng.random((q, q), np.float32)
    long_s, thin_s = 5.0 * px_per_um, max(0.5, 0.6 * px_per_um)
    horiz = cv2.GaussianBlur(noise, (0, 0), sigmaX=long_s, sigmaY=thin_s)
    vert = cv2.GaussianBlur(noise, (0, 0), sigmaX=thin_s, sigmaY=long_s)
    mix = _clip01(0.5 + 0.8 * _smooth_noise(rng, (q, q), 3))
    fib = cv2.blendLinear(horiz, vert, mix, 1.0 - mix)
    amp = 12.0 * px_per_um
    ramp = np.arange(q, dtype=np.float32)
    map_y = amp * _smooth_noise(rng, (q, q), 6) + ramp[:, None]
    map_x = amp * _smooth_noise(rng, (q, q), 6) + ramp[None, :]
    fib = cv2.remap(fib, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    mean, std = cv2.meanStdDev(fib)
    return _clip01((fib - float(mean[0, 0])) * (0.22 / max(float(std[0, 0]), 1e-6)) + 0.5)


def _draw_nuclei(rng: np.random.Generator, canvas: np.ndarray, where: np.ndarray, look: _Look,
                 px_per_um: float) -> None:
    """Draw filled ellipses (value = 100 × hematoxylin) on a jittered grid, where ``where`` (any scale) is set."""
    h, w = canvas.shape
    step = look.spacing_um * px_per_um
    ys, xs = np.mgrid[step / 2:h:step, step / 2:w:step]
    ys = (ys + rng.uniform(-0.45, 0.45, ys.shape) * step).ravel()
    xs = (xs + rng.uniform(-0.45, 0.45, xs.shape) * step).ravel()
    inside = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    ys, xs = ys[inside], xs[inside]
    keep = where[(ys * where.shape[0] / h).astype(int), (xs * where.shape[1] / w).astype(int)]
    ys, xs = ys[keep], xs[keep]
    n = ys.size
    r = rng.uniform(*look.radius_um, n) * px_per_um
    aspect = rng.uniform(*look.aspect, n)
    minor, major = r / np.sqrt(aspect), r * np.sqrt(aspect)
    angle = rng.uniform(0, 180) + rng.normal(0, 12, n) if look.aligned else rng.uniform(0, 180, n)
    value = np.rint(100 * rng.uniform(*look.hema, n)).astype(int)
    sub = 4  # cv2 shift=2: coordinates in quarter pixels
    for x, y, a, b, t, v in zip(np.rint(xs * sub).astype(int), np.rint(ys * sub).astype(int),
                                np.rint(major * sub).astype(int), np.rint(minor * sub).astype(int), angle, value):
        cv2.ellipse(canvas, (int(x), int(y)), (max(int(a), 2), max(int(b), 2)), float(t), 0, 360, int(v), -1,
                    cv2.LINE_AA, 2)


def render_slide(rng: np.random.Generator, size: int, mpp: float,
                 label_index: int) -> tuple[np.ndarray, np.ndarray, float]:
    """(size×size×3 uint8 RGB, lesion mask at ``MASK_DOWNSAMPLE``, lesion fraction of tissue) for one slide."""
    g = max(1, round(size / MASK_DOWNSAMPLE))
    q, w = size // _FIELD_DOWNSAMPLE, size // _NUCLEUS_DOWNSAMPLE
    tissue_low, lesion_low = _tissue_and_lesion(rng, g, lesion=label_index > 0)
    look = _lesion_look(label_index) if label_index > 0 else _NORMAL_LOOK

    # stroma and cytoplasm at 1/4 resolution
    q_px_per_um = 1.0 / (mpp * _FIELD_DOWNSAMPLE)
    tissue_soft = cv2.resize(tissue_low, (q, q), interpolation=cv2.INTER_LINEAR)
    tissue = tissue_soft > 0
    lesion = (cv2.resize(lesion_low, (q, q), interpolation=cv2.INTER_LINEAR) > 0) & tissue
    density = _clip01(tissue_soft * 25.0)          # the stain thins out over the last microns of the edge
    if label_index > 0:
        near_lesion = cv2.GaussianBlur(lesion.astype(np.float32), (0, 0), 3.0 * q_px_per_um)
    else:
        near_lesion = np.zeros((q, q), np.float32)
    fib = _fibres(rng, q, q_px_per_um)
    mottle = 0.85 + 0.15 * _smooth_noise(rng, (q, q), 8)
    conc_e = density * 0.34 * (0.35 + 1.3 * fib) * mottle * (1.0 + (look.eosin - 1.0) * near_lesion)
    conc_h = density * (0.05 + look.cyto_hema * near_lesion)

    # nuclei at 1/2 resolution
    w_px_per_um = 1.0 / (mpp * _NUCLEUS_DOWNSAMPLE)
    canvas = np.zeros((w, w), np.uint8)
    _draw_nuclei(rng, canvas, tissue & ~lesion, _NORMAL_LOOK, w_px_per_um)
    if label_index > 0:
        _draw_nuclei(rng, canvas, lesion, look, w_px_per_um)
    canvas = cv2.GaussianBlur(canvas, (0, 0), 0.5 * w_px_per_um)
    grain = rng.integers(0, 256, (w, w), dtype=np.uint8)
    chromatin = cv2.multiply(canvas, grain, scale=1.0 / 255, dtype=cv2.CV_32F)     # mottled chromatin
    nuclei = cv2.addWeighted(canvas, 0.75 / 100, chromatin, 0.5 / 100, 0.0, dtype=cv2.CV_32F)
    conc_h = cv2.resize(conc_h, (w, w), interpolation=cv2.INTER_LINEAR) + nuclei
    conc_e = cv2.resize(conc_e, (w, w), interpolation=cv2.INTER_LINEAR)

    # Beer-Lambert: intensity = 255 · 10^-(optical density), plus a faint grey grain, then up to level 0
    ln10 = math.log(10.0)
    channels = [cv2.convertScaleAbs(cv2.exp(cv2.addWeighted(conc_h, -ln10 * hc, conc_e, -ln10 * ec, -ln10 * gc)),
                                    alpha=255.0)
                for hc, ec, gc in zip(_HEMATOXYLIN, _EOSIN, _GLASS)]
    grey = cv2.convertScaleAbs(grain, alpha=5.0 / 255)
    rgb = cv2.subtract(cv2.merge(channels), cv2.merge([grey, grey, grey]))
    rgb = cv2.resize(rgb, (size, size), interpolation=cv2.INTER_LINEAR)

    mask = cv2.resize(lesion.astype(np.uint8) * 255, (g, g), interpolation=cv2.INTER_AREA) >= 128
    fraction = float(lesion.sum()) / max(int(tissue.sum()), 1)
    return rgb, mask, fraction


# --- files ----------------------------------------------------------------------------------------------------------

def level_downsamples(size: int) -> list[int]:
    """The pyramid of a ``size``-pixel slide: downsamples 1, 4, 16 while the level is at least one tile wide."""
    return [ds for ds in PYRAMID_DOWNSAMPLES if ds == 1 or size // ds >= TILE]


def _pyramid(rgb: np.ndarray, downsamples: Sequence[int]) -> list[np.ndarray]:
    levels = [rgb]
    for ds in downsamples[1:]:
        levels.append(cv2.resize(levels[-1], (rgb.shape[1] // ds, rgb.shape[0] // ds), interpolation=cv2.INTER_AREA))
    return levels


def write_aperio_tiff(path: Path, rgb: np.ndarray, mpp: Optional[float], magnification: Optional[float],
                      name: str = "", downsamples: Optional[Sequence[int]] = None) -> None:
    """An Aperio-style SVS: tiled JPEG level 0, a stripped thumbnail (page 1), then the reduced tiled levels.

    ``mpp`` or ``magnification`` None leaves that field out (a slide without metadata); ``downsamples`` defaults
    to :func:`level_downsamples`.
    """
    h, w = rgb.shape[:2]
    downsamples = list(downsamples or level_downsamples(min(h, w)))
    desc = f"Aperio Image Library v12.0.15\r\n{w}x{h} [0,0 {w}x{h}] ({TILE}x{TILE}) JPEG/RGB Q={JPEG_QUALITY}"
    if magnification is not None:
        desc += f"|AppMag = {magnification:g}"
    if mpp is not None:
        desc += f"|MPP = {mpp:.6g}"
    desc += f"|Filename = {name}|Generator = dnd_engine.synth"
    levels = _pyramid(rgb, downsamples)
    small = levels[-1]
    scale = min(1.0, TILE / max(small.shape[:2]))
    thumb = cv2.resize(small, (max(1, round(small.shape[1] * scale)), max(1, round(small.shape[0] * scale))),
                       interpolation=cv2.INTER_AREA)
    jpeg = dict(photometric="rgb", compression="jpeg", compressionargs={"level": JPEG_QUALITY}, metadata=None)
    def resolution(ds: int) -> dict:  # pixels per centimetre at that level; none without a pixel size
        return {} if mpp is None else dict(resolution=(1e4 / mpp / ds,) * 2, resolutionunit="CENTIMETER")

    with tifffile.TiffWriter(path, bigtiff=False) as tw:
        tw.write(levels[0], tile=(TILE, TILE), description=desc, **resolution(1), **jpeg)
        tw.write(thumb, **jpeg)
        for ds, level in zip(downsamples[1:], levels[1:]):
            tw.write(level, tile=(TILE, TILE), **resolution(ds), **jpeg)


def write_lesion_mask(path: Path, mask: np.ndarray, downsample: float) -> None:
    """An 8-bit PNG (255 = lesion) with its level-0 downsample in the text chunk ``dnd.mask_downsample``."""
    info = PngImagePlugin.PngInfo()
    info.add_text(_MASK_TEXT_KEY, f"{downsample:.10g}")
    buf = io.BytesIO()
    Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(buf, format="PNG", pnginfo=info, optimize=True)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())


def read_lesion_mask(mask_path: str | os.PathLike) -> tuple[np.ndarray, float]:
    """(bool mask, level-0 downsample) from a PNG written by :func:`make_synthetic_cohort`."""
    p = Path(mask_path)
    try:
        with Image.open(p) as img:
            arr = np.asarray(img.convert("L"))
            text = img.info.get(_MASK_TEXT_KEY)
    except (OSError, ValueError) as exc:
        raise DnDError(f"{p.name}: not a readable mask image: {exc}") from None
    if text is None:
        raise DnDError(f"{p.name}: the mask has no '{_MASK_TEXT_KEY}' metadata")
    return arr >= 128, float(text)


def _balanced_labels(n_slides: int, n_classes: int, rng: np.random.Generator) -> list[int]:
    labels = [i % n_classes for i in range(n_slides)]
    rng.shuffle(labels)
    return [int(x) for x in labels]


MAX_SYNTH_SIZE = 32768          # one level-0 RGB array of 32768² is 3 GiB: larger ones exhaust memory
MAX_SYNTH_CLASSES = 100
MAX_SYNTH_SLIDES = 100_000


class SynthArgumentError(DnDError, ValueError):
    """A cohort argument out of range; a DnDError so the CLI prints it as one line, a ValueError as before."""


def check_synth_arguments(n_slides, n_classes, size, magnification, seed) -> None:
    """Refuse what the generator cannot make, with the option's name (as ``dnd synth`` spells it) and why."""
    def whole(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if not whole(n_classes) or not 2 <= n_classes <= MAX_SYNTH_CLASSES:
        raise SynthArgumentError(f"--n-classes must be a whole number from 2 to {MAX_SYNTH_CLASSES}, got {n_classes}")
    if not whole(n_slides) or not n_classes <= n_slides <= MAX_SYNTH_SLIDES:
        raise SynthArgumentError(f"--n-slides must be at least --n-classes ({n_classes}) so every class has a "
                                 f"slide (and at most {MAX_SYNTH_SLIDES}), got {n_slides}")
    if not whole(size) or not 512 <= size <= MAX_SYNTH_SIZE:
        raise SynthArgumentError(f"--size must be from 512 to {MAX_SYNTH_SIZE} pixels, got {size}")
    if not isinstance(magnification, (int, float)) or not 0 < magnification <= 100:
        raise SynthArgumentError(f"--magnification must be above 0 and at most 100, got {magnification}")
    if not whole(seed) or not 0 <= seed < 2 ** 63:
        raise SynthArgumentError(f"--seed must be a whole number from 0 to 2^63-1, got {seed}")


def make_synthetic_cohort(out_dir: str | os.PathLike, n_slides: int = 12, n_classes: int = 2, size: int = 4096,
                          magnification: float = 20.0, seed: int = 0,
                          progress: Optional[Callable[[int, int, str], None]] = None,
                          cancelled: Optional[Callable[[], bool]] = None) -> SynthCohort:
    """Write ``n_slides`` labelled slides with lesion masks, ``labels.csv`` and ``cohort.json`` under ``out_dir``.

    Labels are balanced (round-robin, then shuffled by ``seed``); each slide depends only on (seed, index, label).
    ``cancelled()`` is checked before each slide: finished slides stay, no partial file is left, and
    :class:`Cancelled` is raised; ``labels.csv`` and ``cohort.json`` are written only when every slide is done.
    """
    check_synth_arguments(n_slides, n_classes, size, magnification, seed)
    out = ensure_dir(out_dir)
    slides_dir, masks_dir = ensure_dir(out / "slides"), ensure_dir(out / "masks")
    names = class_names_for(n_classes)
    mpp = 10.0 / magnification
    labels = _balanced_labels(n_slides, n_classes, np.random.default_rng([seed, 0xC1A55]))

    def make_one(i: int, label_index: int) -> SynthSlideInfo:
        sid = f"synth_{i:03d}"
        rgb, mask, fraction = render_slide(np.random.default_rng([seed, i, label_index]), size, mpp, label_index)
        path, mask_path = slides_dir / f"{sid}.tif", masks_dir / f"{sid}_lesion.png"
        with atomic_path(path) as tmp:
            write_aperio_tiff(tmp, rgb, mpp, magnification, name=sid)
        mask_ds = size / mask.shape[1]
        write_lesion_mask(mask_path, mask, mask_ds)
        return SynthSlideInfo(sid, path, names[label_index], label_index, mask_path, mask_ds, fraction)

    # Two slides in flight: numpy, OpenCV and the JPEG encoder release the GIL, so this nearly halves the time on
    # two cores. Callbacks run on this thread only; on cancel, slides already started are finished, not cut off.
    infos: list[SynthSlideInfo] = []
    workers = max(1, min(2, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        running: deque[Future] = deque()

        def collect_oldest() -> None:
            info = running.popleft().result()
            infos.append(info)
            if progress is not None:
                progress(len(infos), n_slides, f"{info.slide_id} ({info.label})")

        for i, label_index in enumerate(labels):
            if cancelled is not None and cancelled():
                while running:
                    collect_oldest()
                raise Cancelled(f"synthetic cohort cancelled after {len(infos)} of {n_slides} slides")
            running.append(pool.submit(make_one, i, label_index))
            if len(running) >= workers:
                collect_oldest()
        while running:
            collect_oldest()

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["slide_id", "label"])
    writer.writerows([s.slide_id, s.label] for s in infos)
    labels_csv = write_text_atomic(out / "labels.csv", buf.getvalue())
    write_json_atomic(out / "cohort.json", {
        "generator": "dnd_engine.synth",
        "seed": seed,
        "n_slides": n_slides,
        "class_names": names,
        "size": size,
        "magnification": magnification,
        "mpp": mpp,
        "level_downsamples": level_downsamples(size),
        "mask_downsample": infos[0].mask_downsample,
        "slides": [{"slide_id": s.slide_id, "file": f"slides/{s.path.name}", "mask": f"masks/{s.mask_path.name}",
                    "label": s.label, "label_index": s.label_index, "lesion_fraction": round(s.lesion_fraction, 6)}
                   for s in infos],
    })
    return SynthCohort(out, infos, labels_csv, names)
