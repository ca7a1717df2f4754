"""The schema of a model file's metadata: every field a loader reads, checked for type and range in one place.

A model file is untrusted input: anyone can hand the app a ``.safetensors`` whose JSON metadata was edited or
written by another tool. Without this check a bad field surfaced deep inside a constructor or a predictor as
``KeyError: 'name'`` or ``could not convert string to float``, or, for ``in_dim`` 1e8, as an attempt to
allocate hundreds of gigabytes. Here each field is checked before anything is built from it, and a bad one is
refused with the file, the field and what it must be::

    model.safetensors: its metadata field 'card.patch_size' must be an integer from 16 to 4096, got -5

The metadata (written by :func:`dnd_engine.models.io.save_model`) holds two JSON strings: ``dnd_model``, the
architecture (``name``, ``in_dim``, ``n_classes`` and the model's options, ``MILModel.config()``), and ``card``
(:func:`dnd_engine.dnd.card.make_card` for a deployable model; ``{"epoch", "tag"}`` for a training checkpoint).
Card fields this module does not know are kept unchecked (a card may carry notes of its own); known ones may be
null (an unknown value), never of the wrong type. Plain Python, no schema library: the rules are a few lines.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ..errors import DnDError

CONFIG_KEY = "dnd_model"
CARD_KEY = "card"

IN_DIM_RANGE = (1, 65536)
N_CLASSES_RANGE = (2, 1000)
PATCH_SIZE_RANGE = (16, 4096)
MAX_MAGNIFICATION = 100.0


class ModelMetadataError(DnDError):
    """A model file's metadata field is missing, of the wrong type or out of range; the message names it."""


# --- rules: each is (what the value must be, test) ---------------------------------------------------------
Rule = Tuple[str, Callable[[Any], bool]]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def integer(lo: int, hi: int) -> Rule:
    return f"must be an integer from {lo} to {hi}", lambda v: _is_int(v) and lo <= v <= hi


def even_integer(lo: int, hi: int) -> Rule:
    return f"must be an even integer from {lo} to {hi}", lambda v: _is_int(v) and lo <= v <= hi and v % 2 == 0


def text(max_len: int = 10_000, empty: bool = True) -> Rule:
    what = "must be a string" if empty else "must be a non-empty string"
    return what, lambda v: isinstance(v, str) and (empty or v.strip() != "") and len(v) <= max_len


def one_of(*choices: str) -> Rule:
    low = {c.lower() for c in choices}
    return (f"must be one of {', '.join(repr(c) for c in choices)}",
            lambda v: isinstance(v, str) and v.lower() in low)


BOOLEAN: Rule = ("must be true or false", lambda v: isinstance(v, bool))
OBJECT: Rule = ("must be a JSON object", lambda v: isinstance(v, dict))
DROPOUT: Rule = ("must be true, false or a rate from 0 up to (not including) 1",
                 lambda v: isinstance(v, bool) or (_is_number(v) and 0 <= v < 1))
SHA256: Rule = ("must be 64 hexadecimal digits",
                lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-fA-F]{64}", v) is not None)
MAGNIFICATION: Rule = (f"must be a number above 0 and at most {MAX_MAGNIFICATION:g}",
                       lambda v: _is_number(v) and 0 < v <= MAX_MAGNIFICATION)


def nullable(rule: Rule) -> Rule:
    what, test = rule
    return f"{what} (or null)", lambda v: v is None or test(v)


# the options of the six architectures (``MILModel.options``); bounds keep a tampered file from building a
# network of absurd size before its tensors are compared with it
OPTION_RULES: Dict[str, Rule] = {
    "dropout": DROPOUT,
    "act": one_of("relu", "gelu"),
    "gated": BOOLEAN,
    "layer": integer(1, 16),
    "rate": integer(1, 10_000),
    "type": one_of("SRMamba", "Mamba"),
    "checkpoint": BOOLEAN,
    "chunk": nullable(integer(4, 1_000_000)),
    "d_model": integer(1, 4096),
    "d_state": even_integer(2, 1024),
    "landmarks": integer(1, 8192),
    "pinv_iterations": integer(0, 100),
}

# card fields (dnd_engine.dnd.card.make_card, and the trainer's checkpoint cards); every one may be null
CARD_RULES: Dict[str, Rule] = {
    "format": integer(1, 1_000_000),
    "kind": text(200),
    "feature_dim": integer(*IN_DIM_RANGE),
    "extractor": text(200, empty=False),
    "weights_sha256": SHA256,
    "magnification": MAGNIFICATION,
    "patch_size": integer(*PATCH_SIZE_RANGE),
    "dnd": OBJECT,
    "cohort": OBJECT,
    "metrics": OBJECT,
    "created": text(200),
    "dnd_version": text(200),
    "notes": text(100_000),
    "demo": BOOLEAN,
    "epoch": integer(0, 10_000_000),
    "tag": text(200),
}
CARD_SUBFIELD_RULES: Dict[Tuple[str, str], Rule] = {
    ("dnd", "model"): text(200, empty=False),
    ("cohort", "fold"): integer(0, 10_000),
}


