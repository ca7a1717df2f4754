"""Predictions accumulate (issue 19, item 1) and runs keep their own names (item 7): one engine writer, used by
``dnd predict --out`` and by the app; two runs of one method are told apart and write to separate folders."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

from dnd_engine.cli.main import main
from dnd_engine.errors import DnDError
from dnd_engine.predictions import DEMO_MARK, write_predictions
from dnd_engine.predict import SlidePrediction
from dnd_engine.run_names import model_key, run_key, run_name
from dnd_engine.synth import make_synthetic_cohort

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "resources" / "models" / "demo_abmil_stain_stats.safetensors"


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    """Two small synthetic slides the demo model classifies in seconds."""
    c = make_synthetic_cohort(tmp_path_factory.mktemp("acc_cohort") / "cohort", n_slides=2, size=2048, seed=11)
    return sorted(s.path for s in c.slides)


def rows_of(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(Path(path).read_text())))


def tamper(path: Path, slide_id: str) -> None:
    """Change one slide's predicted class in the file, so a re-run can be seen to replace that row."""
    rows = rows_of(path)
    cols = list(rows[0])
    for r in rows:
        if r["slide_id"] == slide_id:
            r["predicted"] = "stale"
    buf = io.StringIO()
    w = csv.DictWriter(buf, cols, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    path.write_text(buf.getvalue())


def fake(slide_id: str, probs=(0.2, 0.8), status="done") -> SlidePrediction:
    return SlidePrediction(slide_id, f"/x/{slide_id}.svs", status, "b" if status == "done" else "",
                           list(probs) if status == "done" else [], 9 if status == "done" else 0)


# --- the writer -----------------------------------------------------------------------------------------------

def test_writer_keeps_other_slides_and_models_and_replaces_a_rerun(tmp_path):
    path = tmp_path / "predictions.csv"
    write_predictions(path, [fake("A")], ["a", "b"], model="run1/abmil")
    write_predictions(path, [fake("B")], ["a", "b"], model="run1/abmil")
    write_predictions(path, [fake("A", (0.9, 0.1))], ["a", "b"], model="run2/abmil", demo=True)
    write_predictions(path, [fake("A", (0.6, 0.4))], ["a", "b"], model="run1/abmil")
    rows = rows_of(path)
    assert [(r["slide_id"], r["model"]) for r in rows] == [("A", "run1/abmil"), ("B", "run1/abmil"),
                                                           ("A", "run2/abmil")]
    assert rows[0]["p_a"] == "0.600000" and rows[2]["p_a"] == "0.900000"
    assert rows[2]["demo"] == DEMO_MARK and rows[0]["demo"] == ""
    # another model's classes add a column; nothing is dropped
    write_predictions(path, [fake("C", (0.1, 0.2, 0.7))], ["a", "b", "c"], model="other")
    rows = rows_of(path)
    assert len(rows) == 4 and rows[3]["p_c"] == "0.700000" and rows[0]["p_c"] == ""
    assert not list(tmp_path.glob("*.part"))


def test_writer_refuses_a_file_that_is_not_a_predictions_file(tmp_path):
    path = tmp_path / "predictions.csv"
    path.write_text("name,value\nx,1\n")
    with pytest.raises(DnDError) as err:
        write_predictions(path, [fake("A")], ["a", "b"])
    assert "not a predictions file" in str(err.value) and "\n" not in str(err.value)
    assert path.read_text() == "name,value\nx,1\n"


# --- dnd predict --out into an existing folder -----------------------------------------------------------------

def test_cli_predict_into_an_existing_folder_accumulates(capsys, tmp_path, slides):
    a, b = slides
    out = tmp_path / "pred"
    for slide in (a, b):
        assert main(["predict", "--model", str(DEMO), str(slide), "--out", str(out), "--heatmaps", "none",
                     "--device", "cpu", "--quiet"]) == 0
    ids = [Path(a).stem, Path(b).stem]
    rows = rows_of(out / "predictions.csv")
    assert [r["slide_id"] for r in rows] == ids
    assert {r["model"] for r in rows} == {DEMO.stem} and {r["demo"] for r in rows} == {DEMO_MARK}
    tamper(out / "predictions.csv", ids[0])
    assert main(["predict", "--model", str(DEMO), str(a), "--out", str(out), "--heatmaps", "none",
                 "--device", "cpu", "--quiet"]) == 0
    rows = rows_of(out / "predictions.csv")
    assert [r["slide_id"] for r in rows] == ids                  # A replaced in place, B kept
    assert "stale" not in {r["predicted"] for r in rows}
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    assert "accumulate" in capsys.readouterr().out


# --- run names ----------------------------------------------------------------------------------------------

def fake_run_folder(folder: Path, method="abmil", model: Path = DEMO) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"kind": "dnd", "dnd": {"model": method, "preset": "paper"}}))
    shutil.copyfile(model, folder / "model.safetensors")
    return folder


