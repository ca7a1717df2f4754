"""Background jobs: an engine call on a worker thread, with progress, partial results and cancel.

A job's function receives a :class:`JobContext` that speaks the engine's protocol (``progress(done, total,
message)``, ``cancelled()``, ``log(message)``) plus ``emit(result)`` for results that should reach the GUI
before the job ends (one slide's prediction while the next is classified) and ``epoch(record)`` for training
curves. Engine errors become one-line messages (state ``failed``; the full text goes to the job's log), the
engine's :class:`~dnd_engine.errors.Cancelled` becomes ``cancelled``, and any other exception is caught too, so a
job can never take the window down. A job that goes on past per-item failures (a batch of slides) reports the
engine's :class:`~dnd_engine.progress.BatchOutcome` with ``ctx.outcome``: every item failed ends it ``failed``,
some failed ends it ``done`` with :attr:`Job.outcome` saying how many, never a plain success. A failed or
cancelled job can be queued again as it is (:meth:`JobQueue.retry`): the same function, the same row and the same
connections. Jobs run one at a time: they are CPU and memory heavy, and two at once would only slow both.
The time left comes from the engine's :class:`~dnd_engine.eta.EtaEstimator` (per-stage epoch times for training).
"""

from __future__ import annotations

import collections
import enum
import itertools
import threading
import time
import traceback
from typing import Any, Callable, Optional, Sequence

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, QTimer, Signal, Slot

from dnd_engine.errors import Cancelled, DnDError
from dnd_engine.eta import EtaEstimator, StageWork
from dnd_engine.progress import BatchOutcome
from dnd_engine.text import first_line, one_line

from .background import lower_this_thread

LOG_LINES_MAX = 5000          # a chatty job must not grow without bound; the newest lines are the useful ones
PROGRESS_MIN_INTERVAL = 0.05  # s between progress updates on the GUI side; the trainer reports every bag
EPOCH_SLICE_S = 0.008         # the most time one delivery of buffered epoch records may hold the GUI thread


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
        self._job._post_progress(int(done), int(total), str(message))

    def cancelled(self) -> bool:
        return self._job._cancel.is_set()

    def log(self, message: str) -> None:
        self._job._log_signal.emit(str(message))

    def emit(self, result: Any) -> None:
        self._job._result_signal.emit(result)

    def epoch(self, record: dict) -> None:
        """One finished training epoch (the engine's ``on_epoch`` record); reaches ``Job.epoch`` on the GUI
        thread, in order. A copy is sent, so the engine may reuse its dict."""
        self._job._post_epoch(dict(record))

    def outcome(self, outcome: BatchOutcome) -> None:
        """How the job's items ended (the engine's per-item results); decides the job's final state."""
        self._job._outcome = outcome


JobFn = Callable[[JobContext], Any]
_ids = itertools.count(1)


