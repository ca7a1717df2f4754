"""D&D on the command line: the options ``dnd train --preset`` and ``dnd bench`` share, and ``dnd predict``."""

from __future__ import annotations

import sys
import time
from pathlib import Path


def add_dnd_options(p, *, for_train: bool) -> None:
    """Options that override a preset's settings (None = keep the preset's value)."""
    from ..dnd import CLUSTER_INPUTS, PRESETS
    from ..dnd.presets import INITS
    g = p.add_argument_group("Divide-and-Distill (every value defaults to the preset's)")
    if not for_train:
        g.add_argument("--preset", choices=PRESETS, default="paper",
                       help="paper (C=3 constrained k-means on embeddings, SGD/Adam, T=1) or authors-code "
                            "(MariosPapadopoulos/DnD_MIL defaults: K=5 k-means on logits, Adam/SGD, T=0.2); "
                            "default paper")
    g.add_argument("--clusters", type=int, default=None, metavar="C", help="number of clusters / experts")
    g.add_argument("--cluster-on", choices=CLUSTER_INPUTS, default=None,
                   help="slide representation to cluster: embedding (paper) or logits (authors' code)")
    g.add_argument("--constrained", dest="constrained", action="store_true", default=None,
                   help="size-constrained k-means (sizes int(N/C ± N·slack))")
    g.add_argument("--unconstrained", dest="constrained", action="store_false", help="plain k-means")
    g.add_argument("--size-slack", type=float, default=None, help="cluster-size slack as a share of N (0.05)")
    g.add_argument("--legacy-random-partition", action="store_true",
                   help="reproduce the released code's bug: experts train on a random partition of the "
                        "cluster sizes instead of their cluster")
    g.add_argument("--expert-init", choices=INITS, default=None, help="experts from scratch or from the base")
    g.add_argument("--student-init", choices=INITS, default=None, help="student from the base or from scratch")
    g.add_argument("--temperature", type=float, default=None, metavar="T")
    g.add_argument("--lambda-base", type=float, default=None)
    g.add_argument("--lambda-expert", type=float, default=None)
    g.add_argument("--base-epochs", type=int, default=None)
    g.add_argument("--expert-epochs", type=int, default=None)
    g.add_argument("--student-epochs", type=int, default=None)
    g.add_argument("--student-optimizer", choices=("sgd", "adam", "adamw"), default=None)
    g.add_argument("--student-lr", type=float, default=None)


def dnd_config_from_args(args, method: str, model_options: dict):
    """The preset's config for ``method`` with every option the user gave applied on top.

    The same rule as the app's ``TrainingPlan.dnd_config`` (``apply_overrides``): an option left out (None) is
    the preset's value."""
    from ..dnd import preset_config
    from ..dnd.presets import apply_overrides
    given = {attr: getattr(args, opt, None) for attr, opt in (
        ("n_clusters", "clusters"), ("cluster_on", "cluster_on"), ("constrained", "constrained"),
        ("size_slack", "size_slack"), ("expert_init", "expert_init"), ("student_init", "student_init"),
        ("temperature", "temperature"), ("lambda_base", "lambda_base"), ("lambda_expert", "lambda_expert"),
        # the plain-training options of `dnd train` set base and experts
        ("epochs", "epochs"), ("optimizer", "optimizer"), ("lr", "lr"), ("weight_decay", "weight_decay"),
        ("selection", "selection"), ("patience", "patience"),
        ("base.epochs", "base_epochs"), ("expert.epochs", "expert_epochs"), ("student.epochs", "student_epochs"),
        ("student.optimizer", "student_optimizer"), ("student.lr", "student_lr"),
        ("seed", "seed"), ("device", "device"))}
    given["legacy_random_partition"] = True if getattr(args, "legacy_random_partition", False) else None
    if getattr(args, "weighted_ce", False):
        given["base.weighted_ce"] = given["expert.weighted_ce"] = True
    if getattr(args, "weighted_sampling", False):
        given["base.weighted_sampling"] = given["student.weighted_sampling"] = True
    given["model_options"] = model_options
    return apply_overrides(preset_config(args.preset, method), given)


class ProgressBar:
    """A ``progress(done, total, message)`` callback drawing one tqdm bar (nothing when ``quiet``)."""

    def __init__(self, quiet: bool, unit: str = "bag", desc: str = "D&D"):
        self.quiet, self.unit, self.desc, self.bar = quiet, unit, desc, None

    def __call__(self, done: int, total: int, msg: str) -> None:
        if self.quiet:
            return
        from tqdm import tqdm
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.desc, unit=self.unit, dynamic_ncols=True, mininterval=0.5)
        if total != self.bar.total:
            self.bar.total = total
        if done > self.bar.n:
            self.bar.update(done - self.bar.n)
        self.bar.set_postfix_str(msg.strip()[:48], refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _cv_settings(args):
    from ..dnd import CVSettings
    return CVSettings(folds=args.folds, val_frac=args.val_frac, split_seed=args.seed, splits_dir=args.splits)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr)


