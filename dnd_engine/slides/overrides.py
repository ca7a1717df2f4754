"""The objective power or pixel size a user set for a slide whose file does not say (or says it wrongly).

A setting belongs to the slide, not to its name: slides are renamed, copied between disks and often share names
across cohorts ("slide_1.svs"), so it is keyed by :func:`slide_identity` — the file's size and a hash of its
first and last 64 KiB (where TIFF headers, descriptions and the last tiles live). A renamed or copied slide keeps
its setting; another file with the same name does not get it. The modification time is left out on purpose: a
copy changes it and the slide is still the same.

:class:`OverrideTable` is plain data (the project manifest and the app's settings each keep one) and
:func:`open_with_override` is how the engine applies it: the override goes into :func:`open_slide`, which decides
(user > file header > pixel size) and reports where the magnification came from. Nothing here imports Qt.
"""

from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, Mapping, Optional

from ..errors import DnDError, SlideError

CHUNK = 64 * 1024
#: what a dialog proposes when a slide says nothing: the commonest scan (20x, about 0.5 um/px)
DEFAULT_POWER = 20.0
DEFAULT_MPP = 0.5
POWER_RANGE = (1.0, 100.0)
MPP_RANGE = (0.05, 20.0)


def slide_identity(path: str | os.PathLike) -> str:
    """``"<size>-<sha256 of the first and last 64 KiB>"`` (first 16 hex digits): the slide's identity."""
    p = Path(path)
    try:
        size = p.stat().st_size
        h = hashlib.sha256()
        with open(p, "rb") as f:
            h.update(f.read(CHUNK))
            if size > CHUNK:
                f.seek(max(CHUNK, size - CHUNK))
                h.update(f.read(CHUNK))
    except OSError as exc:
        raise SlideError(f"{p.name}: cannot read the file ({exc.strerror or 'I/O error'})") from None
    return f"{size}-{h.hexdigest()[:16]}"


def _positive(value) -> Optional[float]:
    if value is None or value == "":
        return None
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


@dataclass(frozen=True)
class MagnificationOverride:
    """Either the objective power (e.g. 20) or the pixel size in um/px (e.g. 0.5) a user set; one is enough."""

    objective_power: Optional[float] = None
    mpp: Optional[float] = None

    def __post_init__(self) -> None:
        if self.objective_power is None and self.mpp is None:
            raise DnDError("give the objective power (e.g. 20) or the pixel size in \u00b5m/px (e.g. 0.5)")
        if self.objective_power is not None and not POWER_RANGE[0] <= self.objective_power <= POWER_RANGE[1]:
            raise DnDError(f"objective power must be between {POWER_RANGE[0]:g} and {POWER_RANGE[1]:g}, "
                           f"got {self.objective_power:g}")
        if self.mpp is not None and not MPP_RANGE[0] <= self.mpp <= MPP_RANGE[1]:
            raise DnDError(f"pixel size must be between {MPP_RANGE[0]:g} and {MPP_RANGE[1]:g} \u00b5m/px, "
                           f"got {self.mpp:g}")

    @classmethod
    def from_dict(cls, data: Mapping) -> Optional["MagnificationOverride"]:
        """None for a missing or malformed entry (a hand-edited file must not stop the app)."""
        if not isinstance(data, Mapping):
            return None
        try:
            return cls(_positive(data.get("objective_power")), _positive(data.get("mpp")))
        except DnDError:
            return None

    def to_dict(self) -> Dict[str, float]:
        return {k: v for k, v in (("objective_power", self.objective_power), ("mpp", self.mpp)) if v is not None}

    def describe(self) -> str:
        """'20\u00d7' or '0.5 \u00b5m/px' (both when both are set)."""
        parts = []
        if self.objective_power is not None:
            parts.append(f"{self.objective_power:g}\u00d7")
        if self.mpp is not None:
            parts.append(f"{self.mpp:g} \u00b5m/px")
        return ", ".join(parts)


class OverrideTable:
    """identity \u2192 {"objective_power", "mpp", "name"}: the stored form in a project or the app's settings.

    ``entries`` is the dict itself (the owner serialises it as JSON); ``name`` is the file name when it was set,
    kept for a person reading the file, never used to match.
    """

    def __init__(self, entries: Optional[Dict[str, dict]] = None):
        self.entries: Dict[str, dict] = entries if entries is not None else {}

    def get(self, path: str | os.PathLike, identity: Optional[str] = None) -> Optional[MagnificationOverride]:
        if not self.entries:
            return None
        try:
            key = identity or slide_identity(path)
        except SlideError:
            return None
        return MagnificationOverride.from_dict(self.entries.get(key))

    def set(self, path: str | os.PathLike, override: Optional[MagnificationOverride]) -> None:
        """Store (or, with None, forget) the override of the slide at ``path``."""
        key = slide_identity(path)
        if override is None:
            self.entries.pop(key, None)
        else:
            self.entries[key] = {**override.to_dict(), "name": Path(path).name}

    def for_paths(self, paths: Iterable[str | os.PathLike]) -> Dict[str, Dict[str, float]]:
        """{absolute path: override dict} for the slides that have one: what extraction and prediction take."""
        out: Dict[str, Dict[str, float]] = {}
        for p in paths:
            ov = self.get(p)
            if ov is not None:
                out[str(Path(p).resolve())] = ov.to_dict()
        return out


def override_for(overrides: Optional[Mapping[str, Mapping]], path: str | os.PathLike) -> Dict[str, float]:
    """The ``{"objective_power", "mpp"}`` of ``path`` in a by-path mapping (:meth:`OverrideTable.for_paths`),
    or {}."""
    if not overrides:
        return {}
    ov = overrides.get(str(Path(path).resolve())) or overrides.get(str(path))
    return dict(ov) if ov else {}


def open_with_override(path: str | os.PathLike, overrides: Optional[Mapping[str, Mapping]] = None, *,
                       objective_power: Optional[float] = None, fallback_magnification: Optional[float] = None):
    """:func:`open_slide` with the slide's user setting from ``overrides`` (by path) applied.

    ``objective_power`` (the CLI's ``--objective-power``, one value for every slide) wins over a per-slide
    setting; ``fallback_magnification`` (``--base-magnification``) applies only when neither nor the file says.
    """
    from .slide import open_slide
    ov = override_for(overrides, path)
    power = objective_power if objective_power is not None else _positive(ov.get("objective_power"))
    return open_slide(path, objective_power=power, mpp=None if objective_power is not None else ov.get("mpp"),
                      fallback_magnification=fallback_magnification)


def needs_magnification(path: str | os.PathLike, override: Optional[MagnificationOverride] = None) -> bool:
    """True when the slide cannot be classified as it is: neither the file nor ``override`` gives its scale.

    Only the header is read. An unreadable file returns False: classifying it fails with its own message.
    """
    from .slide import open_slide
    try:
        with open_slide(path, objective_power=override.objective_power if override else None,
                        mpp=override.mpp if override else None) as slide:
            return slide.objective_power is None
    except DnDError:
        return False


__all__ = ["DEFAULT_MPP", "DEFAULT_POWER", "MagnificationOverride", "OverrideTable", "needs_magnification",
           "open_with_override", "override_for", "slide_identity"]
