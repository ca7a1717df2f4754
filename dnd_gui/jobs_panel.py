"""The Jobs panel: one row per background job with its progress, its last message and a Cancel button.

Newest jobs on top; finished rows stay (with how long they took, or why they failed) until cleared.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QFrame, QHBoxLayout, QLabel, QProgressBar, QPushButton, QScrollArea, QVBoxLayout,
                               QWidget)

from .jobs import Job, JobQueue, JobState

_STATE_WORDS = {JobState.QUEUED: "Queued", JobState.RUNNING: "Running", JobState.DONE: "Done",
                JobState.FAILED: "Failed", JobState.CANCELLED: "Cancelled"}


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{int(seconds // 60)} min {int(seconds % 60)} s"


class JobRow(QFrame):
    def __init__(self, job: Job, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.job = job
        self.setObjectName("jobRow")
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.title = QLabel(job.title)
        self.title.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        font = self.title.font()
        font.setBold(True)
        self.title.setFont(font)
        self.state_label = QLabel()
        self.bar = QProgressBar()
        self.bar.setRange(0, 1000)
        self.bar.setTextVisible(True)
        self.bar.setFixedHeight(16)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop this job; nothing half-written is left behind")
        self.cancel_button.clicked.connect(job.cancel)

        top = QHBoxLayout()
        top.addWidget(self.title, 1)
        top.addWidget(self.state_label)
        top.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(8, 6, 8, 6)
        layout.setSpacing(3)
        layout.addLayout(top)
        layout.addWidget(self.bar)
        layout.addWidget(self.message)
        job.changed.connect(self.refresh)
        self.refresh()

    def refresh(self) -> None:
        job = self.job
        self.state_label.setText(_STATE_WORDS[job.state])
        self.state_label.setProperty("jobState", job.state.value)
        self.state_label.style().unpolish(self.state_label)
        self.state_label.style().polish(self.state_label)
        self.bar.setValue(round(job.fraction * 1000))
        self.bar.setFormat(f"{job.fraction * 100:.0f} %")
        self.cancel_button.setEnabled(not job.state.finished and not job.cancel_requested)
        self.cancel_button.setVisible(not job.state.finished)
        text = job.error if job.state == JobState.FAILED else job.message
        if job.state.finished and job.started_at is not None and job.ended_at is not None:
            text = f"{text} \u2014 {_duration(job.ended_at - job.started_at)}" if text else \
                _duration(job.ended_at - job.started_at)
        self.message.setText(text)
        self.message.setToolTip(text)


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
        queue.job_added.connect(self.add_job)

    def add_job(self, job: Job) -> JobRow:
        self.placeholder.hide()
        row = JobRow(job)
        self._layout.insertWidget(0, row)
        self.rows[job.id] = row
        return row

    def row_for(self, job: Job) -> JobRow:
        return self.rows[job.id]

    def clear_finished(self) -> None:
        for job_id, row in list(self.rows.items()):
            if row.job.state.finished:
                self._layout.removeWidget(row)
                row.deleteLater()
                del self.rows[job_id]
        self.placeholder.setVisible(not self.rows)
