"""A slide's magnification set by the user (issue 19, item 2) and clean messages for bad slide files (item 9):
the engine side. Resolution order (user > file), identity keys, the project manifest, extraction and prediction."""

import logging
import shutil
from pathlib import Path

import pytest

from conftest import shared_file
from dnd_engine.errors import SlideError
from dnd_engine.slides import MagnificationOverride, OverrideTable, needs_magnification, open_slide, slide_identity


def test_user_setting_wins_over_the_file_and_says_so(cmu_slide):
    # a power only: the scale bar gets the objective's nominal pixel size, marked as such
    with open_slide(shared_file("wsi", "kidney-48-5.tif"), objective_power=20) as s:
        assert (s.objective_power, s.magnification_source) == (20, "override")
        assert (s.mpp, s.mpp_source) == (pytest.approx(0.5), "objective")
        assert s.info()["mpp_source"] == "objective"
    # a pixel size only: the power follows from it, even against the file's header (20x, 0.499 um/px)
    with open_slide(cmu_slide, mpp=0.25) as s:
        assert (s.mpp, s.mpp_source) == (0.25, "override")
        assert s.objective_power == 40
    with open_slide(cmu_slide) as s:
        assert (s.mpp_source, s.magnification_source) == ("file", "header")


def test_identity_follows_the_content_not_the_name(tmp_path):
    src = shared_file("wsi", "kidney-48-5.tif")
    copy = tmp_path / "renamed.tif"
    shutil.copyfile(src, copy)
    other_dir = tmp_path / "other"
    other_dir.mkdir()
    same_name = other_dir / "kidney-48-5.tif"
    shutil.copyfile(shared_file("wsi", "HE_example.ome.tif"), same_name)
    assert slide_identity(copy) == slide_identity(src)
    assert slide_identity(same_name) != slide_identity(src)
    table = OverrideTable()
    table.set(src, MagnificationOverride(objective_power=20))
    assert table.get(copy) == MagnificationOverride(objective_power=20)
    assert table.get(same_name) is None
    assert table.entries[slide_identity(src)]["name"] == "kidney-48-5.tif"
    table.set(copy, None)
    assert table.get(src) is None


@pytest.mark.parametrize("bad", [dict(), dict(objective_power=0.1), dict(mpp=500.0)])
def test_an_override_must_be_a_sensible_scale(bad):
    with pytest.raises(Exception) as ei:
        MagnificationOverride(**bad)
    assert "\n" not in str(ei.value)
    assert MagnificationOverride.from_dict({"objective_power": "x"}) is None   # a hand-edited file: ignored


def test_project_keeps_overrides_and_its_extraction_uses_them(tmp_path):
    from dnd_engine.project import Project
    from dnd_engine.project.plans import ExtractionPlan
    from dnd_engine.project.runners import run_extraction
    kidney, tcga = shared_file("wsi", "kidney-48-5.tif"), shared_file("wsi", "tcga-cr-7395-01a-01-ts1.svs")
    project = Project.create(tmp_path / "proj")
    project.set_slides([kidney, tcga])
    project.save()
    project.set_slide_override(kidney, MagnificationOverride(objective_power=20))
    project.set_slide_override(tcga, MagnificationOverride(mpp=0.5))
    again = Project.open(tmp_path / "proj")
    assert again.slide_override(kidney) == MagnificationOverride(objective_power=20)
    assert again.overrides_by_path() == {str(kidney.resolve()): {"objective_power": 20.0},
                                         str(tcga.resolve()): {"mpp": 0.5}}
    plan = ExtractionPlan(extractor="stain_stats", magnification=10.0, patch_size=256, device="cpu")
    said = []
    fdir = run_extraction(again, plan, log=said.append)
    assert [p.stem for p in (fdir / "h5_files").glob("*.h5")] == ["tcga-cr-7395-01a-01-ts1"]
    # kidney-48-5 gets past its magnification and stops where it must: its tissue (a 62 x 115 px speck on a
    # 1493 x 901 overview) is a fraction of one 10x patch at any scale it could have
    assert any("kidney-48-5" in m and "no tissue" in m for m in said), said
    assert not any("magnification metadata" in m or "base-magnification" in m for m in said), said


