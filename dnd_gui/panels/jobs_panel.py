"""The Jobs panel: one row per background job with its progress, time left, last message, log and Cancel.

Newest jobs on top; finished rows stay (with how long they took, or why they failed) until Clear finished.
A row says what really happened: failed in red with its one-line reason, done with failed items in amber
("Done with 1 of 3 failed"), and offers Retry (failed) or Resume (cancelled) to queue the same job again.
An empty panel asks for no room (``isEmpty``/``emptied``), so the window can give its space to the slide.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

from PySide6.QtCore import QObject, Qt, QTimer, Signal
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (QDockWidget, QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton,
                               QScrollArea, QToolButton, QVBoxLayout, QWidget)

from ..jobs.queue import LOG_LINES_MAX, Job, JobQueue, JobState

_STATE_WORDS = {JobState.QUEUED: "Queued", JobState.RUNNING: "Running", JobState.DONE: "Done",
                JobState.FAILED: "Failed", JobState.CANCELLED: "Cancelled"}
# readable on both themes' backgrounds; queued/cancelled stay in the palette's own (muted) text colour
_STATE_COLOURS = {JobState.RUNNING: "#3d8fe0", JobState.DONE: "#3fa34d", JobState.FAILED: "#e0524c"}
PARTIAL_COLOUR = "#d39a1c"   # done, but some items failed: a warning, neither success nor failure
TOOLTIP_CHARS = 2000


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


def format_eta(seconds: float) -> str:
    """Coarse on purpose: a figure that changes every second by a second reads as noise."""
    if seconds < 5:
        return "a few seconds left"
    if seconds < 57.5:
        return f"{int(round(seconds / 5) * 5)} s left"
    if seconds < 3570:
        m, s = divmod(int(round(seconds / 10) * 10), 60)
        return f"{m} min {s} s left" if s else f"{m} min left"
    h, m = divmod(int(round(seconds / 60)), 60)
    return f"{h} h {m} min left" if m else f"{h} h left"


class JobRow(QFrame):
    def __init__(self, job: Job, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.job = job
        self._shown_state: Optional[JobState] = None
        self.setObjectName("jobRow")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.title = QLabel(job.title)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = self.title.font()
        font.setBold(True)
        self.title.setFont(font)
        self.eta_label = QLabel()
        self.eta_label.setEnabled(False)   # the muted colour: secondary to the state
        self.state_label = QLabel()
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(True)
        self.bar.setFixedHeight(16)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.log_button = QToolButton()
        self.log_button.setText("Log")
        self.log_button.setCheckable(True)
        self.log_button.setToolTip("Show what the job wrote while it ran")
        self.log_button.toggled.connect(self.show_log)
        self.log_button.setEnabled(bool(job.log_lines))   # enabled by the first line
        self.log_view: Optional[QPlainTextEdit] = None   # made on first use: most rows are never opened
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop this job; nothing half-written is left behind")
        self.cancel_button.clicked.connect(lambda: job.cancel())   # not clicked(bool) as the reason
        self.retry_button = QPushButton("Retry")
        self.retry_button.clicked.connect(self.retry)
        self.retry_button.setVisible(False)
        self.retry_requested = None   # set by the panel: the queue's retry

        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.eta_label)
        top.addWidget(self.state_label)
        top.addWidget(self.log_button)
        top.addWidget(self.cancel_button)
        top.addWidget(self.retry_button)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(8, 6, 8, 6)
        self._layout.setSpacing(3)
        self._layout.addLayout(top)
        self._layout.addWidget(self.bar)
        self._layout.addWidget(self.message)
        job.changed.connect(self.refresh)
        job.logged.connect(self._append_log)
        self.refresh()

    def state_words(self) -> str:
        job = self.job
        if job.state == JobState.DONE and job.outcome is not None and job.outcome.failures:
            return f"Done with {job.outcome.summary()}"
        return _STATE_WORDS[job.state]

    def refresh(self) -> None:
        job = self.job
        shown = (job.state, self.state_words())
        if shown != self._shown_state:   # restyling is the costly part; progress only moves the bar
            self._shown_state = shown
            self.state_label.setText(shown[1])
            partial = job.state == JobState.DONE and shown[1] != _STATE_WORDS[JobState.DONE]
            self.state_label.setProperty("jobState", "partial" if partial else job.state.value)
            colour = PARTIAL_COLOUR if partial else _STATE_COLOURS.get(job.state)
            self.state_label.setStyleSheet(f"color: {colour}; font-weight: 600;" if colour else "")
            self.cancel_button.setVisible(not job.state.finished)
            self._refresh_retry()
        self.bar.setValue(round(job.fraction * 1000))
        if job.state == JobState.FAILED:   # a full bar must never read as success
            self.bar.setFormat("failed")
        elif job.state == JobState.DONE and job.outcome is not None and job.outcome.failures:
            self.bar.setFormat(f"done, {job.outcome.summary()}")
        else:
            self.bar.setFormat(f"{job.fraction * 100:.0f} %")
        self.cancel_button.setEnabled(not job.state.finished and not job.cancel_requested)
        text = job.error if job.state == JobState.FAILED else job.message
        if job.state.finished and job.started_at is not None and job.ended_at is not None:
            text = f"{text} \u2014 {_duration(job.ended_at - job.started_at)}" if text else \
                _duration(job.ended_at - job.started_at)
        if text != self.message.text():
            self.message.setText(text)
            tip = job.error_detail if job.state == JobState.FAILED and job.error_detail else text
            if job.state == JobState.FAILED and job.log_lines:
                tip += "\n\nThe job's log (Log button) has the details."
            self.message.setToolTip(tip[:TOOLTIP_CHARS])
        self.refresh_eta()

    def _refresh_retry(self) -> None:
        job = self.job
        can = job.can_retry
        self.retry_button.setVisible(can)
        if not can:
            return
        if job.state == JobState.CANCELLED:
            resumes = job.kind in ("train", "extract")   # the engine continues from its checkpoints
            self.retry_button.setText("Resume" if resumes else "Run again")
            self.retry_button.setToolTip("Continue this job from where it stopped" if resumes else
                                         "Run this job again from the start")
        else:
            self.retry_button.setText("Retry")
            self.retry_button.setToolTip("Run this job again with the same settings")

    def retry(self) -> None:
        if self.retry_requested is not None and self.job.can_retry:
            self.retry_requested(self.job)

    def refresh_eta(self) -> None:
        eta = self.job.eta_seconds()
        text = format_eta(eta) if eta is not None else ""
        if text != self.eta_label.text():
            self.eta_label.setText(text)

    def show_log(self, on: bool) -> None:
        if self.log_button.isChecked() != on:
            self.log_button.setChecked(on)   # re-enters through toggled
            return
        if on and self.log_view is None:
            self.log_view = QPlainTextEdit()
            self.log_view.setReadOnly(True)
            self.log_view.setMaximumBlockCount(LOG_LINES_MAX)
            self.log_view.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
            self.log_view.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
            self.log_view.setPlaceholderText("Nothing logged yet.")
            self.log_view.setMinimumHeight(90)
            self.log_view.setMaximumHeight(160)
            self._layout.addWidget(self.log_view)
        if self.log_view is None:
            return
        if on:   # refilled on every opening: lines that came while it was closed were not appended
            self.log_view.setPlainText("\n".join(self.job.log_lines))
            self.log_view.verticalScrollBar().setValue(self.log_view.verticalScrollBar().maximum())
        self.log_view.setVisible(on)

    def _append_log(self, line: str) -> None:
        self.log_button.setEnabled(True)
        if self.log_view is not None and self.log_button.isChecked():
            bar = self.log_view.verticalScrollBar()
            at_end = bar.value() >= bar.maximum() - 2   # follow the tail unless the user scrolled up to read
            self.log_view.appendPlainText(line)
            if at_end:
                bar.setValue(bar.maximum())


class JobsPanel(QScrollArea):
    emptied = Signal(bool)   # True when the last row went (nothing to show), False when a first one came

    def __init__(self, queue: JobQueue, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.queue = queue
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        inner = QWidget()
        self._layout = QVBoxLayout(inner)
        self._layout.setContentsMargins(6, 6, 6, 6)
        self._layout.setSpacing(6)
        self.header = QWidget()
        head = QHBoxLayout(self.header)
        head.setContentsMargins(0, 0, 0, 0)
        self.summary = QLabel()
        self.summary.setEnabled(False)
        self.clear_button = QPushButton("Clear finished")
        self.clear_button.setToolTip("Remove the rows of finished jobs (their results and files stay)")
        self.clear_button.clicked.connect(self.clear_finished)
        head.addWidget(self.summary, 1)
        head.addWidget(self.clear_button)
        self._layout.addWidget(self.header)
        self.placeholder = QLabel("No jobs yet. Drop slides on the window (or File \u25b8 Classify Slides\u2026) "
                                  "to classify them.")
        self.placeholder.setWordWrap(True)
        self.placeholder.setEnabled(False)
        self._layout.addWidget(self.placeholder)
        self._layout.addStretch(1)
        self.setWidget(inner)
        self.rows: dict[int, JobRow] = {}
        # the time left counts down between progress reports, which may be minutes apart (one big slide)
        self._eta_timer = QTimer(self)
        self._eta_timer.setInterval(1000)
        self._eta_timer.timeout.connect(self._tick)
        queue.job_added.connect(self.add_job)
        queue.job_requeued.connect(self._on_requeued)
        queue.job_finished.connect(lambda _job: self._refresh_header())
        self._refresh_header()

    def isEmpty(self) -> bool:
        """No rows: the panel has nothing to show and asks for no room."""
        return not self.rows

    def add_job(self, job: Job) -> JobRow:
        was_empty = self.isEmpty()
        self.placeholder.hide()
        row = JobRow(job)
        row.retry_requested = self.queue.retry
        self._layout.insertWidget(1, row)   # under the header: newest on top
        self.rows[job.id] = row
        job.changed.connect(self._refresh_header)
        self._eta_timer.start()
        self._refresh_header()
        if was_empty:
            self.emptied.emit(False)
        return row

    def _on_requeued(self, job: Job) -> None:
        if job.id not in self.rows:   # cleared while finished, now running again: it gets a row back
            self.add_job(job)
            return
        row = self.rows[job.id]
        self._layout.removeWidget(row)
        self._layout.insertWidget(1, row)   # back on top, where the running work is
        self._eta_timer.start()
        self._refresh_header()

    def _refresh_header(self) -> None:
        jobs = [r.job for r in self.rows.values()]
        finished = sum(j.state.finished for j in jobs)
        active = len(jobs) - finished
        self.header.setVisible(bool(jobs))
        self.clear_button.setEnabled(finished > 0)
        parts = [f"{active} running or queued"] if active else []
        if finished:
            parts.append(f"{finished} finished")
        text = " \u00b7 ".join(parts)
        if text != self.summary.text():
            self.summary.setText(text)

    def row_for(self, job: Job) -> JobRow:
        return self.rows[job.id]

    def _tick(self) -> None:
        busy = False
        for row in self.rows.values():
            if row.job.state == JobState.RUNNING:
                row.refresh_eta()
            busy = busy or not row.job.state.finished
        if not busy:
            self._eta_timer.stop()

    def clear_finished(self) -> None:
        for job_id, row in list(self.rows.items()):
            if row.job.state.finished:
                self._layout.removeWidget(row)
                row.job.changed.disconnect(self._refresh_header)
                row.deleteLater()
                del self.rows[job_id]
        self.placeholder.setVisible(not self.rows)
        self._refresh_header()
        if not self.rows:
            self.emptied.emit(True)


class BottomDocks(QObject):
    """Keeps the Jobs dock, and the docks tabbed with it (Predictions), out of the window while they have nothing
    to show, so an empty Jobs panel takes no space from the slide. The first job brings them back with the Jobs tab
    in front; a tabbed dock whose content appears (``appeared``) comes back by itself; clearing the last job row
    hides the Jobs dock again (the others stay while they hold something)."""

    def __init__(self, panel: JobsPanel, jobs_dock: QDockWidget,
                 others: Sequence[Tuple[QDockWidget, Callable[[], bool], object]] = (),
                 parent: Optional[QObject] = None):
        super().__init__(parent or panel)
        self.panel, self.jobs_dock, self.others = panel, jobs_dock, list(others)
        panel.emptied.connect(self._on_emptied)
        for dock, _has_content, appeared in self.others:
            appeared.connect(lambda *_a, d=dock: d.show())
        if panel.isEmpty():
            self._on_emptied(True)

    def _on_emptied(self, empty: bool) -> None:
        if not empty:
            for dock, _has_content, _appeared in self.others:
                dock.show()
            self.jobs_dock.show()
            self.jobs_dock.raise_()
            return
        self.jobs_dock.hide()
        for dock, has_content, _appeared in self.others:
            if not has_content():
                dock.hide()
