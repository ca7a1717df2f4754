"""Checking JSON a user may have edited (or an attacker crafted) before any code trusts its shape.

``json.loads`` gives back whatever the file holds: a string where a list of paths belongs, ``null`` for a number,
a list where an object belongs. Code that assumes the shape then fails far away with a ``TypeError`` or an
``AttributeError`` that tells the user nothing. Here each field gets a small *check* — a function
``(value, where) -> value`` that returns the value (possibly normalised) or raises :class:`Invalid` naming the
field and what it should have been — and :func:`check_document` turns the first problem into one line for the
user: ``project.json: 'slides' must be a list of slide paths, got a string ('/etc')``.

Nothing here knows about projects: checks compose (:func:`optional`, :func:`list_of`, :func:`dict_of`,
:func:`record`) and :func:`dataclass_fields` derives the checks of a plain dataclass from its type hints, so the
same helper can check any JSON the engine reads (model metadata, job records, plans).
"""

from __future__ import annotations

import math
import typing
from dataclasses import MISSING, dataclass, fields as dc_fields
from typing import Callable, Dict, Iterable, Mapping, Optional, Tuple, Type

from ..errors import DnDError

Check = Callable[[object, str], object]


class Invalid(Exception):
    """One field is wrong: ``where`` names it (``slides[2]``, ``jobs[0].spec.method``), ``expected`` says what
    it must be; ``problem`` (optional) replaces the default "got <value>" ending."""

    def __init__(self, where: str, expected: str, value: object = None, problem: Optional[str] = None):
        super().__init__(where, expected)
        self.where, self.expected, self.value, self.problem = where, expected, value, problem

    def message(self) -> str:
        field = f"'{self.where}'" if self.where else "the file"
        return f"{field} must be {self.expected}, {self.problem or 'got ' + describe(self.value)}"


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "\u2026"


