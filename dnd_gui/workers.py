"""Background work for the GUI: "only the newest request counts", written once.

Opening a slide, classifying it, computing results, reading gallery patches and previewing a labels file all have
the same shape: the user asks again before the last answer came, and only the newest answer may reach the screen
(an older one arriving late would show the wrong slide). napari's layer slicer solves it once, Qt-free; here
:class:`LatestOnly` does it once on superqt's ``create_worker`` so each caller keeps only its own callbacks:

- a request superseded while still queued never runs;
- a superseded request's result is handed to ``discard`` (e.g. to close a slide it opened) instead of ``on_done``;
- errors reach ``on_error`` as the exception (the caller decides the message), never a silent thread death;
- ``shutdown`` drops the queue and waits for the running work, so the window can close cleanly.

Callbacks run on the thread that owns the :class:`LatestOnly` (the GUI thread).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from PySide6.QtCore import QObject, QThreadPool
from superqt.utils import create_worker


class Superseded(Exception):
    """Raised inside a queued request that a newer one replaced before it started (it does no work)."""


class LatestOnly(QObject):
    """Runs requests on a small thread pool of its own and delivers only the newest one's outcome."""

    def __init__(self, parent: Optional[QObject] = None, *, threads: int = 1,
                 discard: Optional[Callable[[Any], None]] = None):
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(max(1, threads))
        self._latest = 0
        self._discard = discard
        self._closed = False
        self._workers: set = set()  # keep each worker (and its signal object) alive until it has finished

    @property
    def latest(self) -> int:
        """The id of the newest request (0 before the first)."""
        return self._latest

    def is_current(self, request: int) -> bool:
        return request == self._latest and not self._closed

    def submit(self, fn: Callable[..., Any], *args: Any, on_done: Callable[[Any], None],
               on_error: Optional[Callable[[BaseException], None]] = None, **kwargs: Any) -> int:
        """Run ``fn(*args, **kwargs)`` in the background; supersede every earlier request. Returns the request id."""
        if self._closed:
            raise RuntimeError("this worker has been shut down")
        self._latest += 1
        request = self._latest

        def job() -> Any:
            if not self.is_current(request):
                raise Superseded()
            return fn(*args, **kwargs)

        worker = create_worker(job, _start_thread=False, _ignore_errors=True)  # errors go to on_error
        worker.returned.connect(lambda value: self._returned(request, value, on_done))
        worker.errored.connect(lambda exc: self._errored(request, exc, on_error))
        worker.finished.connect(lambda: self._workers.discard(worker))
        self._workers.add(worker)
        self._pool.start(worker)
        return request

    def cancel(self) -> None:
        """Supersede every request made so far (their outcomes are dropped, queued ones never run)."""
        self._latest += 1

    def shutdown(self) -> None:
        """Drop what is queued and wait for what runs; nothing is delivered afterwards."""
        self._closed = True
        self._latest += 1
        self._pool.waitForDone()

    def _returned(self, request: int, value: Any, on_done: Callable[[Any], None]) -> None:
        if self.is_current(request):
            on_done(value)
        elif self._discard is not None:
            self._discard(value)

    def _errored(self, request: int, exc: BaseException,
                 on_error: Optional[Callable[[BaseException], None]]) -> None:
        if isinstance(exc, Superseded) or not self.is_current(request):
            return
        if on_error is not None:
            on_error(exc)
