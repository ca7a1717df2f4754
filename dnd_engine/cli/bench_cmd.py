"""`dnd bench`: base vs D&D for several MIL methods on the same folds (the paper's Table 1)."""

from __future__ import annotations

import time
from pathlib import Path

from .common import ProgressBar, say
from .training_options import (add_dnd_options, check_model_options, check_train_args, dnd_config_from_args,
                               parse_options, split_spec_from_args)


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
    check_train_args(args)
    methods = parse_methods(args.methods)
    opts = parse_options(args.option)
    for m in methods:
        check_model_options(m, opts, only_its_own=True)
    for m in methods:          # settle every option before hours of training
        dnd_config_from_args(args, m, opts)
    out = Path(args.out) if args.out else Path("runs") / f"bench-{args.preset}-{time.strftime('%Y%m%d-%H%M%S')}"
    bar = ProgressBar(args.quiet)
    try:
        rows = run_bench(args.features, args.labels, out, methods, lambda m: dnd_config_from_args(args, m, opts),
                         split_spec_from_args(args), progress=bar, log=None if args.quiet else say)
    finally:
        bar.close()
    print(markdown_table(rows))
    print(f"tables: {out / 'table.md'}  {out / 'table.csv'}")
    return 0