def run_train_dnd(args, method: str, model_options: dict) -> int:
    from ..dnd import run_dnd_cv
    cfg = dnd_config_from_args(args, method, model_options)
    out = Path(args.out) if args.out else Path("runs") / f"dnd-{method}-{time.strftime('%Y%m%d-%H%M%S')}"
    bar = ProgressBar(args.quiet)
    try:
        res = run_dnd_cv(args.features, args.labels, out, cfg, _cv_settings(args), progress=bar,
                         log=None if args.quiet else _say)
    finally:
        bar.close()
    print(format_dnd_table(res))
    from ..dnd.cohort_checks import run_warnings
    for w in run_warnings(res.out_dir):
        print(f"warning: {w}")
    print(f"run folder: {res.out_dir}")
    print(f"deployable model: {res.model_path} (student of fold {res.summary['deployed_fold']})")
    return 0


def format_dnd_table(res) -> str:
    from .train_cmd import _mean_std_text
    def f(v):
        return "  -  " if v is None else f"{v:.3f}"
    lines = ["fold  n_test  base_acc  dnd_acc  base_auc  dnd_auc  clusters"]
    for r in res.folds:
        lines.append(f"{r['fold']:>4}  {r['n_test']:>6}  {f(r.get('base_test_acc')):>8}  {f(r.get('dnd_test_acc')):>7}"
                     f"  {f(r.get('base_test_auc')):>8}  {f(r.get('dnd_test_auc')):>7}  {r.get('cluster_sizes')}")
    s = res.summary
    ms = _mean_std_text(s)
    lines.append(f"mean±std      {ms('base_test_acc')}  {ms('dnd_test_acc')}  {ms('base_test_auc')}  "
                 f"{ms('dnd_test_auc')}")
    for k in ("acc", "auc"):
        d = s[f"diff_test_{k}"]
        lines.append(f"D&D − base {k}: {d['mean']:+.3f} ± {d['std']:.3f}, p = {d['p']:.3g} ({d['test']})"
                     if d["mean"] == d["mean"] else f"D&D − base {k}: n/a")
    return "\n".join(lines)


# --- dnd bench -----------------------------------------------------------------------------------------------
def add_bench(sub) -> None:
    p = sub.add_parser(
        "bench", help="base vs D&D for several MIL methods on the same folds (the paper's Table 1)",
        description="For each method: cross-validated base model and D&D student on the same folds; prints and "
                    "saves (table.csv, table.md) ACC and macro AUC as mean ± std over folds, the D&D − base "
                    "difference and a paired t-test over folds. Presets: paper or authors-code. Re-running with "
                    "the same --out resumes.")
    p.add_argument("--features", required=True, help="folder of feature bags")
    p.add_argument("--labels", required=True, help="labels CSV: slide_id,label[,split]")
    p.add_argument("--methods", default="mean,max,abmil,transmil,s4mil,mambamil",
                   help="comma-separated MIL methods (default: all six)")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--val-frac", type=float, default=0.1)
    p.add_argument("--splits", default=None, metavar="DIR", help="reuse splits_<i>.csv files from DIR")
    p.add_argument("--out", default=None, help="output folder (default: runs/bench-<preset>-<time>)")
    p.add_argument("--epochs", type=int, default=None, help="base and expert epochs (default: the preset's)")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default=None,
                   help="base and expert optimizer (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="base and expert learning rate (default: the preset's)")
    p.add_argument("--weight-decay", type=float, default=None, help="base and expert weight decay")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="model option for every method, e.g. --option dropout=0.1")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--quiet", action="store_true")
    add_dnd_options(p, for_train=False)
    p.set_defaults(func=cmd_bench)


def cmd_bench(args) -> int:
    from ..dnd import parse_methods, run_bench
    from ..dnd.bench import markdown_table
    from .train_cmd import _parse_options, check_model_options, check_train_args
    check_train_args(args)
    methods = parse_methods(args.methods)
    opts = _parse_options(args.option)
    for m in methods:
        check_model_options(m, opts, only_its_own=True)
    for m in methods:          # settle every option before hours of training
        dnd_config_from_args(args, m, opts)
    out = Path(args.out) if args.out else Path("runs") / f"bench-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    bar = ProgressBar(args.quiet)
    try:
        rows = run_bench(args.features, args.labels, out, methods, lambda m: dnd_config_from_args(args, m, opts),
                         _cv_settings(args), progress=bar, log=None if args.quiet else _say)
    finally:
        bar.close()
    print(markdown_table(rows))
    print(f"tables: {out / 'table.md'}  {out / 'table.csv'}")
    return 0


# --- dnd predict -----------------------------------------------------------------------------------------------
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
    from ..features.extract import find_slides
    from ..predict import predict_slides
    from ..errors import DnDError
    from ..heatmaps import COLORMAPS
    from .main import _check_power
    _check_power("--base-magnification", args.base_magnification)
    if args.colormap not in COLORMAPS:             # else every slide fails after its extraction
        raise DnDError(f"unknown colormap '{args.colormap}' (choose from {', '.join(COLORMAPS)})")
    slides = [s for x in args.slides for s in find_slides(x)]
    bar = ProgressBar(args.quiet, unit="patch")
    try:
        res = predict_slides(args.model, slides, args.out, weights=args.weights, extractor=args.extractor,
                             heatmaps=args.heatmaps, colormap=args.colormap, device=args.device,
                             slide_progress=bar, log=None if args.quiet else _say,
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
