"""The `dnd` command as a user meets it: one-line errors, exit codes, no partial files."""

import json
import shutil
import subprocess
import sys

import h5py
import pytest

from dnd_engine.cli.main import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for c in ("info", "extract", "synth", "demo"):
        assert c in out
    with pytest.raises(SystemExit):
        main(["extract", "--help"])
    assert "--extractor {stain_stats,resnet50_trunc,uni_v1}" in " ".join(capsys.readouterr().out.split())


def test_info_prints_properties(capsys, cmu_slide):
    code, out, _ = run(capsys, "info", str(cmu_slide))
    assert code == 0 and "2220 x 2967" in out and "20x (from header)" in out and "0.4990" in out
    code, out, _ = run(capsys, "info", "--json", str(cmu_slide))
    assert json.loads(out)["objective_power"] == 20


@pytest.mark.parametrize("name,data", [("empty.svs", b""), ("notes.svs", b"just text\n"), ("x.docx", b"PK..")])
def test_info_bad_input_is_one_line_no_traceback(capsys, tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    code, out, err = run(capsys, "info", str(tmp_path / name))
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_info_subprocess_has_no_traceback(tmp_path):
    (tmp_path / "empty.svs").write_bytes(b"")
    p = subprocess.run([sys.executable, "-m", "dnd_engine.cli", "info", str(tmp_path / "empty.svs")],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 1 and "Traceback" not in p.stderr and "empty file" in p.stderr


def test_extract_missing_weights_writes_nothing(capsys, tmp_path, cmu_slide, monkeypatch):
    monkeypatch.setenv("DND_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    code, out, err = run(capsys, "extract", "--slides", str(cmu_slide), "--out", str(tmp_path / "out"),
                         "--extractor", "resnet50_trunc")
    assert code == 1 and "resnet50-0676ba61.pth" in err and err.count("\n") == 1
    assert not any(p.is_file() for p in (tmp_path / "out").rglob("*"))


def test_extract_unwritable_output_folder(capsys, tmp_path, cmu_slide):
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, "extract", "--slides", str(cmu_slide), "--out", str(tmp_path / "file" / "out"))
    assert code == 1 and "cannot create output folder" in err and "Traceback" not in err


def test_extract_reports_bad_slides_and_continues(capsys, tmp_path, cmu_slide):
    d = tmp_path / "slides"
    d.mkdir()
    shutil.copy(cmu_slide, d)
    (d / "broken.svs").write_text("not a slide")
    code, out, _ = run(capsys, "extract", "--slides", str(d), "--out", str(tmp_path / "out"), "--quiet")
    assert code == 3
    assert "broken" in out and "failed" in out and "1/2 slides ok" in out
    h5 = tmp_path / "out" / "features_stain_stats" / "h5_files" / "CMU-1-Small-Region.h5"
    with h5py.File(h5, "r") as f:
        assert f["features"].shape[0] > 5
    code, out, _ = run(capsys, "extract", "--slides", str(d), "--out", str(tmp_path / "out"), "--quiet")
    assert "skipped" in out


def test_extract_bad_parameters(capsys, tmp_path, cmu_slide):
    code, _, err = run(capsys, "extract", "--slides", str(cmu_slide), "--out", str(tmp_path / "o"), "--overlap", "1.5")
    assert code == 1 and "overlap" in err
    code, _, err = run(capsys, "extract", "--slides", str(tmp_path / "none"), "--out", str(tmp_path / "o"))
    assert code == 1 and "no such file or folder" in err
    code, _, err = run(capsys, "extract", "--slides", str(cmu_slide), "--out", str(tmp_path / "o2"),
                       "--device-decode", "2")
    assert code == 1 and "device_decode must be between 0 and 1" in err and "Traceback" not in err
    assert not (tmp_path / "o2" / "patches").exists()


def test_synth_command(capsys, tmp_path):
    code, out, _ = run(capsys, "synth", "--out", str(tmp_path / "c"), "--n-slides", "4", "--size", "1024")
    assert code == 0 and "normal 2, tumor 2" in out
    assert len(list((tmp_path / "c" / "slides").glob("*.tif"))) == 4


def test_objective_power_override(capsys, tmp_path, cmu_slide):
    code, out, _ = run(capsys, "info", "--objective-power", "40", str(cmu_slide))
    assert code == 0 and "40x (from override)" in out
    code, out, _ = run(capsys, "extract", "--slides", str(cmu_slide), "--out", str(tmp_path / "o"), "--quiet",
                       "--objective-power", "40")
    assert code == 0
    with h5py.File(tmp_path / "o" / "patches" / "CMU-1-Small-Region.h5", "r") as f:
        assert f["coords"].attrs["patch_size"] == 1024 and f["coords"].attrs["level0_magnification"] == 40