class Job(QObject):
    """One unit of background work. Signals fire on the GUI thread.

    ``kind`` and ``meta`` are the caller's own labels (say ``"train"`` and the project's job id), carried
    untouched so the app can find its records again when the job ends.
    """

    changed = Signal()               # state, progress or message
    result = Signal(object)          # a partial result the function emitted
    epoch = Signal(object)           # a training epoch record the function sent (dict)
    finished = Signal(object)        # the job itself, once, when it ends in any state
    logged = Signal(str)

    _progress_signal = Signal(int, int, str)
    _result_signal = Signal(object)
    _epoch_wake = Signal()
    _progress_wake = Signal()
    _log_signal = Signal(str)
    _end_signal = Signal(str, str, object)  # state, message, return value

    def __init__(self, title: str, fn: JobFn, parent: Optional[QObject] = None, *, kind: str = "",
                 meta: Optional[dict] = None, work: Optional[Sequence[StageWork]] = None):
        super().__init__(parent)
        self.id = next(_ids)
        self.title = title
        self.fn = fn
        self.kind = kind
        self.meta: dict = dict(meta) if meta else {}
        self.state = JobState.QUEUED
        self.done = 0
        self.total = 0
        self.message = "waiting"
        self.error = ""          # one line, for a row or a status bar
        self.error_detail = ""   # the whole reason, for a tooltip or a dialog
        self.value: Any = None
        self.log_lines: list[str] = []
        self.started_at: Optional[float] = None
        self.ended_at: Optional[float] = None
        self.outcome: Optional[BatchOutcome] = None   # per-item results, when the function reported them
        self._outcome: Optional[BatchOutcome] = None  # set on the worker, taken when the job ends
        self.retry_hook: Optional[Callable[[], Any]] = None   # who queues it again (a project's job book)
        self.runs = 0                                          # times started (a retry runs it again)
        # ETA: shown once this long has passed and this much of the work is done, so the first noisy
        # seconds (imports, the first slide's tissue mask) do not promise a wild figure
        self.eta_after_s = 3.0
        self.eta_min_fraction = 0.01
        self.work: list[StageWork] = list(work or [])   # the training stages and epochs, for the time left
        self._eta = EtaEstimator(self.work)
        self._cancel = threading.Event()
        self._lock = threading.Lock()   # start vs cancel of a queued job: exactly one of them wins
        self._started = False
        # epoch records wait here; one queued wake-up delivers a batch (see _deliver_epochs)
        self._post_lock = threading.Lock()   # worker → GUI hand-over of epochs and progress
        self._epochs: collections.deque = collections.deque()
        self._epochs_posted = False
        # only the newest progress report is kept; the GUI takes it at most every PROGRESS_MIN_INTERVAL
        self._progress_pending: Optional[tuple[int, int, str]] = None
        self._progress_posted = False
        self._progress_shown_at = -1e9
        self._progress_signal.connect(self._on_progress, Qt.ConnectionType.QueuedConnection)
        self._result_signal.connect(self.result, Qt.ConnectionType.QueuedConnection)
        self._epoch_wake.connect(self._deliver_epochs, Qt.ConnectionType.QueuedConnection)
        self._progress_wake.connect(self._deliver_progress, Qt.ConnectionType.QueuedConnection)
        self._log_signal.connect(self._on_log, Qt.ConnectionType.QueuedConnection)
        self._end_signal.connect(self._on_end, Qt.ConnectionType.QueuedConnection)

    @property
    def fraction(self) -> float:
        if self.state == JobState.DONE:
            return 1.0
        return min(1.0, self.done / self.total) if self.total > 0 else 0.0

    def cancel(self, reason: str = "cancelled before it started") -> None:
        """Ask the job to stop at its next check; a queued job ends at once (with ``reason``) and never runs."""
        if self.state.finished:
            return
        with self._lock:
            self._cancel.set()
            started = self._started
        if not started:
            self._on_end(JobState.CANCELLED.value, reason, None)
        else:  # running, or started on the worker with the news not yet here
            self.message = "cancelling\u2026"
            self.changed.emit()

    @property
    def cancel_requested(self) -> bool:
        return self._cancel.is_set()

    @property
    def can_retry(self) -> bool:
        """Failed, cancelled, or done with failed items: it may be queued again."""
        return self.state in (JobState.FAILED, JobState.CANCELLED) or \
            (self.state == JobState.DONE and self.outcome is not None and self.outcome.state != "done")

    def eta_seconds(self, now: Optional[float] = None) -> Optional[float]:
        """Seconds left by the engine's smoothed estimate, counting down between updates; None until credible.
        Asking moves the smoothing on to ``now``."""
        if self.state != JobState.RUNNING or self.started_at is None:
            return None
        self._eta.min_elapsed_s, self._eta.min_fraction = self.eta_after_s, self.eta_min_fraction
        return self._eta.seconds_left(time.monotonic() if now is None else now)

    def _reset_for_retry(self) -> None:
        """Back to queued, as new, keeping the log (with a mark) and every connection."""
        with self._lock:
            self._cancel.clear()
            self._started = False
        self.state = JobState.QUEUED
        self.done = self.total = 0
        self.message = "waiting"
        self.error = self.error_detail = ""
        self.value = None
        self.outcome = self._outcome = None
        self.started_at = self.ended_at = None
        self._eta = EtaEstimator(self.work)
        with self._post_lock:
            self._progress_pending = None
            self._progress_posted = False
        self._progress_shown_at = -1e9
        self._on_log(f"--- run again (attempt {self.runs + 1}) ---")
        self.changed.emit()

    # --- worker side -------------------------------------------------------------------------------------
    def _run(self) -> None:
        with self._lock:
            if self._cancel.is_set():
                return  # cancelled while queued: the GUI side has already ended it
            self._started = True
            self.runs += 1
        self._progress_signal.emit(-1, -1, "")  # marks the start (RUNNING) on the GUI thread
        try:
            value = self.fn(JobContext(self))
        except Cancelled as exc:
            self._end_signal.emit(JobState.CANCELLED.value, str(exc).strip() or "cancelled by the user", None)
        except DnDError as exc:
            text = str(exc).strip()
            if "\n" in text:
                self._log_signal.emit(text)  # the row shows the first line; the rest must not be lost
            self._end_signal.emit(JobState.FAILED.value, text or type(exc).__name__, None)
        except Exception as exc:  # never let a worker exception vanish or crash the app
            text = str(exc).strip()
            detail = first_line(text)
            self._log_signal.emit(traceback.format_exc())
            self._end_signal.emit(JobState.FAILED.value,
                                  f"unexpected error ({one_line(exc, typed=True)})"
                                  + (f"\n{text}" if text and text != detail else ""), None)
        else:
            outcome = self._outcome
            if self._cancel.is_set():
                self._end_signal.emit(JobState.CANCELLED.value, "cancelled by the user", value)
            elif outcome is not None and outcome.state == "failed":
                self._end_signal.emit(JobState.FAILED.value, outcome.reason(), value)
            else:
                self._end_signal.emit(JobState.DONE.value, "", value)

    def _post_progress(self, done: int, total: int, message: str) -> None:
        # The trainer reports every bag (thousands a second on small bags): one event each would flood the GUI
        # thread. The newest report replaces an undelivered one, so the last one before a quiet stretch is the
        # one shown, and nothing is lost but intermediate steps.
        with self._post_lock:
            self._progress_pending = (done, total, message)
            wake = not self._progress_posted
            self._progress_posted = True
        if wake:
            self._progress_wake.emit()

    def _post_epoch(self, record: dict) -> None:
        with self._post_lock:
            self._epochs.append(record)
            wake = not self._epochs_posted
            self._epochs_posted = True
        if wake:
            self._epoch_wake.emit()

    # --- GUI side ----------------------------------------------------------------------------------------
    @Slot()
    def _deliver_epochs(self) -> None:
        # One queued event per record would let a burst of fast epochs (tiny cohorts: hundreds a second) sit
        # in the event queue and be handled in one long stretch; instead records are handed out in slices of
        # at most EPOCH_SLICE_S, and the rest waits behind whatever else the window has to do.
        deadline = time.perf_counter() + EPOCH_SLICE_S
        while True:
            with self._post_lock:
                if not self._epochs:
                    self._epochs_posted = False
                    return
                record = self._epochs.popleft()
            self._eta.epoch(record, time.monotonic())
            self.epoch.emit(record)
            if time.perf_counter() > deadline:
                QTimer.singleShot(0, self._deliver_epochs)
                return

    @Slot()
    def _deliver_progress(self) -> None:
        wait = self._progress_shown_at + PROGRESS_MIN_INTERVAL - time.monotonic()
        if wait > 0:
            QTimer.singleShot(int(wait * 1000) + 1, self._deliver_progress)
            return
        self._flush_progress()

    def _flush_progress(self) -> None:
        with self._post_lock:
            pending, self._progress_pending = self._progress_pending, None
            self._progress_posted = False
        if pending is not None:
            self._progress_shown_at = time.monotonic()
            self._on_progress(*pending)

    @Slot(int, int, str)
    def _on_progress(self, done: int, total: int, message: str) -> None:
        if self.state.finished:
            return
        now = time.monotonic()
        if done < 0:
            self.state = JobState.RUNNING
            self.started_at = now
            self._eta.start(now)
            self.message = "cancelling\u2026" if self._cancel.is_set() else "starting\u2026"
        else:
            self.done, self.total = done, total
            if message and not self._cancel.is_set():
                self.message = message
            # the first progress is the baseline: a resumed run jumps straight to where it stopped
            self._eta.progress(self.fraction, now)
        self.changed.emit()

    @Slot(str)
    def _on_log(self, message: str) -> None:
        self.log_lines.append(message)
        if len(self.log_lines) > LOG_LINES_MAX * 1.1:   # trim in chunks: cheap per line
            del self.log_lines[:len(self.log_lines) - LOG_LINES_MAX]
        self.logged.emit(message)

    @Slot(str, str, object)
    def _on_end(self, state: str, message: str, value: Any) -> None:
        if self.state.finished:
            return
        if self._epochs:   # epochs still being handed out: the job ends after its last one, as it did
            QTimer.singleShot(0, lambda: self._on_end(state, message, value))
            return
        self._flush_progress()   # where it stopped, not where it was 50 ms before
        self.state = JobState(state)
        self.ended_at = time.monotonic()
        self.value = value
        self.outcome = self._outcome
        if self.state == JobState.FAILED:
            self.error_detail = message
            self.error = first_line(message, None) or "failed"
        self.message = {JobState.DONE: "done", JobState.CANCELLED: "cancelled"}.get(self.state, self.error)
        if self.state == JobState.DONE and self.outcome is not None and self.outcome.failures:
            self.message = f"done with {self.outcome.summary()} \u2014 {self.outcome.reason()}"
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
    job_requeued = Signal(object)   # a finished job queued again (retry, resume), in its own row

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

    def retry(self, job: Job) -> Job:
        """Queue a failed or cancelled job again, as it is: the same function and arguments, the same row.
        A job with a ``retry_hook`` (a project's job, whose record must follow) is handed to it instead."""
        if not job.state.finished:
            return job
        if job.retry_hook is not None:
            job.retry_hook()
            return job
        return self.requeue(job)

    def requeue(self, job: Job) -> Job:
        """Run a finished job of this queue again (no questions asked: :meth:`retry` is the user's way)."""
        if job not in self.jobs:
            raise ValueError(f"job {job.id} is not one of this queue's")
        if not job.state.finished:
            return job
        job._reset_for_retry()
        self.job_requeued.emit(job)
        self._pool.start(_JobTask(job))
        return job

    def active(self) -> list[Job]:
        return [j for j in self.jobs if not j.state.finished]

    def running(self) -> Optional[Job]:
        return next((j for j in self.jobs if j.state == JobState.RUNNING), None)

    def cancel_all(self) -> None:
        for job in self.active():
            job.cancel()

    def shutdown(self, timeout_ms: int = 30_000) -> bool:
        """Cancel everything and wait for the running job to stop; True when it did within the timeout."""
        self.cancel_all()
        return self._pool.waitForDone(timeout_ms)
