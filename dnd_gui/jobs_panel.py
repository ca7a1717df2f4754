"""The Jobs panel: one row per background job with its progress, time left, last message, log and Cancel.

Newest jobs on top; finished rows stay (with how long they took, or why they failed) until cleared.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QPlainTextEdit, QProgressBar, QPushButton, QScrollArea,
                               QToolButton, QVBoxLayout, QWidget)

from .jobs import LOG_LINES_MAX, Job, JobQueue, JobState

_STATE_WORDS = {JobState.QUEUED: "Queued", JobState.RUNNING: "Running", JobState.DONE: "Done",
                JobState.FAILED: "Failed", JobState.CANCELLED: "Cancelled"}
# readable on both themes' backgrounds; queued/cancelled stay in the palette's own (muted) text colour
_STATE_COLOURS = {JobState.RUNNING: "#3d8fe0", JobState.DONE: "#3fa34d", JobState.FAILED: "#e0524c"}
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
        self.cancel_button.clicked.connect(job.cancel)

        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.eta_label)
        top.addWidget(self.state_label)
        top.addWidget(self.log_button)
        top.addWidget(self.cancel_button)
        self._layout = QVBoxLayout(self)
        self._layout.setContentsMargins(8, 6, 8, 6)
        self._layout.setSpacing(3)
        self._layout.addLayout(top)
        self._layout.addWidget(self.bar)
        self._layout.addWidget(self.message)
        job.changed.connect(self.refresh)
        job.logged.connect(self._append_log)
        self.refresh()

    def refresh(self) -> None:
        job = self.job
        if job.state != self._shown_state:   # restyling is the costly part; progress only moves the bar
            self._shown_state = job.state
            self.state_label.setText(_STATE_WORDS[job.state])
            self.state_label.setProperty("jobState", job.state.value)
            colour = _STATE_COLOURS.get(job.state)
            self.state_label.setStyleSheet(f"color: {colour}; font-weight: 600;" if colour else "")
            self.cancel_button.setVisible(not job.state.finished)
        self.bar.setValue(round(job.fraction * 1000))
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
    def __init__(self, queue: JobQueue, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.queue = queue
        self.setWidgetResizable(True)
        self.setFrameShape(QFrame.Shape.NoFrame)
        inner = QWidget()
        self._layout = QVBoxLayout(inner)
        self._layout.setContentsMargins(6, 6, 6, 6)
        self._layout.setSpacing(6)
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

    def add_job(self, job: Job) -> JobRow:
        self.placeholder.hide()
        row = JobRow(job)
        self._layout.insertWidget(0, row)
        self.rows[job.id] = row
        self._eta_timer.start()
        return row

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
                row.deleteLater()
                del self.rows[job_id]
        self.placeholder.setVisible(not self.rows)
