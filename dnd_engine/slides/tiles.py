"""Patches straight from a tiled TIFF's own compressed tiles, each tile decoded once: extraction's fast reader.

Why: ``read_region`` (OpenSlide, tiffslide) decodes every compressed tile under a patch at full resolution, and
does it again for the next patch that touches the same tile: a 512 px read from 240 px JPEG tiles decodes nine
tiles for about 4.6 tiles' worth of pixels, and the patch is then shrunk to half. ``PERFORMANCE_NOTES.md``
measures ≈ 41 Mpx/s through ``read_region`` against ≈ 173 Mpx/s decoding each tile once, and 1.6× more again when
a JPEG tile is decoded straight at half scale in the DCT domain (what a 10× patch from a 20× scan needs).

What :class:`TileReader` does, for the patches of one :class:`~dnd_engine.patching.PatchGrid`:

- reads each compressed tile of the grid's pyramid level from the file (offsets and byte counts from the TIFF
  page, ``tifffile``'s ``FileHandle``) and decodes it once. JPEG tiles (compression 7) are decoded with PIL after
  splicing in the page's ``JPEGTables``, at the DCT scale 1/s (s = 1, 2, 4, 8; ``Image.draft``) that is the
  coarsest not below the target resolution: a patch read as ``read_size`` pixels and resized to ``out_size``
  pixels is assembled from tiles decoded at s ≤ read_size / out_size. The JPEG colour space follows the TIFF's
  photometric tag, as OpenSlide does: Aperio's ``JPEG/RGB`` tiles carry untransformed RGB components whose ids
  (0, 1, 2) would make libjpeg guess YCbCr. Aperio JPEG 2000 tiles in RGB (33005) are decoded by ``imagecodecs``;
  LZW / deflate / uncompressed tiles by ``tifffile``'s own codec; both at full scale.
- keeps a decoded tile only as long as a later patch of the same call still needs it (a reference count per
  tile). Patches come in the grid's row-major order, so what is held is the band of tile rows under the current
  row of patches and the next: the band cache, without a fixed size to tune.
- crops each patch from its tiles (white beyond the level's edges, as OpenSlide composites its transparent
  pixels on white), reproduces the reference reader's sub-pixel placement (OpenSlide interpolates bilinearly
  at a fractional level position, e.g. x / 2.0005 on a level whose size was rounded; tiffslide truncates it),
  then resizes with the reference's filter (PIL's antialiased bilinear, as
  :func:`~dnd_engine.slides.resize.resize_patch` does for the ``read_region`` path), a chunk of patches per call
  (:func:`_resize_chunk`). When the DCT scale lands exactly on the output size there is no resize left to do,
  and libjpeg's scaled output is sharper than the reference's antialiased shrink; a 3-tap blur
  (:data:`ANTIALIAS_TAP`) stands in.
- yields the patches in the order of the coordinates given, so feature rows keep the grid's order, or writes
  them in place into a batch (:meth:`TileReader.read_patches_into`): what a reading worker does, into shared
  memory, so that nothing is stacked or copied again on the way to the encoder.

It reads only files whose layout it understands, and says why when it does not (:class:`TilesNotEligible`):
non-tiled pages, planar or non-8-bit RGB data, compressions it does not decode, vendors whose tiles are not a
plain grid (Ventana's overlapping tiles, Leica's regions, NDPI's strips), a pyramid level whose size disagrees
with the one the slide reader reports. :func:`plan_tiles` also reads the first, middle and last patch both ways
and refuses the slide if they differ (mean absolute difference above :data:`MAX_MEAN_ABS_DIFF`), so an unforeseen
variant falls back to the reference reader instead of producing different features. A tile that fails to
decode part-way raises :class:`~dnd_engine.errors.DnDError` naming the file and the tile.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from collections import Counter
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Iterator, Optional

import numpy as np
from PIL import Image

from ..errors import DnDError
from ..text import one_line
from .resize import resize_patch

if TYPE_CHECKING:  # the grid module imports slides; keep this module import-light
    from ..patching import PatchGrid
    from .slide import Slide

#: largest mean absolute difference (0–255) between a fast-path patch and the reference patch that the planning
#: check accepts; the tests hold every accepted slide to the same bound on a sample of its patches.
MAX_MEAN_ABS_DIFF = 3.0

COMPRESSION_NONE, COMPRESSION_LZW, COMPRESSION_JPEG = 1, 5, 7
COMPRESSION_DEFLATE, COMPRESSION_ADOBE_DEFLATE = 32946, 8
COMPRESSION_APERIO_J2K_YCBCR, COMPRESSION_APERIO_J2K_RGB = 33003, 33005
PHOTOMETRIC_RGB, PHOTOMETRIC_YCBCR = 2, 6

_JPEG_MODES = {PHOTOMETRIC_RGB: "RGB", PHOTOMETRIC_YCBCR: "YCbCr"}
_TIFFFILE_CODECS = {COMPRESSION_NONE: "none", COMPRESSION_LZW: "LZW", COMPRESSION_ADOBE_DEFLATE: "deflate",
                    COMPRESSION_DEFLATE: "deflate"}
# slide-reader vendors whose files are one plain tile grid per level (the level's tiles in row-major order)
_PLAIN_GRID_VENDORS = {"openslide": {"aperio", "generic-tiff"}, "tiffslide": {"aperio", "generic"}}


class TilesNotEligible(DnDError):
    """The tile reader cannot read this slide; ``reason`` says why (the message adds the file name). The
    ``read_region`` path may still read it."""

    def __init__(self, reason: str, name: str = ""):
        self.reason = reason
        super().__init__(f"{name}: not eligible for the tile reader: {reason}" if name else reason)


class _PixelMismatch(TilesNotEligible):
    """The verification read disagreed with the reference (as opposed to failing)."""


@dataclass(frozen=True)
class TileSpec:
    """How to read one slide's patches from its tiles: small and picklable, so it travels to reading workers.

    ``series``/``series_level`` locate the TIFF page in ``tifffile``'s view of the file; ``level`` is the slide
    reader's level (the grid's ``patch_level``) with its ``level_downsample``; ``scale`` is the decode scale
    (the region of ``read_size`` level pixels is assembled at ``read_size / scale`` pixels, then resized to
    ``out_size``); ``subpixel`` says whether the reference reader interpolates fractional level positions
    (OpenSlide) or truncates them (tiffslide).
    """

    path: str
    series: int
    series_level: int
    level: int
    level_downsample: float
    width: int
    height: int
    tile_width: int
    tile_height: int
    compression: int
    photometric: int
    scale: int
    read_size: int
    out_size: int
    subpixel: bool
    note: str = ""          # why the decode scale is finer than the coarsest the output allows, if it is

    @property
    def tiles_across(self) -> int:
        return -(-self.width // self.tile_width)

    @property
    def tiles_down(self) -> int:
        return -(-self.height // self.tile_height)

    @property
    def region_size(self) -> int:
        """Pixels of the assembled region, at the decode scale, before the resize to ``out_size``."""
        return max(1, int(round(self.read_size / self.scale)))

    def describe(self) -> str:
        kind = {COMPRESSION_JPEG: "JPEG", COMPRESSION_APERIO_J2K_RGB: "JPEG 2000"}.get(
            self.compression, _TIFFFILE_CODECS.get(self.compression, str(self.compression)))
        text = (f"{kind} tiles {self.tile_width}x{self.tile_height} at level {self.level}, decoded at 1/{self.scale}"
                if self.scale > 1 else f"{kind} tiles {self.tile_width}x{self.tile_height} at level {self.level}")
        return f"{text} ({self.note})" if self.note else text


def _open_tiff(path: str):
    import tifffile
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tifffile.TiffFile(path)


def _level_page(tf, series: int, series_level: int):
    """The one TIFF page that holds ``series_level`` of ``series`` (tifffile resolves SubIFDs and SVS layout)."""
    level = tf.series[series].levels[series_level]
    if len(level.pages) != 1:
        raise TilesNotEligible(f"pyramid level {series_level} spans {len(level.pages)} TIFF pages")
    return level.pages[0]


def _page_problem(page) -> Optional[str]:
    """Why the tile reader cannot decode ``page``, or None when it can."""
    if not page.is_tiled:
        return "the level is stored in strips, not tiles"
    if getattr(page, "imagedepth", 1) != 1 or getattr(page, "tiledepth", 1) != 1:
        return "volumetric tiles"
    if page.planarconfig != 1:
        return "planar (separate) colour planes"
    if page.samplesperpixel != 3 or getattr(page, "extrasamples", ()):
        return f"{page.samplesperpixel} samples per pixel (RGB expected)"
    bps = page.bitspersample
    if (bps if isinstance(bps, int) else max(bps)) != 8:
        return f"{bps} bits per sample (8 expected)"
    comp, photo = int(page.compression), int(page.photometric)
    if comp == COMPRESSION_JPEG:
        if photo not in _JPEG_MODES:
            return f"JPEG tiles with photometric interpretation {photo} (RGB or YCbCr expected)"
    elif comp == COMPRESSION_APERIO_J2K_RGB:
        if photo != PHOTOMETRIC_RGB:
            return f"JPEG 2000 tiles with photometric interpretation {photo}"
        try:
            import imagecodecs
            if not imagecodecs.JPEG2K.available:
                return "imagecodecs has no JPEG 2000 codec"
        except Exception:
            return "imagecodecs (JPEG 2000 decoding) is not installed"
    elif comp == COMPRESSION_APERIO_J2K_YCBCR:
        return "Aperio JPEG 2000 in YCbCr (compression 33003) is not verified against OpenSlide"
    elif comp in _TIFFFILE_CODECS:
        if photo != PHOTOMETRIC_RGB:
            return f"{_TIFFFILE_CODECS[comp]} tiles with photometric interpretation {photo} (RGB expected)"
    else:
        return f"compression {comp} is not decoded by the tile reader"
    n_tiles = (-(-page.imagewidth // page.tilewidth)) * (-(-page.imagelength // page.tilelength))
    if len(page.dataoffsets) != n_tiles or len(page.databytecounts) != n_tiles:
        return f"{len(page.dataoffsets)} tile offsets for a grid of {n_tiles} tiles"
    return None


def _decode_scale(compression: int, tile_w: int, tile_h: int, read_size: int, out_size: int) -> int:
    """The coarsest DCT scale 1/s whose region (read_size / s) is not smaller than the output (1 % tolerance, as
    :meth:`Slide.best_level_for_downsample`); JPEG only, and s must divide the tile so decoded tiles abut."""
    if compression != COMPRESSION_JPEG:
        return 1
    for s in (8, 4, 2):
        if read_size / s >= out_size / 1.01 and tile_w % s == 0 and tile_h % s == 0:
            return s
    return 1


def plan_tiles(slide: "Slide", grid: "PatchGrid", out_size: int, verify: int = 3) -> TileSpec:
    """A :class:`TileSpec` for reading ``grid`` from ``slide``'s tiles, or :class:`TilesNotEligible` saying why.

    ``verify`` patches of the grid (first, middle, last) are read both ways and must agree within
    :data:`MAX_MEAN_ABS_DIFF`; 0 skips that check.
    """
    try:
        spec = _plan(slide, grid, out_size)
        while verify and len(grid.coords):
            try:
                _verify_against_reference(slide, grid.coords, spec, verify)
                break
            except _PixelMismatch as exc:
                if spec.scale == 1:
                    raise
                # libjpeg's DCT-scaled decode drops detail differently from the reference's full decode and
                # shrink; on high-contrast tissue that can exceed the bound. One step finer is closer, and at
                # 1/1 the decoder is the reference's own: slower than 1/2, still each tile decoded once.
                spec = replace(spec, scale=spec.scale // 2, note=f"DCT 1/{spec.scale} differed: {exc.reason}")
        return spec
    except TilesNotEligible as exc:
        raise TilesNotEligible(exc.reason, slide.path.name) from None


def _plan(slide: "Slide", grid: "PatchGrid", out_size: int) -> TileSpec:
    vendors = _PLAIN_GRID_VENDORS.get(slide.backend)
    if vendors is None:
        raise TilesNotEligible(f"opened by {slide.backend}, not a TIFF-family reader")
    if slide.vendor not in vendors:
        raise TilesNotEligible(f"{slide.backend} format '{slide.vendor}' is not a plain tile grid the tile reader "
                               "knows")
    level = int(grid.patch_level)
    lw, lh = slide.level_dimensions[level]
    try:
        tf = _open_tiff(str(slide.path))
    except Exception as exc:
        raise TilesNotEligible(f"tifffile cannot parse it ({one_line(exc, 200)})") from None
    try:
        if getattr(tf, "is_ndpi", False):
            raise TilesNotEligible("NDPI layout")
        if not tf.series:
            raise TilesNotEligible("no image series")
        series = tf.series[0]
        if series.axes != "YXS":
            raise TilesNotEligible(f"image axes {series.axes} (YXS expected)")
        match = [i for i, lv in enumerate(series.levels) if tuple(lv.shape[:2]) == (lh, lw)]
        if not match:
            sizes = ", ".join(f"{lv.shape[1]}x{lv.shape[0]}" for lv in series.levels)
            raise TilesNotEligible(f"level {level} is {lw}x{lh} for {slide.backend} but the TIFF's levels are {sizes}")
        page = _level_page(tf, 0, match[0])
        problem = _page_problem(page)
        if problem:
            raise TilesNotEligible(problem)
        comp, photo = int(page.compression), int(page.photometric)
        tw, th = int(page.tilewidth), int(page.tilelength)
        return TileSpec(path=str(slide.path), series=0, series_level=match[0], level=level,
                        level_downsample=float(slide.level_downsamples[level]), width=int(lw), height=int(lh),
                        tile_width=tw, tile_height=th, compression=comp, photometric=photo,
                        scale=_decode_scale(comp, tw, th, int(grid.read_size), int(out_size)),
                        read_size=int(grid.read_size), out_size=int(out_size),
                        subpixel=slide.backend == "openslide")
    except TilesNotEligible:
        raise
    except Exception as exc:  # a TIFF layout tifffile parses but this code did not foresee
        raise TilesNotEligible(f"unexpected TIFF layout ({type(exc).__name__}: {one_line(exc, 200)})") from None
    finally:
        tf.close()


def _verify_against_reference(slide: "Slide", coords: np.ndarray, spec: TileSpec, n: int) -> None:
    picks = np.unique(np.linspace(0, len(coords) - 1, num=min(n, len(coords))).round().astype(int))
    sample = np.asarray(coords, dtype=np.int64)[picks]
    try:
        with TileReader(spec) as reader:
            fast = list(reader.read_patches(sample))
    except DnDError as exc:
        raise TilesNotEligible(f"its check read failed: {exc}") from None
    for (x, y), patch in zip(sample, fast):
        ref = resize_patch(slide.read_region((int(x), int(y)), spec.level, (spec.read_size,) * 2), spec.out_size)
        diff = float(np.abs(ref.astype(np.int16) - patch.astype(np.int16)).mean())
        if diff > MAX_MEAN_ABS_DIFF:
            raise _PixelMismatch(f"its pixels differ from {slide.backend}'s at ({x}, {y}) "
                                   f"(mean abs diff {diff:.1f} > {MAX_MEAN_ABS_DIFF:g})")


def tile_eligibility(slide: "Slide", grid: "PatchGrid", out_size: int) -> tuple[Optional[TileSpec], str]:
    """(spec, "") when the tile reader can read ``grid``, else (None, the reason)."""
    try:
        return plan_tiles(slide, grid, out_size), ""
    except TilesNotEligible as exc:
        return None, str(exc)


class TileReader:
    """Reads patches of one pyramid level from its compressed tiles; one per process (it holds a file handle)."""

    def __init__(self, spec: TileSpec):
        self.spec = spec
        self.name = os.path.basename(spec.path)
        try:
            self._tf = _open_tiff(spec.path)
        except Exception as exc:
            raise DnDError(f"{self.name}: cannot open for tile reading: {one_line(exc, 200)}") from None
        try:
            page = _level_page(self._tf, spec.series, spec.series_level)
            got = (int(page.imagewidth), int(page.imagelength), int(page.tilewidth), int(page.tilelength),
                   int(page.compression), int(page.photometric))
            want = (spec.width, spec.height, spec.tile_width, spec.tile_height, spec.compression, spec.photometric)
            if got != want or _page_problem(page):
                raise DnDError(f"{self.name}: the file changed since it was planned (level {spec.level})")
        except Exception:
            self._tf.close()
            raise
        self._page = page
        self._fh = self._tf.filehandle
        self._offsets = np.asarray(page.dataoffsets, dtype=np.int64)
        self._counts = np.asarray(page.databytecounts, dtype=np.int64)
        tables = page.jpegtables
        self._tables = bytes(tables) if tables is not None and len(tables) > 4 else None
        self._jpeg_mode = _JPEG_MODES.get(spec.photometric, "RGB")
        # OpenCV's libjpeg-turbo decodes at the DCT scale without PIL's per-image parsing (≈ 1.5× the tiles/s);
        # it cannot be told the colour space, so RGB tiles get an Adobe marker saying "no transform". Whether
        # it agrees with PIL (which is told the colour space) is checked on this reader's first tile: None
        # until then, then True (OpenCV) or False (PIL for every tile).
        self._use_cv2: Optional[bool] = None if _cv2_flags(spec.scale) is not None else False
        self.tiles_decoded = 0

    # --- tiles --------------------------------------------------------------------------------------------
    def _tile_error(self, tx: int, ty: int, what: str) -> DnDError:
        return DnDError(f"{self.name}: tile ({tx}, {ty}) of level {self.spec.level} is corrupt: {what}")

    def read_tile_bytes(self, tx: int, ty: int) -> bytes:
        """The tile's compressed bytes as stored (empty for a tile the file leaves out)."""
        i = ty * self.spec.tiles_across + tx
        off, n = int(self._offsets[i]), int(self._counts[i])
        if n == 0 or off == 0:
            return b""
        self._fh.seek(off)
        data = self._fh.read(n)
        if len(data) != n:
            raise self._tile_error(tx, ty, f"the file ends {n - len(data)} bytes into it (truncated file)")
        return data

    def decode_tile(self, tx: int, ty: int, data: Optional[bytes] = None) -> Optional[np.ndarray]:
        """The tile as (tile_height / scale, tile_width / scale, 3) uint8, or None for a tile left out."""
        s = self.spec
        if data is None:
            data = self.read_tile_bytes(tx, ty)
        if not data:
            return None
        th, tw = s.tile_height // s.scale, s.tile_width // s.scale
        try:
            if s.compression == COMPRESSION_JPEG:
                arr = self._decode_jpeg(data, tw, th)
            elif s.compression == COMPRESSION_APERIO_J2K_RGB:
                import imagecodecs
                arr = imagecodecs.jpeg2k_decode(data)
            else:
                arr = self._page.decode(data, ty * s.tiles_across + tx, jpegtables=self._page.jpegtables)[0]
                arr = None if arr is None else np.asarray(arr).reshape(arr.shape[-3:])
        except DnDError:
            raise
        except Exception as exc:  # PIL, imagecodecs and tifffile raise many types on corrupt data
            raise self._tile_error(tx, ty, one_line(exc, 200)) from None
        if arr is None or arr.dtype != np.uint8 or arr.shape != (th, tw, 3):
            got = "nothing" if arr is None else f"{arr.dtype} {arr.shape}"
            raise self._tile_error(tx, ty, f"decoded to {got}, expected uint8 {(th, tw, 3)}")
        self.tiles_decoded += 1
        return arr

    def whole_jpeg(self, data: bytes) -> bytes:
        """A tile's stored bytes as a JPEG any decoder reads: the page's shared tables spliced in."""
        if self._tables is not None and data[:2] == b"\xff\xd8":
            # abbreviated stream: the tables end with EOI and the tile starts with SOI; join them into one JPEG
            data = self._tables[:-2] + data[2:]
        return data

    def _decode_jpeg(self, data: bytes, tw: int, th: int) -> np.ndarray:
        data = self.whole_jpeg(data)
        if self._use_cv2 is False:
            return self._decode_jpeg_pil(data, tw, th)
        arr = _decode_jpeg_cv2(data, self.spec.scale, self._jpeg_mode == "RGB")
        if self._use_cv2 is None:
            ref = self._decode_jpeg_pil(data, tw, th)
            self._use_cv2 = arr is not None and arr.shape == ref.shape and np.array_equal(arr, ref)
            return ref
        if arr is None:                              # OpenCV says only "failed": let PIL say why
            return self._decode_jpeg_pil(data, tw, th)
        return arr

    def _decode_jpeg_pil(self, data: bytes, tw: int, th: int) -> np.ndarray:
        im = Image.open(io.BytesIO(data), formats=("JPEG",))
        if im.mode != "RGB":
            raise ValueError(f"JPEG in mode {im.mode}, RGB expected")
        if self.spec.scale > 1:
            im.draft("RGB", (tw, th))
        tile = im.tile[0]
        args = (tile[3][0], self._jpeg_mode)       # (rawmode, JPEG colour space): from the TIFF's photometric
        im.tile = [tile._replace(args=args) if hasattr(tile, "_replace") else (tile[0], tile[1], tile[2], args)]
        im.load()
        return np.asarray(im)

    # --- patches ------------------------------------------------------------------------------------------
    def _level_positions(self, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-left of each patch in pixels of the level (float), as the reference reader places it."""
        s = self.spec
        lx = coords[:, 0] / s.level_downsample
        ly = coords[:, 1] / s.level_downsample
        if not s.subpixel:                     # tiffslide: int(x / downsample)
            lx, ly = np.trunc(lx), np.trunc(ly)
        return lx, ly

    def _positions(self, coords: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The same in decode-scale pixels."""
        lx, ly = self._level_positions(coords)
        return lx / self.spec.scale, ly / self.spec.scale

    def _layout(self, coords: np.ndarray):
        """Where each patch sits at the decode scale and which tiles it covers: (ix, iy) the integer top-left,
        (fx, fy) the fractional rest, (needx, needy) the region to assemble (one more column/row to interpolate
        a fractional position), (tx0, tx1, ty0, ty1) the inclusive tile ranges."""
        s = self.spec
        px, py = self._positions(coords)
        rs = s.region_size
        ix, iy = np.floor(px + 1e-6).astype(np.int64), np.floor(py + 1e-6).astype(np.int64)
        fx, fy = np.clip(px - ix, 0, None), np.clip(py - iy, 0, None)
        fx[fx < 1e-3], fy[fy < 1e-3] = 0.0, 0.0
        needx = rs + (fx > 0).astype(np.int64)
        needy = rs + (fy > 0).astype(np.int64)
        tws, ths = s.tile_width // s.scale, s.tile_height // s.scale
        tx0, tx1 = np.maximum(ix // tws, 0), np.minimum((ix + needx - 1) // tws, s.tiles_across - 1)
        ty0, ty1 = np.maximum(iy // ths, 0), np.minimum((iy + needy - 1) // ths, s.tiles_down - 1)
        return ix, iy, fx, fy, needx, needy, tx0, tx1, ty0, ty1

    def tiles_for(self, coords: np.ndarray) -> list[tuple[int, int]]:
        """The tiles (tx, ty) that :meth:`read_patches` decodes for ``coords``, each once, in row-major order:
        what the decode bound of the benchmark decodes (and nothing else)."""
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        if len(coords) == 0:
            return []
        *_, tx0, tx1, ty0, ty1 = self._layout(coords)
        tiles = {(tx, ty) for a, b, c, d in zip(tx0.tolist(), tx1.tolist(), ty0.tolist(), ty1.tolist())
                 for ty in range(c, d + 1) for tx in range(a, b + 1)}
        return sorted(tiles, key=lambda t: (t[1], t[0]))

    def read_patches(self, coords: np.ndarray) -> Iterator[np.ndarray]:
        """(out_size, out_size, 3) uint8 patches at level-0 ``coords`` (N×2 x, y), in the order given.

        Every tile under the patches is decoded once per call and dropped after the last patch that needs it,
        so give coordinates in row-major (tile) order and in large groups: a contiguous band of the grid.
        The patches come a chunk at a time (views of one array per chunk), so memory stays bounded.
        """
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        o, chunks = self.spec.out_size, {}

        def target(a: int, b: int) -> np.ndarray:
            chunks[a] = np.empty((b - a, o, o, 3), np.uint8)
            return chunks[a]

        for a, _ in self._read(coords, target):
            yield from chunks.pop(a)

    def read_patches_into(self, coords: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The same patches written in place into ``out`` ((N, out_size, out_size, 3) uint8, e.g. a batch
        buffer in shared memory): no per-patch arrays, no stacking afterwards. Returns ``out``."""
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        o = self.spec.out_size
        if out.shape != (len(coords), o, o, 3) or out.dtype != np.uint8:
            raise ValueError(f"out must be uint8 {(len(coords), o, o, 3)}, not {out.dtype} {out.shape}")
        for _ in self._read(coords, lambda a, b: out[a:b]):
            pass
        return out

    def _read(self, coords: np.ndarray, target) -> Iterator[tuple[int, int]]:
        """Assemble, shift and resize the patches a chunk at a time; ``target(a, b)`` gives the array that rows
        a..b-1 go to. Yields (a, b) once a chunk is written.

        Why chunks: the resize runs on a whole chunk in one call (:func:`_resize_chunk`), and the regions waiting
        for it take ``RESIZE_CHUNK_BYTES`` at most. A region that needs no resize is assembled straight into its
        place in the target: no intermediate copy.
        """
        s = self.spec
        n = len(coords)
        if n == 0:
            return
        ix, iy, fx, fy, needx, needy, tx0, tx1, ty0, ty1 = self._layout(coords)
        rs, o = s.region_size, s.out_size
        tws, ths = s.tile_width // s.scale, s.tile_height // s.scale
        # how many patches of this call use each tile: a tile is freed after its last use
        uses: Counter = Counter()
        for a, b, c, d in zip(tx0.tolist(), tx1.tolist(), ty0.tolist(), ty1.tolist()):
            for ty in range(c, d + 1):
                for tx in range(a, b + 1):
                    uses[(tx, ty)] += 1
        cache: dict = {}
        # decode-scale pixels that hold image (not padding) at the right and bottom edges
        valid_w, valid_h = s.width // s.scale, s.height // s.scale
        blur = s.scale > 1 and rs == o                      # the DCT scale landed on the output size
        direct = rs == o and not blur                       # regions go straight into the target
        step = max(1, min(n, RESIZE_CHUNK_BYTES // (rs * rs * 3)))
        stage = None if direct else np.empty((step, rs, rs, 3), np.uint8)
        for a in range(0, n, step):
            b = min(n, a + step)
            dst = target(a, b)
            regions = dst if direct else stage[:b - a]
            for k in range(a, b):
                frac = bool(fx[k] or fy[k])
                region = np.empty((int(needy[k]), int(needx[k]), 3), np.uint8) if frac else regions[k - a]
                region.fill(255)
                x0, y0 = int(ix[k]), int(iy[k])
                for ty in range(int(ty0[k]), int(ty1[k]) + 1):
                    for tx in range(int(tx0[k]), int(tx1[k]) + 1):
                        key = (tx, ty)
                        if key not in cache:
                            cache[key] = self.decode_tile(tx, ty)
                        tile = cache[key]
                        if tile is not None:
                            _paste(region, tile, tx * tws - x0, ty * ths - y0, valid_w - x0, valid_h - y0)
                        uses[key] -= 1
                        if uses[key] == 0:
                            del cache[key]
                if frac:
                    regions[k - a] = _shift_bilinear(region, float(fx[k]), float(fy[k]), rs)
            if blur:
                for k in range(b - a):
                    _antialias_like_reference(regions[k], dst[k])
            elif not direct:
                _resize_chunk(regions, dst)
            yield a, b

    def raw_block(self, coords: np.ndarray) -> Optional["RawBlock"]:
        """The compressed JPEG tiles under ``coords`` and where each patch sits on them, for decoding on the
        encoder's device (:mod:`dnd_engine.features.device_decode`), or None when these patches cannot be
        decoded that way (not JPEG, or a patch at a fractional level position, which needs interpolation)."""
        s = self.spec
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        if s.compression != COMPRESSION_JPEG or len(coords) == 0:
            return None
        lx, ly = self._level_positions(coords)
        ix, iy = np.rint(lx).astype(np.int64), np.rint(ly).astype(np.int64)
        if np.abs(lx - ix).max() > 1e-3 or np.abs(ly - iy).max() > 1e-3:
            return None
        rs, tw, th = s.read_size, s.tile_width, s.tile_height
        tx0, ty0 = int(ix.min()) // tw, int(iy.min()) // th
        tx1 = min(int((ix + rs - 1).max()) // tw, s.tiles_across - 1)
        ty1 = min(int((iy + rs - 1).max()) // th, s.tiles_down - 1)
        rgb = self._jpeg_mode == "RGB"
        streams = []
        for ty in range(ty0, ty1 + 1):
            for tx in range(tx0, tx1 + 1):
                data = self.read_tile_bytes(tx, ty)
                if data:
                    data = self.whole_jpeg(data)
                    if rgb:
                        data = _mark_rgb(data)
                streams.append(data)
        x0, y0 = tx0 * tw, ty0 * th
        return RawBlock(name=self.name, level=s.level, tiles=streams, cols=tx1 - tx0 + 1, rows=ty1 - ty0 + 1,
                        tile_width=tw, tile_height=th, x=ix - x0, y=iy - y0, valid_width=s.width - x0,
                        valid_height=s.height - y0, read_size=rs, out_size=s.out_size, tile_origin=(tx0, ty0))

    def close(self) -> None:
        tf, self._tf = getattr(self, "_tf", None), None
        if tf is not None:
            tf.close()

    def __enter__(self) -> "TileReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass
class RawBlock:
    """A block of one level's JPEG tiles, still compressed (whole streams: tables spliced in, and an Adobe
    marker for RGB-coded tiles), with each patch's top-left on the block's mosaic (level pixels, integers)."""

    name: str
    level: int
    tiles: list            # bytes per tile, row-major over rows × cols; b"" for a tile the file leaves out
    cols: int
    rows: int
    tile_width: int
    tile_height: int
    x: np.ndarray          # (n,) left of each patch on the mosaic
    y: np.ndarray
    valid_width: int       # mosaic columns / rows that hold the level's pixels (beyond: white, as OpenSlide)
    valid_height: int
    read_size: int
    out_size: int
    tile_origin: tuple     # (tx, ty) of the block's first tile, for error messages


#: an Adobe APP14 marker with colour transform 0: libjpeg then takes three components as RGB, not YCbCr
_ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"


def _mark_rgb(data: bytes) -> bytes:
    """A whole JPEG stream with the Adobe marker inserted after SOI, unless it says JFIF (which libjpeg reads
    as YCbCr whatever follows: the decoders' checks against PIL catch that case)."""
    if data[:2] == b"\xff\xd8" and b"JFIF" not in data[:64]:
        return data[:2] + _ADOBE_RGB + data[2:]
    return data


def _cv2_flags(scale: int) -> Optional[tuple[int, bool]]:
    """(imdecode flags for colour at 1/``scale``, whether the result is BGR), or None without OpenCV."""
    try:
        import cv2
    except ImportError:
        return None
    reduced = {1: 0, 2: cv2.IMREAD_REDUCED_GRAYSCALE_2, 4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
               8: cv2.IMREAD_REDUCED_GRAYSCALE_8}.get(scale)
    if reduced is None:
        return None
    rgb = getattr(cv2, "IMREAD_COLOR_RGB", None)       # OpenCV ≥ 4.10; before it, BGR to swap
    return (reduced | rgb, False) if rgb is not None else (reduced | cv2.IMREAD_COLOR, True)


def _decode_jpeg_cv2(data: bytes, scale: int, rgb: bool) -> Optional[np.ndarray]:
    """A whole JPEG stream decoded by OpenCV at 1/``scale`` (the REDUCED flags are libjpeg's DCT scaling), or
    None when it fails or the stream lacks its end marker (libjpeg pads a truncated stream with grey)."""
    import cv2
    if not data.rstrip(b"\0").endswith(b"\xff\xd9"):
        return None
    if rgb:
        data = _mark_rgb(data)
    flags, bgr = _cv2_flags(scale)
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    if arr is None or arr.ndim != 3:
        return None
    return np.ascontiguousarray(arr[..., ::-1]) if bgr else arr


def _paste(region: np.ndarray, tile: np.ndarray, ox: int, oy: int, limit_x: int, limit_y: int) -> None:
    """Copy ``tile`` into ``region`` at offset (ox, oy), clipped to the region and to the image's valid pixels
    (region columns < ``limit_x``, rows < ``limit_y``): the tile padding beyond the level's edge stays white."""
    h, w = region.shape[:2]
    x0, y0 = max(ox, 0), max(oy, 0)
    x1, y1 = min(ox + tile.shape[1], w, limit_x), min(oy + tile.shape[0], h, limit_y)
    if x1 > x0 and y1 > y0:
        region[y0:y1, x0:x1] = tile[y0 - oy:y1 - oy, x0 - ox:x1 - ox]


#: weight of each neighbour in the 3-tap blur [a, 1 − 2a, a] that stands in for the reference resize when the
#: DCT scale lands exactly on the output size (10× from a 20× level read as 512 px → 256 px, say): the
#: reference shrinks with PIL's antialiased bilinear (a triangle two source pixels wide each side), which is
#: softer than libjpeg's scaled inverse DCT. Measured on the bundled CMU slide and on HE_example.ome.tif at 1/2
#: and 1/4: mean abs diff per patch 2.3–2.8 (worst 4.8) without it, 0.7–0.9 (worst 1.7) with a = 0.08.
ANTIALIAS_TAP = 0.08


def _antialias_like_reference(region: np.ndarray, out: Optional[np.ndarray] = None) -> np.ndarray:
    import cv2
    k = np.array([ANTIALIAS_TAP, 1 - 2 * ANTIALIAS_TAP, ANTIALIAS_TAP], dtype=np.float32)
    if out is None:
        return cv2.sepFilter2D(region, -1, k, k, borderType=cv2.BORDER_REPLICATE)
    return cv2.sepFilter2D(region, -1, k, k, dst=out, borderType=cv2.BORDER_REPLICATE)


#: most bytes of assembled regions waiting for one batched resize (:meth:`TileReader._read`)
RESIZE_CHUNK_BYTES = 16 << 20


def _resize_chunk(regions: np.ndarray, out: np.ndarray) -> None:
    """The reference resize (PIL's antialiased bilinear, :func:`~dnd_engine.slides.resize.resize_patch`) of a
    chunk of regions (N, h, w, 3) into ``out`` (N, o, o, 3), in one call.

    Why torch: its uint8 antialiased-bilinear kernel computes PIL's filter (same support, same fixed-point
    weights) on channels-last images without PIL's per-image conversions to and from 4-byte pixels: ≈ 3× faster
    per patch here, and the one largest cost of the read stage after decoding. It differs from PIL by 1–2 on
    about 0.1 % of pixels (rounding), far inside :data:`MAX_MEAN_ABS_DIFF`.

    It runs on one thread: reading workers have one anyway, and a process forked from one that ran torch's
    thread pool (the slide-preparation children, whose check read comes here) hangs in its first parallel
    region, waiting for pool threads that were not forked with it.
    """
    import torch
    import torch.nn.functional as F
    o = out.shape[1]
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        x = torch.from_numpy(regions).permute(0, 3, 1, 2)         # NHWC memory, seen as channels-last NCHW
        y = F.interpolate(x, size=(o, o), mode="bilinear", antialias=True, align_corners=False)
        torch.from_numpy(out).permute(0, 3, 1, 2).copy_(y)
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


def _shift_bilinear(region: np.ndarray, fx: float, fy: float, size: int) -> np.ndarray:
    """The ``size``² image sampled at (i + fy, j + fx): OpenSlide's (cairo's) rendering at a fractional origin."""
    r = region.astype(np.float32)
    if fx:
        r = r[:, :-1] * (1 - fx) + r[:, 1:] * fx
    if fy:
        r = r[:-1] * (1 - fy) + r[1:] * fy
    return np.rint(r[:size, :size]).astype(np.uint8)


def patch_blocks(coords: np.ndarray, max_patches: int) -> list[np.ndarray]:
    """Row indices of ``coords`` (a row-major grid) in square blocks of about ``max_patches`` grid cells.

    Why blocks: a tile is decoded once per block, so tiles shared by two blocks (on their borders) are decoded
    twice when two workers read them. A block of k × k patches spanning ~2k tiles a side re-decodes about one
    tile row and column per 2k; a one-row band of the same size would re-decode a third of its tile rows,
    because a 512 px patch row shares its top and bottom tile rows with the rows above and below. Blocks come in
    row-major order of blocks; rows inside a block keep the grid's order (tile order). Every row appears once.
    """
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    n = len(coords)
    if n == 0:
        return []
    xs, ys = np.unique(coords[:, 0]), np.unique(coords[:, 1])
    diffs = np.concatenate([np.diff(xs), np.diff(ys)])
    step = int(diffs.min()) if len(diffs) else 1
    side = max(1, math.isqrt(max(1, int(max_patches))))
    cell = max(1, step * side)
    bx, by = coords[:, 0] // cell, coords[:, 1] // cell
    order = np.lexsort((np.arange(n), bx, by))
    key = by[order] * (int(bx.max()) + 1) + bx[order]
    cuts = np.flatnonzero(np.diff(key)) + 1
    return [part.astype(np.int64) for part in np.split(order, cuts)]
