"""`dnd` — the engine's command line. Errors the user can fix print one line, never a traceback."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Optional

from .. import __version__
from ..errors import Cancelled, DnDError
# the shared bars and range checks (common.py), under the names this module's commands have always used
from .common import CohortBars as _Bars
from .common import check_power as _check_power, check_range as _check_range


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="print a slide's properties (levels, mpp, magnification)",
                       description="Print the properties of one or more slides.")
    p.add_argument("slides", nargs="+", metavar="SLIDE")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--base-magnification", type=float, default=None, metavar="X",
                   help="objective power to assume when the file has neither magnification nor pixel size")
    p.add_argument("--objective-power", type=float, default=None, metavar="X",
                   help="override the objective power the file states (for wrong headers)")
    p.set_defaults(func=cmd_info)


def _add_extract(sub) -> None:
    from ..features import EXTRACTORS
    from ..tissue import PRESETS
    p = sub.add_parser(
        "extract", help="segment tissue, cut patches and extract features for every slide in a folder",
        description="Tissue segmentation → patch grid → patch features for every slide, with CLAM/TRIDENT-style "
                    "outputs. A slide that fails is reported and skipped; finished slides are skipped on re-run.",
        epilog="Extractors: " + "; ".join(f"{n}: {s.description}" for n, s in EXTRACTORS.items()))
    p.add_argument("--slides", required=True, help="folder of slides (or one slide file)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--extractor", choices=list(EXTRACTORS), default="stain_stats",
                   help="feature extractor (default: stain_stats, the weight-free offline choice)")
    p.add_argument("--weights", default=None, metavar="FILE", help="extractor weights file (else the caches)")
    p.add_argument("--magnification", type=float, default=10.0, help="target magnification (default 10)")
    p.add_argument("--patch-size", type=int, default=256, help="patch size in pixels at that magnification")
    p.add_argument("--overlap", type=float, default=0.0, help="patch overlap as a fraction, 0 ≤ x < 1")
    p.add_argument("--min-tissue", type=float, default=0.25, help="minimum tissue fraction of a patch")
    p.add_argument("--tissue-preset", choices=list(PRESETS), default="default")
    p.add_argument("--tissue-threshold", type=int, default=None, metavar="S",
                   help="fixed saturation threshold 0-255 (overrides the preset)")
    p.add_argument("--base-magnification", type=float, default=None, metavar="X",
                   help="objective power to assume for slides whose files carry no magnification or mpp")
    p.add_argument("--objective-power", type=float, default=None, metavar="X",
                   help="override every slide's stated objective power (for wrong headers)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=None, help="patch-reading processes (default: one per core, ≤ 4)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--devices", default=None, metavar="LIST",
                   help="one encoder process per device, sharing the cohort's slides: cuda:0,cuda:1 (cuda: every "
                        "GPU; cpu,cpu: two CPU processes splitting the cores); --workers then counts per process")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16", "int8"], default="auto",
                   help="fp32 is the reference. auto = bf16/fp16 autocast on CUDA; on a CPU bf16 where it has "
                        "AVX512-BF16/AMX, else int8 for ResNet-50-trunc (checked against fp32 as it runs, back to "
                        "fp32 if a patch falls below cosine 0.999), else fp32")
    p.add_argument("--compile", choices=["auto", "on", "off"], default="auto",
                   help="torch.compile the encoder: a one-off 15-60 s, then ~1.4x faster on CPU (auto: when a "
                        "C++ compiler is installed and the extractor is a network)")
    p.add_argument("--reader", choices=["auto", "tiles", "openslide"], default="auto",
                   help="how patches are read: auto = the tile-native reader (each JPEG tile decoded once, at the "
                        "DCT scale nearest the target) for tiled TIFF/SVS slides it accepts, else read_region; "
                        "tiles = the tile reader or fail; openslide = read_region only (the reference)")
    p.add_argument("--device-decode", type=float, default=None, metavar="SHARE",
                   help="share (0-1) of the tile reader's JPEG blocks decoded on the encoder's device (nvJPEG on a "
                        "GPU) while the reading processes decode the rest; default: 0.3 on CUDA, 0 on CPU")
    p.add_argument("--ray", default=None, metavar="ADDRESS",
                   help="run on a Ray cluster (needs dnd-studio[cluster]): auto = the cluster RAY_ADDRESS names or "
                        "the one running here; local = a private Ray instance on this machine; HOST:PORT = that "
                        "cluster's head. Slides and --out must be on a folder every node sees")
    p.add_argument("--overwrite", action="store_true", help="recompute slides whose features already exist")
    p.add_argument("--shard", default=None, metavar="I/N",
                   help="take part I of N of the cohort (1-based; slides sorted by id, every N-th): for job arrays, "
                        "e.g. --shard ${SLURM_ARRAY_TASK_ID}/8. Any number of processes may share one --out: each "
                        "slide is locked while one works on it, and skipped by the others")
    p.add_argument("--lock-timeout", type=float, default=None, metavar="SECONDS",
                   help="a slide lock not refreshed for this long is taken over (its holder, on another machine, "
                        "died); a lock of a dead process on this machine is taken over at once (default 600)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_extract)


def _add_synth(sub) -> None:
    p = sub.add_parser("synth", help="generate a labelled synthetic cohort of pyramidal TIFF slides",
                       description="Write small pyramidal TIFF slides with tissue-like texture and planted "
                                   "lesions (ground-truth masks saved) and a labels CSV, for tests and demos.")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--n-slides", type=int, default=12)
    p.add_argument("--n-classes", type=int, default=2)
    p.add_argument("--size", type=int, default=4096, help="level-0 side in pixels")
    p.add_argument("--magnification", type=float, default=20.0, help="objective power written in the files")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="run the main job on the bundled data (the README's first command)",
                       description="Synthetic cohort with planted lesions → tissue, patches, weight-free features → "
                                   "D&D (base, clusters, experts, student) with base vs D&D on held-out folds → "
                                   "prediction and heatmaps for the bundled real slide and a held-out lesion "
                                   "slide; prints where every output went. A few minutes on 2 CPU cores.")
    p.add_argument("--out", default="demo_output", help="output folder (default: demo_output)")
    p.add_argument("--n-slides", type=int, default=24, help="synthetic slides (default 24)")
    p.add_argument("--size", type=int, default=3072, help="level-0 side of each synthetic slide in pixels")
    p.add_argument("--folds", type=int, default=3, help="cross-validation folds for base vs D&D (default 3)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dnd", description="D&D Studio engine: whole-slide MIL classification with Divide-and-Distill.")
    parser.add_argument("--version", action="version", version=f"dnd {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for unexpected errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_info(sub)
    _add_extract(sub)
    _add_synth(sub)
    _add_demo(sub)
    from .bench_cmd import add_bench
    from .predict_cmd import add_predict
    from .train_cmd import add_train
    add_train(sub)
    add_bench(sub)
    add_predict(sub)
    return parser


# --- argument checks: what argparse's types cannot say (ranges; common.py), refused before any work starts ---
def _check_extract_args(args) -> None:
    _check_range("--batch-size", args.batch_size, 1, 4096, "a whole number")
    _check_range("--workers", args.workers, 0, 64, "a whole number")
    _check_range("--tissue-threshold", args.tissue_threshold, 0, 255, "a saturation")
    _check_power("--base-magnification", args.base_magnification)
    _check_power("--objective-power", args.objective_power)
    if args.ray is not None:      # refused before any work: a bad address, or Ray not installed
        from ..features.ray_runner import check_address, import_ray
        args.ray = check_address(args.ray)
        import_ray()
    _check_range("--lock-timeout", args.lock_timeout, 1, 7 * 24 * 3600, "seconds")
    if args.shard is not None:
        from ..features.claims import parse_shard
        try:
            parse_shard(args.shard)
        except DnDError as exc:
            raise DnDError(f"--{exc}") from None


# --- commands ---------------------------------------------------------------------------------------------
def cmd_info(args) -> int:
    from ..slides import open_slide
    _check_power("--base-magnification", args.base_magnification)
    _check_power("--objective-power", args.objective_power)
    failed = 0
    infos = []
    for s in args.slides:
        try:
            with open_slide(s, objective_power=args.objective_power,
                            fallback_magnification=args.base_magnification) as slide:
                infos.append(slide.info())
        except DnDError as exc:
            print(f"error: {exc}", file=sys.stderr)
            failed += 1
    if args.json:
        print(json.dumps(infos if len(args.slides) > 1 else (infos[0] if infos else {}), indent=2))
    else:
        for info in infos:
            print(_format_info(info))
    return 1 if failed else 0


def _format_info(info: dict) -> str:
    mag = info["objective_power"]
    rows = [
        ("slide", info["slide_id"]),
        ("file", info["path"]),
        ("reader", f"{info['backend']} ({info['vendor']})"),
        ("dimensions", "{} x {} px".format(*info["dimensions"])),
        ("mpp", f"{info['mpp']:.4f} µm/px" if info["mpp"] else "unknown"),
        ("objective", f"{mag:g}x (from {info['magnification_source']})" if mag else
         "unknown (pass --base-magnification)"),
        ("levels", str(info["level_count"])),
    ]
    for i, (d, ds) in enumerate(zip(info["level_dimensions"], info["level_downsamples"])):
        m = f", {mag / ds:.3g}x" if mag else ""
        rows.append((f"  level {i}", f"{d[0]} x {d[1]} px, downsample {ds:g}{m}"))
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{w}}  {v}" for k, v in rows)


def cmd_extract(args) -> int:
    _check_extract_args(args)
    if args.devices is not None:
        from ..features.devices import parse_devices
        if args.device != "auto":
            raise DnDError("give --device or --devices, not both")
        if args.ray:
            raise DnDError("give --devices (this machine's devices) or --ray (a cluster's), not both")
        parse_devices(args.devices)        # a bad list is refused before any work starts
    from ..features import ExtractConfig, extract_cohort, feature_dir_for
    from ..features.settings import SettingsMismatch
    cfg = ExtractConfig(
        extractor=args.extractor, weights=args.weights, magnification=args.magnification,
        patch_size=args.patch_size, overlap=args.overlap, min_tissue=args.min_tissue,
        tissue_preset=args.tissue_preset, tissue_threshold=args.tissue_threshold,
        base_magnification=args.base_magnification, objective_power=args.objective_power,
        batch_size=args.batch_size, num_workers=args.workers,
        device=args.device, precision=args.precision, compile=args.compile, reader=args.reader,
        device_decode=args.device_decode, devices=args.devices,
        overwrite=args.overwrite, ray=args.ray, shard=args.shard)
    if args.lock_timeout is not None:
        cfg.lock_timeout = args.lock_timeout
    try:
        cfg.patch_params().validate()
    except ValueError as exc:
        raise DnDError(str(exc)) from None
    bars = _Bars(args.quiet or not sys.stderr.isatty())
    t0 = time.perf_counter()
    try:
        results = extract_cohort(args.slides, args.out, cfg, progress=bars.cohort_progress,
                                 slide_progress=bars.slide_progress)
    except SettingsMismatch as exc:    # the folder's files have other settings: refused, nothing written
        raise exc.with_hints({"files": "use another --out or --overwrite",
                              "outside": "move those files away or use another --out",
                              "busy": "wait for it to finish or use another --out"}) from None
    finally:
        bars.close()
    dt = time.perf_counter() - t0
    w = max([len(r.slide_id) for r in results] + [5])
    print(f"{'slide':<{w}}  {'status':<8} {'patches':>8} {'seconds':>8}  note")
    for r in results:
        note = r.error if r.error else (f"magnification from {r.info.get('magnification_source')}"
                                        if r.info.get("magnification_source") in ("assumed",) else "")
        if args.devices is not None and "device" in r.info:
            note = f"[{r.info['device']} #{r.info['device_slot'] + 1}] {note}".rstrip()
        print(f"{r.slide_id:<{w}}  {r.status:<8} {r.n_patches:>8} {r.seconds:>8.1f}  {note}")
    n_ok = sum(r.status in ("done", "skipped") for r in results)
    n_locked = sum(r.status == "locked" for r in results)      # other processes on this folder have them
    n_patches = sum(r.n_patches for r in results if r.status == "done")
    print(f"{n_ok}/{len(results)} slides ok" + (f", {n_locked} being extracted by other processes" if n_locked else "")
          + f", {n_patches} patches extracted in {dt:.1f} s"
          + (f" ({n_patches / dt:.1f} patches/s)" if n_patches else ""))
    print(f"features: {feature_dir_for(args.out, args.extractor)}")
    if n_ok + n_locked == len(results):
        return 0
    return 3 if n_ok else 1


def cmd_synth(args) -> int:
    from ..synth import make_synthetic_cohort
    t0 = time.perf_counter()

    def progress(done, total, msg):
        print(f"[{done}/{total}] {msg}", file=sys.stderr)

    cohort = make_synthetic_cohort(args.out, n_slides=args.n_slides, n_classes=args.n_classes, size=args.size,
                                   magnification=args.magnification, seed=args.seed, progress=progress)
    counts = {c: sum(s.label == c for s in cohort.slides) for c in cohort.class_names}
    print(f"{len(cohort.slides)} slides in {time.perf_counter() - t0:.1f} s: "
          + ", ".join(f"{c} {n}" for c, n in counts.items()))
    print(f"slides: {Path(cohort.out_dir) / 'slides'}")
    print(f"labels: {cohort.labels_csv}")
    return 0


def cmd_demo(args) -> int:
    from ..demo import run_demo
    from ..synth import check_synth_arguments
    if args.n_slides < 4:
        raise DnDError(f"--n-slides must be at least 4 (two classes in at least two folds), got {args.n_slides}")
    check_synth_arguments(args.n_slides, 2, args.size, 20.0, args.seed)      # before minutes of work, not after
    _check_range("--folds", args.folds, 2, max(2, args.n_slides // 2), "a whole number")
    bars = _Bars(not sys.stderr.isatty())
    try:
        res = run_demo(args.out, n_slides=args.n_slides, size=args.size, seed=args.seed, folds=args.folds,
                       progress=bars.cohort_progress, log=lambda m: print(m, file=sys.stderr))
    finally:
        bars.close()
    print(f"demo finished in {res.seconds:.0f} s")
    print(res.table)
    if res.heatmap_auc == res.heatmap_auc:
        print(f"heatmap check: the student's patch scores rank planted-lesion patches above normal ones with "
              f"patch-level AUC {res.heatmap_auc:.3f} (held-out lesion slides of the deployed fold)")
    for p in res.predictions:
        if p.status == "done":
            print(f"prediction {p.slide_id}: {p.predicted} (" + ", ".join(f"{x:.3f}" for x in p.probs) + ")"
                  + (" — the demo model knows only synthetic slides; this shows the chain, not a diagnosis"
                     if not p.slide_id.startswith("synth") else ""))
            print(f"  heatmap: {p.outputs.get('student_png')}")
            print(f"  GeoJSON: {p.outputs.get('student_geojson')}")
        else:
            print(f"prediction {p.slide_id}: failed — {p.error}")
    for name, path in res.paths.items():
        print(f"  {name + ':':34s}{Path(path).resolve()}")
    return 0 if all(p.status == "done" for p in res.predictions) else 1


def main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except Cancelled:
        print("cancelled", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted: finished slides are kept, the slide in progress left no partial file", file=sys.stderr)
        return 130
    except DnDError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:
        if args.debug:
            raise
        print(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} "
              "(run with --debug for details)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
