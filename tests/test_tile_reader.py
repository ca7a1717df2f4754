"""The tile-native reader (dnd_engine.slides.tiles) against the read_region path it replaces in extraction.

Pixel equivalence is held to a mean absolute difference of at most 3 (0–255) on every sampled patch of every
real slide the fast path accepts; slides it refuses must say why and be read by the reference path instead;
coordinates, patch order and per-slide failure handling must be those of the plain path.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from conftest import WSI
from dnd_engine.errors import DnDError, NoTissueError
from dnd_engine.features import ExtractConfig, extract_cohort, feature_dir_for
from dnd_engine.patching import PatchGrid, PatchParams, make_patch_grid, read_coords_h5
from dnd_engine.slides import is_slide_path, open_slide
from dnd_engine.slides import tiles as tiles_mod
from dnd_engine.slides.resize import resize_patch
from dnd_engine.slides.tiles import TileReader, TilesNotEligible, patch_blocks, plan_tiles, tile_eligibility
from dnd_engine.tissue import TissueMask, segment_tissue
from pyramid import tissue_like, write_pyramid

MAX_MAD = 3.0
REAL_SLIDES = sorted(p.name for p in WSI.iterdir() if p.is_file() and is_slide_path(p)) if WSI.is_dir() else []


def _grid(slide, magnification: float = 10.0, patch_size: int = 256) -> PatchGrid:
    """The extraction grid (tissue patches), or every grid position when segmentation finds no tissue."""
    params = PatchParams(magnification=magnification, patch_size=patch_size)
    size0 = patch_size * slide.downsample_for_magnification(magnification)
    try:
        tissue = segment_tissue(slide, patch_area_px0=size0 * size0)
        return make_patch_grid(slide, tissue, params)
    except NoTissueError:
        W, H = slide.dimensions
        everything = TissueMask(mask=np.ones((H // 16 + 1, W // 16 + 1), bool), downsample=16.0)
        return make_patch_grid(slide, everything, params)


def _sample(coords: np.ndarray, n: int) -> np.ndarray:
    idx = np.unique(np.linspace(0, len(coords) - 1, num=min(n, len(coords))).round().astype(int))
    return coords[idx]


def _mads(slide, spec, coords) -> np.ndarray:
    with TileReader(spec) as reader:
        fast = list(reader.read_patches(coords))
    assert len(fast) == len(coords)
    out = []
    for (x, y), patch in zip(coords, fast):
        ref = resize_patch(slide.read_region((int(x), int(y)), spec.level, (spec.read_size,) * 2), spec.out_size)
        assert patch.shape == ref.shape == (spec.out_size, spec.out_size, 3) and patch.dtype == np.uint8
        out.append(np.abs(patch.astype(np.int16) - ref.astype(np.int16)).mean())
    return np.array(out)


def _check_equivalence(path: Path, magnification=10.0, out_sizes=(256, 224), n=24, expect_scale=None,
                       required=False) -> list:
    """Every sampled patch within MAX_MAD of the reference, for each output size; returns the specs used
    (empty when the fast path refuses the slide, after checking that it says why, unless ``required``)."""
    specs = []
    with open_slide(path, fallback_magnification=20) as slide:
        grid = _grid(slide, magnification)
        for out in out_sizes:
            spec, why = tile_eligibility(slide, grid, out)
            if spec is None:
                assert not required, why
                assert why and path.name in why
                return []
            if expect_scale is not None:
                assert spec.scale == expect_scale[out]
            d = _mads(slide, spec, _sample(grid.coords, n))
            assert d.max() <= MAX_MAD, f"{path.name} out {out}: worst patch differs by {d.max():.2f}"
            specs.append(spec)
    return specs


@pytest.mark.parametrize("name", REAL_SLIDES)
def test_real_slides_match_the_reference_or_say_why_not(name):
    specs = _check_equivalence(WSI / name)
    accepted = {"CMU-1-Small-Region.svs", "HE_example.ome.tif", "tcga-cr-7395-01a-01-ts1.svs"}
    if name in accepted:       # the slides of ../shared known to be tiled JPEG / Aperio JPEG 2000
        assert specs, f"{name} should be read by the tile reader"
    else:
        assert not specs


def test_bundled_slide_matches_at_every_dct_scale(cmu_slide):
    # 20x slide: 10x → 512 px read, decoded at 1/2 (256 exactly, or resized to 224); 5x → 1024 px at 1/4
    _check_equivalence(cmu_slide, 10.0, (256, 224), n=40, expect_scale={256: 2, 224: 2}, required=True)
    _check_equivalence(cmu_slide, 5.0, (256, 224), n=40, expect_scale={256: 4, 224: 4}, required=True)
    _check_equivalence(cmu_slide, 20.0, (256,), n=40, expect_scale={256: 1}, required=True)


def test_upper_pyramid_levels_match(tmp_path):
    """A 40x Aperio-style pyramid (1, 4, 16): 10x reads level 1 unscaled, 5x level 1 at 1/2, 2.5x level 2."""
    p = write_pyramid(tmp_path / "p40.svs", tissue_like(4096, 3072, seed=2), (1, 4, 16), mpp=0.25, app_mag=40)
    for mag, level, scale in ((10.0, 1, 1), (5.0, 1, 2), (2.5, 2, 1)):
        with open_slide(p) as slide:
            grid = _grid(slide, mag)
            assert grid.patch_level == level
            spec = plan_tiles(slide, grid, 256)
            assert (spec.level, spec.scale) == (level, scale)
            assert _mads(slide, spec, grid.coords).max() <= MAX_MAD


@pytest.mark.parametrize("compression", ["lzw", "zlib", None])
def test_generic_tiled_tiff_codecs_match(tmp_path, compression):
    """LZW / deflate / uncompressed tiles (decoded by tifffile), partial tiles at the right and bottom edges."""
    p = tmp_path / f"generic_{compression}.tif"
    img = tissue_like(2000, 1500, seed=3)
    tifffile.imwrite(p, img, tile=(256, 256), compression=compression, photometric="rgb",
                     predictor=compression == "lzw", resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    with open_slide(p) as slide:
        assert slide.backend == "openslide" and slide.vendor == "generic-tiff"
        grid = _grid(slide, 10.0)
        spec = plan_tiles(slide, grid, 256)
        assert spec.compression == {"lzw": 5, "zlib": 8, None: 1}[compression] and spec.scale == 1
        W, H = slide.dimensions
        edge = grid.coords[(grid.coords[:, 0] + grid.patch_size_level0 > W) | (grid.coords[:, 1] + grid.patch_size_level0 > H)]
        assert len(edge)                                           # patches running past the edges are checked
        assert _mads(slide, spec, grid.coords).max() <= 0.5         # lossless tiles: the same pixels


def _tiles_both_ways(reader: TileReader, n: int = 12):
    """(OpenCV, PIL) decodes of the first ``n`` tiles of a reader's level, from the same spliced streams."""
    s = reader.spec
    th, tw = s.tile_height // s.scale, s.tile_width // s.scale
    fast, ref = [], []
    for i in range(min(n, s.tiles_across * s.tiles_down)):
        data = reader.whole_jpeg(reader.read_tile_bytes(i % s.tiles_across, i // s.tiles_across))
        fast.append(tiles_mod._decode_jpeg_cv2(data, s.scale, reader._jpeg_mode == "RGB"))
        ref.append(reader._decode_jpeg_pil(data, tw, th))
    return fast, ref


@pytest.mark.parametrize("scale,opencv_rgb", [(1, True), (2, True), (4, True), (8, True), (2, False)])
def test_opencv_decodes_jpeg_tiles_exactly_as_pil(tmp_path, cmu_slide, scale, opencv_rgb, monkeypatch):
    """The fast JPEG decoder is a speed change only: bit-identical tiles at every DCT scale, for Aperio's
    RGB-coded tiles (the Adobe marker) and for ordinary YCbCr tiles; also through an OpenCV older than 4.10,
    which has no RGB output flag (BGR, swapped)."""
    if not opencv_rgb:
        import cv2
        monkeypatch.delattr(cv2, "IMREAD_COLOR_RGB")
        assert tiles_mod._cv2_flags(scale)[1] is True
    ycbcr = write_pyramid(tmp_path / "ycbcr.svs", tissue_like(2048, 2048, seed=4), (1, 4), mpp=0.5, app_mag=20)
    for path, photometric in ((cmu_slide, 2), (ycbcr, 6)):
        with open_slide(path) as slide:
            spec = plan_tiles(slide, _grid(slide, 10.0), 256, verify=0)
        spec = tiles_mod.TileSpec(**{**spec.__dict__, "scale": scale})
        assert spec.photometric == photometric
        with TileReader(spec) as reader:
            fast, ref = _tiles_both_ways(reader)
        for a, b in zip(fast, ref):
            assert a is not None and a.shape == b.shape and np.array_equal(a, b)


def test_opencv_decoder_is_checked_on_the_first_tile_and_pil_takes_over(cmu_slide, monkeypatch):
    with open_slide(cmu_slide) as slide:
        grid = _grid(slide, 10.0)
        spec = plan_tiles(slide, grid, 256, verify=0)
    coords = grid.coords[:6]
    with TileReader(spec) as reader:
        want = list(reader.read_patches(coords))
        assert reader._use_cv2 is True
    real = tiles_mod._decode_jpeg_cv2
    monkeypatch.setattr(tiles_mod, "_decode_jpeg_cv2", lambda *a: 255 - real(*a))   # a decoder that disagrees
    with TileReader(spec) as reader:
        got = list(reader.read_patches(coords))
        assert reader._use_cv2 is False
    assert all(np.array_equal(a, b) for a, b in zip(want, got))


def test_a_truncated_jpeg_tile_is_an_error_not_a_grey_patch(cmu_slide):
    """libjpeg pads a truncated stream with grey and only warns; the reader must refuse it."""
    with open_slide(cmu_slide) as slide:
        spec = plan_tiles(slide, _grid(slide, 10.0), 256, verify=0)
    with TileReader(spec) as reader:
        reader.decode_tile(0, 0)                                   # the decoder check passes on a good tile
        data = reader.read_tile_bytes(1, 0)
        assert tiles_mod._decode_jpeg_cv2(reader.whole_jpeg(data)[:-(len(data) // 2)], spec.scale, True) is None
        with pytest.raises(DnDError, match=r"tile \(1, 0\).*corrupt"):
            reader.decode_tile(1, 0, data[:len(data) // 2])


def test_each_tile_is_decoded_once_per_call(cmu_slide):
    with open_slide(cmu_slide) as slide:
        everything = TissueMask(mask=np.ones((200, 150), bool), downsample=16.0)
        grid = make_patch_grid(slide, everything, PatchParams(magnification=10, min_tissue=0.01))
        spec = plan_tiles(slide, grid, 256, verify=0)
    touched = set()
    for x, y in grid.coords:                       # level 0, 512 px patches on 240 px tiles
        for ty in range(y // 240, min((y + 511) // 240, spec.tiles_down - 1) + 1):
            for tx in range(x // 240, min((x + 511) // 240, spec.tiles_across - 1) + 1):
                touched.add((tx, ty))
    with TileReader(spec) as reader:
        n = sum(1 for _ in reader.read_patches(grid.coords))
        assert n == len(grid.coords)
        assert reader.tiles_decoded == len(touched)
    # the read_region path decodes the tiles under every patch anew: about twice as many here
    per_patch = sum(len(range(x // 240, min((x + 511) // 240, spec.tiles_across - 1) + 1))
                    * len(range(y // 240, min((y + 511) // 240, spec.tiles_down - 1) + 1)) for x, y in grid.coords)
    assert per_patch > 1.5 * len(touched)


def test_patch_blocks_cover_each_row_once_in_tile_order():
    ys, xs = np.meshgrid(np.arange(0, 40 * 512, 512), np.arange(0, 30 * 512, 512), indexing="ij")
    coords = np.stack([xs.ravel(), ys.ravel()], 1)
    coords = coords[(np.arange(len(coords)) % 7) != 3]          # a sparse, row-major grid
    blocks = patch_blocks(coords, 64)
    rows = np.concatenate(blocks)
    assert sorted(rows.tolist()) == list(range(len(coords)))
    for b in blocks:
        assert (np.diff(b) > 0).all() and len(b) <= 64
        span = coords[b].max(0) - coords[b].min(0)
        assert (span <= 7 * 512).all()                          # 8 × 8 grid cells at most
    assert len(blocks) == 4 * 5                                  # ceil(30 / 8) × ceil(40 / 8)


def _strip_tiff(path: Path) -> Path:
    tifffile.imwrite(path, tissue_like(2048, 2048, seed=4), photometric="rgb", rowsperstrip=64,
                     resolution=(2e4, 2e4), resolutionunit="CENTIMETER")
    return path


def test_ineligible_slides_say_why(tmp_path):
    from PIL import Image
    cases = {_strip_tiff(tmp_path / "strips.tif"): "strips"}
    Image.fromarray(tissue_like(1024, 1024, seed=1)).save(tmp_path / "plain.png")
    cases[tmp_path / "plain.png"] = "opened by image"
    if (WSI / "kidney-48-5.tif").exists():
        cases[WSI / "kidney-48-5.tif"] = "strips"
    for path, why in cases.items():
        with open_slide(path, fallback_magnification=20) as slide:
            grid = _grid(slide)
            with pytest.raises(TilesNotEligible) as ei:
                plan_tiles(slide, grid, 256)
            assert why in ei.value.reason and path.name in str(ei.value) and "\n" not in str(ei.value)


def test_a_pixel_mismatch_makes_the_slide_ineligible(cmu_slide, monkeypatch):
    monkeypatch.setattr(tiles_mod, "MAX_MEAN_ABS_DIFF", -1.0)
    with open_slide(cmu_slide) as slide:
        with pytest.raises(TilesNotEligible, match="differ from openslide"):
            plan_tiles(slide, _grid(slide), 256)


def test_a_dct_scale_mismatch_falls_back_to_a_finer_decode_not_to_read_region(cmu_slide, monkeypatch):
    """At 1/2 the bundled slide differs from the reference by ~1 per patch, at 1/1 by 0 (the same decoder):
    with the bound between the two, the tile reader must step to 1/1 and say why, and its patches must then
    equal the reference exactly."""
    monkeypatch.setattr(tiles_mod, "MAX_MEAN_ABS_DIFF", 0.3)
    with open_slide(cmu_slide) as slide:
        grid = _grid(slide)
        spec = plan_tiles(slide, grid, 256)
        assert spec.scale == 1 and "DCT 1/2 differed" in spec.describe() and "mean abs diff" in spec.describe()
        assert _mads(slide, spec, _sample(grid.coords, 12)).max() == 0.0


def test_extraction_falls_back_and_reports_the_reader(tmp_path, cmu_slide, no_part_files):
    d = tmp_path / "slides"
    d.mkdir()
    shutil.copy(cmu_slide, d / cmu_slide.name)
    _strip_tiff(d / "strips.tif")
    out = tmp_path / "out"
    res = {r.slide_id: r for r in extract_cohort(d, out, ExtractConfig(num_workers=0, batch_size=16))}
    assert {k: r.status for k, r in res.items()} == {"CMU-1-Small-Region": "done", "strips": "done"}
    assert res["CMU-1-Small-Region"].reader == "tiles" and res["CMU-1-Small-Region"].info["reader"] == "tiles"
    assert res["strips"].reader == "tiffslide" and "strips" in res["strips"].info["reader_note"]
    with open(feature_dir_for(out, "stain_stats") / "extraction_summary.csv") as f:
        rows = {r["slide_id"]: r for r in csv.DictReader(f)}
    assert rows["CMU-1-Small-Region"]["reader"] == "tiles" and rows["strips"]["reader"] == "tiffslide"
    assert "not eligible" in rows["strips"]["reader_note"]
    # reader=tiles refuses what the fast path cannot read; reader=openslide never uses it
    res = {r.slide_id: r for r in extract_cohort(d, tmp_path / "t", ExtractConfig(num_workers=0, reader="tiles"))}
    assert res["CMU-1-Small-Region"].status == "done" and res["strips"].status == "failed"
    assert "not eligible" in res["strips"].error and "strips.tif" in res["strips"].error
    res = extract_cohort(d, tmp_path / "o", ExtractConfig(num_workers=0, reader="openslide"))
    assert {r.reader for r in res} == {"openslide", "tiffslide"}
    with pytest.raises(DnDError, match="reader must be one of"):
        extract_cohort(d, tmp_path / "x", ExtractConfig(reader="fast"))
    no_part_files(tmp_path)


def test_same_coordinates_and_patch_order_as_the_plain_path(tmp_path, cmu_slide):
    """Two workers, small bands (blocks of the grid, not row order), batches regrouped across bands."""
    fast = extract_cohort([cmu_slide], tmp_path / "fast", ExtractConfig(num_workers=2, batch_size=5))[0]
    plain = extract_cohort([cmu_slide], tmp_path / "plain",
                           ExtractConfig(num_workers=0, batch_size=64, reader="openslide"))[0]
    assert fast.reader == "tiles" and plain.reader == "openslide" and fast.n_patches == plain.n_patches > 10
    with h5py.File(fast.features_h5, "r") as ff, h5py.File(plain.features_h5, "r") as fp:
        assert np.array_equal(ff["coords"][:], fp["coords"][:])
        assert dict(ff["coords"].attrs).keys() == dict(fp["coords"].attrs).keys()
        F, P = ff["features"][:], fp["features"][:]
    for name in ("fast", "plain"):
        coords, _ = read_coords_h5(tmp_path / name / "patches" / "CMU-1-Small-Region.h5")
        assert np.array_equal(coords, read_coords_h5(tmp_path / "plain" / "patches" / "CMU-1-Small-Region.h5")[0])
    # each fast row is nearest to the plain row of the same index: no patch landed in another row
    dist = np.linalg.norm(F[:, None, :] - P[None, :, :], axis=2)
    assert (dist.argmin(1) == np.arange(len(F))).all()


def _corrupt_one_tile(path: Path, grid: PatchGrid, tile: int) -> tuple[int, int]:
    """Zero the bytes of level-0 tile under a patch that the planning check does not read; returns (tx, ty)."""
    verified = {0, len(grid.coords) // 2, len(grid.coords) - 1}
    verified |= {int(round(i)) for i in np.linspace(0, len(grid.coords) - 1, 3)}
    with tifffile.TiffFile(path) as tf:
        page = tf.pages[0]
        across = -(-page.imagewidth // tile)
        offsets, counts = page.dataoffsets, page.databytecounts
    used_by_verified = set()
    for k in verified:
        x, y = grid.coords[k]
        for ty in range(y // tile, (y + grid.read_size - 1) // tile + 1):
            for tx in range(x // tile, (x + grid.read_size - 1) // tile + 1):
                used_by_verified.add((tx, ty))
    k = len(grid.coords) // 4
    x, y = grid.coords[k]
    tx, ty = (x + grid.read_size // 2) // tile, (y + grid.read_size // 2) // tile
    assert (tx, ty) not in used_by_verified
    i = ty * across + tx
    data = bytearray(path.read_bytes())
    data[offsets[i]:offsets[i] + counts[i]] = b"\0" * counts[i]
    path.write_bytes(bytes(data))
    return tx, ty


def slides_with_a_corrupt_tile(tmp_path: Path, cmu_slide: Path) -> tuple[Path, int, int]:
    """A folder with the bundled slide and ``corrupt.svs``, whose level-0 tile (tx, ty) is zeroed (one the
    planning check does not read); returns (folder, tx, ty)."""
    d = tmp_path / "slides"
    d.mkdir()
    shutil.copy(cmu_slide, d / cmu_slide.name)
    p = write_pyramid(d / "corrupt.svs", tissue_like(4096, 4096, seed=5), (1, 4), mpp=0.5, app_mag=20)
    with open_slide(p) as slide:
        grid = _grid(slide, 10.0)
        assert grid.patch_level == 0 and len(grid.coords) > 20
    tx, ty = _corrupt_one_tile(p, grid, 256)
    return d, tx, ty


@pytest.mark.parametrize("reader", ["auto", "tiles"])
def test_a_corrupt_tile_fails_its_slide_only(tmp_path, cmu_slide, no_part_files, reader):
    d, tx, ty = slides_with_a_corrupt_tile(tmp_path, cmu_slide)
    out = tmp_path / "out"
    res = {r.slide_id: r for r in extract_cohort(d, out, ExtractConfig(num_workers=2, batch_size=8, reader=reader))}
    assert res["CMU-1-Small-Region"].status == "done"
    bad = res["corrupt"]
    assert bad.status == "failed" and bad.reader == "tiles"          # planned for tiles, failed part-way
    assert bad.error.startswith("corrupt.svs: ") and f"tile ({tx}, {ty})" in bad.error and "corrupt" in bad.error
    assert "\n" not in bad.error and bad.error.count("corrupt.svs") == 1
    fdir = feature_dir_for(out, "stain_stats")
    assert not (fdir / "h5_files" / "corrupt.h5").exists() and not (fdir / "pt_files" / "corrupt.pt").exists()
    assert (fdir / "h5_files" / "CMU-1-Small-Region.h5").exists()
    no_part_files(out)


def test_tiffslide_pads_past_the_edge_with_white_like_openslide(tmp_path):
    """Edge patches must not depend on the library: tiffslide's black padding is made white in Slide."""
    p = _strip_tiff(tmp_path / "strips.tif")
    with open_slide(p) as slide:
        assert slide.backend == "tiffslide"
        W, H = slide.dimensions
        a = np.asarray(slide.read_region((W - 50, H - 50), 0, (100, 100)))
        assert (a[50:, :] == 255).all() and (a[:, 50:] == 255).all() and (a[:50, :50] < 255).any()