def describe(value: object) -> str:
    """What a JSON value is, in words a user recognises: "a string ('/etc')", "a number (5)", "a list of 3"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{'true' if value else 'false'}"
    if isinstance(value, (int, float)):
        return f"a number ({_short(repr(value))})"
    if isinstance(value, str):
        return f"a string ({_short(repr(value))})" if value else "an empty string"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item{'s' if len(value) != 1 else ''}" if value else "an empty list"
    if isinstance(value, Mapping):
        return "an object" if value else "an empty object"
    return type(value).__name__


def _join(where: str, key: object) -> str:
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if where else str(key)


# --- checks ----------------------------------------------------------------------------------------------------
def anything(value: object, where: str) -> object:
    return value


def text(what: str = "a string", *, empty: bool = True, test: Optional[Callable[[str], bool]] = None) -> Check:
    """A string (``empty=False``: not blank); ``test`` adds a condition on its value, described by ``what``."""
    def check(value, where):
        if not isinstance(value, str) or (not empty and not value.strip()) or (test is not None and not test(value)):
            raise Invalid(where, what, value)
        return value
    return check


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number(lo: Optional[float] = None, hi: Optional[float] = None, what: Optional[str] = None) -> Check:
    """A finite number (whole numbers count), within [lo, hi] where given."""
    expected = what or _range_words("a number", lo, hi)

    def check(value, where):
        if not _number(value) or (lo is not None and value < lo) or (hi is not None and value > hi):
            raise Invalid(where, expected, value)
        return float(value)
    return check


def integer(lo: Optional[int] = None, hi: Optional[int] = None, what: Optional[str] = None) -> Check:
    """A whole number (``true``/``false`` and 2.5 are not), within [lo, hi] where given."""
    expected = what or _range_words("a whole number", lo, hi)

    def check(value, where):
        if (not isinstance(value, int) or isinstance(value, bool)
                or (lo is not None and value < lo) or (hi is not None and value > hi)):
            raise Invalid(where, expected, value)
        return value
    return check


def _range_words(noun: str, lo, hi) -> str:
    if lo is not None and hi is not None:
        return f"{noun} from {lo:g} to {hi:g}"
    if lo is not None:
        return f"{noun} \u2265 {lo:g}"
    if hi is not None:
        return f"{noun} \u2264 {hi:g}"
    return noun


def boolean(value, where):
    if not isinstance(value, bool):
        raise Invalid(where, "true or false", value)
    return value


def one_of(choices: Iterable[str]) -> Check:
    choices = tuple(choices)
    expected = "one of " + ", ".join(repr(c) for c in choices)

    def check(value, where):
        if not isinstance(value, str) or value not in choices:
            raise Invalid(where, expected, value)
        return value
    return check


def optional(inner: Check) -> Check:
    """``null`` or what ``inner`` accepts."""
    def check(value, where):
        if value is None:
            return None
        try:
            return inner(value, where)
        except Invalid as exc:
            if exc.where == where and not exc.expected.endswith(" or null"):
                exc.expected += " or null"
            raise
    return check


def list_of(item: Check, what: str) -> Check:
    """A list (``what`` describes it: "a list of slide paths") whose every item ``item`` accepts."""
    def check(value, where):
        if not isinstance(value, list):
            raise Invalid(where, what, value)
        return [item(v, _join(where, i)) for i, v in enumerate(value)]
    return check


def dict_of(item: Check, what: str) -> Check:
    """An object with string keys (always, in JSON) whose every value ``item`` accepts."""
    def check(value, where):
        if not isinstance(value, dict):
            raise Invalid(where, what, value)
        return {k: item(v, _join(where, k)) for k, v in value.items()}
    return check


@dataclass(frozen=True)
class Field:
    check: Check
    required: bool = False


def record(schema: Mapping[str, Field], what: str = "an object", *, unknown: str = "keep") -> Check:
    """An object whose known keys ``schema`` checks; ``unknown="keep"`` passes other keys through untouched (a
    newer version's fields survive an older app), ``"refuse"`` names them as an error."""
    def check(value, where):
        known, extra = split_record(value, where, schema, what=what, unknown=unknown)
        return {**extra, **known}
    return check


def split_record(value: object, where: str, schema: Mapping[str, Field], *, what: str = "an object",
                 unknown: str = "keep") -> Tuple[Dict[str, object], Dict[str, object]]:
    """(checked known keys, the unknown keys as they were) of the object ``value``."""
    if not isinstance(value, dict):
        raise Invalid(where, what, value)
    extra = {k: v for k, v in value.items() if k not in schema}
    if extra and unknown == "refuse":
        names = ", ".join(sorted(repr(k) for k in extra))
        raise Invalid(where, f"{what} without unknown settings", value, f"found {names}")
    known: Dict[str, object] = {}
    for name, spec in schema.items():
        if name in value:
            known[name] = spec.check(value[name], _join(where, name))
        elif spec.required:
            raise Invalid(_join(where, name), "present", None, "it is missing")
    return known, extra


def dataclass_fields(cls: Type) -> Dict[str, Field]:
    """A :func:`record` schema from a dataclass's type hints (str, int, float, bool, Optional, List, Dict): what
    a plan kept as JSON must look like to be rebuilt with ``cls(**data)``. Fields without a default are required."""
    hints = typing.get_type_hints(cls)
    out: Dict[str, Field] = {}
    for f in dc_fields(cls):
        if not f.init:
            continue
        required = f.default is MISSING and f.default_factory is MISSING  # type: ignore[misc]
        out[f.name] = Field(check_for_type(hints.get(f.name, object)), required)
    return out


def check_for_type(tp) -> Check:
    """The check of one type hint; an unsupported hint accepts anything."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        rest = [a for a in args if a is not type(None)]
        inner = check_for_type(rest[0]) if len(rest) == 1 else anything
        return optional(inner) if type(None) in args else inner
    if origin in (list, typing.List):
        return list_of(check_for_type(args[0]) if args else anything,
                       f"a list of {_type_words(args[0])}s" if args else "a list")
    if origin in (dict, typing.Dict):
        return dict_of(check_for_type(args[1]) if len(args) == 2 else anything, "an object")
    if tp is bool:
        return boolean
    if tp is int:
        return integer()
    if tp is float:
        return number()
    if tp is str:
        return text()
    return anything


def _type_words(tp) -> str:
    return {str: "string", int: "whole number", float: "number", bool: "true/false"}.get(tp, "value")


def check_document(data: object, check: Check, source: str, error: Type[DnDError] = DnDError) -> object:
    """``check(data)``, its first problem raised as ``error("<source>: '<field>' must be …, got …")``."""
    try:
        return check(data, "")
    except Invalid as exc:
        raise error(f"{source}: {exc.message()}") from None


__all__ = ["Check", "Field", "Invalid", "anything", "boolean", "check_document", "check_for_type",
           "dataclass_fields", "describe", "dict_of", "integer", "list_of", "number", "one_of", "optional",
           "record", "split_record", "text"]
