"""The synthetic cohort: layout, labels, determinism, readability by both slide readers, and ground-truth masks."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import openslide
import pytest
import tiffslide
from PIL import Image

from dnd_engine.errors import Cancelled, DnDError
from dnd_engine.slides.slide import open_slide
from dnd_engine.synth import SynthCohort, make_synthetic_cohort, read_lesion_mask

SIZE = 1024


def _labels(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _region(path: Path, xy: tuple[int, int], size: int = 128) -> np.ndarray:
    with open_slide(path) as s:
        return np.asarray(s.read_region(xy, 0, (size, size)))


def _tissue_at(path: Path, downsample: float) -> tuple[np.ndarray, np.ndarray]:
    """(RGB thumbnail, tissue mask by HSV saturation as CLAM does) at ``downsample``."""
    with open_slide(path) as s:
        rgb, _ = s.thumbnail_at_downsample(downsample)
    return rgb, cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)[..., 1] > 20


@pytest.fixture(scope="module")
def cohort_and_progress(tmp_path_factory) -> tuple[SynthCohort, list]:
    calls: list = []
    c = make_synthetic_cohort(tmp_path_factory.mktemp("synth") / "cohort", n_slides=6, n_classes=2, size=SIZE, seed=7,
                              progress=lambda done, total, msg: calls.append((done, total, msg)))
    return c, calls


@pytest.fixture
def cohort(cohort_and_progress) -> SynthCohort:
    return cohort_and_progress[0]


def test_layout_labels_and_metadata(cohort_and_progress):
    cohort, progress_calls = cohort_and_progress
    out = cohort.out_dir
    ids = [f"synth_{i:03d}" for i in range(6)]
    assert [s.slide_id for s in cohort.slides] == ids
    assert sorted(p.name for p in (out / "slides").iterdir()) == [f"{i}.tif" for i in ids]
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"{i}_lesion.png" for i in ids]
    assert not list(out.rglob("*.part"))

    assert cohort.labels_csv == out / "labels.csv"
    assert cohort.labels_csv.read_text().splitlines()[0] == "slide_id,label"
    rows = _labels(cohort.labels_csv)
    assert [r["slide_id"] for r in rows] == ids
    assert [r["label"] for r in rows] == [s.label for s in cohort.slides]
    assert cohort.class_names == ["normal", "tumor"]
    assert sorted(r["label"] for r in rows) == ["normal"] * 3 + ["tumor"] * 3
    assert all(s.label_index == cohort.class_names.index(s.label) for s in cohort.slides)

    meta = json.loads((out / "cohort.json").read_text())
    assert (meta["seed"], meta["size"], meta["magnification"], meta["mpp"]) == (7, SIZE, 20.0, 0.5)
    assert meta["mask_downsample"] == 16.0
    assert [(m["slide_id"], m["label"]) for m in meta["slides"]] == [(s.slide_id, s.label) for s in cohort.slides]
    for m, s in zip(meta["slides"], cohort.slides):
        assert m["lesion_fraction"] == pytest.approx(s.lesion_fraction, abs=1e-6)
        assert (out / m["file"]).is_file() and (out / m["mask"]).is_file()

    assert [(d, t) for d, t, _ in progress_calls] == [(i + 1, 6) for i in range(6)]
    assert all(s.slide_id in msg for s, (_, _, msg) in zip(cohort.slides, progress_calls))


def test_labels_balanced_and_multiclass(tmp_path):
    c = make_synthetic_cohort(tmp_path / "c3", n_slides=7, n_classes=3, size=SIZE, seed=1)
    assert c.class_names == ["normal", "lesion_a", "lesion_b"]
    counts = [sum(s.label == name for s in c.slides) for name in c.class_names]
    assert sorted(counts) == [2, 2, 3]
    assert {r["label"] for r in _labels(c.labels_csv)} == set(c.class_names)
    # each lesion class draws its own nuclei: the two lesion looks differ in colour inside the lesion
    means = {}
    for s in c.slides:
        if s.label != "normal":
            mask, ds = read_lesion_mask(s.mask_path)
            rgb, _ = _tissue_at(s.path, ds)
            means.setdefault(s.label, []).append(rgb[mask].mean(axis=0))
    a, b = (np.mean(means[k], axis=0) for k in ("lesion_a", "lesion_b"))
    assert np.abs(a - b).max() > 10


def test_same_seed_same_cohort_other_seed_differs(tmp_path):
    kw = dict(n_slides=2, size=SIZE)
    a = make_synthetic_cohort(tmp_path / "a", seed=3, **kw)
    b = make_synthetic_cohort(tmp_path / "b", seed=3, **kw)
    c = make_synthetic_cohort(tmp_path / "c", seed=5, **kw)
    assert a.labels_csv.read_bytes() == b.labels_csv.read_bytes()
    assert [s.label for s in a.slides] == ["tumor", "normal"]     # the label order is shuffled by the seed
    assert [s.label for s in c.slides] == ["normal", "tumor"]
    spots = [(0, 0), (384, 384), (512, 256), (896, 640)]
    for sa, sb, sc in zip(a.slides, b.slides, c.slides):
        for xy in spots:
            assert np.array_equal(_region(sa.path, xy), _region(sb.path, xy))
        assert np.array_equal(read_lesion_mask(sa.mask_path)[0], read_lesion_mask(sb.mask_path)[0])
        assert any(not np.array_equal(_region(sa.path, xy), _region(sc.path, xy)) for xy in spots)


def test_openslide_and_tiffslide_agree_on_a_default_size_slide(tmp_path):
    c = make_synthetic_cohort(tmp_path / "big", n_slides=2, size=4096, seed=0)
    path = c.slides[0].path
    assert path.stat().st_size < 6e6
    o, t = openslide.OpenSlide(str(path)), tiffslide.TiffSlide(str(path))
    try:
        assert openslide.OpenSlide.detect_format(str(path)) == "aperio"
        assert o.level_count == t.level_count == 3
        assert o.level_dimensions == t.level_dimensions == ((4096, 4096), (1024, 1024), (256, 256))
        assert o.level_downsamples == pytest.approx((1, 4, 16)) and t.level_downsamples == pytest.approx((1, 4, 16))
        assert float(o.properties["openslide.mpp-x"]) == float(t.properties["tiffslide.mpp-x"]) == 0.5
        power = (o.properties["openslide.objective-power"], t.properties["tiffslide.objective-power"])
        assert tuple(map(float, power)) == (20.0, 20.0)
        a = np.asarray(o.read_region((1500, 1700), 1, (200, 150)).convert("RGB"))
        b = np.asarray(t.read_region((1500, 1700), 1, (200, 150)).convert("RGB"))
        assert np.abs(a.astype(int) - b).max() <= 2
    finally:
        o.close()
        t.close()


def test_engine_reader_sees_pixel_size_and_power(cohort: SynthCohort, tmp_path):
    with open_slide(cohort.slides[0].path) as s:
        assert s.backend == "openslide"
        assert (s.mpp, s.objective_power, s.magnification_source) == (0.5, 20.0, "header")
        assert s.level_dimensions == [(SIZE, SIZE), (SIZE // 4, SIZE // 4)]
        corner = np.asarray(s.read_region((0, 0), 0, (32, 32))).reshape(-1, 3)
        assert (corner.mean(axis=0) > 225).all() and np.ptp(corner.mean(axis=0)) < 8   # near-white glass
    c40 = make_synthetic_cohort(tmp_path / "x40", n_slides=2, size=SIZE, magnification=40, seed=0)
    with open_slide(c40.slides[0].path) as s:
        assert (s.mpp, s.objective_power) == (0.25, 40.0)
    with tiffslide.TiffSlide(str(c40.slides[0].path)) as t:
        assert float(t.properties["tiffslide.mpp-x"]) == 0.25


def test_lesion_masks_match_labels_and_lie_in_tissue(cohort: SynthCohort):
    for s in cohort.slides:
        mask, ds = read_lesion_mask(s.mask_path)
        assert mask.shape == (SIZE // 16, SIZE // 16) and ds == s.mask_downsample == 16.0
        rgb, tissue = _tissue_at(s.path, ds)
        assert 0.25 < tissue.mean() < 0.7
        if s.label == "normal":
            assert not mask.any() and s.lesion_fraction == 0.0
        else:
            assert mask.any()
            assert tissue[mask].mean() > 0.95
            assert 0.03 < s.lesion_fraction < 0.25
            assert mask.sum() / tissue.sum() == pytest.approx(s.lesion_fraction, abs=0.05)


def test_lesion_is_darker_and_more_hematoxylin_than_normal_tissue(cohort: SynthCohort):
    for s in cohort.slides:
        if s.label == "normal":
            continue
        mask, ds = read_lesion_mask(s.mask_path)
        rgb, tissue = _tissue_at(s.path, ds)
        kernel = np.ones((3, 3), np.uint8)
        core = cv2.erode(mask.astype(np.uint8), kernel).astype(bool)
        away = tissue & ~cv2.dilate(mask.astype(np.uint8), kernel, iterations=2).astype(bool)
        lesion, normal = rgb[core].astype(float).mean(axis=0), rgb[away].astype(float).mean(axis=0)
        assert lesion.mean() < normal.mean() - 30                       # darker
        assert lesion[2] - lesion[0] > normal[2] - normal[0] + 15       # bluer: hematoxylin, not eosin


def test_cancel_keeps_finished_slides_and_leaves_no_partial_file(tmp_path):
    checks = []

    def cancelled() -> bool:
        checks.append(1)
        return len(checks) > 2

    out = tmp_path / "cancel"
    with pytest.raises(Cancelled):
        make_synthetic_cohort(out, n_slides=4, size=SIZE, cancelled=cancelled)
    assert sorted(p.name for p in (out / "slides").iterdir()) == ["synth_000.tif", "synth_001.tif"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["synth_000_lesion.png", "synth_001_lesion.png"]
    assert not list(out.rglob("*.part"))
    assert not (out / "labels.csv").exists() and not (out / "cohort.json").exists()
    with openslide.OpenSlide(str(out / "slides" / "synth_001.tif")) as o:
        assert o.dimensions == (SIZE, SIZE)


def test_read_lesion_mask_round_trip_and_missing_metadata(cohort: SynthCohort, tmp_path):
    s = next(s for s in cohort.slides if s.label != "normal")
    mask, ds = read_lesion_mask(s.mask_path)
    assert ds == json.loads((cohort.out_dir / "cohort.json").read_text())["mask_downsample"]
    with Image.open(s.mask_path) as img:
        assert img.mode == "L" and set(np.unique(np.asarray(img))) <= {0, 255}
    plain = tmp_path / "plain.png"
    Image.fromarray(mask.astype(np.uint8) * 255).save(plain)
    with pytest.raises(DnDError):
        read_lesion_mask(plain)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError):
        make_synthetic_cohort(tmp_path, n_classes=1)
    with pytest.raises(ValueError):
        make_synthetic_cohort(tmp_path, n_slides=2, n_classes=3)
    with pytest.raises(ValueError):
        make_synthetic_cohort(tmp_path, size=100)
