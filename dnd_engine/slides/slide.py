"""One `Slide` type over three readers, so the rest of the engine never cares which library opened a file.

OpenSlide (from the ``openslide-bin`` wheel) is tried first because it knows every vendor format; tiffslide
reads the TIFF-family files OpenSlide rejects (OME-TIFF, strip TIFFs); PIL opens plain images as one-level
slides. Every failure becomes a one-line :class:`SlideError`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import threading
import warnings
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image

from ..errors import SlideError
from ..text import one_line

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
SLIDE_EXTENSIONS = (
    ".svs", ".tif", ".tiff", ".ndpi", ".mrxs", ".vms", ".vmu", ".scn", ".bif", ".svslide", ".dcm",
    ".ome.tif", ".ome.tiff", ".qptiff",
) + IMAGE_EXTENSIONS

# Nominal microns-per-pixel of each objective (TRIDENT's bins): 10x = 1.0 um/px, 20x = 0.5, 40x = 0.25.
_MPP_BINS = ((0.16, 80.0), (0.2, 60.0), (0.3, 40.0), (0.6, 20.0), (1.2, 10.0), (2.4, 5.0), (4.8, 2.5))


def magnification_from_mpp(mpp: Optional[float]) -> Optional[float]:
    """The nominal objective power for a pixel size, or None when the pixel size is unknown."""
    if mpp is None or not (mpp > 0) or not math.isfinite(mpp):
        return None
    for upper, mag in _MPP_BINS:
        if mpp < upper:
            return mag
    return round(10.0 / mpp, 2)


def nominal_mpp(power: Optional[float]) -> Optional[float]:
    """The nominal pixel size of an objective power (10x = 1.0 um/px, 20x = 0.5, 40x = 0.25), or None."""
    power = _float_or_none(power)
    return 10.0 / power if power is not None else None


def is_slide_path(path: str | os.PathLike) -> bool:
    name = str(path).lower()
    return name.endswith(SLIDE_EXTENSIONS) and not Path(path).name.startswith(".")


def slide_id(path: str | os.PathLike) -> str:
    """The slide id used for file names and labels: the file name without its (possibly double) extension."""
    name = Path(path).name
    for ext in (".ome.tiff", ".ome.tif"):
        if name.lower().endswith(ext):
            return name[: -len(ext)]
    return Path(name).stem


def _float_or_none(value) -> Optional[float]:
    try:
        f = float(value)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) and f > 0 else None


class Slide:
    """A pyramidal image with level-0 coordinates, pixel size and objective power.

    The one place a slide's scale is decided, in this order: what the user set (``objective_power`` or ``mpp``
    passed to :func:`open_slide`: the CLI's ``--objective-power``, the app's "set by you"), then the file header's
    objective power, then the power of the file's pixel size, then the caller's ``fallback_magnification``.
    ``magnification_source`` says which won (override | header | mpp | assumed | unknown) and ``mpp_source``
    where the pixel size came from (override | file | objective: nominal, from a power the user set | None).
    """

    def __init__(self, path: Path, backend: str, handle, level_dimensions, level_downsamples, properties,
                 mpp: Optional[float], header_power: Optional[float], override_power: Optional[float],
                 fallback_power: Optional[float], vendor: str, override_mpp: Optional[float] = None):
        self.path = path
        self.id = slide_id(path)
        self.backend = backend
        self._h = handle
        self.level_dimensions: list[tuple[int, int]] = [tuple(map(int, d)) for d in level_dimensions]
        self.level_downsamples: list[float] = [float(d) for d in level_downsamples]
        self.properties: dict = dict(properties)
        self.vendor = vendor
        override_power = _float_or_none(override_power)
        override_mpp = _float_or_none(override_mpp)
        if override_mpp is not None:
            self.mpp, self.mpp_source = override_mpp, "override"
        elif mpp is not None:
            self.mpp, self.mpp_source = mpp, "file"
        elif override_power is not None:        # a power the user set gives the scale bar its nominal pixel size
            self.mpp, self.mpp_source = nominal_mpp(override_power), "objective"
        else:
            self.mpp, self.mpp_source = None, None
        if override_power is not None:
            self.objective_power, self.magnification_source = float(override_power), "override"
        elif override_mpp is not None and magnification_from_mpp(override_mpp) is not None:
            self.objective_power, self.magnification_source = magnification_from_mpp(override_mpp), "mpp"
        elif header_power is not None:
            self.objective_power, self.magnification_source = header_power, "header"
        elif magnification_from_mpp(mpp) is not None:
            self.objective_power, self.magnification_source = magnification_from_mpp(mpp), "mpp"
        elif fallback_power is not None:
            self.objective_power, self.magnification_source = float(fallback_power), "assumed"
        else:
            self.objective_power, self.magnification_source = None, "unknown"

    # --- geometry ---------------------------------------------------------------------------------------
    @property
    def dimensions(self) -> tuple[int, int]:
        return self.level_dimensions[0]

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def magnification_at_level(self, level: int) -> Optional[float]:
        if self.objective_power is None:
            return None
        return self.objective_power / self.level_downsamples[level]

    def best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (the nearest finer level).

        A 1 % tolerance accepts levels like 2.0005 for a wanted 2 (scanners round level sizes), which costs a
        negligible upsampling instead of reading four times the pixels at the level above.
        """
        best = 0
        for i, d in enumerate(self.level_downsamples):
            if d <= downsample * 1.01:
                best = i
        return best

    def downsample_for_magnification(self, magnification: float) -> float:
        if self.objective_power is None:
            raise SlideError(
                f"{self.path.name}: the slide has no magnification metadata (no objective power, no pixel size); "
                "give its base magnification (app: Slide panel, Set objective / pixel size; "
                "CLI: --base-magnification 20)")
        if not magnification > 0:
            raise SlideError(f"magnification must be positive, got {magnification}")
        return self.objective_power / magnification

    def best_level_for_magnification(self, magnification: float) -> tuple[int, float]:
        """(level, extra_downsample): read at ``level`` then shrink by ``extra_downsample`` (≥ 1) to reach it.

        A target finer than the scan (e.g. 40x from a 20x slide) gives extra_downsample < 1: an upsampling,
        which callers should refuse or at least report.
        """
        ds = self.downsample_for_magnification(magnification)
        level = self.best_level_for_downsample(ds)
        return level, ds / self.level_downsamples[level]

    # --- pixels -----------------------------------------------------------------------------------------
    def read_region(self, location: Sequence[int], level: int, size: Sequence[int]) -> Image.Image:
        """An RGB image of ``size`` at ``level`` whose top-left is ``location`` in level-0 pixels.

        Areas outside the slide are white, as OpenSlide's transparent pixels composited on white.
        """
        x, y = int(location[0]), int(location[1])
        w, h = int(size[0]), int(size[1])
        if not 0 <= level < self.level_count:
            raise SlideError(f"{self.path.name}: level {level} out of range 0..{self.level_count - 1}")
        if w <= 0 or h <= 0:
            raise SlideError(f"region size must be positive, got {w}x{h}")
        try:
            if self.backend == "image":
                img = self._read_image_region(x, y, level, w, h)
            else:
                img = self._h.read_region((x, y), level, (w, h))
                if self.backend == "tiffslide":
                    img = self._white_beyond_edges(_to_rgb(img), x, y, level, w, h)
        except SlideError:
            raise
        except Exception as exc:  # openslide/tifffile/zarr raise many types for corrupt data
            raise SlideError(f"{self.path.name}: cannot decode the pixels at ({x}, {y}), level {level}: "
                             f"{plain_reason(exc)}") from None
        return _to_rgb(img)

    def _white_beyond_edges(self, img: Image.Image, x: int, y: int, level: int, w: int, h: int) -> Image.Image:
        """tiffslide pads reads past the level's edges with black; make that white, as OpenSlide's (and as the
        tile reader's) padding, so a slide's edge patches do not depend on which library opened it."""
        lw, lh = self.level_dimensions[level]
        ds = self.level_downsamples[level]
        rx, ry = int(x / ds), int(y / ds)        # tiffslide's own placement of level-0 coordinates
        x0, y0, x1, y1 = max(0, -rx), max(0, -ry), min(w, lw - rx), min(h, lh - ry)
        if x0 == 0 and y0 == 0 and x1 >= w and y1 >= h:
            return img
        out = Image.new("RGB", (w, h), (255, 255, 255))
        if x1 > x0 and y1 > y0:
            out.paste(img.crop((x0, y0, x1, y1)), (x0, y0))
        return out

    def _read_image_region(self, x, y, level, w, h) -> Image.Image:
        img = self._h
        out = Image.new("RGB", (w, h), (255, 255, 255))
        W, H = img.size
        x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
        if x1 > x0 and y1 > y0:
            out.paste(img.crop((x0, y0, x1, y1)), (x0 - x, y0 - y))
        return out

    def read_level(self, level: int) -> np.ndarray:
        """The whole of one level as an H×W×3 uint8 array (used on small levels: thumbnails, masks)."""
        w, h = self.level_dimensions[level]
        if w * h > 2.5e8:
            raise SlideError(f"{self.path.name}: level {level} is {w}x{h}, too large to read whole")
        return np.asarray(self.read_region((0, 0), level, (w, h)))

    def thumbnail_at_downsample(self, downsample: float) -> tuple[np.ndarray, float]:
        """An RGB array of the slide at (about) ``downsample``; returns (array, actual level-0 downsample x)."""
        level = self.best_level_for_downsample(downsample)
        arr = self.read_level(level)
        W0, H0 = self.dimensions
        tw, th = max(1, round(W0 / downsample)), max(1, round(H0 / downsample))
        if (arr.shape[1], arr.shape[0]) != (tw, th):
            arr = np.asarray(Image.fromarray(arr).resize((tw, th), Image.Resampling.BOX))
        return arr, W0 / tw

    def get_thumbnail(self, max_size: int = 1024) -> Image.Image:
        W0, H0 = self.dimensions
        ds = max(W0, H0) / max_size if max(W0, H0) > max_size else 1.0
        arr, _ = self.thumbnail_at_downsample(ds)
        return Image.fromarray(arr)

    # --- description ------------------------------------------------------------------------------------
    def info(self) -> dict:
        return {
            "path": str(self.path),
            "slide_id": self.id,
            "backend": self.backend,
            "vendor": self.vendor,
            "dimensions": list(self.dimensions),
            "level_count": self.level_count,
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": [round(d, 4) for d in self.level_downsamples],
            "mpp": self.mpp,
            "mpp_source": self.mpp_source,
            "objective_power": self.objective_power,
            "magnification_source": self.magnification_source,
            "file_size": self.path.stat().st_size,
        }

    def close(self) -> None:
        h, self._h = self._h, None
        if h is not None:
            try:
                h.close()
            except Exception:
                pass

    def __enter__(self) -> "Slide":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"Slide({self.path.name!r}, backend={self.backend}, dims={self.dimensions}, levels={self.level_count}, "
                f"mpp={self.mpp}, power={self.objective_power} [{self.magnification_source}])")


