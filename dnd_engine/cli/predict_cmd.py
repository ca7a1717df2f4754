"""`dnd predict`: classify raw slides with a trained model, writing predictions and heatmaps."""

from __future__ import annotations

from pathlib import Path

from .common import ProgressBar, check_power, say


def add_predict(sub) -> None:
    from ..predict import HEATMAP_CHOICES
    p = sub.add_parser(
        "predict", help="classify raw slides with a trained model and write heatmaps",
        description="Tissue → patches → features → model for each slide, after checking the model card against "
                    "the slide (extractor and weights present, magnification reachable). Writes "
                    "predictions.csv and, per slide, heatmap PNG + GeoJSON (QuPath opens it). Into an existing "
                    "--out folder, predictions accumulate: each slide's row is added to its predictions.csv, a "
                    "slide classified again by the same model replaces its own row (and its heatmaps), and the "
                    "rows of other slides and other models are kept.")
    p.add_argument("slides", nargs="+", metavar="SLIDE", help="slide files or folders of slides")
    p.add_argument("--model", required=True, metavar="RUN_OR_FILE",
                   help="a model.safetensors or a D&D run folder (uses its model.safetensors)")
    p.add_argument("--out", default="predictions",
                   help="output folder (default: predictions); an existing one keeps its rows: new slides are "
                        "added to predictions.csv, a re-classified slide replaces its row")
    p.add_argument("--weights", default=None, metavar="FILE", help="feature-extractor weights (else the caches)")
    p.add_argument("--extractor", default=None, help="only for models whose card names no extractor")
    p.add_argument("--heatmaps", choices=HEATMAP_CHOICES, default="student",
                   help="student (default), all (also the base model and each expert, from a run folder), none")
    p.add_argument("--colormap", default="jet")
    p.add_argument("--base-magnification", type=float, default=None, metavar="X",
                   help="objective power to assume for slides whose files carry no magnification or mpp")
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=cmd_predict)


def cmd_predict(args) -> int:
    from ..slides.find import find_slides
    from ..predict import predict_slides
    from ..errors import DnDError
    from ..heatmaps import COLORMAPS
    check_power("--base-magnification", args.base_magnification)
    if args.colormap not in COLORMAPS:             # else every slide fails after its extraction
        raise DnDError(f"unknown colormap '{args.colormap}' (choose from {', '.join(COLORMAPS)})")
    slides = [s for x in args.slides for s in find_slides(x)]
    bar = ProgressBar(args.quiet, unit="patch")
    try:
        res = predict_slides(args.model, slides, args.out, weights=args.weights, extractor=args.extractor,
                             heatmaps=args.heatmaps, colormap=args.colormap, device=args.device,
                             slide_progress=bar, log=None if args.quiet else say,
                             base_magnification=args.base_magnification)
    finally:
        bar.close()
    for r in res:
        if r.status == "done":
            print(f"{r.slide_id}: {r.predicted}  " + "  ".join(f"{p:.3f}" for p in r.probs))
            if r.note:
                print(f"  note: {r.note}")
            for k, v in r.outputs.items():
                print(f"  {k}: {v}")
        else:
            print(f"{r.slide_id}: failed — {r.error}")
    print(f"predictions: {Path(args.out) / 'predictions.csv'}")
    return 0 if all(r.status == "done" for r in res) else 1
