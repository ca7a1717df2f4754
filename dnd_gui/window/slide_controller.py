"""The slide on screen: opening it off the UI thread, showing it, closing it, and the recent-slides menu.

The loader (:class:`~dnd_gui.jobs.slide_loader.SlideLoader`) opens the newest requested slide on a worker; this
controller puts the outcome on screen (viewer, properties, list, title) or says why it failed, and tells the
window's other parts through the window's ``slide_loaded`` / ``slide_failed`` / ``slide_closed`` signals.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Optional

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog

from dnd_engine.slides import Slide

from ..jobs.slide_loader import LoadedSlide, SlideLoader
from ..panels.slide_properties import summary_line
from ..viewer import EMPTY_MESSAGE

if TYPE_CHECKING:  # pragma: no cover
    from .main_window import MainWindow


class SlideController(QObject):
    """Holds the open ``slide``, its ``info`` and ``path`` (None when no slide is shown)."""

    def __init__(self, win: "MainWindow"):
        super().__init__(win)
        self.win = win
        self.slide: Optional[Slide] = None
        self.info: Optional[dict] = None
        self.path: Optional[str] = None
        self.last_load_thread_id: Optional[int] = None
        self.loader = SlideLoader(self)
        self.loader.loaded.connect(self._on_loaded)
        self.loader.failed.connect(self._on_failed)
        win.properties.set_magnification_requested.connect(self.set_magnification)
        win.view.reader_crashed.connect(self._on_reader_crashed)

    def choose(self) -> None:
        win = self.win
        path, _ = QFileDialog.getOpenFileName(win, "Open Slide", win.settings.last_dir("slides"),
                                              win.slide_file_filter())
        if path:
            win.settings.set_last_dir("slides", path)
            self.open(path)

    def open(self, path: str) -> None:
        """Start opening ``path`` in the background; the outcome arrives as ``slide_loaded``/``slide_failed``."""
        win = self.win
        path = os.path.abspath(str(path))
        win.show_tab(win.view)
        win.statusBar().showMessage(f"Opening {Path(path).name}\u2026")
        if not win.view.has_slide():
            win.view.set_message(f"Opening {Path(path).name}\u2026")
        self.loader.load(path, win.scales.get(path))

    def set_magnification(self) -> None:
        """Slide panel ▸ Set objective / pixel size…: ask, store for this slide, reopen it at the new scale."""
        if self.path and self.win.scales.ask_and_set(self.win, self.path, self.info):
            self.open(self.path)

    def _on_loaded(self, result: LoadedSlide) -> None:
        win = self.win
        previous, self.slide = self.slide, result.slide
        self.info = result.info
        self.path = result.path
        win.last_error = ""
        self.last_load_thread_id = result.thread_id
        win.heatmap.remove()
        win.view.scale_bar.approximate = result.info.get("mpp_source") == "objective"
        win.view.set_slide(result.path, result.info, result.thumbnail, result.slide)
        win.properties.show_info(result.info)
        win.slide_actions.update_title()
        win.statusBar().showMessage(summary_line(result.info))
        win.settings.add_recent(result.path)
        self.refresh_recent()
        win.add_slide_record(result.path)
        win.slide_list.set_thumbnail(result.path, result.thumbnail)
        win.slide_list.select(result.path)
        win.predictions.select_path(result.path)
        if previous is not None and previous is not result.slide:
            previous.close()
        win.heatmap.show_record(win.current_record())
        win.status.show_view(win.view)
        win.slide_loaded.emit(result.path)

    def _on_failed(self, path: str, message: str) -> None:
        win = self.win
        if not win.view.has_slide():
            win.view.set_message(f"{message}\n\n{EMPTY_MESSAGE}")
        if not win.slide_list.status_text(path):  # a queued or classified slide's row is the classifier's to set
            self.mark_unreadable(path, message)
        win._show_error("Cannot open slide", message, "The slide could not be opened")
        win.slide_failed.emit(message)

    def _on_reader_crashed(self, message: str) -> None:
        """The shown slide's reader process died (a crafted or damaged file): close the slide, say why in the
        viewer and the list; the rest of the app carries on."""
        win, path = self.win, self.path
        self.close()
        win.view.set_message(message)
        if path:
            self.mark_unreadable(path, message)
        win._show_error("Cannot read slide", message, "The slide could not be read")
        win.slide_failed.emit(message)

    def mark_unreadable(self, path: str, message: str) -> None:
        """Mark a listed slide failed, with the reason (the message without the file name it starts with)."""
        if path in self.win.slide_list.paths():
            reason = message.split(": ", 1)[1] if message.startswith(Path(path).name + ": ") else message
            self.win.slide_list.set_status(path, reason, "failed")

    def close(self) -> None:
        win = self.win
        win.heatmap.remove()
        win.view.clear_slide()
        if self.slide is not None:
            self.slide.close()
        self.slide, self.info, self.path = None, None, None
        win.properties.clear_info()
        win.inspector.prediction.show_none()
        win.inspector.heatmap.set_models([])
        win.inspector.gallery.clear()
        win.slide_actions.refresh()  # the title, and the empty project's hint in the viewer
        win.statusBar().showMessage("Slide closed", 3000)  # not the closed slide's summary
        win.status.show_view(win.view)
        win.slide_closed.emit()

    # --- File ▸ Open Recent ------------------------------------------------------------------------------
    def refresh_recent(self) -> None:
        menu, recent = self.win.recent_menu, self.win.settings.recent_files()
        menu.clear()
        for i, path in enumerate(recent):
            action = menu.addAction(f"&{(i + 1) % 10} {Path(path).name}")
            action.setToolTip(path)
            action.setData(path)
            action.triggered.connect(lambda _=False, p=path: self.open(p))
        if recent:
            menu.addSeparator()
            menu.addAction("Clear List", self._clear_recent)
        menu.setEnabled(bool(recent))

    def _clear_recent(self) -> None:
        self.win.settings.clear_recent()
        self.refresh_recent()

    def release(self) -> None:
        """At shutdown, after the viewer stopped reading: close the slide's file."""
        if self.slide is not None:
            self.slide.close()
            self.slide = None


__all__ = ["SlideController"]
