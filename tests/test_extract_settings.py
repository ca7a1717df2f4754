"""Issue 22 item 6: a feature folder never mixes settings. Files record what they were made with; a run with other
settings is refused (or recomputes with --overwrite); extraction.json never claims settings the files lack; two
runs at once with different settings leave no mixed folder; the app and `dnd predict` extract elsewhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from dnd_engine.cli.main import main
from dnd_engine.features import ExtractConfig, extract_cohort, feature_dir_for
from dnd_engine.features.settings import SettingsMismatch, recorded_settings, settings_folder

from pyramid import tissue_like, write_pyramid

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> Path:
    """Three small 20x slides with tissue: a few dozen patches each at 10x/128 px."""
    d = tmp_path_factory.mktemp("settings_slides")
    for i in range(3):
        write_pyramid(d / f"slide_{i}.svs", tissue_like(1024, 768, seed=i), downsamples=(1, 4))
    return d


def _extract(slides: Path, out: Path, *extra: str) -> int:
    return main(["extract", "--slides", str(slides), "--out", str(out), "--workers", "0", "--compile", "off",
                 "--device", "cpu", "--quiet", "--patch-size", "128", *extra])


def _snapshot(fdir: Path) -> dict:
    """Every file under the features folder (but its lock files) → (size, mtime_ns)."""
    return {str(p.relative_to(fdir)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(fdir.rglob("*")) if p.is_file() and not p.name.startswith(".extraction.")}


def _mags(fdir: Path) -> set:
    return {float(recorded_settings(p)[0]["magnification"]) for p in (fdir / "h5_files").glob("*.h5")}


def test_other_magnification_is_refused_and_files_untouched(slides, tmp_path, capsys):
    out = tmp_path / "out"
    assert _extract(slides, out, "--magnification", "10") == 0
    fdir = feature_dir_for(out, "stain_stats")
    before = _snapshot(fdir)
    patches_before = {p.name: p.stat().st_mtime_ns for p in (out / "patches").iterdir()}
    capsys.readouterr()
    assert _extract(slides, out, "--magnification", "20") == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: h5_files/slide_0.h5, slide_1.h5, slide_2.h5 were extracted at 10x/128 px")
    assert "this run asks for 20x/128 px" in err and "use another --out or --overwrite" in err
    assert "\n" not in err
    assert _snapshot(fdir) == before                 # features, extraction.json and summary untouched
    assert {p.name: p.stat().st_mtime_ns for p in (out / "patches").iterdir()} == patches_before
    assert json.loads((fdir / "extraction.json").read_text())["settings"]["magnification"] == 10.0


def test_other_patch_size_or_tissue_setting_is_refused(slides, tmp_path, capsys):
    out = tmp_path / "out"
    assert _extract(slides, out) == 0
    capsys.readouterr()
    assert main(["extract", "--slides", str(slides), "--out", str(out), "--workers", "0", "--compile", "off",
                 "--quiet", "--patch-size", "64"]) == 1
    assert "extracted at 10x/128 px; this run asks for 10x/64 px" in capsys.readouterr().err
    assert _extract(slides, out, "--min-tissue", "0.5", "--tissue-threshold", "20") == 1
    err = capsys.readouterr().err
    assert "with min tissue 0.25, the preset's tissue threshold; this run asks for min tissue 0.5, " \
           "tissue threshold 20" in err


def test_overwrite_recomputes_and_attributes_say_so(slides, tmp_path):
    out = tmp_path / "out"
    assert _extract(slides, out, "--magnification", "10") == 0
    fdir = feature_dir_for(out, "stain_stats")
    assert _extract(slides, out, "--magnification", "20", "--overwrite") == 0
    assert _mags(fdir) == {20.0}
    rec, missing = recorded_settings(fdir / "h5_files" / "slide_1.h5")
    assert not missing and rec["patch_size"] == 128 and rec["overlap"] == 0.0 and rec["tissue_preset"] == "default"
    with h5py.File(fdir / "h5_files" / "slide_1.h5", "r") as f:
        assert f["coords"].attrs["target_magnification"] == 20.0
    doc = json.loads((fdir / "extraction.json").read_text())
    assert doc["settings"]["magnification"] == 20.0 and "slides_with_other_settings" not in doc


def test_overwrite_leaves_no_old_file_for_a_slide_that_fails(slides, tmp_path):
    """At 5x slide_0's tissue is smaller than a patch: it fails, and its 20x features must not stay behind."""
    out = tmp_path / "out"
    assert _extract(slides, out, "--magnification", "20") == 0
    fdir = feature_dir_for(out, "stain_stats")
    assert _extract(slides, out, "--magnification", "5", "--overwrite") == 3        # some slides failed
    assert not (fdir / "h5_files" / "slide_0.h5").exists() and not (fdir / "pt_files" / "slide_0.pt").exists()
    assert _mags(fdir) == {5.0}
    doc = json.loads((fdir / "extraction.json").read_text())
    assert doc["settings"]["magnification"] == 5.0 and "slides_with_other_settings" not in doc


