"""`dnd train`: cross-validated training of one MIL method on feature bags, plain or with D&D (``--preset``)."""

from __future__ import annotations

import time
from pathlib import Path

from .common import ProgressBar, dnd_table, mil_table, say
from .training_options import (add_dnd_options, check_model_options, check_train_args, dnd_config_from_args,
                               model_options_from_args, split_spec_from_args)


def add_train(sub) -> None:
    from ..models import ALIASES, model_names
    from ..dnd import PRESETS
    from ..training.trainer import OPTIMIZERS, SELECTIONS
    p = sub.add_parser(
        "train", help="train and test one MIL model (or D&D with --preset) with cross-validation on feature bags",
        description="Train one MIL model per fold on feature bags (.h5/.pt; CLAM, TRIDENT or `dnd extract` "
                    "layouts) with labels from a CSV (slide_id,label[,split]). Splits come from the CSV's split "
                    "column, from --splits, or are generated (stratified k-fold, seeded) and saved. Defaults are "
                    "the D&D paper's base-model settings. With --preset paper|authors-code the four D&D stages run on "
                    "every fold (base, clusters, experts, distilled student), base and student are both tested, "
                    "and the run folder gets a deployable model.safetensors. Re-running with the same --out "
                    "resumes.")
    p.add_argument("--features", required=True, help="folder of feature bags")
    p.add_argument("--labels", required=True, help="labels CSV: slide_id,label[,split]")
    p.add_argument("--model", default="abmil", choices=model_names() + sorted(ALIASES), help="MIL method")
    p.add_argument("--out", default=None, help="run folder (default: runs/<model>-<time>)")
    p.add_argument("--folds", type=int, default=5, help="k of stratified k-fold (ignored with a split column)")
    p.add_argument("--val-frac", type=float, default=0.1, help="validation share of each class (default 0.1)")
    p.add_argument("--splits", default=None, metavar="DIR", help="reuse splits_<i>.csv files from DIR")
    p.add_argument("--preset", choices=PRESETS, default=None,
                   help="run Divide-and-Distill with this preset's settings: paper or authors-code")
    p.add_argument("--epochs", type=int, default=None, help="training epochs (default 200; D&D: base and experts)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=None, help="sgd has momentum 0.9 (default sgd)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-4)")
    p.add_argument("--weight-decay", type=float, default=None, help="weight decay (default 1e-5)")
    p.add_argument("--dropout", type=float, default=None,
                   help="dropout of the model (default 0.25; D&D: the preset's, 0.25 in both)")
    p.add_argument("--gated", action="store_true", help="ABMIL: gated attention (Ilse et al.)")
    p.add_argument("--rate", type=int, default=None, help="MambaMIL: SRMamba rate (default 10, as D&D)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other model option, e.g. --option act=gelu")
    p.add_argument("--selection", choices=SELECTIONS, default=None,
                   help="which epoch's weights to keep (default: best validation accuracy, strict improvement)")
    p.add_argument("--patience", type=int, default=None, help="stop after this many epochs without improvement")
    p.add_argument("--weighted-ce", action="store_true", help="class-weighted cross-entropy")
    p.add_argument("--weighted-sampling", action="store_true", help="sample training slides by class weight")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dnd_options(p, for_train=True)
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from ..training import CVConfig, TrainConfig, run_cross_validation
    check_train_args(args)
    opts = model_options_from_args(args)
    name = args.model
    check_model_options(name, opts)
    from ..project.data_check import check_data   # the wizard's and the project's data check, before any training
    check_data(features=args.features, labels_csv=args.labels, folds=0 if args.splits else args.folds) \
        .raise_for_problems()
    if args.preset:
        return run_train_dnd(args, name, opts)
    opts.setdefault("dropout", 0.25)
    given = {k: getattr(args, k) for k in ("epochs", "optimizer", "lr", "weight_decay", "selection")
             if getattr(args, k) is not None}
    tcfg = TrainConfig(**given, patience=args.patience, seed=args.seed, device=args.device,
                       weighted_ce=args.weighted_ce, weighted_sampling=args.weighted_sampling)
    cfg = CVConfig(model=name, model_options=opts, folds=args.folds, val_frac=args.val_frac,
                   split_seed=args.seed, splits_dir=args.splits, train=tcfg)
    out = Path(args.out) if args.out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    bar = ProgressBar(args.quiet, desc="training")
    try:
        res = run_cross_validation(args.features, args.labels, out, cfg, progress=bar)
    finally:
        bar.close()
    print(mil_table(res))
    print(f"run folder: {res.out_dir}")
    return 0


def run_train_dnd(args, method: str, model_options: dict) -> int:
    """``dnd train --preset``: D&D cross-validation of one method, its table and its deployable model."""
    from ..dnd import run_dnd_cv
    cfg = dnd_config_from_args(args, method, model_options)
    out = Path(args.out) if args.out else Path("runs") / f"dnd-{method}-{time.strftime('%Y%m%d-%H%M%S')}"
    bar = ProgressBar(args.quiet)
    try:
        res = run_dnd_cv(args.features, args.labels, out, cfg, split_spec_from_args(args), progress=bar,
                         log=None if args.quiet else say)
    finally:
        bar.close()
    print(dnd_table(res))
    from ..dnd.cohort_checks import run_warnings
    for w in run_warnings(res.out_dir):
        print(f"warning: {w}")
    print(f"run folder: {res.out_dir}")
    print(f"deployable model: {res.model_path} (student of fold {res.summary['deployed_fold']})")
    return 0