NOT_A_SLIDE = "its contents are not a slide format OpenSlide or tiffslide reads (is it a slide at all?)"
DAMAGED = "the file is damaged or incomplete (was the copy cut short?)"
_DAMAGE_WORDS = ("out of range", "invalid offset", "truncat", "corrupt", "reshape", "unexpected end", "eof",
                 "too short", "not enough data", "incomplete", "read error")


def plain_reason(exc: BaseException) -> str:
    """What a reader library's exception means, in words a user can act on.

    tifffile, OpenSlide and zarr word their failures for programmers ("not a TIFF file: header=b'this'",
    "index 0 out of range(0)", "corrupted strip cannot be reshaped from (1860,) to (1, 901, 1493, 3)"); a user
    needs to know whether the file is not a slide or a damaged one. Unknown messages keep their first line with
    byte strings and object reprs removed.
    """
    text = one_line(exc)
    low = text.lower()
    cleaned = re.sub(r"b'[^']*'|b\"[^\"]*\"|<[^>]*>", "", text).strip(" :,")
    if "codec" in low or "requires" in low:
        return f"a decoder the file needs is not installed ({cleaned})"
    if "not a tiff" in low or "header=" in low or "unsupported" in low or "not a valid" in low \
            or "not recognized" in low or "unknown format" in low:
        return NOT_A_SLIDE
    if isinstance(exc, (IndexError, EOFError, ValueError, KeyError)) or any(w in low for w in _DAMAGE_WORDS):
        return DAMAGED
    return cleaned or DAMAGED


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        bg = Image.new("RGB", img.size, (255, 255, 255))
        bg.paste(img, mask=img.getchannel("A"))
        return bg
    return img.convert("RGB")


