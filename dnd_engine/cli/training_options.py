"""The options ``dnd train`` and ``dnd bench`` share, and the settings they build: model options, the D&D
options that override a preset (one rule with the app: ``apply_overrides``), the split settings and the range
checks argparse cannot make."""

from __future__ import annotations

import ast
from ..text import first_line


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


def split_spec_from_args(args):
    """The split settings (``SplitSpec``) of ``--folds``, ``--val-frac``, ``--seed`` and ``--splits``."""
    from ..training.folds import SplitSpec
    return SplitSpec(folds=args.folds, val_frac=args.val_frac, split_seed=args.seed, splits_dir=args.splits)


def parse_options(items) -> dict:
    """``--option KEY=VALUE`` items as a dict; a value is a Python literal where it parses as one."""
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
    opts = parse_options(args.option)
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
        raise DnDError(f"{cls.name}: {first_line(exc, None)}") from None


def check_train_args(args) -> None:
    """Ranges argparse cannot check, shared by ``dnd train`` and ``dnd bench``."""
    from ..errors import DnDError
    if not 0 <= args.seed < 2 ** 32:
        raise DnDError(f"--seed must be a whole number from 0 to 2^32-1, got {args.seed}")
    wd = getattr(args, "weight_decay", None)
    if wd is not None and not 0 <= wd <= 1:
        raise DnDError(f"--weight-decay must be from 0 to 1, got {wd:g}")


__all__ = ["add_dnd_options", "check_model_options", "check_train_args", "dnd_config_from_args",
           "model_options_from_args", "parse_options", "split_spec_from_args"]
