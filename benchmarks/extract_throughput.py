"""Patches/s of `dnd extract` against a CLAM-style loop, same slides and model, as ratios in one run.

(a) The CLAM-style loop is what a first script does: the same per-slide preparation as ``dnd extract``
(tissue, grid, patch file, QC images), then one ``read_region`` per patch in the main process, the same
resize, then the same network in plain fp32 eager mode (contiguous memory format), batch by batch, saving a
``.pt`` per slide. (b) ``dnd extract`` as a user runs it (default settings): the tile-native reader where the
slide allows it (each compressed tile decoded once, JPEG at the DCT scale nearest the target; else
``read_region``), in DataLoader worker processes while the encoder runs, default precision, ``channels_last``,
``inference_mode`` and, where a C++ compiler exists, ``torch.compile`` (its one-off compile time is printed
apart). On a CPU without fast bf16 the default precision is int8, checked against fp32 as it runs (its one-off
quantization is printed apart, like compiling). (c) Each stage of (b) alone: reading + decoding + resizing in the same workers without the encoder
(with the tile reader, and with ``read_region`` for comparison), and the encoder alone on patches already in
memory. (d) The decode bound: the same tiles (c)'s tile reader needs, each decoded exactly once at the same DCT
scale by the same number of processes, nothing else (no assembling, resizing or sending patches anywhere): what
the read stage could reach if decoding were all it did. Every rate is reported against (a), per slide and over
all slides.

On CUDA, (a) is CLAM's own loop (``extract_features_fp.py``): a dataset reading each patch with ``read_region``
and turning it into a normalised fp32 tensor in the worker, a DataLoader with 8 workers and pinned memory,
batch 256, fp32 eager. On a CPU CLAM uses no workers, and (a) is the single-process loop above.

``--read-bound`` runs only (c) with the tile reader and (d), each over all slides at once (one DataLoader, one
pool: readers live across slides as in a cohort), interleaved, ``--repeats`` times (default 5), and
ends with ``read stage / decode bound: R``: R is the median over the runs of (c)'s rate over (d)'s, all slides.

All paths see the same coordinates (the grid ``dnd extract`` made) on the same slides: the bundled real slide,
the TCGA sample from ../shared when present, and a large pyramidal TIFF written at run time from the bundled
slide's real pixels (JPEG tiles, Aperio layout, 20480 px a side by default) so that the run is long enough to
measure and its tiles are real tissue. The encoder's weights are random: speed does not depend on them.

Over all slides, (b) is one ``dnd extract`` run over the whole cohort, as a user runs it (slides prepared ahead
in background threads, readers never idle between slides); ``--copies K`` puts the large slide K times in
that cohort, to show the steady rate of a long cohort without timing the slow loop (a) K times: (a) and the
stages (c) keep no state across slides, so a copy is counted at its original's time. The last line printed
is the ratio (b)/(a) over all slides, e.g. ``3.4x``.

Usage: .venv/bin/python benchmarks/extract_throughput.py [--extractor resnet50_trunc] [--slides FILE ...]
       quick check: ... --extractor stain_stats --large-size 4096 --repeats 1
       read stage against its decoder: ... --read-bound [--workers N]
       on a GPU box: ... --device cuda --copies 12
"""

from __future__ import annotations

import argparse
import copy
import multiprocessing
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import tifffile
import torch
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dnd_engine.features import ExtractConfig, build_extractor, extract_cohort  # noqa: E402
from dnd_engine.features.extract import _prepare_slide, default_workers, tile_bands  # noqa: E402
from dnd_engine.features.patch_dataset import PatchReader, PatchRequest, collate_patches, resize_patch  # noqa: E402
from dnd_engine.features.registry import Extractor, get_spec  # noqa: E402
from dnd_engine.slides import open_slide  # noqa: E402
from dnd_engine.slides.tiles import TileReader, TileSpec  # noqa: E402
from dnd_engine.synth import make_synthetic_cohort  # noqa: E402

