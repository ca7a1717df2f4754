"""Issue 21 item 7: the app sends project extraction to the Ray cluster set in File ▸ Settings, and shows its
per-slide progress and failures as for a local job. The job runs on a real private Ray instance ("local": Ray
started by the engine from the job's worker thread), not a stand-in."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from dnd_engine.features import ExtractConfig, extract_cohort, feature_dir_for
from dnd_engine.project import ExtractionPlan, JobBook, Project, TrainingPlan
from dnd_engine.synth import make_synthetic_cohort

from gui_helpers import open_window

JOB_MS = 300_000
SHOTS = Path("/work/shots")


@pytest.fixture
def window(qtbot, tmp_path):
    win = open_window(qtbot, tmp_path / "settings.ini", tmp_path / "out")
    yield win
    win.shutdown()


def _shot(widget, name: str) -> None:
    if SHOTS.is_dir():
        widget.grab().save(str(SHOTS / f"i21-H2-{name}.png"))


def test_settings_dialog_keeps_the_cluster_address(window, qtbot):
    assert window.settings.ray_address() == ""                      # default: extract on this computer
    dialog = window.open_settings()
    qtbot.waitExposed(dialog)
    assert dialog.ray_edit.placeholderText().startswith("empty")
    dialog.ray_edit.setText("not an address")
    dialog.accept()                                                  # refused in one line, the dialog stays
    assert dialog.isVisible() and dialog.error_label.isVisible()
    assert "HOST:PORT" in dialog.error_label.text() and window.settings.ray_address() == ""
    _shot(dialog, "settings-refused")
    dialog.ray_edit.setText("  10.0.0.5:6379 ")
    dialog.accept()
    assert not dialog.isVisible() and window.settings.ray_address() == "10.0.0.5:6379"
    window.settings.qsettings.sync()
    again = window.open_settings()                                   # shown again next time
    assert again.ray_edit.text() == "10.0.0.5:6379"
    _shot(again, "settings")
    again.reject()
    assert window.settings_action.text().startswith("&Settings")


def test_extraction_job_runs_on_the_settings_ray_cluster_with_per_slide_rows(window, qtbot, tmp_path):
    pytest.importorskip("ray")
    cohort = make_synthetic_cohort(tmp_path / "cohort", n_slides=3, size=1024, seed=11)
    slides = cohort.out_dir / "slides"
    (slides / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 200)    # labelled, fails to open
    with open(cohort.labels_csv, "a", newline="") as f:
        csv.writer(f).writerow(["broken", "tumor"])
    session = window.new_project(str(tmp_path / "proj"))
    session.project.set_slides(str(slides))
    session.project.set_labels(cohort.labels_csv)
    session.project.save()
    window.settings.set_ray_address("local")
    jobs = window.launch_training(ExtractionPlan(extractor="stain_stats", device="cpu"),
                                  TrainingPlan(name="r", methods=["mean"], epochs_base=2, epochs_expert=1,
                                               epochs_student=1, folds=2, n_clusters=2, seed=3))
    extract = jobs[0]
    qtbot.waitUntil(lambda: extract.state.finished, timeout=JOB_MS)
    for j in jobs[1:]:
        j.cancel()
    qtbot.waitUntil(lambda: all(j.state.finished for j in jobs), timeout=JOB_MS)
    assert extract.state.value == "done", (extract.error, extract.log_lines[-5:])
    book = JobBook(Project.open(tmp_path / "proj"))
    assert book.records[0].spec["extraction"]["ray_address"] == "local"     # a resumed job goes there too
    log = "\n".join(extract.log_lines)
    assert "extracting on the Ray cluster local" in log
    assert "broken: failed" in log and "3 of 4 slides have features" in log
    assert extract.done == extract.total == 4                            # one tick per slide, as a local job
    _shot(window.jobs_panel, "ray-job")

    # the same per-slide rows as a local run of the same slides
    fdir = session.project.features_dir
    local = extract_cohort(slides, tmp_path / "local", ExtractConfig(extractor="stain_stats", device="cpu"))

    def rows(folder):
        with open(Path(folder) / "extraction_summary.csv") as f:
            return {r["slide_id"]: (r["status"], r["n_patches"], r["error"]) for r in csv.DictReader(f)}
    assert rows(fdir) == rows(feature_dir_for(tmp_path / "local", "stain_stats"))
    assert {r.slide_id: r.status for r in local} == {"broken": "failed", **{s.slide_id: "done" for s in cohort.slides}}
