"""The job queue and its panel: time left from the progress rate, a live log per job, cancelling a queued job
before it runs, failures with their whole reason, and the caller's kind/meta labels."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading
import time
from pathlib import Path

import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from dnd_engine.errors import DnDError
from dnd_gui.jobs import queue as jobs_module
from dnd_gui.jobs.queue import LOG_LINES_MAX, Job, JobState
from dnd_gui.panels.jobs_panel import format_eta
from dnd_gui.theme import apply_theme

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
JOB_MS = 20_000


def blocked(gate: threading.Event, started: threading.Event = None, steps: int = 0, log=()):
    """A job function that reports ``steps`` progress steps and log lines, then waits for ``gate``."""
    def fn(ctx):
        if started is not None:
            started.set()
        for line in log:
            ctx.log(line)
        for i in range(steps):
            ctx.progress(i + 1, 100, f"step {i + 1}")
            time.sleep(0.03)
        while not gate.wait(0.02):
            if ctx.cancelled():
                from dnd_engine.errors import Cancelled
                raise Cancelled()
        return "ok"
    return fn


# --- ETA ----------------------------------------------------------------------------------------------------
def test_job_eta_words_are_coarse():
    assert format_eta(2) == "a few seconds left"
    assert format_eta(23) == "25 s left"
    assert format_eta(190) == "3 min 10 s left"
    assert format_eta(187) == "3 min 10 s left"
    assert format_eta(120) == "2 min left"
    assert format_eta(59) == "1 min left"
    assert format_eta(3 * 3600 + 20 * 60) == "3 h 20 min left"


def test_job_eta_from_a_smoothed_progress_rate(monkeypatch):
    """Driven with a fake clock: no estimate before the thresholds, then (1 - fraction) / rate, counting down
    between reports, and one slow step moves it only part of the way."""
    clock = [1000.0]
    monkeypatch.setattr(jobs_module.time, "monotonic", lambda: clock[0])
    job = Job("Train", lambda ctx: None)
    job._on_progress(-1, -1, "")                       # the worker started it
    assert job.state == JobState.RUNNING and job.eta_seconds() is None
    for t in range(0, 3):                              # 2 % a second
        clock[0] = 1000.0 + t
        job._on_progress(2 * t, 100, "epoch")
    assert job.eta_seconds() is None                   # only 2 s in: too early to promise anything
    for t in range(3, 11):
        clock[0] = 1000.0 + t
        job._on_progress(2 * t, 100, "epoch")
    assert job.eta_seconds() == pytest.approx(40.0, rel=0.02)   # 80 % left at 2 %/s
    assert job.eta_seconds(now=clock[0] + 5) == pytest.approx(35.0, rel=0.02)  # counts down between reports
    clock[0] += 10                                     # one slow step: 2 % in 10 s
    job._on_progress(22, 100, "epoch")
    eta = job.eta_seconds()
    # the mean rate now says 71 s; the shown figure counts down (30 s) and moves only part of the way up
    assert 30.0 < eta < 60.0
    job._on_end(JobState.DONE.value, "", None)
    assert job.eta_seconds() is None


def test_job_eta_text_appears_in_the_running_row(qtbot, queue, panel):
    gate = threading.Event()
    job = Job("Train D&D \u2014 5 folds", blocked(gate, steps=60))
    job.eta_after_s = 0.5
    queue.submit(job)
    row = panel.row_for(job)
    qtbot.waitUntil(lambda: job.state == JobState.RUNNING, timeout=JOB_MS)
    assert row.eta_label.text() == ""                  # nothing until enough has happened
    qtbot.waitUntil(lambda: row.eta_label.text().endswith("left"), timeout=JOB_MS)
    eta = job.eta_seconds()
    assert eta is not None and eta < 60               # 60 steps of 30 ms for 60 %: a few seconds left
    gate.set()
    qtbot.waitUntil(lambda: job.state == JobState.DONE, timeout=JOB_MS)
    assert row.eta_label.text() == "" and "done" in row.message.text()


# --- log ----------------------------------------------------------------------------------------------------
def test_job_log_view_shows_the_lines_live(qtbot, queue, panel):
    gate, started = threading.Event(), threading.Event()
    lines = ["fold 0: stage 1/4: base model", "fold 0: stage 2/4: clustering 14 training slides into 3 groups"]
    job = Job("Train", blocked(gate, started, log=lines))
    queue.submit(job)
    row = panel.row_for(job)
    qtbot.waitUntil(lambda: len(job.log_lines) == 2, timeout=JOB_MS)
    assert row.log_view is None and row.log_button.isEnabled()   # made on first opening
    QTest.mouseClick(row.log_button, Qt.MouseButton.LeftButton)
    assert row.log_button.isChecked() and row.log_view is not None and row.log_view.isVisible()
    assert row.log_view.isReadOnly()
    assert row.log_view.toPlainText().splitlines() == lines
    job._log_signal.emit("fold 0: stage 3/4: expert 1/3 on 5 slides")   # as the worker would
    qtbot.waitUntil(lambda: "expert 1/3" in row.log_view.toPlainText(), timeout=JOB_MS)
    QTest.mouseClick(row.log_button, Qt.MouseButton.LeftButton)
    assert not row.log_view.isVisible()
    gate.set()
    qtbot.waitUntil(lambda: job.state == JobState.DONE, timeout=JOB_MS)


def test_job_log_is_capped(qtbot):
    job = Job("Chatty", lambda ctx: None)
    for i in range(3 * LOG_LINES_MAX):
        job._on_log(f"line {i}")
    assert LOG_LINES_MAX <= len(job.log_lines) <= 1.1 * LOG_LINES_MAX + 1
    assert job.log_lines[-1] == f"line {3 * LOG_LINES_MAX - 1}"
    from dnd_gui.panels.jobs_panel import JobRow
    row = JobRow(job)
    qtbot.addWidget(row)
    row.show_log(True)
    assert row.log_view.maximumBlockCount() == LOG_LINES_MAX
    assert row.log_view.document().blockCount() <= LOG_LINES_MAX


# --- cancel a queued job ------------------------------------------------------------------------------------
def test_job_queued_and_cancelled_ends_without_running(qtbot, queue, panel):
    gate, started = threading.Event(), threading.Event()
    first = queue.submit(Job("Running", blocked(gate, started)))
    ran = threading.Event()
    second = queue.submit(Job("Queued", lambda ctx: ran.set()))
    assert started.wait(10)
    qtbot.waitUntil(lambda: first.state == JobState.RUNNING, timeout=JOB_MS)
    assert second.state == JobState.QUEUED and queue.running() is first
    row = panel.row_for(second)
    assert row.state_label.text() == "Queued" and row.cancel_button.isEnabled()
    assert not row.log_button.isEnabled()                # nothing logged: nothing to open
    ended = []
    second.finished.connect(ended.append)
    QTest.mouseClick(row.cancel_button, Qt.MouseButton.LeftButton)
    # ends at once, while the job ahead of it still runs
    assert second.state == JobState.CANCELLED and ended == [second]
    assert row.state_label.text() == "Cancelled" and not row.cancel_button.isVisible()
    assert "before it started" in row.message.text()
    assert first.state == JobState.RUNNING
    gate.set()
    qtbot.waitUntil(lambda: first.state == JobState.DONE, timeout=JOB_MS)
    third = queue.submit(Job("After", lambda ctx: 3))   # the queue goes on
    qtbot.waitUntil(lambda: third.state == JobState.DONE, timeout=JOB_MS)
    assert third.value == 3
    assert queue._pool.waitForDone(5000)
    assert not ran.is_set()                             # the cancelled function never ran
    assert ended == [second] and second.state == JobState.CANCELLED  # and ended once
    assert queue.running() is None


# --- failures -----------------------------------------------------------------------------------------------
def test_job_failure_shows_the_whole_reason(qtbot, queue, panel):
    def engine_error(ctx):
        raise DnDError("cannot split 10 slides into 3 clusters of 4\u20135 slides\n"
                       "lower the number of clusters or widen the size bounds")
    job = queue.submit(Job("Train", engine_error))
    qtbot.waitUntil(lambda: job.state == JobState.FAILED, timeout=JOB_MS)
    row = panel.row_for(job)
    assert job.error == "cannot split 10 slides into 3 clusters of 4\u20135 slides"
    assert "widen the size bounds" in job.error_detail
    assert row.state_label.text() == "Failed"
    assert job.error in row.message.text()
    assert "widen the size bounds" in row.message.toolTip()       # the second line is not lost
    assert any("widen the size bounds" in line for line in job.log_lines)

    def bug(ctx):
        raise ValueError("shapes (3,) and (4,) not aligned")
    job2 = queue.submit(Job("Export", bug))
    qtbot.waitUntil(lambda: job2.state == JobState.FAILED, timeout=JOB_MS)
    row2 = panel.row_for(job2)
    assert job2.error == "unexpected error (ValueError: shapes (3,) and (4,) not aligned)"
    assert job2.error in row2.message.text()
    assert "Log" in row2.message.toolTip()
    row2.show_log(True)
    assert "Traceback" in row2.log_view.toPlainText() and "ValueError" in row2.log_view.toPlainText()


# --- labels -------------------------------------------------------------------------------------------------
def test_job_kind_and_meta_are_kept(qtbot, queue):
    meta = {"project_job": 12, "run_dir": "/tmp/run"}
    job = Job("Train D&D", lambda ctx: "ok", kind="train", meta=meta)
    meta["project_job"] = 99                            # the job keeps its own copy
    plain = Job("Export", lambda ctx: None)
    assert (plain.kind, plain.meta) == ("", {})
    done = []
    queue.job_finished.connect(done.append)
    queue.submit(job)
    qtbot.waitUntil(lambda: done == [job], timeout=JOB_MS)
    assert job.kind == "train" and job.meta == {"project_job": 12, "run_dir": "/tmp/run"}
    assert done[0].meta["project_job"] == 12


def test_job_progress_reports_are_thinned_but_the_last_arrives(qtbot, queue):
    """The trainer reports every bag; the GUI sees ~20 updates a second, and the newest one before a quiet
    stretch (validation, a checkpoint) is the one left on screen."""
    gate = threading.Event()

    def chatty(ctx):
        for i in range(1, 5001):
            ctx.progress(i, 10_000, "epoch 1/2")
        gate.wait(20)
    job = Job("Chatty", chatty)
    changes = []
    job.changed.connect(lambda: changes.append(job.done))
    queue.submit(job)
    qtbot.waitUntil(lambda: job.done == 5000, timeout=JOB_MS)
    assert job.state == JobState.RUNNING and job.fraction == 0.5
    assert len(changes) < 200
    gate.set()
    qtbot.waitUntil(lambda: job.state == JobState.DONE, timeout=JOB_MS)


# --- the picture --------------------------------------------------------------------------------------------
def test_jobs_panel_screenshot_in_every_state(qtbot, queue, panel):
    app = QApplication.instance()
    palette, style = app.palette(), app.style().name()
    apply_theme(app, "dark")
    gate, started = threading.Event(), threading.Event()
    try:
        done = queue.submit(Job("Classify 3 slides \u2014 demo_abmil_stain_stats", lambda ctx: None))
        qtbot.waitUntil(lambda: done.state == JobState.DONE, timeout=JOB_MS)

        def fails(ctx):
            ctx.log("fold 0: stage 1/4: base model")
            raise DnDError("cannot split 10 slides into 3 clusters of 4\u20135 slides\n"
                           "lower the number of clusters or widen the size bounds")
        failed = queue.submit(Job("Train D&D \u2014 lung_cohort", fails))
        qtbot.waitUntil(lambda: failed.state == JobState.FAILED, timeout=JOB_MS)
        running = Job("Train D&D \u2014 breast_cohort, 5 folds", blocked(gate, started, steps=60, log=[
            "fold 0: stage 1/4: base model", "fold 0: stage 2/4: clustering 72 training slides into 3 groups",
            "fold 0: stage 3/4: expert 1/3 on 24 slides"]), kind="train")
        running.eta_after_s = 0.5
        queue.submit(running)
        queued = queue.submit(Job("Export heatmap.png", lambda ctx: None))
        cancelled = queue.submit(Job("Classify slide_07.svs \u2014 demo_abmil_stain_stats", lambda ctx: None))
        cancelled.cancel()
        qtbot.waitUntil(lambda: panel.row_for(running).eta_label.text().endswith("left"), timeout=JOB_MS)
        panel.row_for(running).show_log(True)
        QApplication.processEvents()
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / "jobs_panel.png"
        assert panel.grab().save(str(path))
        assert queued.state == JobState.QUEUED and cancelled.state == JobState.CANCELLED
    finally:
        gate.set()
        app.setStyle(style)
        app.setPalette(palette)
    image = QImage(str(path))
    assert image.width() >= 700 and image.height() >= 500
