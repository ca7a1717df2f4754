"""A slide a user asks to classify whose tissue is smaller than the thresholds (an overview image, a speck of a
biopsy) is classified from its patches with the most tissue, with a note; a cohort's extraction still skips it,
and a slide with nothing stained still fails with a plain reason."""

import h5py
import numpy as np

from dnd_engine.features import ExtractConfig, extract_cohort
from dnd_engine.predict import predict_slides
from conftest import shared_file
from pyramid import write_pyramid

DEMO_MODEL = "resources/models/demo_abmil_stain_stats.safetensors"


def _speck_slide(path, speck: int):
    """A 20x, 2048 px white slide with one pink square of ``speck`` px: about (speck / 512)^2 of a 10x patch."""
    img = np.full((2048, 2048, 3), 242, np.uint8)
    if speck:
        img[900:900 + speck, 1000:1000 + speck] = (200, 90, 160)
    return write_pyramid(path, img, downsamples=(1, 4))


def _cfg(**kw) -> ExtractConfig:
    return ExtractConfig(extractor="stain_stats", num_workers=0, compile="off", device="cpu", **kw)


def test_a_speck_of_tissue_fails_a_cohort_but_is_kept_for_a_single_slide(tmp_path):
    slide = _speck_slide(tmp_path / "speck.svs", 150)          # ~9 % of one patch: below a piece and a patch
    cohort = extract_cohort([slide], tmp_path / "cohort", _cfg())[0]
    assert cohort.status == "failed" and "no tissue" in cohort.error

    single = extract_cohort([slide], tmp_path / "single", _cfg(little_tissue=True))[0]
    assert single.status == "done", single.error
    assert 1 <= single.n_patches <= 4
    with h5py.File(single.features_h5, "r") as f:
        best = float(f["coords"].attrs["little_tissue"])
    assert 0.01 <= best < 0.25


def test_a_slide_with_enough_tissue_is_cut_the_same_either_way(tmp_path):
    slide = _speck_slide(tmp_path / "big.svs", 900)
    a = extract_cohort([slide], tmp_path / "a", _cfg())[0]
    b = extract_cohort([slide], tmp_path / "b", _cfg(little_tissue=True))[0]
    assert a.status == b.status == "done"
    with h5py.File(a.features_h5, "r") as fa, h5py.File(b.features_h5, "r") as fb:
        assert np.array_equal(fa["coords"][:], fb["coords"][:])
        assert "little_tissue" not in fb["coords"].attrs


def test_nothing_stained_still_fails_with_a_plain_reason(tmp_path):
    slide = _speck_slide(tmp_path / "blank.svs", 0)
    r = extract_cohort([slide], tmp_path / "o", _cfg(little_tissue=True))[0]
    assert r.status == "failed"
    assert "nothing on the slide is stained" in r.error and "0 patches" not in r.error


def test_predict_classifies_a_speck_and_says_it_rests_on_little_evidence(tmp_path):
    slide = _speck_slide(tmp_path / "speck.svs", 150)
    [p] = predict_slides(DEMO_MODEL, [slide], tmp_path / "pred", heatmaps="none", device="cpu")
    assert p.status == "done", p.error
    assert p.n_patches >= 1 and "little tissue" in p.note
    text = (tmp_path / "pred" / "predictions.csv").read_text()
    assert "little tissue" in text


def test_kidney_overview_classifies_once_its_magnification_is_given(tmp_path):
    kidney = shared_file("wsi", "kidney-48-5.tif")
    [p] = predict_slides(DEMO_MODEL, [kidney], tmp_path, heatmaps="student", device="cpu", base_magnification=20)
    assert p.status == "done", p.error
    assert p.n_patches >= 1 and "little tissue" in p.note
    assert (tmp_path / "heatmaps" / "kidney-48-5_student_heatmap.png").is_file()