# --- the checker --------------------------------------------------------------------------------------------
def _shown(v: Any) -> str:
    """A value as the message shows it: JSON for scalars, the kind for containers."""
    if isinstance(v, dict):
        return "an object"
    if isinstance(v, list):
        return f"a list of {len(v)}"
    s = json.dumps(v)
    return s if len(s) <= 60 else s[:57] + "..."


class _Checker:
    def __init__(self, filename: str):
        self.filename = filename

    def fail(self, field: str, problem: str) -> ModelMetadataError:
        return ModelMetadataError(f"{self.filename}: its metadata field '{field}' {problem}")

    def check(self, field: str, value: Any, rule: Rule) -> None:
        what, test = rule
        if not test(value):
            raise self.fail(field, f"{what}, got {_shown(value)}")

    def parse(self, key: str, raw: Any) -> Any:
        if not isinstance(raw, str):
            raise self.fail(key, f"must be JSON text, got {type(raw).__name__}")
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, RecursionError) as e:
            where = f" ({e.msg} at character {e.pos})" if isinstance(e, json.JSONDecodeError) else ""
            raise self.fail(key, f"is not valid JSON{where}") from None


def check_config(cfg: Any, chk: _Checker) -> Dict[str, Any]:
    """The architecture: a known ``name``, ``in_dim``/``n_classes`` in range, only that model's options."""
    from . import model_class, model_names          # the registry, with every model registered
    chk.check(CONFIG_KEY, cfg, OBJECT)
    if "name" not in cfg:
        raise chk.fail(f"{CONFIG_KEY}.name", "is missing (it names the architecture: "
                       + ", ".join(model_names()) + ")")
    name = cfg["name"]
    chk.check(f"{CONFIG_KEY}.name", name, text(100, empty=False))
    try:
        cls = model_class(name)
    except DnDError:
        raise chk.fail(f"{CONFIG_KEY}.name", f"must be one of {', '.join(model_names())}, got {_shown(name)}") \
            from None
    for key, lo_hi in (("in_dim", IN_DIM_RANGE), ("n_classes", N_CLASSES_RANGE)):
        if key not in cfg:
            raise chk.fail(f"{CONFIG_KEY}.{key}", "is missing")
        chk.check(f"{CONFIG_KEY}.{key}", cfg[key], integer(*lo_hi))
    params = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "in_dim", "n_classes")]
    for key, value in cfg.items():
        if key in ("name", "in_dim", "n_classes"):
            continue
        if key not in params:
            raise chk.fail(f"{CONFIG_KEY}.{key}", f"is not an option of {cls.name} "
                           f"(its options: {', '.join(params) or 'none'})")
        if key in OPTION_RULES:
            chk.check(f"{CONFIG_KEY}.{key}", value, OPTION_RULES[key])
    return dict(cfg)


def check_card(card: Any, cfg: Mapping[str, Any], chk: _Checker) -> Dict[str, Any]:
    """The card's known fields by type and range, and against the architecture (classes, feature size)."""
    chk.check(CARD_KEY, card, OBJECT)
    for key, rule in CARD_RULES.items():
        if card.get(key) is not None:
            chk.check(f"{CARD_KEY}.{key}", card[key], rule)
    for (outer, key), rule in CARD_SUBFIELD_RULES.items():
        sub = card.get(outer)
        if isinstance(sub, dict) and sub.get(key) is not None:
            chk.check(f"{CARD_KEY}.{outer}.{key}", sub[key], rule)
    names = card.get("class_names")
    if names is not None:
        field = f"{CARD_KEY}.class_names"
        if not isinstance(names, list) or not all(isinstance(n, str) and n.strip() and len(n) <= 200
                                                  for n in names):
            raise chk.fail(field, f"must be a list of class names (non-empty strings), got {_shown(names)}")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise chk.fail(field, f"must name each class once, got {', '.join(repr(d) for d in dup)} twice")
        # a count that differs from the model's outputs is not refused here: prediction fails each slide's row
        # with "names 3 classes ... 2 outputs" before any heatmap (issue 22 item 4 tests that row)
    dim = card.get("feature_dim")
    if dim is not None and dim != cfg["in_dim"]:
        raise chk.fail(f"{CARD_KEY}.feature_dim", f"is {dim} but the model takes {cfg['in_dim']}-d features "
                       f"('{CONFIG_KEY}.in_dim')")
    return dict(card)


def validate_metadata(meta: Optional[Mapping[str, Any]], filename: str) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """(model config, card) from a model file's safetensors metadata, or :class:`ModelMetadataError`.

    A file without ``dnd_model`` is someone else's safetensors file; without ``card``, a model with no card."""
    meta = meta or {}
    chk = _Checker(filename)
    if CONFIG_KEY not in meta:
        raise ModelMetadataError(f"{filename} is a safetensors file but not a D&D Studio model (no model config)")
    cfg = check_config(chk.parse(CONFIG_KEY, meta[CONFIG_KEY]), chk)
    card = check_card(chk.parse(CARD_KEY, meta[CARD_KEY]), cfg, chk) if CARD_KEY in meta else {}
    return cfg, card


__all__ = ["CARD_RULES", "IN_DIM_RANGE", "MAX_MAGNIFICATION", "N_CLASSES_RANGE", "OPTION_RULES", "PATCH_SIZE_RANGE",
           "ModelMetadataError", "validate_metadata"]
