"""Honest job states (issue 19, items 3, 4, 9 and 13): a job whose slides all failed is failed, with its one-line
reason and a Retry; some failed is "Done with 1 of 3 failed"; Cancel stops exactly the job asked and a cancelled
job can be resumed; the Jobs list can be cleared; an empty Jobs panel takes no space."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QSettings, Qt
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from dnd_engine.errors import Cancelled
from dnd_engine.progress import batch_outcome
from dnd_engine.project import JobBook, Project, TrainingPlan
from dnd_gui.jobs import Job, JobQueue, JobState
from dnd_gui.jobs_panel import PARTIAL_COLOUR, JobsPanel
from dnd_gui.theme import apply_theme

from bagtools import make_bags, write_bags

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
JOB_MS = 20_000
TRAIN_MS = 180_000


@pytest.fixture
def queue():
    q = JobQueue()
    yield q
    assert q.shutdown(10_000)


@pytest.fixture
def panel(qtbot, queue):
    p = JobsPanel(queue)
    qtbot.addWidget(p)
    p.resize(760, 520)
    p.show()
    qtbot.waitExposed(p)
    return p


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
    assert "100 %" not in row.bar.format()
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
