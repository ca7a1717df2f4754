"""Slide → tissue → patches → features, one slide or a cohort, with streaming atomic writes and resume.

Output layout under ``out`` (CLAM/TRIDENT conventions, so their users can bring or take files):
- ``patches/{slide}.h5`` — ``coords`` with CLAM + TRIDENT attributes;
- ``tissue/{slide}.geojson`` (QuPath), ``tissue/{slide}_mask.png``, ``tissue/{slide}_qc.jpg``;
- ``features_{extractor}/h5_files/{slide}.h5`` — ``features`` (N×D float32) + ``coords`` (same order);
- ``features_{extractor}/pt_files/{slide}.pt`` — the features tensor CLAM's training code loads;
- ``features_{extractor}/extraction_summary.csv`` — one row per slide and outcome (and which reader read it).

Patches are read by the tile-native reader (:mod:`dnd_engine.slides.tiles`: each compressed tile decoded once,
JPEG at the DCT scale nearest the target) when a slide is a tiled TIFF it understands, else with
``read_region`` (OpenSlide / tiffslide, the reference); ``ExtractConfig.reader`` chooses, and each slide's
result says which read it and why.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
import os
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, Optional

import cv2
import h5py
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader

from .. import __version__
from ..atomic import atomic_path, ensure_dir, locked_file, remove_stale_temps, write_text_atomic
from ..child_pool import ChildPool
from ..device import resolve_device, usable_cores
from ..errors import Cancelled, DnDError
from ..lifeline import reader_init
from ..patching import PatchGrid, PatchParams, make_patch_grid, write_coords_h5
from ..progress import CancelFn, ProgressFn, check_cancelled, no_progress
from ..slides.overrides import open_with_override
from ..slides.slide import slide_id
from ..slides.find import find_slides  # noqa: F401  (moved; still importable from here)
from ..tissue import PRESETS, TissueMask, TissueParams, segment_tissue, write_tissue_geojson
from ..slides.tiles import COMPRESSION_JPEG, RawBlock, TilesNotEligible, TileSpec, patch_blocks, plan_tiles
from .device_decode import DeviceDecoder, resolve_share
from .patch_dataset import PatchReader, PatchRequest, TileBand, collate_patches
from .writer import FeatureWriter, write_pt_from_h5
from .settings import LOCK_FILE, check_folder, claim_folder, run_settings, same_slide_scale
from .claims import DEFAULT_LOCK_TIMEOUT, HOSTNAME, LOCKS_DIR, SlideLocks, shard_of
from .registry import Extractor, build_extractor
from ..text import one_line

log = logging.getLogger(__name__)

#: ExtractConfig.reader values: the tile reader where it applies, else read_region; the tile reader or an error;
#: read_region only (OpenSlide, or tiffslide for the TIFFs OpenSlide rejects).
READERS = ("auto", "tiles", "openslide")


@dataclass
class ExtractConfig:
    extractor: str = "stain_stats"
    weights: Optional[str] = None
    magnification: float = 10.0
    patch_size: int = 256
    overlap: float = 0.0
    min_tissue: float = 0.25
    tissue_preset: str = "default"
    tissue_threshold: Optional[int] = None   # fixed saturation threshold; overrides the preset's method
    base_magnification: Optional[float] = None  # used only for slides whose files carry no magnification
    objective_power: Optional[float] = None     # overrides every slide's own magnification (wrong headers)
    slide_overrides: Optional[Dict[str, Dict[str, float]]] = None  # absolute path -> {objective_power, mpp} a
    #                                             user set for that slide (OverrideTable.for_paths)
    little_tissue: bool = False                 # a slide with too little tissue for the thresholds is cut from
    #                                             its most-tissue patches instead of failing (a single slide a
    #                                             user asked to classify: dnd predict and the app; never cohorts)
    batch_size: int = 64
    num_workers: Optional[int] = None           # None: one per core, at most 4
    device: str = "auto"
    precision: str = "auto"
    compile: str = "auto"                       # auto | on | off: torch.compile the encoder (see Extractor)
    reader: str = "auto"                        # auto | tiles | openslide: how patches are read (see READERS)
    overwrite: bool = False
    device_decode: Optional[float] = None       # share of JPEG tile blocks decoded on the encoder's device
    #                                             (nvJPEG on CUDA); None: auto (0.3 on CUDA, 0 on CPU)
    mp_context: Optional[str] = None            # fork | forkserver | spawn for the reading processes (None: the
    #                                             platform's default; a Qt app must not fork its threads)
    ray: Optional[str] = None                   # auto | local | HOST:PORT: run the cohort on a Ray cluster
    #                                             (ray_runner.py); None: on this machine
    devices: Optional[str] = None               # "cuda:0,cuda:1" / "cpu,cpu": one encoder process per device,
    #                                             sharing the cohort's slides (devices.py); None: ``device`` only
    shard: Optional[str] = None                 # "I/N": this process takes part I of N of the cohort (see claims.py)
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT  # seconds after which another host's unrefreshed slide lock is stale

    def patch_params(self) -> PatchParams:
        return PatchParams(magnification=self.magnification, patch_size=self.patch_size, overlap=self.overlap,
                           min_tissue=self.min_tissue, keep_best=self.little_tissue)

    def tissue_params(self) -> TissueParams:
        if self.tissue_preset not in PRESETS:
            raise DnDError(f"unknown tissue preset '{self.tissue_preset}' (choose from: {', '.join(PRESETS)})")
        p = TissueParams(**PRESETS[self.tissue_preset].to_dict())
        if self.tissue_threshold is not None:
            p.sthresh, p.threshold = int(self.tissue_threshold), "fixed"
        return p


@dataclass
class SlideResult:
    slide_id: str
    path: str
    status: str                  # done | skipped | failed | cancelled | locked (another process has it: error says who)
    n_patches: int = 0
    seconds: float = 0.0
    error: str = ""
    features_h5: str = ""
    features_pt: str = ""
    info: dict = field(default_factory=dict)
    reader: str = ""             # tiles | openslide | tiffslide | image: what read the patches (info says why)


def feature_dir_for(out_dir: str | os.PathLike, extractor: str) -> Path:
    return Path(out_dir) / f"features_{extractor}"


def default_workers(device: torch.device | str = "cpu") -> int:
    """Reading processes: on a CPU the encoder shares the cores, so at most 4; a GPU needs every core reading."""
    return max(1, min(16 if torch.device(device).type == "cuda" else 4, usable_cores()))


def _output_paths(out_dir: Path, extractor: str, sid: str) -> dict:
    fdir = feature_dir_for(out_dir, extractor)
    return {
        "patches": out_dir / "patches" / f"{sid}.h5",
        "geojson": out_dir / "tissue" / f"{sid}.geojson",
        "mask": out_dir / "tissue" / f"{sid}_mask.png",
        "qc": out_dir / "tissue" / f"{sid}_qc.jpg",
        "h5": fdir / "h5_files" / f"{sid}.h5",
        "pt": fdir / "pt_files" / f"{sid}.pt",
    }


def _write_png(path: Path, arr: np.ndarray, fmt: str = "PNG", **kw) -> None:
    with atomic_path(path) as tmp:
        Image.fromarray(arr).save(tmp, format=fmt, **kw)


def _qc_image(tissue: TissueMask, grid: PatchGrid, max_side: int = 1024) -> np.ndarray:
    """The segmentation thumbnail with tissue contours (green) and kept patches (blue boxes): what a user checks
    first. Drawn on the thumbnail segmentation already read, shrunk to ``max_side``."""
    thumb = tissue.thumbnail
    scale = min(1.0, max_side / max(thumb.shape[:2]))
    img = cv2.resize(thumb, (max(1, round(thumb.shape[1] * scale)), max(1, round(thumb.shape[0] * scale))),
                     interpolation=cv2.INTER_AREA) if scale < 1 else thumb.copy()
    ds = tissue.downsample / scale
    for x, y in grid.coords:
        p0 = (int(x / ds), int(y / ds))
        p1 = (int((x + grid.patch_size_level0) / ds), int((y + grid.patch_size_level0) / ds))
        cv2.rectangle(img, p0, p1, (40, 90, 220), 1)
    for ext, holes in tissue.polygons:
        for ring in [ext] + list(holes):
            cv2.polylines(img, [np.round(ring / ds).astype(np.int32)], True, (0, 170, 60), 2)
    return img


@dataclass
class _SlidePlan:
    """A prepared slide: its grid is known and its patch/tissue files are written; features are pending."""
    index: int
    path: Path
    slide_id: str
    grid: PatchGrid
    attrs: dict
    paths: dict
    info: dict
    t0: float
    tile_spec: Optional[TileSpec] = None     # None: read with read_region
    writer: Optional[FeatureWriter] = None

    @property
    def reader(self) -> str:
        return str(self.info.get("reader", ""))


def _prepare_slide(index: int, slide_path: Path, out_dir: Path, config: ExtractConfig,
                   out_size: "int | Extractor") -> _SlidePlan | SlideResult:
    """Open, segment and grid one slide and write its patch file, GeoJSON, mask and QC image.

    Returns a plan for the feature stage, or a finished result when the slide's features already exist.
    Raises :class:`DnDError` for bad input. ``out_size``: the encoder's input size (or the extractor).
    Runs in a preparation process (:func:`_prepare_in_child`) during extraction: the slide is untrusted.
    """
    if not isinstance(out_size, int):
        out_size = out_size.spec.input_size or config.patch_size
    t0 = time.perf_counter()
    with open_with_override(slide_path, config.slide_overrides, objective_power=config.objective_power,
                            fallback_magnification=config.base_magnification) as slide:
        sid = slide.id
        paths = _output_paths(out_dir, config.extractor, sid)
        if not config.overwrite and paths["h5"].exists() and same_slide_scale(paths["h5"], slide.objective_power):
            if not paths["pt"].exists():          # a crash between the two renames: rebuild the .pt from the h5
                write_pt_from_h5(paths["h5"], paths["pt"])
            with h5py.File(paths["h5"], "r") as f:
                n = int(f["features"].shape[0])
            return SlideResult(sid, str(slide_path), "skipped", n, time.perf_counter() - t0,
                               features_h5=str(paths["h5"]), features_pt=str(paths["pt"]), info=slide.info())
        pparams = config.patch_params()
        # area unit for the tissue filters: one target patch, in level-0 pixels
        size0 = config.patch_size * slide.downsample_for_magnification(config.magnification)
        tparams = config.tissue_params()
        tissue = segment_tissue(slide, patch_area_px0=size0 * size0, params=tparams,
                                require_tissue=not config.little_tissue)
        if config.little_tissue and not tissue.mask.any():   # no piece as large as a patch: take every piece
            tissue = segment_tissue(slide, patch_area_px0=size0 * size0, params=replace(tparams, a_t=0.0))
        grid = make_patch_grid(slide, tissue, pparams)
        attrs = grid.attrs(slide)
        write_coords_h5(paths["patches"], grid.coords, attrs, extra={"tissue_fraction": grid.tissue_fraction})
        write_tissue_geojson(tissue, paths["geojson"])
        _write_png(paths["mask"], (tissue.mask * 255).astype(np.uint8))
        _write_png(paths["qc"], _qc_image(tissue, grid), fmt="JPEG", quality=85)
        info = slide.info()
        spec = _choose_reader(slide, grid, out_size, config.reader, info)
        return _SlidePlan(index, Path(slide_path), sid, grid, attrs, paths, info, t0, tile_spec=spec)


def _prepare_in_child(index: int, slide_path: Path, out_dir: Path, config: ExtractConfig,
                      out_size: int) -> _SlidePlan | SlideResult:
    """:func:`_prepare_slide` as a preparation process runs it (looked up at call time, so a test's stand-in
    is the one run)."""
    return _prepare_slide(index, slide_path, out_dir, config, out_size)


def _choose_reader(slide, grid: PatchGrid, out_size: int, mode: str, info: dict) -> Optional[TileSpec]:
    """The tile reader's plan for this slide, or None for read_region; records the choice in ``info``
    (``reader``, and ``reader_note``: why the tile reader was not used) and in the log."""
    if mode == "openslide":
        info["reader"], info["reader_note"] = slide.backend, "read_region requested (reader=openslide)"
        return None
    try:
        spec = plan_tiles(slide, grid, out_size)
    except TilesNotEligible as exc:
        if mode == "tiles":
            raise DnDError(f"{exc} (reader=tiles; use reader auto or openslide)") from None
        info["reader"], info["reader_note"] = slide.backend, f"tile reader not eligible: {exc.reason}"
        log.info("%s: reading with %s read_region; tile reader not eligible: %s", slide.path.name, slide.backend,
                 exc.reason)
        return None
    info["reader"], info["reader_note"] = "tiles", spec.describe()
    log.info("%s: reading with the tile reader (%s)", slide.path.name, spec.describe())
    return spec


def _file_attrs(extractor: Extractor, config: ExtractConfig, plan: _SlidePlan) -> dict:
    """The features file's attributes: what it is, and the settings it was made with (see settings.py)."""
    return {**run_settings(config, extractor), "feature_dim": extractor.dim, "slide_id": plan.slide_id,
            "slide_path": str(plan.path), "dnd_version": __version__}


