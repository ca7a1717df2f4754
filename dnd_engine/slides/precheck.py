"""Check a TIFF-family slide's layout in pure Python before a native library (OpenSlide, libtiff) sees it.

A file we did not write is untrusted: six changed bytes (TileWidth = 1,048,576) make OpenSlide allocate
terabytes for one tile and abort the whole process, which no ``try`` can catch. tifffile parses the directories
without decoding pixels, so the sizes, counts and offsets a native decoder would trust are checked here first
and a crafted or damaged file becomes a one-line :class:`SlideError`. Non-TIFF files (PNG, MRXS, DICOM, ...)
pass through untouched; the reader processes of extraction (:mod:`dnd_engine.child_pool`) cover what no check
can foresee.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np

from ..errors import SlideError

TIFF_MAGIC = (b"II*\0", b"MM\0*", b"II+\0", b"MM\0+")
#: no scanner writes a level wider or taller than this (a 40x scan of a whole 7.5 cm slide is ~300,000 px)
MAX_SIDE = 1_000_000
#: TIFF tiles are multiples of 16 px; slides use 240 to 1024, JPEG 2000 tiles up to a few thousand
MAX_TILE_SIDE = 16384
#: decoded bytes of one tile or strip a reader allocates at once
MAX_CHUNK_BYTES = 1 << 30
MAX_PAGES = 4096
CRAFTED = "it is damaged or crafted"
#: what a file cut short (an interrupted copy or download) gets: the likely cause first
CUT = "it is damaged or incomplete (cut short?)"


def is_tiff(path: str | Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) in TIFF_MAGIC
    except OSError:
        return False


def precheck_slide(path: str | Path) -> None:
    """Raise :class:`SlideError` (one line) if a TIFF-family file's layout is not one a reader can trust.

    Checks every directory (and pyramid level): image and tile sizes within sane bounds, tiles a multiple of
    16 px, the number of tile/strip offsets what the image size implies, every tile inside the file, one
    tile's decoded size bounded, and pyramid levels that shrink. Files that are not TIFFs return at once.
    """
    p = Path(path)
    if not is_tiff(p):
        return
    import tifffile
    from .slide import _quiet_tifffile, plain_reason

    file_size = p.stat().st_size
    try:
        with warnings.catch_warnings(), _quiet_tifffile():
            warnings.simplefilter("ignore")
            with tifffile.TiffFile(str(p)) as tf:
                pages = {}
                for k, page in enumerate(tf.pages):
                    if k >= MAX_PAGES:
                        raise SlideError(f"{p.name}: more than {MAX_PAGES} image directories: {CRAFTED}")
                    pages[page.offset] = page
                for series in tf.series:
                    prev = None
                    for level in series.levels:
                        for page in level.pages:
                            if page is not None and hasattr(page, "dataoffsets"):
                                pages.setdefault(page.offset, page)
                        shape = tuple(level.shape)
                        if prev is not None and math.prod(shape) > math.prod(prev):
                            raise SlideError(f"{p.name}: a pyramid level is larger than the level above it: "
                                             f"{CRAFTED}")
                        prev = shape
                if not pages:
                    raise SlideError(f"{p.name}: the TIFF holds no image: {CUT}")
                for page in pages.values():
                    problem = _page_problem(page, file_size, tf.is_ndpi)
                    if problem:
                        raise SlideError(f"{p.name}: {problem}: {CUT if 'end of the file' in problem else CRAFTED}")
    except SlideError:
        raise
    except MemoryError:
        raise SlideError(f"{p.name}: its header asks for an impossible amount of memory: {CRAFTED}") from None
    except (OSError, ValueError, KeyError, IndexError, EOFError) as exc:  # tifffile's words for a broken file
        raise SlideError(f"{p.name}: not a readable slide: {plain_reason(exc)}") from None
    except Exception:  # TypeError, ZeroDivisionError, ... inside tifffile: values of the wrong shape
        raise SlideError(f"{p.name}: its TIFF directories contradict themselves: {CRAFTED}") from None


#: tags that hold one number: a crafted count or type turns them into tuples or bytes that readers compare as
#: numbers
SCALAR_TAGS = ("ImageWidth", "ImageLength", "TileWidth", "TileLength", "RowsPerStrip", "SamplesPerPixel",
               "Compression", "PhotometricInterpretation", "PlanarConfiguration", "ImageDepth", "TileDepth")


def _page_problem(page, file_size: int, ndpi: bool) -> str:
    """What is wrong with one TIFF directory, or "" when nothing is."""
    for name in SCALAR_TAGS:
        tag = page.tags.get(name)
        if tag is not None and tag.count != 1:
            return f"tag {name} holds {tag.count} values where a TIFF has one"
        if tag is not None and not isinstance(tag.value, (int, np.integer)):
            return f"tag {name} holds bytes or text where a TIFF has a number"
    w, h, d = int(page.imagewidth), int(page.imagelength), int(getattr(page, "imagedepth", 1) or 1)
    spp = max(1, int(page.samplesperpixel or 1))
    bps = page.bitspersample
    bits = int(max(bps) if isinstance(bps, tuple) else bps or 8)
    if w <= 0 or h <= 0:
        return f"an image of {w}x{h} pixels"
    if w > MAX_SIDE or h > MAX_SIDE or d > 4096:
        return f"an image of {w}x{h} pixels is larger than any slide"
    if spp > 16 or bits > 64:
        return f"{spp} samples of {bits} bits per pixel"
    offsets = np.asarray(page.dataoffsets, dtype=np.uint64)
    counts = np.asarray(page.databytecounts, dtype=np.uint64)
    if offsets.shape != counts.shape:
        return f"{offsets.size} tile offsets but {counts.size} byte counts"
    planes = spp if int(page.planarconfig or 1) == 2 else 1
    px_bytes = (spp // planes) * bits / 8
    if page.is_tiled:
        tw, th, td = int(page.tilewidth), int(page.tilelength), int(getattr(page, "tiledepth", 1) or 1)
        if not ndpi:
            if not (16 <= tw <= MAX_TILE_SIDE and 16 <= th <= MAX_TILE_SIDE) or tw % 16 or th % 16:
                return f"tiles of {tw}x{th} pixels (a TIFF tile is 16 to {MAX_TILE_SIDE} px, a multiple of 16)"
        if tw * th * max(td, 1) * px_bytes > MAX_CHUNK_BYTES:
            return f"tiles of {tw}x{th} pixels, too large to decode"
        want = math.ceil(w / tw) * math.ceil(h / th) * math.ceil(d / max(td, 1)) * planes
        what = "tiles"
    else:
        rps = int(page.rowsperstrip or h) or h
        if not ndpi and w * min(rps, h) * px_bytes > MAX_CHUNK_BYTES:
            return f"strips of {w}x{min(rps, h)} pixels, too large to decode"
        want = math.ceil(h / min(rps, h)) * d * planes
        what = "strips"
    if offsets.size != want and not (ndpi and offsets.size == 1):
        return f"{offsets.size} {what} where a {w}x{h} image needs {want}"
    used = counts > 0
    if used.any():
        ends = offsets[used] + counts[used]
        if int(ends.max()) > file_size or bool((ends < offsets[used]).any()):
            return f"{what} that lie beyond the end of the file ({file_size} bytes)"
    return ""