def test_extraction_redoes_a_slide_whose_magnification_changed(tmp_path):
    from dnd_engine.features import ExtractConfig, extract_cohort
    from dnd_engine.patching.h5io import read_coords_h5
    tcga = shared_file("wsi", "tcga-cr-7395-01a-01-ts1.svs")
    key = str(tcga.resolve())
    cfg = ExtractConfig(extractor="stain_stats", num_workers=0, compile="off", device="cpu",
                        slide_overrides={key: {"objective_power": 20.0}})
    first = extract_cohort([tcga], tmp_path, cfg)[0]
    assert first.status == "done", first.error
    assert read_coords_h5(first.features_h5)[1]["level0_magnification"] == 20.0
    assert extract_cohort([tcga], tmp_path, cfg)[0].status == "skipped"
    cfg.slide_overrides = {key: {"objective_power": 40.0}}     # the user corrects it: new patches, not the old
    second = extract_cohort([tcga], tmp_path, cfg)[0]
    assert second.status == "done" and read_coords_h5(second.features_h5)[1]["level0_magnification"] == 40.0


def test_prediction_uses_the_override_and_without_it_names_the_app_setting(tmp_path):
    from dnd_engine.predict import predict_slides
    from dnd_gui.jobs.classify import DEMO_MODEL
    tcga = shared_file("wsi", "tcga-cr-7395-01a-01-ts1.svs")
    assert needs_magnification(tcga) and not needs_magnification(tcga, MagnificationOverride(objective_power=20))
    without = predict_slides(DEMO_MODEL, [tcga], tmp_path / "a", heatmaps="none", device="cpu")[0]
    assert without.status == "failed" and "Slide panel" in without.error
    with_it = predict_slides(DEMO_MODEL, [tcga], tmp_path / "b", heatmaps="none", device="cpu",
                             slide_overrides={str(tcga.resolve()): {"objective_power": 20.0}})[0]
    assert with_it.status == "done", with_it.error
    assert with_it.n_patches > 0


INTERNALS = ("header=b", "out of range", "reshape", "Error", "<tifffile", "(1,", "b'")


def _bad_slides(tmp_path: Path, cmu_slide: Path) -> dict:
    data, kidney = cmu_slide.read_bytes(), shared_file("wsi", "kidney-48-5.tif").read_bytes()
    files = {"fake.svs": b"this is not a slide\n", "zero.svs": b"", "cut-header.svs": data[:100_000],
             "cut-header.tif": kidney[:8], "cut-pixels.tif": kidney[:2000]}
    out = {}
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
        out[name] = tmp_path / name
    return out


def test_bad_slides_give_one_plain_line(tmp_path, cmu_slide, caplog):
    caplog.set_level(logging.WARNING)
    for name, path in _bad_slides(tmp_path, cmu_slide).items():
        with pytest.raises(SlideError) as ei:
            with open_slide(path) as s:
                s.get_thumbnail(256)
        msg = str(ei.value)
        assert msg.startswith(name) and "\n" not in msg, msg
        assert not any(bit in msg for bit in INTERNALS), msg
    assert not [r for r in caplog.records if r.name.startswith("tifffile")]   # said once, as the error
    msgs = {n: str(pytest.raises(SlideError, open_slide, p).value) for n, p in _bad_slides(tmp_path, cmu_slide).items()
            if n != "cut-pixels.tif"}
    assert "not a slide format" in msgs["fake.svs"] and "empty" in msgs["zero.svs"]
    assert "damaged or incomplete" in msgs["cut-header.svs"] and "damaged or incomplete" in msgs["cut-header.tif"]


def test_dnd_predict_takes_the_base_magnification_its_error_names(tmp_path, capsys):
    from dnd_engine.cli.main import main
    from dnd_gui.jobs.classify import DEMO_MODEL
    tcga = shared_file("wsi", "tcga-cr-7395-01a-01-ts1.svs")
    common = ["predict", str(tcga), "--model", str(DEMO_MODEL), "--heatmaps", "none", "--device", "cpu", "--quiet"]
    assert main(common + ["--out", str(tmp_path / "a")]) == 1
    assert "--base-magnification 20" in capsys.readouterr().out
    assert main(common + ["--out", str(tmp_path / "b"), "--base-magnification", "20"]) == 0