#: slides prepared (tissue, grid, patch files) in preparation processes ahead of the one being read
PREPARE_AHEAD = 2


def prepare_threads() -> int:
    """Processes preparing slides (untrusted files are opened there only: a native library that aborts on a
    crafted file kills that process, and fails that slide): one per four cores, at most four (most of the work is in C: reading the
    thumbnail, median blur, PNG/JPEG encoding). With small slides on a GPU the preparation, not the readers,
    bounds the rate: about 0.4 s per slide, as long as 900 patches take to read on 16 cores."""
    return max(1, min(4, usable_cores() // 4))

#: most patches in one tile-reader work unit: a worker decodes a block's tiles once (see patch_blocks); larger
#: blocks re-decode fewer border tiles but hold more decoded patches in flight per worker.
BAND_PATCHES = 128


def tile_bands(slide_index: int, grid: PatchGrid, spec: TileSpec, batch_size: int,
               raw_share: float = 0.0) -> list[TileBand]:
    """A slide's grid as tile-reader work units: blocks of at most ``BAND_PATCHES`` (or the batch size, if
    smaller, so that small batches still keep every worker busy). ``raw_share`` of them, spread evenly, are
    marked for decoding on the encoder's device (JPEG tiles only)."""
    blocks = patch_blocks(grid.coords, min(BAND_PATCHES, max(16, int(batch_size))))
    share = raw_share if spec.compression == COMPRESSION_JPEG else 0.0
    return [TileBand(slide_index, rows, grid.coords[rows], spec,
                     raw=share > 0 and int((k + 1) * share) > int(k * share))
            for k, rows in enumerate(blocks)]


def _loader(sampler, config: ExtractConfig, device: torch.device, workers: int) -> DataLoader:
    kw = dict(batch_sampler=sampler, num_workers=workers, collate_fn=collate_patches,
              pin_memory=device.type == "cuda")
    if workers > 0:
        kw.update(prefetch_factor=4, persistent_workers=False,
                  worker_init_fn=functools.partial(reader_init, os.getpid()))   # readers die with us
        if config.mp_context:
            kw.update(multiprocessing_context=config.mp_context)
    return DataLoader(PatchReader(), **kw)


class _CohortStream:
    """Work units across the whole cohort, preparing each slide only when the stream reaches it (in the main
    process, as the DataLoader asks for more work), so the readers never idle between slides.

    A slide read with ``read_region`` becomes batches of :class:`PatchRequest` s (running across slide
    boundaries); a slide read from its tiles becomes :class:`TileBand` s: square blocks of its grid, so that
    each worker decodes a block's tiles once and few tiles are decoded by two workers. The main loop regroups
    whatever arrives into full encoder batches.
    """

    def __init__(self, paths, out_dir, config, extractor, on_result, cancelled, raw_share: float = 0.0,
                 indices: Optional[list] = None, take: Optional[Callable[[int], bool]] = None,
                 locks: Optional[SlideLocks] = None):
        self.paths, self.out_dir, self.config, self.extractor = paths, out_dir, config, extractor
        self.indices = list(range(len(paths))) if indices is None else list(indices)   # the slides to stream
        self.take = take      # asked as the stream reaches a slide: whether this run does it (devices.py)
        self.raw_share = raw_share
        self.on_result, self.cancelled = on_result, cancelled
        self.plans: dict[int, _SlidePlan] = {}
        self.out_size = extractor.spec.input_size or config.patch_size
        self.locks = locks

    def _claim(self, sp: Path) -> Optional[Future]:
        """Lock a slide before it is prepared: None to go on (this process holds its lock, or its features exist,
        which its preparation confirms without a lock), else a finished future with its 'locked' result."""
        sid = slide_id(sp)
        if self.locks is None or (not self.config.overwrite and
                                  _output_paths(self.out_dir, self.config.extractor, sid)["h5"].exists()):
            return None
        holder = self.locks.claim(sid)
        if holder is None:
            return None
        done: Future = Future()
        done.set_result(_locked_result(sp, holder))
        return done

    def __iter__(self):
        batch: list[PatchRequest] = []
        for i, sp, plan in self._prepared():
            if isinstance(plan, BaseException):
                self.on_result(i, _failed(sp, plan))
                continue
            if isinstance(plan, SlideResult):
                self.on_result(i, plan)
                continue
            if self.locks is not None and not self.locks.holds(plan.slide_id):   # existing features to redo
                holder = self.locks.claim(plan.slide_id)
                if holder is not None:
                    self.on_result(i, _locked_result(sp, holder))
                    continue
            self.plans[i] = plan
            g = plan.grid
            if plan.tile_spec is not None:
                yield from tile_bands(i, g, plan.tile_spec, self.config.batch_size, self.raw_share)
                continue
            for row, (x, y) in enumerate(g.coords):
                batch.append(PatchRequest(i, row, str(sp), int(x), int(y), g.patch_level, g.read_size,
                                          self.out_size))
                if len(batch) == self.config.batch_size:
                    yield batch
                    batch = []
        if batch:
            yield batch

    def _prepared(self):
        """(index, path, plan, finished result or the exception) in cohort order, each slide prepared in
        preparation processes (:func:`prepare_threads`, a :class:`ChildPool` started with the config's
        ``mp_context``) up to :data:`PREPARE_AHEAD` slides beyond those being prepared, before the stream
        reaches it: the main thread, which feeds the encoder, must not stop for a slide's tissue segmentation
        and files (about half a second on a large slide, as long as its patches take to encode on a GPU), and
        must not die with a native library that aborts on a crafted slide (that slide fails, with a reason)."""
        pending: deque = deque()
        todo = iter([(i, self.paths[i]) for i in self.indices])

        def submit_next() -> None:
            for i, sp in todo:
                if self.take is not None and not self.take(i):
                    continue                            # another device's process does this slide
                pending.append((i, sp, self._claim(sp) or pool.submit(_prepare_in_child, i, sp, self.out_dir,
                                                                      self.config, self.out_size,
                                                                      name=Path(sp).name)))
                return

        threads = prepare_threads()
        pool = ChildPool(threads, self.config.mp_context)
        try:
            for _ in range(threads + PREPARE_AHEAD - 1):
                submit_next()
            while pending:
                if self.cancelled is not None and self.cancelled():
                    break                               # the main loop raises Cancelled
                i, sp, fut = pending.popleft()
                try:
                    plan = fut.result()
                except Exception as exc:
                    if reader_died(exc):
                        raise     # torch's SIGCHLD handler interrupted the wait: a patch reader died, not this slide
                    plan = exc
                submit_next()
                yield i, sp, plan
        finally:
            pool.shutdown(kill=True)


def _full_batches(loader, batch_size: int, device: torch.device = torch.device("cpu"),
                  decoder: Optional[DeviceDecoder] = None):
    """(imgs, requests, errors) regrouped into batches of ``batch_size`` (the last may be smaller): tile bands
    come in blocks of any size, and the encoder runs best, and compiles once, on full batches.

    On a GPU each piece is sent as it arrives (pinned by the loader, so the copy is asynchronous) and the
    batch is assembled there: concatenating on the host would copy every patch once more, into pageable
    memory that the transfer then stages again. A :class:`RawBlock` (compressed tiles) is decoded here by
    ``decoder``; a tile that does not decode flags the block's patches with the error.
    """
    decoder = decoder or DeviceDecoder(device)
    imgs: list[torch.Tensor] = []
    reqs: list = []
    errs: list = []
    n = 0
    for b_imgs, b_reqs, b_errs in loader:
        if isinstance(b_imgs, RawBlock):
            block = b_imgs
            try:
                b_imgs = decoder.patches(block)
            except DnDError as exc:
                b_imgs = torch.zeros((len(b_reqs), block.out_size, block.out_size, 3), dtype=torch.uint8,
                                     device=device)
                b_errs = [str(exc)] * len(b_reqs)
        elif device.type == "cuda":
            b_imgs = b_imgs.to(device, non_blocking=True)
        if n == 0 and len(b_reqs) == batch_size:
            yield b_imgs, b_reqs, b_errs
            continue
        imgs.append(b_imgs)
        reqs += b_reqs
        errs += b_errs
        n += len(b_reqs)
        while n >= batch_size:
            cat = torch.cat(imgs) if len(imgs) > 1 else imgs[0]
            yield cat[:batch_size], reqs[:batch_size], errs[:batch_size]
            imgs, reqs, errs = ([cat[batch_size:]] if n > batch_size else []), reqs[batch_size:], errs[batch_size:]
            n -= batch_size
    if n:
        yield (torch.cat(imgs) if len(imgs) > 1 else imgs[0]), reqs, errs


def _encoded(batches, extractor: Extractor):
    """(features as numpy, requests, errors) per batch. On a GPU the next batch is queued before the previous
    one's features are waited for, so the host's bookkeeping and writes overlap the encoder and the transfer
    of the next patches."""
    if extractor.device.type != "cuda":
        for imgs, reqs, errors in batches:
            yield extractor(imgs).cpu().numpy(), reqs, errors
        return
    pending = None
    for imgs, reqs, errors in batches:
        feats = extractor(imgs)
        host = torch.empty(feats.shape, dtype=feats.dtype, pin_memory=True)
        host.copy_(feats, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        if pending is not None:
            pending[1].synchronize()
            yield pending[0].numpy(), pending[2], pending[3]
        pending = (host, done, reqs, errors)
    if pending is not None:
        pending[1].synchronize()
        yield pending[0].numpy(), pending[2], pending[3]


def _failed(path: Path, exc: BaseException) -> SlideResult:
    if isinstance(exc, DnDError):
        msg = str(exc)
    else:  # an unexpected reader/library error must not stop the cohort
        msg = one_line(exc, typed=True)
    return SlideResult(slide_id(path), str(path), "failed", error=msg)


def extract_slide(slide_path: str | os.PathLike, out_dir: str | os.PathLike, config: ExtractConfig,
                  extractor: Optional[Extractor] = None, progress: ProgressFn = no_progress,
                  cancelled: Optional[CancelFn] = None) -> SlideResult:
    """The whole chain for one slide. Raises :class:`DnDError` on bad input; writes nothing partial."""
    r = extract_cohort([Path(slide_path)], out_dir, config, slide_progress=progress, cancelled=cancelled,
                       extractor=extractor)[0]
    if r.status in ("failed", "locked"):     # locked: another process is extracting it now
        raise DnDError(r.error)
    return r


def extract_cohort(slides: str | os.PathLike | list, out_dir: str | os.PathLike, config: ExtractConfig,
                   progress: ProgressFn = no_progress, slide_progress: ProgressFn = no_progress,
                   cancelled: Optional[CancelFn] = None, extractor: Optional[Extractor] = None,
                   take: Optional[Callable[[int], bool]] = None,
                   on_slide: Optional[Callable[[int, SlideResult], None]] = None) -> list[SlideResult]:
    """Extract every slide; a failing slide is reported and skipped, never stops the batch.

    ``progress`` ticks once per finished slide; ``slide_progress`` reports patches within a slide. A caller
    that already holds a built ``extractor`` (the app, benchmarks) passes it; else it is built from ``config``.
    On cancellation the slides in flight are dropped (no partial file), finished ones are kept, and
    :class:`Cancelled` is raised. Other processes may extract into the same folder: a slide one of them is
    working on comes back 'locked' (see :mod:`.claims`); ``config.shard`` takes one part of the cohort.
    ``config.devices`` runs one such extraction per device (devices.py); each is given ``take`` (asked, as its
    stream reaches slide i, whether it does that slide) and ``on_slide`` (each slide's result, as it comes).
    """
    paths = [Path(s) for s in slides] if isinstance(slides, (list, tuple)) else find_slides(slides)
    cohort_ids = [slide_id(p) for p in paths]      # the whole cohort: another shard's files are not "outside" it
    paths = shard_of(paths, config.shard)
    config.patch_params().validate()
    config.tissue_params()  # validate the preset before the first slide
    if config.devices and config.ray:
        raise DnDError("give --devices (this machine's devices) or --ray (a cluster's), not both")
    out_dir = ensure_dir(out_dir)
    fdir = ensure_dir(feature_dir_for(out_dir, config.extractor))
    remove_stale_temps(out_dir / "patches", out_dir / "tissue", fdir, fdir / "h5_files", fdir / "pt_files")
    if config.devices:
        from .devices import extract_on_devices
        if extractor is not None:
            raise DnDError("a built extractor cannot be shared by several device processes; give none")
        return extract_on_devices(paths, out_dir, config, progress, slide_progress, cancelled)
    if extractor is None:
        extractor = build_extractor(config.extractor, config.weights, device=resolve_device(config.device),
                                    precision=config.precision)
    elif extractor.name != config.extractor:
        raise DnDError(f"extractor '{extractor.name}' given for a config that names '{config.extractor}'")
    if config.reader not in READERS:
        raise DnDError(f"reader must be one of {', '.join(READERS)}, got {config.reader!r}")
    if config.compile not in ("auto", "on", "off"):
        raise DnDError(f"compile must be auto, on or off, got {config.compile!r}")
    check_folder(fdir, run_settings(config, extractor), cohort_ids, config.overwrite)  # early
    if config.compile != "off" and not extractor.compiled:
        if not extractor.enable_compile(config.batch_size) and config.compile == "on":
            why = ("int8 runs eagerly (use --precision fp32 to compile)" if extractor.precision == "int8" else
                   "it is not a network, or no C++ compiler (g++) is installed")
            raise DnDError(f"cannot torch.compile '{extractor.name}': {why}; use --compile off")
    device = extractor.device
    raw_share = resolve_share(config.device_decode, device)
    # compares this run's settings with the folder's files and any run writing there, then writes extraction.json;
    # refuses (SettingsMismatch, nothing written) rather than mix settings in one folder
    claim = claim_folder(fdir, run_settings(config, extractor), cohort_ids, config.overwrite, {
        "config": {k: v for k, v in asdict(config).items() if k not in _PER_PROCESS},
        "extractor_dim": extractor.dim, "precision": extractor.precision,
        "compiled": extractor.compiled,
        "device": str(device), "weights_sha256": extractor.weights_sha256() or "", "dnd_version": __version__,
    })
    # every slide is locked while this process works on it, so that other processes on this folder skip it
    claim = _ClaimWithLocks(claim, SlideLocks(fdir / LOCKS_DIR, config.lock_timeout))

    if config.ray:      # the same plan, settings and files, with the work spread over a Ray cluster
        from .ray_runner import extract_on_ray
        return extract_on_ray(paths, out_dir, fdir, config, extractor, claim, progress, slide_progress, cancelled)
    results: dict[int, SlideResult] = {}
    n_slides = len(paths)

    def on_result(i: int, r: SlideResult) -> None:
        results[i] = r
        claim.locks.release(r.slide_id)          # its outputs are written (or it failed): another may take it
        trim_heap()
        _write_summary(fdir, [results[k] for k in sorted(results)])
        if on_slide is not None:
            on_slide(i, r)
        progress(len(results), n_slides, f"{r.slide_id}: {r.status}")

    workers = default_workers(device) if config.num_workers is None else max(0, int(config.num_workers))
    failed_plans: set[int] = set()
    progress(0, n_slides, "starting")
    # rounds of slides: normally one; a patch reader process that dies (a native decoder aborting on a crafted
    # slide) ends its round, and the slides in flight are retried alone until the one that kills it is known
    rounds: deque = deque([list(range(n_slides))])
    while rounds:
        rnd = rounds.popleft()
        stream = _CohortStream(paths, out_dir, config, extractor, on_result, cancelled, raw_share, indices=rnd,
                               take=take, locks=claim.locks)
        loader_it = None
        try:
            loader_it = iter(_loader(stream, config, device, workers))     # held: shut down after a reader dies
            batches = _full_batches(loader_it, config.batch_size, device, DeviceDecoder(device))
            for feats, reqs, errors in _encoded(batches, extractor):
                check_cancelled(cancelled)
                by_slide: dict[int, list[int]] = {}
                for k, r in enumerate(reqs):
                    by_slide.setdefault(r.slide_index, []).append(k)
                for i, ks in by_slide.items():
                    if i in failed_plans:
                        continue
                    plan = stream.plans[i]
                    try:
                        bad = [errors[k] for k in ks if errors[k]]
                        if bad:
                            name = plan.path.name
                            raise DnDError(bad[0] if bad[0].startswith(name) else f"{name}: {bad[0]}")
                        if plan.writer is None:
                            plan.writer = FeatureWriter(plan.paths["h5"], plan.paths["pt"], plan.grid.coords,
                                                        plan.attrs, extractor.dim,
                                                        _file_attrs(extractor, config, plan))
                        plan.writer.write(np.array([reqs[k].row for k in ks]), feats[ks])
                        slide_progress(plan.writer.done, plan.writer.n, f"{plan.slide_id}: {plan.writer.done}/"
                                                                         f"{plan.writer.n} patches")
                        if plan.writer.done == plan.writer.n:
                            plan.writer.finish()
                            on_result(i, SlideResult(plan.slide_id, str(plan.path), "done", plan.writer.n,
                                                     time.perf_counter() - plan.t0,
                                                     features_h5=str(plan.paths["h5"]),
                                                     features_pt=str(plan.paths["pt"]), info=plan.info,
                                                     reader=plan.reader))
                            del stream.plans[i]
                    except Exception as exc:
                        if reader_died(exc):
                            raise        # the patch readers' death, not this slide's failure (handled below)
                        if plan.writer is not None:
                            plan.writer.abort()
                        failed_plans.add(i)
                        r = _failed(plan.path, exc)
                        r.info, r.reader = plan.info, plan.reader
                        on_result(i, r)
            check_cancelled(cancelled)
        except Cancelled:
            for i, plan in list(stream.plans.items()):
                if plan.writer is not None:
                    plan.writer.abort()
                if i not in results:
                    results[i] = SlideResult(plan.slide_id, str(plan.path), "cancelled",
                                             error="cancelled by the user")
            _write_summary(fdir, [results[k] for k in sorted(results)])
            claim.release()
            raise
        except RuntimeError as exc:
            _abort_writers(stream)
            if not reader_died(exc):
                claim.release()
                raise
            # the dead reader stays registered with torch's SIGCHLD handler until its loader shuts down, and
            # would fail the next round at random: shut it down before that round starts
            getattr(loader_it, "_shutdown_workers", lambda: None)()
            try:
                _after_reader_crash(exc, stream, rnd, rounds, results, on_result)
            except BaseException:
                claim.release()
                raise
        except BaseException:
            for plan in stream.plans.values():
                if plan.writer is not None:
                    plan.writer.abort()
            claim.release()
            raise
    claim.release(finished=True)
    if extractor.int8 is not None:
        log.info("encoder: %s", extractor.int8.summary())
    elif extractor.int8_given_up:
        log.warning("encoder: int8 went back to fp32 (%s)", extractor.int8_given_up)
    return [results[k] for k in sorted(results)]


@functools.lru_cache(maxsize=1)
def _malloc_trim():
    try:
        import ctypes
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):    # not glibc (macOS, Windows, musl): nothing to do
        return None


def trim_heap() -> None:
    """Give the C heap's free pages back to the system after a slide. Each batch allocates and frees hundreds
    of MB (patches, the encoder's intermediates) in pieces of many sizes; glibc keeps what fragments, and without
    this the resident size between batches crept up by ~100 MB over the first few dozen slides (measured with
    benchmarks/extract_memory.py); with it, it stays at its first slide's level. A few milliseconds."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


#: ExtractConfig fields that describe one process, not the folder (left out of extraction.json)
_PER_PROCESS = ("shard", "lock_timeout")


class _ClaimWithLocks:
    """The folder's :class:`~.settings.FolderClaim` and this process's slide locks, let go together: every way
    out of :func:`extract_cohort` releases the claim."""

    def __init__(self, claim, locks: SlideLocks):
        self.claim, self.locks = claim, locks

    def release(self, finished: bool = False) -> None:
        try:
            self.claim.release(finished)
        finally:
            self.locks.close()


def _locked_result(path: Path, holder) -> SlideResult:
    return SlideResult(slide_id(path), str(path), "locked", error=f"being extracted by {holder.describe()}")


def reader_died(exc: BaseException) -> bool:
    """Whether ``exc`` is the DataLoader saying a patch reader process died (killed by a signal or exited)."""
    return isinstance(exc, RuntimeError) and "DataLoader worker" in str(exc)


def _abort_writers(stream: _CohortStream) -> None:
    for plan in stream.plans.values():
        if plan.writer is not None:
            plan.writer.abort()
            plan.writer = None


def _after_reader_crash(exc: BaseException, stream: _CohortStream, rnd: list, rounds: deque, results: dict,
                        on_result) -> None:
    """A patch reader died in round ``rnd``: the one slide in flight fails with the reason; several in flight
    are each retried alone (one of them killed it, the others are innocent), then the rest of the round."""
    in_flight = [i for i in stream.plans if i not in results]
    rest = [i for i in rnd if i not in results and i not in in_flight]
    if not in_flight:
        raise DnDError(f"a patch reader process died ({_signal_words(exc)})") from None
    if len(in_flight) == 1:
        plan = stream.plans[in_flight[0]]
        r = SlideResult(plan.slide_id, str(plan.path), "failed",
                        error=f"{plan.path.name}: the slide reader crashed on this file ({_signal_words(exc)}): "
                              "it is damaged or crafted", info=plan.info, reader=plan.reader)
        on_result(in_flight[0], r)
    else:
        log.warning("a patch reader died with %d slides in flight; retrying them one at a time", len(in_flight))
    if rest:
        rounds.appendleft(rest)
    if len(in_flight) > 1:
        for i in reversed(in_flight):
            rounds.appendleft([i])


def _signal_words(exc: BaseException) -> str:
    """ "signal SIGABRT" from torch's "DataLoader worker (pid 12) is killed by signal: Aborted."."""
    import re
    import signal as _signal
    m = re.search(r"killed by signal: ([^.]+)", str(exc))
    if m:
        for sig in _signal.Signals:
            if _signal.strsignal(sig) == m.group(1).strip():
                return f"signal {sig.name}"
        return f"signal: {m.group(1).strip()}"
    return "its process died"


SUMMARY_COLUMNS = ["slide_id", "status", "n_patches", "seconds", "magnification_source", "error", "path", "reader",
                   "reader_note", "process"]


def _keeps(old: Optional[dict], new: SlideResult) -> bool:
    """Whether a summary row already there (maybe another process's) stays instead of ``new``: a 'locked' row
    never replaces one, and a slide that was done stays done when a later look only skipped (or cancelled) it."""
    if old is None:
        return False
    return new.status == "locked" or (new.status in ("skipped", "cancelled") and old.get("status") == "done")


def _write_summary(fdir: Path, results: list[SlideResult]) -> None:
    """``extraction_summary.csv``: one row per slide of the folder, merged (under the folder's mutex) with what
    other processes, and earlier runs, wrote there; ``process`` says which process (pid@host) wrote a row."""
    me = f"{os.getpid()}@{HOSTNAME}"
    path = fdir / "extraction_summary.csv"
    with locked_file(fdir / LOCK_FILE):
        try:
            with open(path, newline="", encoding="utf-8") as f:
                rows = {row["slide_id"]: row for row in csv.DictReader(f) if row.get("slide_id")}
        except (OSError, csv.Error, UnicodeDecodeError):
            rows = {}
        for r in results:
            if _keeps(rows.get(r.slide_id), r):
                continue
            rows[r.slide_id] = dict(zip(SUMMARY_COLUMNS, [
                r.slide_id, r.status, r.n_patches, f"{r.seconds:.2f}", r.info.get("magnification_source", ""),
                r.error, r.path, r.reader or r.info.get("reader", ""), r.info.get("reader_note", ""), me]))
        buf = io.StringIO()
        w = csv.DictWriter(buf, SUMMARY_COLUMNS, restval="", extrasaction="ignore")
        w.writeheader()
        w.writerows(rows.values())
        write_text_atomic(path, buf.getvalue())
