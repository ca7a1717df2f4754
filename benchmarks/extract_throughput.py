"""Patches/s of `dnd extract` against a naive loop, same slides and model, as a ratio in one run.

The naive loop is what a first script does: the same per-slide preparation as ``dnd extract`` (tissue, grid,
patch file, QC images), then one ``read_region`` per patch in the main process, the same resize, then the same
network in plain fp32 eager mode (contiguous memory format), batch by batch, saving a ``.pt`` per slide. ``dnd extract`` reads in
DataLoader worker processes while the encoder runs, with ``channels_last``, ``inference_mode`` and (where a C++
compiler exists) ``torch.compile`` with frozen weights, whose one-off compile time is printed apart. Both see the
same coordinates (the grid ``dnd extract`` made) on the same slides: the bundled real slide, the TCGA sample from
../shared when present, and a few synthetic slides written at run time (``dnd synth``) so that the run is long
enough to measure. The encoder's weights are random: speed does not depend on them.

Usage: .venv/bin/python benchmarks/extract_throughput.py [--extractor resnet50_trunc] [--slides FILE ...]
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dnd_engine.features import ExtractConfig, build_extractor, extract_cohort  # noqa: E402
from dnd_engine.features.extract import _prepare_slide, default_workers  # noqa: E402
from dnd_engine.features.patch_dataset import resize_patch  # noqa: E402
from dnd_engine.features.registry import Extractor  # noqa: E402
from dnd_engine.slides import open_slide  # noqa: E402
from dnd_engine.synth import make_synthetic_cohort  # noqa: E402

DEFAULT_SLIDES = [ROOT / "resources" / "sample_slides" / "CMU-1-Small-Region.svs",
                  ROOT.parent / "shared" / "data" / "wsi" / "tcga-cr-7395-01a-01-ts1.svs"]


def naive_run(slides: list[Path], out_dir: str, cfg: ExtractConfig, extractor: Extractor) -> int:
    """The same preparation as ``dnd extract`` (tissue, grid, patch file, QC images), then the naive loop."""
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--extractor", default="resnet50_trunc")
    ap.add_argument("--slides", nargs="*", type=Path, default=None)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--base-magnification", type=float, default=20.0,
                    help="assumed for slides without metadata (the TCGA sample has none)")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--synthetic", type=int, default=3, help="synthetic slides added to the default set")
    ap.add_argument("--synthetic-size", type=int, default=6144)
    ap.add_argument("--compile", choices=["auto", "on", "off"], default="auto")
    ap.add_argument("--workers", type=int, default=None, help="reading processes (default: dnd extract's)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda: both paths run their model there")
    ap.add_argument("--precision", default="auto", help="dnd extract's precision (the naive loop is fp32)")
    args = ap.parse_args()
    tmp_slides = tempfile.TemporaryDirectory()
    slides = [p for p in (args.slides or DEFAULT_SLIDES) if p.exists()]
    if not args.slides and args.synthetic > 0:
        cohort = make_synthetic_cohort(tmp_slides.name, n_slides=args.synthetic, size=args.synthetic_size, seed=1)
        slides += [s.path for s in cohort.slides]
    if not slides:
        raise SystemExit("no benchmark slides found")
    torch.manual_seed(0)
    extractor = build_extractor(args.extractor, random_init=True, device=args.device, precision=args.precision)
    cfg = ExtractConfig(extractor=args.extractor, base_magnification=args.base_magnification,
                        batch_size=args.batch_size, overwrite=True, device=args.device, precision=args.precision,
                        compile=args.compile, num_workers=args.workers)
    best_ours, best_naive = float("inf"), float("inf")
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up run: makes the coordinates, loads libraries and the model's kernels
        results = extract_cohort(slides, tmp, cfg, extractor=extractor)
        bad = [r for r in results if r.status != "done"]
        if bad:
            raise SystemExit(f"extraction failed: {bad[0].error}")
        n_total = sum(r.n_patches for r in results)
        for _ in range(args.repeats):          # interleaved, so drift hits both alike
            t = time.perf_counter()
            extract_cohort(slides, tmp, cfg, extractor=extractor)
            best_ours = min(best_ours, time.perf_counter() - t)
            t = time.perf_counter()
            n = naive_run(slides, tmp, cfg, extractor)
            best_naive = min(best_naive, time.perf_counter() - t)
            assert n == n_total
    ours, naive = n_total / best_ours, n_total / best_naive
    print(f"slides: {', '.join(p.name for p in slides)}; {n_total} patches at 10x; extractor {args.extractor} "
          f"(random weights), batch {args.batch_size}, device {extractor.device}, dnd extract precision "
          f"{extractor.precision}, {torch.get_num_threads()} threads, {default_workers(extractor.device)} reading workers")
    print(f"torch.compile: {'on, one-off compile ' + format(extractor.compile_seconds, '.1f') + ' s (not in the rates)' if extractor.compiled else 'off'}")
    print("both do the same tissue segmentation, grid, patch file and QC images per slide; then")
    print(f"  naive loop (read_region per patch in the main process, eager fp32 model): {naive:7.2f} patches/s")
    print(f"  dnd extract (reading workers; channels_last/compile where they apply):  {ours:7.2f} patches/s")
    print(f"ratio dnd extract / naive: {ours / naive:.2f}x")


if __name__ == "__main__":
    main()