def _open_openslide(path: Path):
    try:
        import openslide
    except Exception:  # the wheel or the library is missing: let tiffslide try
        return None
    try:
        if openslide.OpenSlide.detect_format(str(path)) is None:
            return None
        return openslide.OpenSlide(str(path))
    except Exception:
        return None


_quiet = threading.local()


class _QuietFilter(logging.Filter):
    """Drops tifffile's log warnings ("<tifffile.TiffPages @8> invalid offset to first page 8") while this
    thread opens a slide: the same failure reaches the user once, as a SlideError in plain words."""

    def filter(self, record) -> bool:
        return not getattr(_quiet, "on", False)


logging.getLogger("tifffile").addFilter(_QuietFilter())
# tifffile also logs while pages are read later (the tile reader, thumbnails): with no handler of its own, Python
# printed those lines to stderr ("<tifffile.TiffPages @1275950> invalid page offset"); they still reach any handler
# an application configures, never the terminal by default
logging.getLogger("tifffile").addHandler(logging.NullHandler())


@contextlib.contextmanager
def _quiet_tifffile():
    before, _quiet.on = getattr(_quiet, "on", False), True
    try:
        yield
    finally:
        _quiet.on = before


def _open_tiffslide(path: Path):
    try:
        import tiffslide
    except Exception:
        return None, "tiffslide is not installed"
    try:
        with warnings.catch_warnings(), _quiet_tifffile():
            warnings.simplefilter("ignore")
            return tiffslide.TiffSlide(str(path)), None
    except Exception as exc:
        return None, plain_reason(exc)


