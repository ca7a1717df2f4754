"""Open a slide and render its thumbnail on a worker thread, so a slow or broken file never freezes the window.

The slide is read in a child process (:class:`~dnd_engine.slides.isolated.IsolatedSlide`): a crafted file that
makes OpenSlide abort kills that process, and the user sees a one-line error instead of losing the app.

Only the newest request counts (:class:`~dnd_gui.workers.LatestOnly`): a result that arrives after a later
``load()`` is dropped and its slide closed; the newest one reaches the GUI thread as ``loaded`` or ``failed``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QImage

from dnd_engine.errors import SlideError
from dnd_engine.text import one_line
from dnd_engine.slides.isolated import IsolatedSlide
from dnd_engine.slides.overrides import MagnificationOverride

from ..viewer.qimage import rgb_to_qimage
from ..viewer.tile_source import open_reader
from ..workers import LatestOnly

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


def _open_or_explain(path: str, override: Optional[MagnificationOverride]) -> LoadedSlide:
    """:func:`load_slide` on a worker thread; any failure leaves as a :class:`SlideError` with a one-line message."""
    try:
        return load_slide(path, override=override)
    except SlideError:
        raise
    except Exception as exc:  # never let a worker exception vanish: the user gets a message
        raise SlideError(_unexpected_message(path, exc)) from exc


class SlideLoader(QObject):
    """Loads slides in the background (newest request wins, see :class:`~dnd_gui.workers.LatestOnly`); lives on,
    and reports to, the GUI thread. A slide that finished loading after a newer request is closed, never shown."""

    loaded = Signal(object)  # LoadedSlide
    failed = Signal(str, str)  # path, one-line message

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._worker = LatestOnly(self, threads=2, discard=lambda result: result.slide.close())
        self.pending_path: Optional[str] = None   # the newest path asked for (shown once it has loaded)

    def load(self, path: str, override: Optional[MagnificationOverride] = None) -> int:
        """Start loading ``path``; returns the request id. Earlier requests still running are superseded.
        ``override``: the magnification the user set for this slide (see :mod:`dnd_engine.slides.overrides`)."""
        path = str(path)
        self.pending_path = path
        return self._worker.submit(_open_or_explain, path, override, on_done=self.loaded.emit,
                                   on_error=lambda exc: self.failed.emit(path, str(exc)))

    def shutdown(self) -> None:
        """Drop queued requests and wait for the running ones (a thumbnail read takes at most seconds)."""
        self._worker.shutdown()