BUNDLED = ROOT / "resources" / "sample_slides" / "CMU-1-Small-Region.svs"
DEFAULT_SLIDES = [BUNDLED, ROOT.parent / "shared" / "data" / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"]


# --- the large slide -------------------------------------------------------------------------------------------
def write_large_pyramid(path: Path, source: Path, size: int, tile: int = 256, quality: int = 90) -> Path:
    """A ``size``² Aperio-style JPEG-tiled pyramid (downsamples 1, 4, 16, 64) whose pixels repeat ``source``'s.

    The source's level 0 is cropped to a multiple of 64 px so that every level repeats the source's own
    downsampled image seamlessly; tiles are generated one at a time (no full-size array in memory).
    """
    with open_slide(source) as s:
        src = np.asarray(s.read_region((0, 0), 0, s.dimensions))
        mpp, power = s.mpp or 0.5, s.objective_power or 20.0
    h, w = (src.shape[0] // 64) * 64, (src.shape[1] // 64) * 64
    src = np.ascontiguousarray(src[:h, :w])
    downsamples = [1, 4, 16, 64]

    def tiles(level_img: np.ndarray, lw: int, lh: int):
        sh, sw = level_img.shape[:2]
        big = np.tile(level_img, (-(-(tile + sh) // sh) + 1, -(-(tile + sw) // sw) + 1, 1))
        for y in range(0, lh, tile):
            for x in range(0, lw, tile):
                yield big[y % sh:y % sh + tile, x % sw:x % sw + tile]

    desc = (f"Aperio Image Library v12.0.15\r\n{size}x{size} [0,0 {size}x{size}] ({tile}x{tile}) JPEG/RGB "
            f"Q={quality}|AppMag = {power:g}|MPP = {mpp:.6g}|Filename = {path.name}|Generator = benchmark")
    jpeg = dict(photometric="rgb", compression="jpeg", compressionargs={"level": quality}, metadata=None)
    with tifffile.TiffWriter(path, bigtiff=size > 40000) as tw:
        for i, ds in enumerate(downsamples):
            lw = lh = size // ds
            level_img = src if ds == 1 else cv2.resize(src, (w // ds, h // ds), interpolation=cv2.INTER_AREA)
            res = dict(resolution=(1e4 / mpp / ds,) * 2, resolutionunit="CENTIMETER")
            tw.write(tiles(level_img, lw, lh), shape=(lh, lw, 3), dtype=np.uint8, tile=(tile, tile),
                     description=desc if i == 0 else None, **res, **jpeg)
            if i == 0:   # Aperio's second page: a small stripped thumbnail
                thumb = cv2.resize(src, (max(1, w // 8), max(1, h // 8)), interpolation=cv2.INTER_AREA)
                tw.write(thumb, **jpeg)
    return path


# --- (a) the CLAM-style loop ---------------------------------------------------------------------------------
#: CLAM's extract_features_fp.py on CUDA: ``loader_kwargs = {'num_workers': 8, 'pin_memory': True}``, batch 256
CLAM_WORKERS, CLAM_BATCH = 8, 256


class ClamBag(Dataset):
    """CLAM's ``Whole_Slide_Bag_FP``: patch ``i`` read with ``read_region`` and made a normalised fp32 CHW tensor
    in the worker (its Resize, ToTensor and Normalize; the resize is the reference one). The slide is opened in
    each process on first use."""

    def __init__(self, path: Path, coords: np.ndarray, level: int, read_size: int, out_size: int,
                 mean: torch.Tensor, std: torch.Tensor, normalize: bool = True):
        self.path, self.coords = str(path), np.asarray(coords, dtype=np.int64)
        self.level, self.read_size, self.out_size = int(level), int(read_size), int(out_size)
        self.mean, self.std = mean.detach().cpu().reshape(3, 1, 1), std.detach().cpu().reshape(3, 1, 1)
        self.normalize = normalize
        self._slide, self._pid = None, None

    def __len__(self) -> int:
        return len(self.coords)

    def __getitem__(self, i: int):
        import os
        if self._pid != os.getpid():
            self._slide, self._pid = open_slide(self.path), os.getpid()
        x, y = self.coords[i]
        img = resize_patch(self._slide.read_region((int(x), int(y)), self.level, (self.read_size,) * 2),
                           self.out_size)
        t = torch.from_numpy(img).permute(2, 0, 1).float().div_(255.0)
        if self.normalize:
            t = (t - self.mean) / self.std
        return t, torch.from_numpy(self.coords[i])


def clam_loader(dataset: Dataset, device) -> DataLoader:
    """CLAM's DataLoader: batch 256; on CUDA 8 workers and pinned memory, on a CPU none (its own settings)."""
    kw = dict(num_workers=CLAM_WORKERS, pin_memory=True) if torch.device(device).type == "cuda" else {}
    return DataLoader(dataset, batch_size=CLAM_BATCH, **kw)


def clam_net(extractor: Extractor) -> torch.nn.Module:
    """The encoder as CLAM runs it: a plain fp32 eager copy, contiguous memory format, on the same device."""
    return copy.deepcopy(extractor.net).float().to(memory_format=torch.contiguous_format).eval()


def clam_run(slides: list[Path], out_dir: str, cfg: ExtractConfig, extractor: Extractor) -> int:
    """(a) on CUDA: the same preparation, then CLAM's own loop (one DataLoader per slide, as CLAM makes)."""
    net, device = clam_net(extractor), extractor.device
    n = 0
    for i, sp in enumerate(slides):
        plan = _prepare_slide(i, sp, Path(out_dir), cfg, extractor)
        g = plan.grid
        ds = ClamBag(sp, g.coords, g.patch_level, g.read_size, extractor.spec.input_size or g.patch_size,
                     extractor.mean, extractor.std, extractor.spec.normalize)
        feats = []
        for imgs, _ in clam_loader(ds, device):
            with torch.inference_mode():
                feats.append(net(imgs.to(device, non_blocking=True)).reshape(len(imgs), -1).cpu())
            n += len(imgs)
        torch.save(torch.cat(feats), Path(out_dir) / f"clam_{plan.slide_id}.pt")
    return n


def naive_run(slides: list[Path], out_dir: str, cfg: ExtractConfig, extractor: Extractor) -> int:
    """The same preparation as ``dnd extract`` (tissue, grid, patch file, QC images), then the naive loop; on
    CUDA, CLAM's own DataLoader loop (:func:`clam_run`) instead."""
    if extractor.device.type == "cuda":
        return clam_run(slides, out_dir, cfg, extractor)
    net = copy.deepcopy(extractor.net).to(memory_format=torch.contiguous_format).eval()
    mean, std = extractor.mean, extractor.std
    n = 0
    for i, sp in enumerate(slides):
        plan = _prepare_slide(i, sp, Path(out_dir), cfg, extractor)
        g = plan.grid
        out_size = extractor.spec.input_size or g.patch_size
        feats = []
        with open_slide(sp, fallback_magnification=cfg.base_magnification) as s:
            for k in range(0, len(g), cfg.batch_size):
                imgs = [resize_patch(s.read_region((int(x), int(y)), g.patch_level, (g.read_size,) * 2), out_size)
                        for x, y in g.coords[k:k + cfg.batch_size]]
                x = torch.from_numpy(np.stack(imgs)).to(mean.device).permute(0, 3, 1, 2).float() / 255.0
                if extractor.spec.normalize:
                    x = (x - mean) / std
                with torch.no_grad():
                    feats.append(net(x).reshape(len(imgs), -1).cpu())
                n += len(imgs)
        torch.save(torch.cat(feats), Path(out_dir) / f"naive_{plan.slide_id}.pt")
    return n


# --- (c) the stages alone ------------------------------------------------------------------------------------
def read_only(plan, cfg: ExtractConfig, out_size: int, workers: int, tiles: bool, keep: bool = False):
    """Read, decode and resize every patch of a prepared slide in ``workers`` processes, as ``dnd extract`` does,
    without the encoder: with the slide's tile plan (``tiles``) or one ``read_region`` per patch. Returns
    (patch count, the uint8 batches when ``keep``)."""
    g = plan.grid
    if tiles:
        units = tile_bands(0, g, plan.tile_spec, cfg.batch_size)
    else:
        reqs = [PatchRequest(0, r, str(plan.path), int(x), int(y), g.patch_level, g.read_size, out_size)
                for r, (x, y) in enumerate(g.coords)]
        units = [reqs[k:k + cfg.batch_size] for k in range(0, len(reqs), cfg.batch_size)]
    kw = dict(prefetch_factor=4) if workers > 0 else {}
    loader = DataLoader(PatchReader(), batch_sampler=units, num_workers=workers, collate_fn=collate_patches, **kw)
    n, kept = 0, []
    for imgs, _, errors in loader:
        bad = [e for e in errors if e]
        if bad:
            raise SystemExit(f"{plan.path.name}: {bad[0]}")
        n += len(imgs)
        if keep:
            kept.append(imgs)
    return n, kept


def _decode_tiles(spec: TileSpec, tiles: list) -> int:
    with TileReader(spec) as reader:
        for tx, ty in tiles:
            reader.decode_tile(tx, ty)
    return len(tiles)


def decode_bound_tiles(spec: TileSpec, coords: np.ndarray) -> list:
    """The tiles the tile reader needs for ``coords`` (each once, row-major): what (d) decodes."""
    with TileReader(spec) as reader:
        return reader.tiles_for(coords)


def decode_bound(spec: TileSpec, tiles: list, workers: int) -> int:
    """(d): ``tiles`` decoded once each at the spec's DCT scale by ``workers`` processes (0: this one), in
    contiguous row-major shares, with the tile reader's own decoder, and nothing else. Returns the tile count.
    The processes start here, as (c)'s DataLoader workers do."""
    if workers <= 0:
        return _decode_tiles(spec, tiles)
    shares = [list(part) for part in np.array_split(np.arange(len(tiles)), workers)]
    ctx = multiprocessing.get_context()              # the DataLoader's default context too
    with ctx.Pool(workers) as pool:
        return sum(pool.starmap(_decode_tiles, [(spec, [tiles[i] for i in part]) for part in shares]))


def encode_only(extractor: Extractor, batches: list[torch.Tensor], batch_size: int) -> int:
    """The encoder alone (default precision, compiled when (b) is) on patches already in memory."""
    flat = torch.cat(batches) if batches else torch.empty(0)
    n = 0
    with torch.inference_mode():
        for k in range(0, len(flat), batch_size):
            extractor(flat[k:k + batch_size]).cpu()
            n += len(flat[k:k + batch_size])
    return n


def time_cohort(cohort: list[Path], cfg: ExtractConfig, extractor: Extractor, share, repeats: int):
    """(best seconds of one ``dnd extract`` run over the cohort, patches/s once its first slide was written:
    start-up and the first slide's preparation excluded), with ``device_decode=share``."""
    cfg = copy.copy(cfg)
    cfg.device_decode = share
    best, steady = float("inf"), float("nan")
    for _ in range(repeats):
        finished: list[float] = []                  # when each slide was written

        def on_slide(done: int, total: int, msg: str) -> None:
            if done and msg.endswith(": done"):
                finished.append(time.perf_counter())

        with tempfile.TemporaryDirectory() as out:
            s = time.perf_counter()
            res = extract_cohort(cohort, Path(out), cfg, extractor=extractor, progress=on_slide)
            took = time.perf_counter() - s
        bad = [r for r in res if r.status != "done"]
        if bad:
            raise SystemExit(f"cohort run: {bad[0].slide_id} {bad[0].status}: {bad[0].error}")
        if took < best:
            best = took
            n_first = next((r.n_patches for r in res if r.status == "done"), 0)
            if len(finished) > 1:
                steady = (sum(r.n_patches for r in res) - n_first) / (finished[-1] - finished[0])
    return best, steady


@dataclass
class SlideTimes:
    path: Path
    n: int = 0
    reader: str = ""
    best: dict = field(default_factory=lambda: {k: float("inf") for k in ("a", "b", "read_tiles", "read_region",
                                                                          "encode", "decode")})

    def rate(self, key: str) -> float:
        return self.n / self.best[key] if self.best[key] < float("inf") else float("nan")


def measure_slide(sp: Path, tmp: Path, cfg: ExtractConfig, extractor: Extractor, workers: int, repeats: int,
                  out_size: int) -> SlideTimes:
    t = SlideTimes(sp)
    # warm-up: makes the coordinates, loads libraries and the model's kernels (and compiles, once)
    res = extract_cohort([sp], tmp, cfg, extractor=extractor)[0]
    if res.status != "done":
        raise SystemExit(f"extraction failed: {res.error}")
    t.n = res.n_patches
    t.reader = f"{res.reader} ({res.info.get('reader_note', '')})"
    plan = _prepare_slide(0, sp, tmp, cfg, extractor)
    _, batches = read_only(plan, cfg, out_size, workers, tiles=plan.tile_spec is not None, keep=True)
    tiles = decode_bound_tiles(plan.tile_spec, plan.grid.coords) if plan.tile_spec is not None else []
    for _ in range(repeats):          # interleaved, so drift hits every path alike
        s = time.perf_counter()
        extract_cohort([sp], tmp, cfg, extractor=extractor)
        t.best["b"] = min(t.best["b"], time.perf_counter() - s)
        s = time.perf_counter()
        assert naive_run([sp], str(tmp), cfg, extractor) == t.n
        t.best["a"] = min(t.best["a"], time.perf_counter() - s)
        if plan.tile_spec is not None:
            s = time.perf_counter()
            assert read_only(plan, cfg, out_size, workers, tiles=True)[0] == t.n
            t.best["read_tiles"] = min(t.best["read_tiles"], time.perf_counter() - s)
            s = time.perf_counter()
            assert decode_bound(plan.tile_spec, tiles, workers) == len(tiles)
            t.best["decode"] = min(t.best["decode"], time.perf_counter() - s)
        s = time.perf_counter()
        assert read_only(plan, cfg, out_size, workers, tiles=False)[0] == t.n
        t.best["read_region"] = min(t.best["read_region"], time.perf_counter() - s)
        s = time.perf_counter()
        assert encode_only(extractor, batches, cfg.batch_size) == t.n
        t.best["encode"] = min(t.best["encode"], time.perf_counter() - s)
    return t


def read_cohort(plans: list, cfg: ExtractConfig, workers: int) -> int:
    """(c) over several slides in one DataLoader, as ``dnd extract`` reads a cohort (its readers live across
    slides): every slide's tile bands in one stream. Returns the patch count."""
    units = [u for j, plan in enumerate(plans) for u in tile_bands(j, plan.grid, plan.tile_spec, cfg.batch_size)]
    kw = dict(prefetch_factor=4) if workers > 0 else {}
    loader = DataLoader(PatchReader(), batch_sampler=units, num_workers=workers, collate_fn=collate_patches, **kw)
    n = 0
    for imgs, _, errors in loader:
        bad = [e for e in errors if e]
        if bad:
            raise SystemExit(bad[0])
        n += len(imgs)
    return n


def decode_cohort(plans: list, tiles: list, workers: int) -> int:
    """(d) over the same slides in one pool: each slide's tiles in ``workers`` contiguous shares."""
    if workers <= 0:
        return sum(_decode_tiles(p.tile_spec, t) for p, t in zip(plans, tiles))
    tasks = [(p.tile_spec, [t[i] for i in part]) for p, t in zip(plans, tiles)
             for part in np.array_split(np.arange(len(t)), workers) if len(part)]
    with multiprocessing.get_context().Pool(workers) as pool:
        return sum(pool.starmap(_decode_tiles, tasks))


def read_bound(slides: list[Path], args) -> None:
    """``--read-bound``: (c) with the tile reader against (d) over every slide the tile reader takes, each arm
    one run over all of them (readers and decoders start once, as in a cohort), interleaved with the order
    alternating, ``repeats`` times; the ratio per run, its spread, and their median last."""
    out_size = get_spec(args.extractor).input_size or 256
    cfg = ExtractConfig(extractor=args.extractor, base_magnification=args.base_magnification,
                        batch_size=args.batch_size, overwrite=True)
    workers = default_workers(args.device) if args.workers is None else args.workers
    repeats = max(1, args.repeats)
    plans, tiles = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for sp in slides:
            plan = _prepare_slide(0, sp, Path(tmp), cfg, out_size)
            if plan.tile_spec is None:
                print(f"{sp.name}: left out, not read by the tile reader ({plan.info.get('reader_note', '')})")
                continue
            plans.append(plan)
            tiles.append(decode_bound_tiles(plan.tile_spec, plan.grid.coords))
        if not plans:
            raise SystemExit("no slide here is read by the tile reader")
        n, n_tiles = sum(len(p.grid) for p in plans), sum(len(t) for t in tiles)
        read_cohort(plans, cfg, workers)                 # warm-up: page cache, libraries
        tc, td = np.zeros(repeats), np.zeros(repeats)
        for r in range(repeats):
            for arm in ("c", "d") if r % 2 == 0 else ("d", "c"):
                s = time.perf_counter()
                if arm == "c":
                    assert read_cohort(plans, cfg, workers) == n
                    tc[r] = time.perf_counter() - s
                else:
                    assert decode_cohort(plans, tiles, workers) == n_tiles
                    td[r] = time.perf_counter() - s
    print(f"read stage (c) against its decode bound (d): {workers} processes each, output {out_size} px, "
          f"{repeats} interleaved runs; {multiprocessing.cpu_count()} CPUs")
    for plan, t in zip(plans, tiles):
        print(f"  {plan.path.name}: {len(plan.grid)} patches, {len(t)} tiles ({plan.tile_spec.describe()})")
    per_run = td / tc
    print(f"  all slides, {n} patches from {n_tiles} tiles: (c) {n / tc.min():.0f} patches/s, (d) "
          f"{n_tiles / td.min():.0f} tiles/s = {n / td.min():.0f} patches/s (best of each: (c)/(d) "
          f"{td.min() / tc.min():.2f}); (c)/(d) per run: "
          f"{', '.join(f'{x:.2f}' for x in per_run)} (spread {per_run.min():.2f}-{per_run.max():.2f})")
    # the median of the runs' own ratios: both arms of a run see the same load, so a burst of other work on a
    # shared machine moves a run's ratio less than it moves a best-of-each ratio (one arm's quiet moment)
    print(f"read stage / decode bound: {float(np.median(per_run)):.2f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--extractor", default="resnet50_trunc")
    ap.add_argument("--slides", nargs="*", type=Path, default=None, help="instead of the default set")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--base-magnification", type=float, default=20.0,
                    help="assumed for slides without metadata (the TCGA sample has none)")
    ap.add_argument("--repeats", type=int, default=None, help="best of N runs of every path (default 1: the "
                    "whole default run fits in ten minutes on a 2-core CPU; 5 with --read-bound)")
    ap.add_argument("--large-size", type=int, default=20480,
                    help="side of the pyramid written from the bundled slide's pixels (0: none)")
    ap.add_argument("--read-bound", action="store_true",
                    help="only (c) with the tile reader and (d), the decode bound; ends with their ratio")
    ap.add_argument("--copies", type=int, default=1,
                    help="the large slide appears this many times in the cohort run (symlinks): a cohort long "
                         "enough to show the steady rate, each slide prepared while the one before is read")
    ap.add_argument("--device-decode", type=float, nargs="*", default=None, metavar="SHARE",
                    help="dnd extract's device_decode for the cohort run (default: auto); several values time "
                         "one cohort run each, the first is the one reported as (b)")
    ap.add_argument("--synthetic", type=int, default=0, help="`dnd synth` slides added to the default set")
    ap.add_argument("--synthetic-size", type=int, default=6144)
    ap.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--workers", type=int, default=None, help="reading processes (default: dnd extract's)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: every path runs its model there")
    ap.add_argument("--precision", default="auto", help="dnd extract's precision (the CLAM-style loop is fp32)")
    args = ap.parse_args()
    if args.repeats is None:
        args.repeats = 5 if args.read_bound else 1
    tmp_slides = tempfile.TemporaryDirectory()
    slides = [p for p in (args.slides or DEFAULT_SLIDES) if p.exists()]
    big = None
    if not args.slides:
        if args.large_size > 0:
            t = time.perf_counter()
            big = write_large_pyramid(Path(tmp_slides.name) / f"cmu_tiled_{args.large_size}.svs", BUNDLED,
                                      args.large_size)
            print(f"wrote {big.name}: {args.large_size}x{args.large_size} JPEG-tiled pyramid from the bundled slide's "
                  f"pixels in {time.perf_counter() - t:.0f} s ({big.stat().st_size / 2**20:.0f} MiB)")
            slides.append(big)
        if args.synthetic > 0:
            cohort = make_synthetic_cohort(tmp_slides.name, n_slides=args.synthetic, size=args.synthetic_size, seed=1)
            slides += [s.path for s in cohort.slides]
    if not slides:
        raise SystemExit("no benchmark slides found")
    if args.read_bound:
        read_bound(slides, args)
        return
    torch.manual_seed(0)
    extractor = build_extractor(args.extractor, random_init=True, device=args.device, precision=args.precision)
    cfg = ExtractConfig(extractor=args.extractor, base_magnification=args.base_magnification,
                        batch_size=args.batch_size, overwrite=True, device=args.device, precision=args.precision,
                        compile=args.compile, num_workers=args.workers)
    workers = default_workers(extractor.device) if args.workers is None else args.workers
    out_size = extractor.spec.input_size or cfg.patch_size
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for sp in slides:
            times.append(measure_slide(sp, Path(tmp), cfg, extractor, workers, args.repeats, out_size))
        # the cohort as a user runs it: one `dnd extract` over every slide (and the large slide's copies)
        cohort = list(slides)
        if big is not None and args.copies > 1:
            for k in range(1, args.copies):
                link = Path(tmp_slides.name) / f"{big.stem}_copy{k}{big.suffix}"
                link.symlink_to(big)
                cohort.append(link)
        cohort_runs = {share: time_cohort(cohort, cfg, extractor, share, args.repeats)
                       for share in (args.device_decode or [None])}
        cohort_best, steady = next(iter(cohort_runs.values()))

    print(f"slides: {', '.join(p.name for p in slides)}; {sum(t.n for t in times)} patches at 10x; extractor "
          f"{args.extractor} (random weights), batch {args.batch_size}, device {extractor.device}, dnd extract "
          f"precision {extractor.precision}, {torch.get_num_threads()} threads, {workers} reading workers")
    print(f"torch.compile: {'on, one-off compile ' + format(extractor.compile_seconds, '.1f') + ' s (not in the rates)' if extractor.compiled else 'off'}")
    if extractor.int8 is not None:
        print(f"int8: quantized on the first batch in {extractor.int8.calibration_seconds:.1f} s (not in the "
              f"rates); {extractor.int8.summary()}")
    elif extractor.int8_given_up:
        print(f"int8 went back to fp32: {extractor.int8_given_up}")
    print("(a) and (b) both do the same tissue segmentation, grid, patch file and QC images per slide; (c) is the "
          f"feature stage only. Best of {args.repeats}; patches/s and ratio to (a):")
    a_text = (f"(a) CLAM's loop: read_region per patch, {CLAM_WORKERS} workers, pinned, batch {CLAM_BATCH}, fp32"
              if extractor.device.type == "cuda" else
              "(a) CLAM-style loop: read_region per patch in the main process, eager fp32")
    rows = [("a", a_text),
            ("b", f"(b) dnd extract defaults: tile reader where eligible, {extractor.precision}"),
            ("read_tiles", f"(c) read+decode+resize only, tile reader, {workers} workers"),
            ("read_region", f"(c) read+decode+resize only, read_region, {workers} workers"),
            ("encode", f"(c) encode only, {extractor.precision}{', compiled' if extractor.compiled else ''}"),
            ("decode", f"(d) decode bound: (c)'s tiles decoded once each, {workers} processes")]

    def report(label: str, n: int, best: dict, b_text: str = "") -> None:
        print(f"  {label}: {n} patches")
        base = n / best["a"]
        for key, text in rows:
            if best[key] < float("inf"):
                rate = n / best[key]
                print(f"    {(b_text if key == 'b' and b_text else text):<78} {rate:9.2f}/s  {rate / base:6.2f}x")

    for t in times:
        report(f"{t.path.name} [reader {t.reader}]", t.n, t.best)
    # every slide once, and the large slide's copies: (a) and the stages have no state across slides, so a copy
    # costs what its original took; (b) is the one cohort run, timed as a whole
    weight = [args.copies if (big is not None and t.path == big) else 1 for t in times]
    total = {k: sum(w * t.best[k] for w, t in zip(weight, times)) for k in ("a", "read_region", "encode")}
    total["b"] = cohort_best
    for key in ("read_tiles", "decode"):
        if all(t.best[key] < float("inf") for t in times):
            total[key] = sum(w * t.best[key] for w, t in zip(weight, times))
        else:
            total[key] = float("inf")
    n_total = sum(w * t.n for w, t in zip(weight, times))
    label = "all slides" + (f" ({big.name} {args.copies} times; (a) and (c) count each copy at its original's "
                            "time)" if big is not None and args.copies > 1 else "")
    report(label, n_total, total, f"(b) dnd extract, every slide in one cohort run, {extractor.precision}"
           + (f", device_decode {args.device_decode[0]:g}" if args.device_decode else ""))
    for share, (took, rate) in cohort_runs.items():
        name = "auto" if share is None else f"{share:g}"
        print(f"  (b) cohort run, device_decode {name}: {n_total / took:.0f} patches/s over all, "
              + (f"{rate:.0f} patches/s after its first slide was written (start-up and the first slide's "
                 "preparation excluded)" if rate == rate else "one slide only"))
    print(f"ratio dnd extract (b) / CLAM-style loop (a), all slides: {(n_total / total['b']) / (n_total / total['a']):.1f}x")

if __name__ == "__main__":
    main()