def test_two_runs_of_one_method_have_their_own_names(tmp_path):
    one = fake_run_folder(tmp_path / "proj" / "runs" / "run-a" / "abmil")
    two = fake_run_folder(tmp_path / "proj" / "runs" / "run-b" / "abmil")
    plain = fake_run_folder(tmp_path / "exp7")                    # dnd train --out exp7
    assert (run_name(one), run_name(two), run_name(plain)) == ("run-a", "run-b", "exp7")
    assert (run_key(one), run_key(two), run_key(plain)) == ("run-a/abmil", "run-b/abmil", "exp7")
    assert model_key(one / "model.safetensors") == "run-a/abmil" and model_key(two) == "run-b/abmil"
    assert model_key(DEMO) == DEMO.stem


# --- the app --------------------------------------------------------------------------------------------------

def _window(qtbot, tmp_path):
    from gui_helpers import open_window
    return open_window(qtbot, tmp_path / "settings.ini", tmp_path / "out")


def _load(qtbot, win, model):
    with qtbot.waitSignal(win.model_ready, timeout=90_000):
        win.load_model(model)


def _classify(qtbot, win, slide):
    from dnd_gui.jobs.queue import JobState
    with qtbot.waitSignal(win.job_finished, timeout=180_000) as done:
        win.classify([str(slide)])
    assert done.args[0].state == JobState.DONE, done.args[0].error


def test_app_predictions_accumulate_per_model(qtbot, tmp_path, slides):
    a, b = slides
    win = _window(qtbot, tmp_path)
    _load(qtbot, win, DEMO)
    _classify(qtbot, win, a)
    _classify(qtbot, win, b)
    csv_path = tmp_path / "out" / DEMO.stem / "predictions.csv"
    ids = [Path(a).stem, Path(b).stem]
    assert [r["slide_id"] for r in rows_of(csv_path)] == ids      # before: only B
    tamper(csv_path, ids[0])
    _classify(qtbot, win, a)
    rows = rows_of(csv_path)
    assert [r["slide_id"] for r in rows] == ids and "stale" not in {r["predicted"] for r in rows}
    assert not list((tmp_path / "out").rglob("*.part"))


def test_app_keeps_two_runs_of_one_method_apart(qtbot, tmp_path, slides):
    one = fake_run_folder(tmp_path / "proj" / "runs" / "run-a" / "abmil")
    two = fake_run_folder(tmp_path / "proj" / "runs" / "run-b" / "abmil")
    win = _window(qtbot, tmp_path)
    for run in (one, two):
        _load(qtbot, win, run)
        assert win.model.name == f"{run.parent.name}/abmil"
        _classify(qtbot, win, slides[0])
    out = tmp_path / "out"
    for run in ("run-a", "run-b"):
        rows = rows_of(out / run / "abmil" / "predictions.csv")
        assert [(r["slide_id"], r["model"]) for r in rows] == [(Path(slides[0]).stem, f"{run}/abmil")]
    assert not (out / "abmil").exists()
    assert sorted(r.model for r in win.predictions.model.rows) == ["run-a/abmil", "run-b/abmil"]
