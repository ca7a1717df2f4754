import cv2
import numpy as np
import pytest

from dnd_engine.errors import NoTissueError, SlideError
from dnd_engine.patching import PatchParams, make_patch_grid, read_coords_h5, write_coords_h5
from dnd_engine.slides import open_slide
from dnd_engine.tissue import segment_tissue
from pyramid import tissue_like, write_pyramid


def _grid(path, params=None, **open_kw):
    with open_slide(path, **open_kw) as s:
        p = params or PatchParams()
        size0 = p.patch_size * s.downsample_for_magnification(p.magnification)
        tm = segment_tissue(s, patch_area_px0=size0 ** 2)
        return make_patch_grid(s, tm, p), tm, s.dimensions


def test_10x_from_a_20x_base_reads_512_px_at_level_0(cmu_slide):
    g, tm, (W, H) = _grid(cmu_slide)
    assert (g.patch_level, g.read_size, g.patch_size_level0, g.patch_size) == (0, 512, 512, 256)
    assert len(g) >= 10
    assert (g.coords % 512 == 0).all()                     # one global grid, no per-contour offsets
    assert (g.coords[:, 0] < W).all() and (g.coords[:, 1] < H).all() and (g.coords >= 0).all()
    assert len(np.unique(g.coords, axis=0)) == len(g)
    # row-major order: y ascending, then x ascending within a row
    order = np.lexsort((g.coords[:, 0], g.coords[:, 1]))
    assert (order == np.arange(len(g))).all()
    assert (g.tissue_fraction >= 0.25).all()


def test_no_background_patches(cmu_slide):
    """Every kept patch has real tissue: its saturation is far above the slide's white background."""
    g, _, _ = _grid(cmu_slide)
    with open_slide(cmu_slide) as s:
        bg = np.asarray(s.read_region((0, 0), 0, (200, 200)))   # the top-left corner is empty glass
        sat_bg = cv2.cvtColor(bg, cv2.COLOR_RGB2HSV)[..., 1].mean()
        for x, y in g.coords:
            a = np.asarray(s.read_region((int(x), int(y)), g.patch_level, (g.read_size, g.read_size)))
            sat = cv2.cvtColor(a, cv2.COLOR_RGB2HSV)[..., 1]
            assert (sat > 8).mean() > 0.15, f"patch at {(x, y)} is mostly background"
    assert sat_bg < 8


def test_40x_pyramid_reads_at_level_1_without_resizing(tmp_path):
    p = write_pyramid(tmp_path / "s40.svs", tissue_like(4096, 4096, seed=2), (1, 4, 16), mpp=0.25, app_mag=40)
    g, _, _ = _grid(p)
    assert (g.patch_level, g.read_size, g.patch_size_level0) == (1, 256, 1024)
    assert (g.coords % 1024 == 0).all() and len(g) > 5


def test_20x_pyramid_reads_at_level_0_and_resizes(tmp_path):
    p = write_pyramid(tmp_path / "s20.svs", tissue_like(4096, 4096, seed=3), (1, 4, 16), mpp=0.5, app_mag=20)
    g, _, _ = _grid(p)
    assert (g.patch_level, g.read_size, g.patch_size_level0) == (0, 512, 512)


def test_levels_that_do_not_match_the_target(tmp_path):
    """A 40x scan with levels at 3x and 9x: 10x (4x) is read at the nearest finer level (3x) and resized."""
    p = write_pyramid(tmp_path / "odd.svs", tissue_like(4096, 4096, seed=4), (1, 3, 9), mpp=0.25, app_mag=40)
    g, _, _ = _grid(p)
    assert g.patch_level == 1 and g.read_size == round(1024 / 3)
    g5, _, _ = _grid(p, PatchParams(magnification=5))        # 8x: level 1 (3x), read 683 px
    assert g5.patch_level == 1 and g5.patch_size_level0 == 2048


def test_overlap_and_min_tissue(cmu_slide):
    g0, _, _ = _grid(cmu_slide)
    g_ov, _, _ = _grid(cmu_slide, PatchParams(overlap=0.5))
    assert len(g_ov) > 2.5 * len(g0) and (g_ov.coords % 256 == 0).all()
    g_strict, _, _ = _grid(cmu_slide, PatchParams(min_tissue=0.9))
    assert len(g_strict) < len(g0) and (g_strict.tissue_fraction >= 0.9).all()


def test_bad_patch_parameters(cmu_slide):
    with pytest.raises(SlideError, match="finer than the scan"):
        _grid(cmu_slide, PatchParams(magnification=40))
    for bad in (PatchParams(patch_size=4), PatchParams(overlap=1.0), PatchParams(min_tissue=2)):
        with pytest.raises(ValueError):
            bad.validate()
    with pytest.raises(NoTissueError):
        _grid(cmu_slide, PatchParams(min_tissue=1.0, patch_size=2048, magnification=1.25))


def test_coords_h5_layout_is_clam_compatible(cmu_slide, tmp_path):
    g, _, _ = _grid(cmu_slide)
    with open_slide(cmu_slide) as s:
        attrs = g.attrs(s)
    out = write_coords_h5(tmp_path / "p.h5", g.coords, attrs)
    coords, a = read_coords_h5(out)
    assert coords.shape == (len(g), 2) and (coords == g.coords).all()
    # CLAM's reader: read_region(coord, patch_level, (patch_size, patch_size)) then resize to target
    assert a["patch_size"] == 512 and a["patch_level"] == 0 and a["target_patch_size"] == 256
    assert a["target_magnification"] == 10 and a["level0_magnification"] == 20
    assert a["patch_size_level0"] == 512 and list(a["downsample"]) == [1.0, 1.0]
    assert not list(tmp_path.glob("*.part"))
