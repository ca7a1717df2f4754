import numpy as np
import pytest
from PIL import Image

from dnd_engine.errors import SlideError
from dnd_engine.slides import open_slide, magnification_from_mpp
from conftest import shared_file


def test_bundled_svs_properties(cmu_slide):
    with open_slide(cmu_slide) as s:
        assert s.backend == "openslide"
        assert s.dimensions == (2220, 2967)
        assert s.level_count == 1
        assert s.mpp == pytest.approx(0.499, abs=1e-3)
        assert s.objective_power == 20 and s.magnification_source == "header"
        assert s.best_level_for_magnification(10) == (0, pytest.approx(2.0))
        img = s.read_region((1000, 1000), 0, (64, 48))
        assert img.mode == "RGB" and img.size == (64, 48)
        # tissue in the middle of this slide is coloured, not white
        assert np.asarray(img).mean() < 220


def test_region_outside_the_slide_is_white(cmu_slide):
    with open_slide(cmu_slide) as s:
        a = np.asarray(s.read_region((2200, 2950), 0, (64, 64)))
        assert a.shape == (64, 64, 3)
        assert (a[30:, 30:] == 255).all()   # fully beyond the edge


def test_slide_without_mpp_needs_a_base_magnification():
    p = shared_file("wsi", "tcga-cr-7395-01a-01-ts1.svs")
    with open_slide(p) as s:
        assert s.level_count == 2 and s.level_downsamples[1] == pytest.approx(2.0, abs=0.01)
        assert s.mpp is None and s.objective_power is None and s.magnification_source == "unknown"
        with pytest.raises(SlideError, match="base magnification"):
            s.best_level_for_magnification(10)
    with open_slide(p, fallback_magnification=20) as s:
        assert s.objective_power == 20 and s.magnification_source == "assumed"
        # 10x from 20x: downsample 2 → level 1 (2.0005), shrink by ~1
        level, extra = s.best_level_for_magnification(10)
        assert level == 1 and extra == pytest.approx(1.0, abs=0.01)
        # 5x: level 1 then shrink by ~2
        assert s.best_level_for_magnification(5)[0] == 1
    with open_slide(p, objective_power=40) as s:
        assert s.objective_power == 40 and s.magnification_source == "override"


def test_ome_tiff_falls_back_to_tiffslide_and_derives_magnification():
    p = shared_file("wsi", "HE_example.ome.tif")
    with open_slide(p) as s:
        assert s.backend == "tiffslide"
        assert s.id == "HE_example"
        assert s.dimensions == (1380, 1484)
        assert s.mpp == pytest.approx(0.50008, abs=1e-4)
        assert s.objective_power == 20 and s.magnification_source == "mpp"


def test_strip_tiff_opens_with_tiffslide():
    p = shared_file("wsi", "kidney-48-5.tif")
    with open_slide(p) as s:
        assert s.backend == "tiffslide" and s.dimensions == (1493, 901)


def test_png_is_a_one_level_slide(tmp_path):
    arr = np.zeros((300, 400, 3), np.uint8)
    arr[:, :, 0] = 200
    Image.fromarray(arr).save(tmp_path / "img.png")
    with open_slide(tmp_path / "img.png", mpp=0.25) as s:
        assert s.backend == "image" and s.dimensions == (400, 300) and s.level_count == 1
        assert s.objective_power == 40 and s.magnification_source == "mpp"
        r = np.asarray(s.read_region((390, 290), 0, (20, 20)))
        assert (r[:10, :10, 0] == 200).all() and (r[15:, 15:] == 255).all()
        t = s.get_thumbnail(100)
        assert max(t.size) == 100


@pytest.mark.parametrize("mpp,mag", [(0.25, 40), (0.2527, 40), (0.499, 20), (1.0, 10), (2.0, 5), (None, None)])
def test_magnification_from_mpp(mpp, mag):
    assert magnification_from_mpp(mpp) == mag


def _bad(tmp_path, name: str, data: bytes):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def test_bad_inputs_give_one_line_errors(tmp_path, cmu_slide):
    cases = {
        "zero-byte": _bad(tmp_path, "empty.svs", b""),
        "text renamed": _bad(tmp_path, "notes.svs", b"this is not a slide\n" * 50),
        "unsupported": _bad(tmp_path, "report.docx", b"PK\x03\x04 not a slide"),
        "missing": tmp_path / "nope.svs",
        "folder": tmp_path,
    }
    for what, path in cases.items():
        with pytest.raises(SlideError) as ei:
            open_slide(path)
        msg = str(ei.value)
        assert "\n" not in msg and len(msg) < 400, what
    assert "empty" in str(pytest.raises(SlideError, open_slide, cases["zero-byte"]).value)
    assert "unsupported" in str(pytest.raises(SlideError, open_slide, cases["unsupported"]).value)


def test_truncated_slide_fails_cleanly(tmp_path, cmu_slide):
    data = cmu_slide.read_bytes()
    p = _bad(tmp_path, "truncated.svs", data[: len(data) // 3])
    with pytest.raises(SlideError):
        with open_slide(p) as s:
            s.read_level(0)     # the header may survive; the missing tiles must not pass silently


def test_pyramid_without_metadata_needs_a_base_magnification(tmp_path):
    from pyramid import tissue_like, write_pyramid
    p = write_pyramid(tmp_path / "nometa.svs", tissue_like(2048, 2048), (1, 4), mpp=None, app_mag=None)
    with open_slide(p) as s:
        assert s.level_count == 2 and s.objective_power is None and s.magnification_source == "unknown"
    with open_slide(p, fallback_magnification=40) as s:
        assert s.objective_power == 40 and s.best_level_for_magnification(10) == (1, pytest.approx(1.0))