def test_same_settings_skip(slides, tmp_path, capsys):
    out = tmp_path / "out"
    assert _extract(slides, out) == 0
    capsys.readouterr()
    assert _extract(slides, out) == 0
    table = capsys.readouterr().out
    assert table.count("skipped") == 3


def test_overwrite_of_some_slides_refused_when_others_would_stay_mixed(slides, tmp_path, capsys):
    out = tmp_path / "out"
    assert _extract(slides, out, "--magnification", "10") == 0
    capsys.readouterr()
    assert _extract(slides / "slide_0.svs", out, "--magnification", "20", "--overwrite") == 1
    err = capsys.readouterr().err
    assert "h5_files/slide_1.h5, slide_2.h5 (slides not in this run: overwriting would leave them)" in err
    assert err.rstrip().endswith("move those files away or use another --out")
    assert _mags(feature_dir_for(out, "stain_stats")) == {10.0}


def test_old_files_compare_what_they_record(slides, tmp_path, caplog):
    """Files from before the settings record: magnification etc. still compared; the rest assumed equal."""
    out = tmp_path / "out"
    assert _extract(slides, out) == 0
    fdir = feature_dir_for(out, "stain_stats")
    for p in (fdir / "h5_files").glob("*.h5"):
        with h5py.File(p, "a") as f:
            for k in ("overlap", "min_tissue", "tissue_preset", "tissue_threshold", "magnification", "patch_size"):
                del f.attrs[k]
    caplog.set_level("INFO", logger="dnd_engine.features.settings")
    assert _extract(slides, out, "--min-tissue", "0.5") == 0          # unknown to the old files: assumed equal
    assert "predate the settings record" in caplog.text
    assert _extract(slides, out, "--magnification", "20") == 1         # their coords still say 10x


def test_a_slide_whose_objective_power_changed_is_reextracted(slides, tmp_path):
    """The earlier _same_scale rule, now part of the settings comparison: a slide property, not a run setting."""
    out = tmp_path / "out"
    cfg = ExtractConfig(num_workers=0, compile="off", device="cpu", patch_size=128)
    assert [r.status for r in extract_cohort(slides, out, cfg)] == ["done"] * 3
    over = {str((slides / "slide_1.svs").resolve()): {"objective_power": 40.0}}
    res = extract_cohort(slides, out, ExtractConfig(num_workers=0, compile="off", device="cpu", patch_size=128,
                                                    slide_overrides=over))
    assert [r.status for r in res] == ["skipped", "done", "skipped"]


