"""Honest job states (issue 19, items 3, 4, 9 and 13): a job whose slides all failed is failed, with its one-line
reason and a Retry; some failed is "Done with 1 of 3 failed"; Cancel stops exactly the job asked and a cancelled
job can be resumed; the Jobs list can be cleared; an empty Jobs panel takes no space."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from dnd_engine.errors import Cancelled
from dnd_engine.progress import batch_outcome
from dnd_engine.project import JobBook, Project, TrainingPlan
from dnd_gui.jobs.queue import Job, JobState
from dnd_gui.panels.jobs_panel import PARTIAL_COLOUR
from dnd_gui.theme import apply_theme

from bagtools import make_bags, write_bags
from gui_helpers import open_window

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
JOB_MS = 20_000
TRAIN_MS = 180_000


def click(button) -> None:
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


def slides_job(results, calls=None):
    """A batch job that goes on past failed items, as classification does, and reports them to the job."""
    def fn(ctx):
        if calls is not None:
            calls.append(1)
        items = results(len(calls or [])) if callable(results) else results
        ctx.outcome(batch_outcome(items))
        return items
    return fn


# --- item 3: failed is failed ---------------------------------------------------------------------------------
def test_job_whose_every_slide_failed_is_failed_with_the_reason_and_a_retry(qtbot, queue, panel):
    calls = []

    def results(n):   # the first run fails on both slides; the retry finds them readable
        return [("fake.svs", "not a slide: no TIFF header\nmore detail"), ("empty.svs", "the file is empty")] \
            if n == 1 else [("fake.svs", ""), ("empty.svs", "")]
    job = queue.submit(Job("Classify 2 slides \u2014 demo", slides_job(results, calls)))
    qtbot.waitUntil(lambda: job.state.finished, timeout=JOB_MS)
    row = panel.row_for(job)
    assert job.state == JobState.FAILED
    assert job.error == "fake.svs: not a slide: no TIFF header (and 1 more failed)"
    assert row.state_label.text() == "Failed" and job.error in row.message.text()
    assert row.bar.format() == "failed"                            # never a "100 %" for a failure
    assert row.retry_button.isVisible() and row.retry_button.text() == "Retry"
    click(row.retry_button)
    qtbot.waitUntil(lambda: job.state == JobState.DONE, timeout=JOB_MS)
    assert len(calls) == 2 and panel.row_for(job) is row          # the same job, in its own row
    assert row.state_label.text() == "Done" and not row.retry_button.isVisible()
    assert any("run again" in line for line in job.log_lines)


def test_job_with_some_slides_failed_says_so_in_a_warning_colour(qtbot, queue, panel):
    job = queue.submit(Job("Classify 3 slides", slides_job(
        [("a.svs", ""), ("kidney.tif", "no magnification metadata"), ("c.svs", "")])))
    qtbot.waitUntil(lambda: job.state.finished, timeout=JOB_MS)
    row = panel.row_for(job)
    assert job.state == JobState.DONE and job.outcome.state == "partial"
    assert row.state_label.text() == "Done with 1 of 3 failed"
    assert PARTIAL_COLOUR in row.state_label.styleSheet() and row.state_label.property("jobState") == "partial"
    assert "kidney.tif: no magnification metadata" in row.message.text()
    assert row.retry_button.isVisible()


def test_batch_outcome_decides_from_each_items_result():
    assert batch_outcome([("a", ""), ("b", "")]).state == "done"
    some = batch_outcome([("a", ""), ("b", "bad\nsecond line")])
    assert some.state == "partial" and some.summary() == "1 of 2 failed" and some.reason() == "b: bad"
    assert batch_outcome([("a", "x")]).state == "failed" and batch_outcome([("a", "x")]).summary() == "failed"
    assert batch_outcome([("e.svs", "e.svs is empty")]).reason() == "e.svs is empty"   # named once
    assert batch_outcome([("a", "x"), ("b", "y")]).summary() == "all 2 failed"


# --- item 4 (queue side): a cancelled job is resumed in its row --------------------------------------------
def test_cancelled_job_offers_resume_and_runs_again_in_its_row(qtbot, queue, panel):
    started, gate, runs = threading.Event(), threading.Event(), []

    def fn(ctx):
        runs.append(1)
        started.set()
        while not gate.wait(0.02):
            if ctx.cancelled():
                raise Cancelled()
        return "ok"
    job = queue.submit(Job("Train mean + D&D (run)", fn, kind="train"))
    after = queue.submit(Job("Train abmil + D&D (run)", lambda ctx: "ok", kind="train"))
    assert started.wait(10)
    qtbot.waitUntil(lambda: job.state == JobState.RUNNING, timeout=JOB_MS)
    row = panel.row_for(job)
    click(row.cancel_button)
    qtbot.waitUntil(lambda: job.state == JobState.CANCELLED, timeout=JOB_MS)
    qtbot.waitUntil(lambda: after.state == JobState.DONE, timeout=JOB_MS)   # the queued one ran
    assert row.retry_button.isVisible() and row.retry_button.text() == "Resume"
    gate.set()
    click(row.retry_button)
    qtbot.waitUntil(lambda: job.state == JobState.DONE, timeout=JOB_MS)
    assert len(runs) == 2 and job.value == "ok"


# --- item 9: the list can be cleared ---------------------------------------------------------------------
def test_clear_finished_removes_finished_rows_and_keeps_running_ones(qtbot, queue, panel):
    assert not panel.header.isVisible() and panel.isEmpty()
    gate = threading.Event()
    done = queue.submit(Job("Done", lambda ctx: 1))
    qtbot.waitUntil(lambda: done.state == JobState.DONE, timeout=JOB_MS)
    running = queue.submit(Job("Running", lambda ctx: gate.wait(20)))
    qtbot.waitUntil(lambda: running.state == JobState.RUNNING, timeout=JOB_MS)
    assert panel.header.isVisible() and panel.clear_button.isEnabled()
    assert panel.summary.text() == "1 running or queued \u00b7 1 finished"
    emptied = []
    panel.emptied.connect(emptied.append)
    click(panel.clear_button)
    assert list(panel.rows) == [running.id] and emptied == []
    assert not panel.clear_button.isEnabled()
    gate.set()
    qtbot.waitUntil(lambda: running.state == JobState.DONE, timeout=JOB_MS)
    click(panel.clear_button)
    assert panel.isEmpty() and emptied == [True] and panel.placeholder.isVisible()


# --- screenshot -------------------------------------------------------------------------------------------
def test_jobs_panel_screenshot_of_failed_cancelled_partial_and_done_jobs(qtbot, queue, panel):
    app = QApplication.instance()
    palette, style = app.palette(), app.style().name()
    apply_theme(app, "dark")
    try:
        jobs = [queue.submit(Job("Classify CMU-1-Small-Region.svs \u2014 demo_abmil_stain_stats", lambda ctx: None)),
                queue.submit(Job("Classify 3 slides \u2014 demo_abmil_stain_stats", slides_job(
                    [("a.svs", ""), ("kidney-48-5.tif", "no magnification metadata: set the objective power "
                                                         "in the Slide panel"), ("c.svs", "")]))),
                queue.submit(Job("Classify empty.svs \u2014 demo_abmil_stain_stats",
                                 slides_job([("empty.svs", "empty.svs is an empty file (0 bytes)")]))),
                queue.submit(Job("Train mean + D&D (run)", lambda ctx: None, kind="train"))]
        jobs[-1].cancel()
        qtbot.waitUntil(lambda: all(j.state.finished for j in jobs), timeout=JOB_MS)
        QApplication.processEvents()
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / "jobs_panel_states.png"
        assert panel.grab().save(str(path))
    finally:
        app.setStyle(style)
        app.setPalette(palette)
    words = [panel.row_for(j).state_label.text() for j in jobs]
    assert words == ["Done", "Done with 1 of 3 failed", "Failed", "Cancelled"]
    assert [panel.row_for(j).retry_button.isVisible() for j in jobs] == [False, True, True, True]


# --- in the window ---------------------------------------------------------------------------------------
CLASSIFY_MS = 180_000


def make_window(qtbot, tmp_path, model=None):
    return open_window(qtbot, tmp_path / "settings.ini", tmp_path / "out", model)


def save_shot(widget, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    assert widget.grab().save(str(path))
    return path


def test_classifying_slides_that_all_fail_is_a_failed_job_and_some_failed_is_said(qtbot, tmp_path):
    """Issue 19 item 3: a fake .svs and a zero-byte file ended as a green "Done 100 %"."""
    from dnd_engine.synth import make_synthetic_cohort
    from dnd_gui.jobs.classify import DEMO_MODEL
    win = make_window(qtbot, tmp_path, DEMO_MODEL)
    try:
        fake, empty = tmp_path / "fake.svs", tmp_path / "empty.svs"
        fake.write_text("this is not a slide\n")
        empty.write_bytes(b"")
        with qtbot.waitSignal(win.job_finished, timeout=CLASSIFY_MS) as finished:
            win.classify([str(fake), str(empty)])
        job = finished.args[0]
        row = win.jobs_panel.row_for(job)
        assert job.state == JobState.FAILED and "fake.svs" in job.error and "1 more failed" in job.error
        assert "\n" not in job.error and row.state_label.text() == "Failed" and row.retry_button.isVisible()
        assert job.error in win.last_error
        real = make_synthetic_cohort(tmp_path / "cohort", n_slides=2, size=2048, seed=11).slides[0].path
        with qtbot.waitSignal(win.job_finished, timeout=CLASSIFY_MS) as finished:
            win.classify([str(real), str(fake)])
        mixed = finished.args[0]
        assert mixed.state == JobState.DONE and mixed.outcome.summary() == "1 of 2 failed", mixed.error
        assert win.jobs_panel.row_for(mixed).state_label.text() == "Done with 1 of 2 failed"
    finally:
        win.shutdown()


def test_an_empty_jobs_panel_takes_no_space(qtbot, tmp_path):
    """Issue 19 item 13: the Jobs dock is out of the way until there is a job, and again once cleared."""
    win = make_window(qtbot, tmp_path)
    try:
        assert not win.jobs_dock.isVisible() and not win.predictions_dock.isVisible()
        win.show_tab(win.workspace.widget(0))
        QApplication.processEvents()
        assert win.workspace.height() > 0.85 * win.height()   # before: a 190 px empty Jobs panel under the slide
        save_shot(win, "window_empty_jobs.png")
        job = win.jobs.submit(Job("Export heatmap.png", lambda ctx: None))
        assert win.jobs_dock.isVisible()
        qtbot.waitUntil(lambda: job.state == JobState.DONE, timeout=JOB_MS)
        click(win.jobs_panel.clear_button)
        assert not win.jobs_dock.isVisible()
    finally:
        win.shutdown()


@pytest.fixture
def bag_project(tmp_path):
    bags, labels = make_bags(n_per_class=(8, 8), dim=12, n_inst=(6, 14), seed=4)
    csv = write_bags(tmp_path / "bags", bags, labels)
    return tmp_path / "bags", csv


def test_cancelling_the_running_training_job_stops_only_that_job(qtbot, tmp_path, bag_project):
    """Issue 19 item 4: mean + ABMIL launched together; cancelling the running mean job cancelled the queued
    ABMIL job too, cleared the curves, named the wrong job in the status bar and left Resume grey."""
    feats, csv = bag_project
    win = make_window(qtbot, tmp_path)
    try:
        session = win.new_project(str(tmp_path / "proj"))
        session.project.set_features(feats)
        session.project.set_labels(csv)
        session.project.save()
        epochs = []
        session.epoch.connect(epochs.append)
        mean, abmil = win.launch_training(None, TrainingPlan(name="q", methods=["mean", "abmil"], epochs_base=20,
                                                             folds=2, n_clusters=2, epochs_expert=2,
                                                             epochs_student=2, seed=3))
        qtbot.waitUntil(lambda: mean.state == JobState.RUNNING and len(epochs) >= 1, timeout=TRAIN_MS)
        assert abmil.state == JobState.QUEUED and not win.resume_action.isEnabled()
        shown = {}
        mean.finished.connect(lambda j: shown.update(status=win.statusBar().currentMessage(),
                                                     folds=win.curves.folds()))
        click(win.jobs_panel.row_for(mean).cancel_button)
        qtbot.waitUntil(lambda: mean.state.finished, timeout=TRAIN_MS)
        assert mean.state == JobState.CANCELLED
        assert "mean" in shown["status"] and "cancelled" in shown["status"] and "abmil" not in shown["status"]
        assert shown["folds"], "the curves were cleared when the job was cancelled"
        assert win.resume_action.isEnabled()                                  # a cancelled job can be resumed
        assert win.jobs_panel.row_for(mean).retry_button.text() == "Resume"
        qtbot.waitUntil(lambda: abmil.state.finished, timeout=TRAIN_MS)
        assert abmil.state == JobState.DONE, abmil.message                    # the queued job ran
        assert win.curves.folds() and "abmil" in win.workspace.tabText(win.workspace.indexOf(win.curves_scroll))
        win.resume_jobs()                                                     # Project ▸ Resume
        assert mean.state == JobState.QUEUED and not win.resume_action.isEnabled()
        qtbot.waitUntil(lambda: mean.state.finished, timeout=TRAIN_MS)
        assert mean.state == JobState.DONE, mean.error
        assert [r.state for r in JobBook(Project.open(tmp_path / "proj")).records] == ["done", "done"]
    finally:
        win.shutdown()
