import json

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import binary_dilation, binary_erosion

from dnd_engine.errors import DnDError
from dnd_engine.heatmaps import (COLORMAPS, apply_colormap, colormap_lut, heatmap_geojson, normalise_scores,
                                 patch_size_level0_from_attrs, patch_truth, render_heatmap, save_heatmap_png,
                                 score_map, top_patches, write_heatmap_geojson)
from dnd_engine.slides import open_slide
from dnd_engine.synth import make_synthetic_cohort, read_lesion_mask
from dnd_engine.tissue import TissueMask

PATCH0 = 256    # level-0 patch side used on the bundled slide (2220 x 2967)


# --- scores ---------------------------------------------------------------------------------------------------------

def test_percentile_is_average_rank_over_n_with_ties():
    # ranks of [3, 1, 3, 2]: 1 -> 1, 2 -> 2, the two 3s share (3 + 4) / 2 = 3.5; divided by N = 4
    np.testing.assert_allclose(normalise_scores([3.0, 1.0, 3.0, 2.0]), [0.875, 0.25, 0.875, 0.5])
    np.testing.assert_allclose(normalise_scores(np.array([[5.0], [-1.0]])), [1.0, 0.5])   # (N, 1) accepted


def test_minmax_none_and_empty():
    np.testing.assert_allclose(normalise_scores([2.0, 4.0, 6.0], "minmax"), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(normalise_scores([7.0, 7.0], "minmax"), [0.5, 0.5])
    np.testing.assert_allclose(normalise_scores([-1.0, 0.3, 2.0], "none"), [0.0, 0.3, 1.0])
    assert normalise_scores([]).shape == (0,)


@pytest.mark.parametrize("bad, method, words", [
    ([0.1, np.nan, 0.3], "percentile", "NaN or infinite"),
    ([0.1, np.inf], "minmax", "NaN or infinite"),
    (np.zeros((2, 3)), "percentile", "one value per patch"),
    ([0.1, 0.2], "softmax", "unknown score normalisation"),
])
def test_bad_scores_raise_a_clear_error(bad, method, words):
    with pytest.raises(DnDError, match=words):
        normalise_scores(bad, method)


def test_score_map_averages_overlaps_and_leaves_the_rest_uncovered():
    # patches of 8 level-0 px at downsample 2 are 4 px wide; the second starts 2 px to the right of the first
    smap, covered = score_map([[0, 0], [4, 0]], 8, [1.0, 0.0], (10, 10), 2.0)
    np.testing.assert_allclose(smap[:4, 0:2], 1.0)
    np.testing.assert_allclose(smap[:4, 2:4], 0.5)
    np.testing.assert_allclose(smap[:4, 4:6], 0.0)
    assert covered[:4, :6].all() and not covered[4:, :].any() and not covered[:, 6:].any()
    assert np.isnan(smap[~covered]).all() and smap.dtype == np.float32


def test_score_map_clips_patches_at_the_canvas_edge_and_checks_lengths():
    smap, covered = score_map([[16, 16], [100, 100]], 8, [0.25, 0.75], (10, 10), 2.0)
    assert covered.sum() == 4 and np.allclose(smap[8:, 8:], 0.25)     # 2x2 left of the first, none of the second
    with pytest.raises(DnDError, match="one per patch"):
        score_map([[0, 0]], 8, [0.1, 0.2], (10, 10), 2.0)


def test_top_patches_is_stable():
    top, bottom = top_patches([0.5, 0.9, 0.1, 0.9, 0.1, 0.7], k=2)
    assert top.tolist() == [1, 3] and bottom.tolist() == [2, 4]
    top, bottom = top_patches([0.5, 0.9, 0.1], k=10)
    assert top.tolist() == [1, 0, 2] and bottom.tolist() == [2, 0, 1]
    assert top_patches([0.5], k=0)[0].size == 0
    top, bottom = top_patches(np.tile([0.0, 1.0, 0.5], 40), k=8)      # long enough for numpy's unstable sort
    assert top.tolist() == list(range(1, 24, 3)) and bottom.tolist() == list(range(0, 24, 3))


def test_patch_size_level0_from_attrs():
    assert patch_size_level0_from_attrs({"patch_size": 256, "patch_size_level0": 512}) == 512
    assert patch_size_level0_from_attrs({"patch_size": 256, "patch_level": 1, "downsample": [4.0, 4.0]}) == 1024
    assert patch_size_level0_from_attrs({"patch_size": 256, "patch_level": 0}) == 256
    with pytest.raises(DnDError, match="no 'downsample'"):
        patch_size_level0_from_attrs({"patch_size": 256, "patch_level": 2})
    with pytest.raises(DnDError, match="no patch size"):
        patch_size_level0_from_attrs({"patch_level": 0})


# --- ground truth ---------------------------------------------------------------------------------------------------

def test_patch_truth_uses_the_exact_covered_fraction():
    mask = np.zeros((8, 8), bool)
    mask[:, :4] = True                                   # lesion: level-0 x < 128 at downsample 32
    coords = [[0, 0], [96, 0], [112, 0], [160, 0], [240, 240]]   # 64 px patches: 1, 1/2, 1/4, 0, 0 (off the mask)
    assert patch_truth(coords, 64, mask, 32).tolist() == [True, True, False, False, False]
    assert patch_truth(coords, 64, mask, 32, min_fraction=0.25).tolist() == [True, True, True, False, False]
    assert patch_truth(coords, 64, mask, 32, min_fraction=0.51).tolist() == [True, False, False, False, False]


def test_patch_truth_on_synthetic_lesion_masks(tmp_path):
    cohort = make_synthetic_cohort(tmp_path, n_slides=2, size=1024, seed=0)
    xs, ys = np.meshgrid(np.arange(0, 1024, 64), np.arange(0, 1024, 64))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1)
    for info in cohort.slides:
        mask, ds = read_lesion_mask(info.mask_path)
        truth = patch_truth(coords, 64, mask, ds)
        # aligned patches: 64 level-0 px = a block of mask pixels, so the fraction is that block's mean
        b = int(64 / ds)
        blocks = mask.reshape(mask.shape[0] // b, b, mask.shape[1] // b, b).mean(axis=(1, 3)).ravel()
        assert truth.tolist() == (blocks >= 0.5).tolist()
        if info.label_index == 0:
            assert not truth.any()
        else:
            assert truth.any() and not truth.all()


# --- colormaps ------------------------------------------------------------------------------------------------------

def test_colormap_tables_and_ends():
    for name in COLORMAPS:
        lut = colormap_lut(name)
        assert lut.shape == (256, 3) and lut.dtype == np.uint8
    assert colormap_lut("jet")[[0, 255]].tolist() == [[0, 0, 128], [128, 0, 0]]
    assert colormap_lut("coolwarm")[[0, 255]].tolist() == [[59, 76, 192], [180, 4, 38]]
    assert colormap_lut("viridis")[[0, 128, 255]].tolist() == [[68, 1, 84], [33, 145, 140], [253, 231, 37]]
    assert colormap_lut("magma")[[0, 255]].tolist() == [[0, 0, 4], [252, 253, 191]]
    assert apply_colormap(np.array([-1.0, np.nan, 0.5, 2.0]), "gray")[:, 0].tolist() == [0, 0, 128, 255]
    with pytest.raises(DnDError, match="unknown colormap"):
        colormap_lut("rainbow")


# --- rendering on the bundled slide ---------------------------------------------------------------------------------

def _grid(x0, y0, nx, ny):
    xs, ys = np.meshgrid(x0 + PATCH0 * np.arange(nx), y0 + PATCH0 * np.arange(ny))
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


@pytest.fixture(scope="module")
def cmu(cmu_slide):
    with open_slide(cmu_slide) as s:
        yield s


def test_render_paints_only_covered_tissue_and_hot_means_high(cmu, tmp_path, no_part_files):
    coords = _grid(256, 512, 4, 6)                         # a 1024 x 1536 block of 24 patches
    scores = np.arange(len(coords), dtype=np.float64)     # patch 23 highest, patch 0 lowest
    W0, H0 = cmu.dimensions
    mask = np.ones((64, 48), bool)
    mask[:, :12] = False                                   # no tissue left of level-0 x 555 (cells of 46.25 px) ...
    mask[24:32, 16:22] = False                             # ... and a hole at x 740..1017, y 1110..1480
    tissue = TissueMask(mask=mask, downsample=W0 / 48)
    hm = render_heatmap(cmu, coords, PATCH0, scores, max_side=512, tissue=tissue)

    thumb, ds = cmu.thumbnail_at_downsample(max(W0, H0) / 512)
    assert hm.overlay.shape == thumb.shape == (512, 383, 3) and hm.heat_rgba.shape == (512, 383, 4)
    assert hm.scores01.shape == (512, 383) and hm.downsample == pytest.approx(ds) and hm.level == 0

    covered = ~np.isnan(hm.scores01)
    # the mask stretched over the heatmap, read at pixel centres; one pixel of slack for how it is rescaled
    ys, xs = np.mgrid[0:512, 0:383]
    in_tissue = mask[((ys + 0.5) * 64 / 512).astype(int), ((xs + 0.5) * 48 / 383).astype(int)]
    changed = (hm.overlay != thumb).any(axis=2)
    assert hm.painted.sum() > 1000 and covered.sum() > 1.5 * hm.painted.sum()
    assert not (changed & ~hm.painted).any()                       # the slide is untouched elsewhere
    assert changed.sum() > 0.95 * hm.painted.sum()
    assert not (hm.painted & ~covered).any()
    assert not (hm.painted & ~binary_dilation(in_tissue)).any()    # nothing outside tissue or in the hole
    assert hm.painted.sum() >= (covered & binary_erosion(in_tissue)).sum()
    assert (hm.heat_rgba[~hm.painted, 3] == 0).all() and (hm.heat_rgba[hm.painted, 3] == 102).all()

    def centre(i):                                                 # heatmap pixel at the centre of patch i
        x, y = (coords[i] + PATCH0 / 2) / hm.downsample
        return int(y), int(x)

    jet = colormap_lut("jet")
    assert hm.heat_rgba[centre(23)][:3].tolist() == jet[255].tolist()          # top percentile: dark red
    low = render_heatmap(cmu, coords, PATCH0, scores, max_side=512)           # no tissue: colour every patch
    assert low.painted.sum() == covered.sum()
    assert low.heat_rgba[centre(0)][:3].tolist() == jet[int(256 / 24)].tolist()  # percentile 1/24: blue end

    save_heatmap_png(hm, tmp_path / "overlay.png")
    save_heatmap_png(hm, tmp_path / "heat.png", which="heat")
    with Image.open(tmp_path / "overlay.png") as im:
        assert im.mode == "RGB" and np.array_equal(np.asarray(im), hm.overlay)
    with Image.open(tmp_path / "heat.png") as im:
        assert im.mode == "RGBA" and np.array_equal(np.asarray(im), hm.heat_rgba)
    no_part_files(tmp_path)
    with pytest.raises(DnDError, match="overlay' or 'heat"):
        save_heatmap_png(hm, tmp_path / "x.png", which="scores")


def test_threshold_hides_low_scores_and_options_are_checked(cmu):
    coords = _grid(0, 0, 4, 4)
    scores = np.linspace(-3.0, 3.0, len(coords))
    full = render_heatmap(cmu, coords, PATCH0, scores, max_side=300, colormap="coolwarm")
    half = render_heatmap(cmu, coords, PATCH0, scores, max_side=300, colormap="coolwarm", threshold=0.5)
    assert half.painted.sum() < 0.6 * full.painted.sum() and half.painted.any()
    assert (half.scores01[half.painted] >= 0.5).all()
    assert (half.scores01[full.painted & ~half.painted] < 0.5).all()
    blurred = render_heatmap(cmu, coords, PATCH0, scores, max_side=300, blur=True)
    assert np.array_equal(blurred.painted, full.painted)
    assert np.nanmax(np.abs(np.diff(blurred.scores01, axis=1))) < np.nanmax(np.abs(np.diff(full.scores01, axis=1)))
    for kwargs, words in (({"colormap": "rainbow"}, "unknown colormap"), ({"alpha": 1.5}, "alpha"),
                          ({"threshold": -0.1}, "threshold"), ({"level": 3}, "out of range")):
        with pytest.raises(DnDError, match=words):
            render_heatmap(cmu, coords, PATCH0, scores, **kwargs)
    with pytest.raises(DnDError, match="one per patch"):
        render_heatmap(cmu, coords, PATCH0, scores[:-1])


# --- GeoJSON --------------------------------------------------------------------------------------------------------

def test_geojson_tiles_for_qupath(tmp_path, no_part_files):
    coords = np.array([[0, 0], [256, 0], [0, 512]], np.int64)
    scores = np.array([0.1, 0.5, -0.3], np.float32)
    kwargs = dict(probs=[0.2, 0.8], class_names=["normal", "tumor"], predicted="tumor", model_name="abmil")
    fc = heatmap_geojson(coords, 256, scores, **kwargs)
    assert json.loads(json.dumps(fc)) == fc
    assert fc["type"] == "FeatureCollection" and len(fc["features"]) == 3 and fc["dnd_studio"]["model"] == "abmil"
    f = fc["features"][2]
    assert f["geometry"]["type"] == "Polygon"
    assert f["geometry"]["coordinates"] == [[[0, 512], [256, 512], [256, 768], [0, 768], [0, 512]]]
    props = f["properties"]
    assert props["objectType"] == "tile" and props["name"] == "patch 2"
    assert props["measurements"]["attention"] == pytest.approx(-0.3)
    assert props["measurements"]["attention_percentile"] == pytest.approx(1 / 3)
    assert props["measurements"]["p_tumor"] == pytest.approx(0.8) and props["measurements"]["p_normal"] == 0.2
    assert props["classification"]["name"] == "tumor" and len(props["classification"]["color"]) == 3

    plain = heatmap_geojson(coords, 256, scores, normalise="minmax")
    assert "classification" not in plain["features"][0]["properties"]
    assert set(plain["features"][0]["properties"]["measurements"]) == {"attention", "attention_minmax"}

    path = write_heatmap_geojson(tmp_path / "out" / "slide_attention.geojson", coords, 256, scores, **kwargs)
    assert json.loads(path.read_text()) == fc
    no_part_files(tmp_path)
    with pytest.raises(DnDError, match="2 class probabilities but 3 class names"):
        heatmap_geojson(coords, 256, scores, probs=[0.2, 0.8], class_names=["a", "b", "c"])
    with pytest.raises(DnDError, match="one per patch"):
        heatmap_geojson(coords[:2], 256, scores)


def test_heatmap_style_is_the_engines_and_render_heatmap_takes_it(cmu_slide):
    """One HeatmapStyle for the app's overlay, its PNG export and the renderer: no opacity→alpha renaming."""
    from dnd_engine.heatmaps import HeatmapStyle, render_heatmap
    style = HeatmapStyle(colormap="viridis", opacity=0.6, threshold=0.25, normalise="minmax", smooth=True)
    assert style.render_options() == {"colormap": "viridis", "alpha": 0.6, "normalise": "minmax",
                                      "threshold": 0.25, "blur": True}
    assert HeatmapStyle().render_options()["threshold"] is None   # 0 = draw every score
    coords = np.array([[x, y] for y in range(0, 2048, 256) for x in range(0, 2048, 256)])
    scores = np.linspace(0.0, 1.0, len(coords))
    with open_slide(cmu_slide) as slide:
        a = render_heatmap(slide, coords, 256.0, scores, max_side=256, style=style)
        b = render_heatmap(slide, coords, 256.0, scores, max_side=256, colormap="viridis", alpha=0.6,
                           normalise="minmax", threshold=0.25, blur=True)
    assert np.array_equal(a.overlay, b.overlay) and np.array_equal(a.painted, b.painted)
