"""Background jobs: an engine call on a worker thread, with progress, partial results and cancel.

A job's function receives a :class:`JobContext` that speaks the engine's protocol (``progress(done, total,
message)``, ``cancelled()``, ``log(message)``) plus ``emit(result)`` for results that should reach the GUI
before the job ends (one slide's prediction while the next is classified). Engine errors become one-line
messages (state ``failed``), the engine's :class:`~dnd_engine.errors.Cancelled` becomes ``cancelled``, and any
other exception is caught too, so a job can never take the window down. Jobs run one at a time: they are CPU
and memory heavy, and two at once would only slow both.
"""

from __future__ import annotations

import enum
import itertools
import threading
import time
import traceback
from typing import Any, Callable, Optional

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot

from dnd_engine.errors import Cancelled, DnDError

from .background import lower_this_thread


class JobState(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.DONE, JobState.FAILED, JobState.CANCELLED)


class JobContext:
    """What a job function may call from its worker thread."""

    def __init__(self, job: "Job"):
        self._job = job

    def progress(self, done: int, total: int, message: str = "") -> None:
        self._job._progress_signal.emit(int(done), int(total), str(message))

    def cancelled(self) -> bool:
        return self._job._cancel.is_set()

    def log(self, message: str) -> None:
        self._job._log_signal.emit(str(message))

    def emit(self, result: Any) -> None:
        self._job._result_signal.emit(result)


JobFn = Callable[[JobContext], Any]
_ids = itertools.count(1)


class Job(QObject):
    """One unit of background work. Signals fire on the GUI thread."""

    changed = Signal()               # state, progress or message
    result = Signal(object)          # a partial result the function emitted
    finished = Signal(object)        # the job itself, once, when it ends in any state
    logged = Signal(str)

    _progress_signal = Signal(int, int, str)
    _result_signal = Signal(object)
    _log_signal = Signal(str)
    _end_signal = Signal(str, str, object)  # state, message, return value

    def __init__(self, title: str, fn: JobFn, parent: Optional[QObject] = None):
        super().__init__(parent)
        self.id = next(_ids)
        self.title = title
        self.fn = fn
        self.state = JobState.QUEUED
        self.done = 0
        self.total = 0
        self.message = "waiting"
        self.error = ""
        self.value: Any = None
        self.log_lines: list[str] = []
        self.started_at: Optional[float] = None
        self.ended_at: Optional[float] = None
        self._cancel = threading.Event()
        self._progress_signal.connect(self._on_progress, Qt.ConnectionType.QueuedConnection)
        self._result_signal.connect(self.result, Qt.ConnectionType.QueuedConnection)
        self._log_signal.connect(self._on_log, Qt.ConnectionType.QueuedConnection)
        self._end_signal.connect(self._on_end, Qt.ConnectionType.QueuedConnection)

    @property
    def fraction(self) -> float:
        if self.state == JobState.DONE:
            return 1.0
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0

    def cancel(self) -> None:
        """Ask the job to stop at its next check; a queued job ends before it starts."""
        if self.state.finished:
            return
        self._cancel.set()
        if self.state == JobState.RUNNING:
            self.message = "cancelling\u2026"
            self.changed.emit()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    # --- worker side -------------------------------------------------------------------------------------
    def _run(self) -> None:
        if self._cancel.is_set():
            self._end_signal.emit(JobState.CANCELLED.value, "cancelled before it started", None)
            return
        self._progress_signal.emit(-1, -1, "")  # marks the start (RUNNING) on the GUI thread
        try:
            value = self.fn(JobContext(self))
        except Cancelled:
            self._end_signal.emit(JobState.CANCELLED.value, "cancelled by the user", None)
        except DnDError as exc:
            self._end_signal.emit(JobState.FAILED.value, str(exc).strip().splitlines()[0] if str(exc) else
                                  type(exc).__name__, None)
        except Exception as exc:  # never let a worker exception vanish or crash the app
            detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            self._log_signal.emit(traceback.format_exc())
            self._end_signal.emit(JobState.FAILED.value,
                                  f"unexpected error ({type(exc).__name__}{': ' + detail if detail else ''})", None)
        else:
            if self._cancel.is_set():
                self._end_signal.emit(JobState.CANCELLED.value, "cancelled by the user", value)
            else:
                self._end_signal.emit(JobState.DONE.value, "", value)

    # --- GUI side ----------------------------------------------------------------------------------------
    @Slot(int, int, str)
    def _on_progress(self, done: int, total: int, message: str) -> None:
        if self.state.finished:
            return
        if done < 0:
            self.state = JobState.RUNNING
            self.started_at = time.monotonic()
            self.message = "starting\u2026"
        else:
            self.done, self.total = done, total
            if message and not self._cancel.is_set():
                self.message = message
        self.changed.emit()

    @Slot(str)
    def _on_log(self, message: str) -> None:
        self.log_lines.append(message)
        self.logged.emit(message)

    @Slot(str, str, object)
    def _on_end(self, state: str, message: str, value: Any) -> None:
        self.state = JobState(state)
        self.ended_at = time.monotonic()
        self.value = value
        if self.state == JobState.FAILED:
            self.error = message
        self.message = {JobState.DONE: "done", JobState.CANCELLED: "cancelled"}.get(self.state, message)
        if self.state == JobState.CANCELLED and message and message != "cancelled by the user":
            self.message = message
        self.changed.emit()
        self.finished.emit(self)


class _JobTask(QRunnable):
    def __init__(self, job: Job):
        super().__init__()
        self._job = job

    def run(self) -> None:
        lower_this_thread()  # the job (and the processes it forks) must not slow the window down
        self._job._run()


class JobQueue(QObject):
    """Runs jobs one after another on a private thread; lives on the GUI thread."""

    job_added = Signal(object)
    job_finished = Signal(object)

    def __init__(self, parent: Optional[QObject] = None):
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._pool.setExpiryTimeout(-1)  # keep the thread: imports and thread-local state survive between jobs
        self.jobs: list[Job] = []

    def submit(self, job: Job) -> Job:
        job.setParent(self)
        self.jobs.append(job)
        job.finished.connect(self.job_finished)
        self.job_added.emit(job)
        self._pool.start(_JobTask(job))
        return job

    def active(self) -> list[Job]:
        return [j for j in self.jobs if not j.state.finished]

    def cancel_all(self) -> None:
        for job in self.active():
            job.cancel()

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Cancel everything and wait for the running job to stop; True when it did within the timeout."""
        self.cancel_all()
        return self._pool.waitForDone(timeout_ms)