def test_concurrent_runs_with_other_settings_never_mix(slides, tmp_path):
    """Two `dnd extract` processes at once on one folder, 10x and 20x: one refuses (or, if the first finished
    already, finds its files), so every file has one magnification and extraction.json claims that one."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "dnd_engine.cli", "extract", "--slides", str(slides), "--out", str(out),
           "--workers", "0", "--compile", "off", "--device", "cpu", "--quiet", "--patch-size", "128"]
    procs = [subprocess.Popen(cmd + ["--magnification", m], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for m in ("10", "20")]
    outs = [p.communicate() for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 1], outs
    refused = outs[[p.returncode for p in procs].index(1)][1]
    assert "Traceback" not in refused and (
        "another extraction with other settings" in refused and "wait for it to finish or use another --out" in refused
        or "this run asks for" in refused and "use another --out or --overwrite" in refused)
    fdir = feature_dir_for(out, "stain_stats")
    mags = _mags(fdir)
    assert len(mags) == 1 and len(list((fdir / "h5_files").glob("*.h5"))) == 3
    assert json.loads((fdir / "extraction.json").read_text())["settings"]["magnification"] == mags.pop()


def test_busy_folder_refuses_other_settings_in_process(slides, tmp_path):
    """While a run holds the folder (its claim), another with other settings is refused; same settings go on."""
    from dnd_engine.features.settings import claim_folder
    fdir = feature_dir_for(tmp_path / "out", "stain_stats")
    fdir.mkdir(parents=True)
    s10 = {"extractor": "stain_stats", "weights_sha256": "", "precision": "fp32", "magnification": 10.0,
           "patch_size": 128, "overlap": 0.0, "min_tissue": 0.25, "tissue_preset": "default", "tissue_threshold": -1}
    s5 = {**s10, "magnification": 20.0}
    held = claim_folder(fdir, s10, [], False, {})
    try:
        with pytest.raises(SettingsMismatch, match="another extraction with other settings .10x/128 px. is writing"):
            claim_folder(fdir, s5, [], False, {})
        claim_folder(fdir, s10, [], False, {}).release()
        assert json.loads((fdir / "extraction.json").read_text())["settings"] == s10
    finally:
        held.release()
    claim_folder(fdir, s5, [], False, {}).release()       # free again: an empty folder takes the new settings
    assert json.loads((fdir / "extraction.json").read_text())["settings"] == s5


def test_settings_folder_names_the_settings(tmp_path):
    s = {"extractor": "stain_stats", "magnification": 20.0, "patch_size": 256}
    p = settings_folder(tmp_path / "extraction", s)
    assert p.parent == tmp_path and p.name.startswith("extraction-20x-256px-")
    assert settings_folder(tmp_path / "extraction", {**s, "extractor": "other"}) != p


DEMO_MODEL = REPO / "resources" / "models" / "demo_abmil_stain_stats.safetensors"   # stain_stats, 10x/256 px


def test_predict_extracts_beside_a_folder_of_other_settings(tmp_path):
    """`dnd predict` did not choose out/extraction's settings: it recomputes into a folder of its own settings,
    and the heatmap still finds that folder's tissue mask."""
    from dnd_engine.predict import extraction_tissue_mask, predict_slides
    d = tmp_path / "slides"
    d.mkdir()
    slide = write_pyramid(d / "big.svs", tissue_like(2048, 1536, seed=3), downsamples=(1, 4))
    out = tmp_path / "pred"
    extract_cohort([slide], out / "extraction", ExtractConfig(num_workers=0, compile="off", device="cpu",
                                                                magnification=20, patch_size=128))
    old = feature_dir_for(out / "extraction", "stain_stats") / "h5_files" / "big.h5"
    before = old.stat().st_mtime_ns
    [p] = predict_slides(DEMO_MODEL, [slide], out, heatmaps="student", device="cpu")
    assert p.status == "done", p.error
    assert old.stat().st_mtime_ns == before and _mags(old.parents[1]) == {20.0}      # untouched, not mixed
    [alt] = [q for q in out.iterdir() if q.name.startswith("extraction-10x-256px-")]
    assert _mags(feature_dir_for(alt, "stain_stats")) == {10.0}
    assert (alt / "tissue" / "big_mask.png").is_file() and extraction_tissue_mask(out, "big") is not None
    [p2] = predict_slides(DEMO_MODEL, [slide], out, heatmaps="none", device="cpu")     # again: reuses its folder
    assert p2.status == "done" and [q.name for q in out.iterdir() if q.name.startswith("extraction-")] == [alt.name]


def test_project_extraction_with_another_plan_goes_beside_the_old_features(slides, tmp_path):
    """The app's project: a plan with other settings than features/ holds extracts into features-<settings>/ and
    the project points there; the old features (runs may rest on them) stay as they were."""
    from dnd_engine.project import ExtractionPlan, Project
    from dnd_engine.project.runners import run_extraction
    project = Project.create(tmp_path / "proj")
    project.set_slides(slides)
    plan = ExtractionPlan(extractor="stain_stats", magnification=10, patch_size=128, device="cpu")
    first = run_extraction(project, plan)
    assert first == feature_dir_for(project.root / "features", "stain_stats") and _mags(first) == {10.0}
    logs = []
    second = run_extraction(project, ExtractionPlan(extractor="stain_stats", magnification=20, patch_size=128,
                                                    device="cpu"), log=logs.append)
    assert second.parent.name.startswith("features-20x-128px-") and _mags(second) == {20.0}
    assert _mags(first) == {10.0} and project.features_dir == second
    assert any("this run asks for 20x/128 px" in m for m in logs)


def test_cli_run_refused_while_another_process_extracts_with_other_settings(slides, tmp_path):
    """The concurrent case without timing: this process holds the folder for a 10x run (as a running extraction
    does); a `dnd extract` process at 20x is refused, exit 1, and writes no features."""
    from dnd_engine.features.settings import claim_folder
    out = tmp_path / "out"
    fdir = feature_dir_for(out, "stain_stats")
    fdir.mkdir(parents=True)
    s10 = {"extractor": "stain_stats", "weights_sha256": "", "precision": "fp32", "magnification": 10.0,
           "patch_size": 128, "overlap": 0.0, "min_tissue": 0.25, "tissue_preset": "default", "tissue_threshold": -1}
    held = claim_folder(fdir, s10, [], False, {})
    try:
        p = subprocess.run([sys.executable, "-m", "dnd_engine.cli", "extract", "--slides", str(slides), "--out",
                            str(out), "--workers", "0", "--compile", "off", "--device", "cpu", "--quiet",
                            "--patch-size", "128", "--magnification", "20"],
                           env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    finally:
        held.release()
    assert p.returncode == 1, p.stderr
    assert p.stderr.strip() == (f"error: another extraction with other settings (10x/128 px) is writing to {fdir}: "
                                "wait for it to finish or use another --out")
    assert not list((fdir / "h5_files").glob("*.h5"))
    assert json.loads((fdir / "extraction.json").read_text())["settings"] == s10
