"""`dnd train`: cross-validated training of one MIL method on feature bags, plain or with D&D (``--preset``)."""

from __future__ import annotations

import ast
import time
from pathlib import Path


def add_train(sub) -> None:
    from ..models import ALIASES, model_names
    from ..dnd import PRESETS
    from ..training.trainer import OPTIMIZERS, SELECTIONS
    from .dnd_cmds import add_dnd_options
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


def _parse_options(items) -> dict:
    from ..errors import DnDError
    out = {}
    for it in items:
        if "=" not in it:
            raise DnDError(f"--option expects KEY=VALUE, got {it!r}")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k.strip()] = v
    return out


def model_options_from_args(args) -> dict:
    """The model options the user gave (--option, --dropout, --gated, --rate); the rest are the defaults'."""
    opts = _parse_options(args.option)
    if args.dropout is not None:
        opts.setdefault("dropout", args.dropout)
    if args.gated:
        opts["gated"] = True
    if args.rate is not None:
        opts["rate"] = args.rate
    return opts


def check_model_options(name: str, opts: dict, only_its_own: bool = False) -> None:
    """Refuse options ``name`` does not take or values it rejects, in one line naming the option, before any data
    is read: the model is built on torch's ``meta`` device (no memory), as training would build it.
    ``only_its_own``: check only the options ``name`` takes (``dnd bench`` gives one set to every method)."""
    import inspect

    import torch

    from ..errors import DnDError
    from ..models import build_model, model_class
    cls = model_class(name)
    known = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "in_dim", "n_classes")]
    if only_its_own:
        opts = {k: v for k, v in opts.items() if k in known}
    for key in opts:
        if key not in known:
            raise DnDError(f"{cls.name} has no option '{key}' (its options: {', '.join(known) or 'none'})")
    try:
        with torch.device("meta"):
            build_model(name, in_dim=8, n_classes=2, **opts)
    except (TypeError, ValueError) as exc:
        raise DnDError(f"{cls.name}: {str(exc).splitlines()[0]}") from None


def check_train_args(args) -> None:
    """Ranges argparse cannot check, shared by ``dnd train`` and ``dnd bench``."""
    from ..errors import DnDError
    if not 0 <= args.seed < 2 ** 32:
        raise DnDError(f"--seed must be a whole number from 0 to 2^32-1, got {args.seed}")
    wd = getattr(args, "weight_decay", None)
    if wd is not None and not 0 <= wd <= 1:
        raise DnDError(f"--weight-decay must be from 0 to 1, got {wd:g}")


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
        from .dnd_cmds import run_train_dnd
        return run_train_dnd(args, name, opts)
    opts.setdefault("dropout", 0.25)
    given = {k: getattr(args, k) for k in ("epochs", "optimizer", "lr", "weight_decay", "selection")
             if getattr(args, k) is not None}
    tcfg = TrainConfig(**given, patience=args.patience, seed=args.seed, device=args.device,
                       weighted_ce=args.weighted_ce, weighted_sampling=args.weighted_sampling)
    cfg = CVConfig(model=name, model_options=opts, folds=args.folds, val_frac=args.val_frac,
                   split_seed=args.seed, splits_dir=args.splits, train=tcfg)
    out = Path(args.out) if args.out else Path("runs") / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    from .dnd_cmds import ProgressBar
    bar = ProgressBar(args.quiet, desc="training")
    try:
        res = run_cross_validation(args.features, args.labels, out, cfg, progress=bar)
    finally:
        bar.close()
    print(format_table(res))
    print(f"run folder: {res.out_dir}")
    return 0


def format_table(res) -> str:
    def f(v):
        return "   -  " if v is None else f"{v:.3f}"
    lines = ["fold  n_test  test_acc  test_bal_acc  test_auc  val_acc  best_epoch"]
    for r in res.folds:
        lines.append(f"{r['fold']:>4}  {r['n_test']:>6}  {f(r.get('test_acc')):>8}  {f(r.get('test_balanced_acc')):>12}"
                     f"  {f(r.get('test_auc')):>8}  {f(r.get('val_acc')):>7}  {r['best_epoch']:>10}")
    ms = _mean_std_text(res.summary)
    lines.append(f"mean±std      {ms('test_acc'):>12}  {ms('test_balanced_acc'):>10}  {ms('test_auc'):>10}")
    return "\n".join(lines)


def _mean_std_text(summary):
    """``key → "mean±std"`` for a run summary ({key: {"mean", "std"}}); "-" where undefined."""
    def ms(k):
        m, sd = summary[k]["mean"], summary[k]["std"]
        return "-" if m != m else f"{m:.3f}±{sd:.3f}"
    return ms
