"""Small thumbnails for the slide list, read on one low-priority worker thread.

A folder of slides may be dropped at once; opening each file to read its smallest level takes from milliseconds
to a second, so it never happens on the UI thread, and one thread at a time keeps it out of the way of the viewer
and of running jobs. Each file is read in a child process (a crafted slide that makes OpenSlide abort must not
take the app with it). A slide that cannot be read keeps its blank icon; ``failed`` says so when its reader
crashed (an ordinary unreadable file is explained when it is opened, and its status line is left alone).
"""

from __future__ import annotations

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot
from PySide6.QtGui import QImage

from dnd_engine.slides.isolated import SlideReaderCrashed

from ..jobs.background import lower_this_thread
from ..viewer.qimage import rgb_to_qimage
from ..viewer.tile_source import open_reader

LIST_THUMBNAIL_PX = 96  # twice the icon size: sharp on a HiDPI screen


def read_thumbnail(path: str, size: int = LIST_THUMBNAIL_PX) -> QImage:
    """The slide's thumbnail, read in a child process; raises :class:`SlideError` (its crash included)."""
    with open_reader(path, threads=1) as slide:
        return rgb_to_qimage(slide.thumbnail_array(size))


class _ThumbTask(QRunnable):
    def __init__(self, owner: "ThumbnailLoader", path: str):
        super().__init__()
        self._owner, self._path = owner, path

    def run(self) -> None:
        if self._owner._shut_down:
            return
        lower_this_thread()
        try:
            image = read_thumbnail(self._path)
        except SlideReaderCrashed as exc:  # a crafted or damaged file: the list marks it failed
            self._owner._failed.emit(self._path, str(exc))
            return
        except Exception:  # noqa: BLE001 - an unreadable slide keeps its blank icon; opening it says why
            return
        self._owner._done.emit(self._path, image)


class ThumbnailLoader(QObject):
    ready = Signal(str, QImage)  # path, thumbnail
    failed = Signal(str, str)    # path, one-line message: the slide's reader crashed on it
    _done = Signal(str, QImage)
    _failed = Signal(str, str)

    def __init__(self, parent: QObject | None = None):
        super().__init__(parent)
        self._pool = QThreadPool(self)
        self._pool.setMaxThreadCount(1)
        self._asked: set[str] = set()
        self._shut_down = False
        self._done.connect(self._on_done, Qt.ConnectionType.QueuedConnection)
        self._failed.connect(self._on_failed, Qt.ConnectionType.QueuedConnection)

    def request(self, path: str) -> None:
        """Read ``path``'s thumbnail once (later requests for it are ignored)."""
        if path in self._asked or self._shut_down:
            return
        self._asked.add(path)
        self._pool.start(_ThumbTask(self, path))

    def busy(self) -> bool:
        return self._pool.activeThreadCount() > 0

    def shutdown(self) -> None:
        self._shut_down = True
        self._pool.clear()
        self._pool.waitForDone()

    @Slot(str, QImage)
    def _on_done(self, path: str, image: QImage) -> None:
        if not self._shut_down:
            self.ready.emit(path, image)

    @Slot(str, str)
    def _on_failed(self, path: str, message: str) -> None:
        if not self._shut_down:
            self.failed.emit(path, message)


__all__ = ["LIST_THUMBNAIL_PX", "ThumbnailLoader", "read_thumbnail"]