def open_slide(path: str | os.PathLike, objective_power: Optional[float] = None, mpp: Optional[float] = None,
               fallback_magnification: Optional[float] = None) -> Slide:
    """Open ``path`` with the first reader that accepts it.

    ``objective_power`` and ``mpp`` override what the file says; ``fallback_magnification`` is used only when
    the file says nothing about magnification or pixel size.
    """
    p = Path(path)
    if not p.exists():
        raise SlideError(f"{p}: no such file")
    if p.is_dir():
        raise SlideError(f"{p}: is a folder, not a slide file")
    if p.stat().st_size == 0:
        raise SlideError(f"{p.name}: empty file (0 bytes)")
    if not os.access(p, os.R_OK):
        raise SlideError(f"{p.name}: permission denied")
    from .precheck import precheck_slide
    precheck_slide(p)          # before any native library parses it: a crafted header can abort the process
    override_mpp = _float_or_none(mpp)
    lower = p.name.lower()

    if lower.endswith(IMAGE_EXTENSIONS):
        try:
            img = Image.open(p)
            img.load()
        except Exception as exc:
            raise SlideError(f"{p.name}: not a readable image: {one_line(exc)}") from None
        img = _to_rgb(img)
        props = {"dnd.format": img.format or p.suffix.lstrip(".")}
        return Slide(p, "image", img, [img.size], [1.0], props, None, None, objective_power,
                     fallback_magnification, vendor="image", override_mpp=override_mpp)

    handle = _open_openslide(p)
    backend = "openslide"
    if handle is None:
        handle, why = _open_tiffslide(p)
        backend = "tiffslide"
        if handle is None:
            if not lower.endswith(SLIDE_EXTENSIONS):
                raise SlideError(f"{p.name}: unsupported file type '{p.suffix}' (supported: "
                                 f"{', '.join(sorted(set(SLIDE_EXTENSIONS)))})")
            raise SlideError(f"{p.name}: not a readable slide: {why}")
    try:
        with _quiet_tifffile():
            props = dict(handle.properties)
            prefix = "openslide" if backend == "openslide" else "tiffslide"
            file_mpp = _float_or_none(props.get(f"{prefix}.mpp-x"))
            header_power = _float_or_none(props.get(f"{prefix}.objective-power"))
            vendor = str(props.get(f"{prefix}.vendor") or "generic")
            dims = list(handle.level_dimensions)
            downs = list(handle.level_downsamples)
    except Exception as exc:
        handle.close()
        raise SlideError(f"{p.name}: unreadable slide header: {plain_reason(exc)}") from None
    if not dims or dims[0][0] <= 0 or dims[0][1] <= 0:
        handle.close()
        raise SlideError(f"{p.name}: the slide has no pixels")
    slide = Slide(p, backend, handle, dims, downs, props, file_mpp, header_power,
                  objective_power, fallback_magnification, vendor, override_mpp=override_mpp)
    return slide
