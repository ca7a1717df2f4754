"""Open a slide and render its thumbnail on a worker thread, so a slow or broken file never freezes the window.

The slide is read in a child process (:class:`~dnd_engine.slides.isolated.IsolatedSlide`): a crafted file that
makes OpenSlide abort kills that process, and the user sees a one-line error instead of losing the app.

Only the newest request counts: a result that arrives after a later ``load()`` is dropped and its slide closed.
Workers emit on private signals; the GUI-thread slots below turn those into the public ``loaded``/``failed``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot
from PySide6.QtGui import QImage

from dnd_engine.errors import SlideError
from dnd_engine.text import one_line
from dnd_engine.slides.isolated import IsolatedSlide
from dnd_engine.slides.overrides import MagnificationOverride

from .viewer.qimage import rgb_to_qimage
from .viewer.tile_source import open_reader

THUMBNAIL_MAX_SIZE = 1024  # the minimap and the picture under the tiles while they load


@dataclass
class LoadedSlide:
    """What a finished load hands to the GUI thread; the receiver owns ``slide`` and must close it (the viewer
    reads its tiles through the same reader process)."""

    path: str
    slide: IsolatedSlide
    thumbnail: QImage
    info: dict
    thread_id: int  # threading.get_ident() of the worker that did the reading


def load_slide(path: str, max_size: int = THUMBNAIL_MAX_SIZE,
               override: Optional[MagnificationOverride] = None) -> LoadedSlide:
    """Open ``path`` (with the objective power / pixel size the user set, if any) in a reader process and render a
    thumbnail; raises :class:`SlideError` for anything unreadable, the reader's crash included."""
    slide = open_reader(path, objective_power=override.objective_power if override else None,
                        mpp=override.mpp if override else None)
    try:
        thumbnail = rgb_to_qimage(slide.thumbnail_array(max_size))
        info = slide.info()
    except BaseException:
        slide.close()
        raise
    return LoadedSlide(str(path), slide, thumbnail, info, threading.get_ident())


def _unexpected_message(path: str, exc: BaseException) -> str:
    return f"{Path(path).name}: unexpected error while opening ({one_line(exc, typed=True)})"


class _LoadTask(QRunnable):
    def __init__(self, loader: "SlideLoader", request_id: int, path: str,
                 override: Optional[MagnificationOverride] = None):
        super().__init__()
        self._loader, self._request_id, self._path, self._override = loader, request_id, path, override

    def run(self) -> None:
        if not self._loader._is_current(self._request_id):  # superseded while queued: skip the work
            return
        try:
            result = load_slide(self._path, override=self._override)
        except SlideError as exc:
            self._loader._failed.emit(self._request_id, self._path, str(exc))
        except Exception as exc:  # never let a worker exception vanish: the user gets a message
            self._loader._failed.emit(self._request_id, self._path, _unexpected_message(self._path, exc))
        else:
            self._loader._done.emit(self._request_id, result)


class SlideLoader(QObject):
    """Loads slides on its own small thread pool; lives on (and reports to) the GUI thread."""

    loaded = Signal(object)  # LoadedSlide
    failed = Signal(str, str)  # path, one-line message

    _done = Signal(int, object)
    _failed = Signal(int, str, str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(2)
        self._latest = 0
        self.pending_path: Optional[str] = None   # the newest path asked for (shown once it has loaded)
        self._shut_down = False
        self._done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)
        self._failed.connect(self._on_failed, Qt.ConnectionType.QueuedConnection)

    def load(self, path: str, override: Optional[MagnificationOverride] = None) -> int:
        """Start loading ``path``; returns the request id. Earlier requests still running are superseded.
        ``override``: the magnification the user set for this slide (see :mod:`dnd_engine.slides.overrides`)."""
        self._latest += 1
        self.pending_path = str(path)
        self._pool.start(_LoadTask(self, self._latest, str(path), override))
        return self._latest

    def shutdown(self) -> None:
        """Drop queued requests and wait for the running ones (a thumbnail read takes at most seconds)."""
        self._shut_down = True
        self._latest += 1
        self._pool.clear()
        self._pool.waitForDone()

    def _is_current(self, request_id: int) -> bool:
        return request_id == self._latest and not self._shut_down

    @Slot(int, object)
    def _on_done(self, request_id: int, result: LoadedSlide) -> None:
        if not self._is_current(request_id):
            result.slide.close()
            return
        self.loaded.emit(result)

    @Slot(int, str, str)
    def _on_failed(self, request_id: int, path: str, message: str) -> None:
        if self._is_current(request_id):
            self.failed.emit(path, message)
