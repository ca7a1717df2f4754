"""Adding and removing slides (files or whole folders), for the open project or the session's slide list, and
keeping the project panel's header, thumbnails, labels and the window title in step with it.

A QuPath user drops a folder of slides and expects them listed; with a project open they become the project's
slides (linked, never copied: :meth:`dnd_engine.project.Project.add_slides`), without one they join the session's
list. Dropped folders are only listed, not classified: a folder may hold hundreds of slides, and classifying is
one right-click (or Ctrl+Shift+K) away.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog, QMenu

from dnd_engine.errors import DnDError
from dnd_engine.slides.find import find_slides
from dnd_engine.project import ProjectError

from ..jobs.classify import labels_near
from ..panels.project_header import NEXT_STEP_TEXT
from ..panels.slide_thumbnails import ThumbnailLoader
from ..viewer import EMPTY_MESSAGE

if TYPE_CHECKING:  # pragma: no cover
    from .main_window import MainWindow

EMPTY_PROJECT_MESSAGE = ("Project {name} has no slides yet.\n\nDrop a folder of slides (or slide files) here,\n"
                         "or choose Project \u25b8 Add Slides\u2026\n\nThen train a model: Project \u25b8 Train a Model\u2026")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


class SlideActions(QObject):
    """The window's slide-list operations; created once by :class:`MainWindow`, which stays their only caller
    besides the menus, the toolbar and the context menus (the actions themselves are declared in
    :mod:`.actions`)."""

    def __init__(self, win: "MainWindow"):
        super().__init__(win)
        self.win = win
        self._label_dirs: set[str] = set()
        self.thumbnails = ThumbnailLoader(self)
        self.thumbnails.ready.connect(win.slide_list.set_thumbnail)
        # the window's declared actions (window/actions.py: their rules enable them), under the names they had
        self.add_action = win.add_slides_action
        self.add_folder_action = win.add_folder_action
        self.remove_action = win.remove_slide_action
        header = win.slide_list.header
        add_menu = QMenu(header.add_button)
        add_menu.addAction("Slide Files\u2026", self.choose_files)
        add_menu.addAction("A Folder of Slides\u2026", self.choose_folder)
        header.add_button.setMenu(add_menu)
        header.train_requested.connect(win.open_wizard)
        self.refresh()

    # --- adding ------------------------------------------------------------------------------------------
    def choose_files(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self.win, "Add Slides", self.win.settings.last_dir("slides"),
                                                _slide_filter())
        if paths:
            self.win.settings.set_last_dir("slides", paths[0])
            self.add(paths)

    def choose_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.win, "Add a Folder of Slides",
                                                  self.win.settings.last_dir("slides"))
        if folder:
            self.win.settings.set_last_dir("slides", folder)
            self.add_folder(folder)

    def add_folder(self, folder: str) -> list[str]:
        """List (or link to the open project) every slide in ``folder``; a message when it holds none."""
        try:
            paths = [str(p.resolve()) for p in find_slides(folder)]
        except DnDError as exc:
            self.win._show_error("Add Slides", str(exc), f"No slides added from {Path(folder).name}")
            return []
        return self.add(paths, source=Path(folder).name)

    def add(self, paths: Sequence[str], source: str = "") -> list[str]:
        """Link ``paths`` to the open project (saved at once), else list them; returns those newly added."""
        win = self.win
        paths = [str(Path(p).resolve()) for p in paths]
        session = win.session
        if session is not None:
            try:
                new = [str(p) for p in session.project.add_slides(paths)]
                session.project.save()
            except (ProjectError, OSError) as exc:
                win._show_error("Add Slides", str(exc), "The slides were not added to the project")
                return []
            where = f"project {session.project.name}"
        else:
            new = [p for p in paths if p not in win.records]
            where = "the slide list"
        for p in paths:
            win.add_slide_record(p)
        skipped = len(paths) - len(new)
        win.statusBar().showMessage(
            f"Added {_plural(len(new), 'slide')}{' from ' + source if source else ''} to {where}"
            + (f" ({skipped} already there)" if skipped else "")
            + ("; right-click a slide to classify it" if new and win.model is not None else ""), 10000)
        if paths and not win.view.has_slide():
            win.open_slide(paths[0])
        self.refresh()
        return new

    def listed(self, path: str) -> None:
        """A slide just joined the list: fetch its thumbnail, and the labels of a cohort's labels.csv near it."""
        self.thumbnails.request(path)
        folder = str(Path(path).parent)
        if folder not in self._label_dirs:
            self._label_dirs.add(folder)
            labels = labels_near(path)
            if labels:
                self.win.slide_list.set_labels(labels)

    # --- removing ----------------------------------------------------------------------------------------
    def remove_current(self) -> None:
        if self.win.current_path:
            self.remove([self.win.current_path])

    def remove(self, paths: Sequence[str]) -> list[str]:
        """Take slides off the list and out of the open project (files, features and runs stay); a slide a job
        is classifying stays until the job ends."""
        win = self.win
        busy = [p for p in paths if p in win.records and win.records[p].job is not None]
        gone = [p for p in paths if p not in busy]
        if not gone:
            if busy:
                win.statusBar().showMessage(f"{Path(busy[0]).name} is being classified: cancel the job first", 8000)
            return []
        if win.session is not None:
            linked = win.session.project.remove_slides(gone)
            if linked:
                try:
                    win.session.project.save()
                except OSError as exc:
                    win._show_error("Remove Slide", str(exc), "The project could not be saved")
        for p in gone:
            if p == win.current_path:
                win.close_slide()
            win.records.pop(p, None)
            win.slide_list.remove_slide(p)
        win.statusBar().showMessage(f"Removed {_plural(len(gone), 'slide')}" + (
            f" from project {win.session.project.name}" if win.session is not None else " from the list")
            + " (the files are untouched)", 8000)
        self.refresh()
        return gone

    # --- what the panel, the viewer and the title say ----------------------------------------------------
    def refresh(self) -> None:
        """Header (project name, counts, next step), the project's labels, the empty viewer's hint, the title."""
        win = self.win
        session = win.session
        header = win.slide_list.header
        if session is None:
            header.show_none()
        else:
            project = session.project
            header.show_project(project.name, len(project.slides), len(project.runs), project.next_step())
            try:
                table = project.label_table()
            except DnDError:
                table = None
            if table is not None:
                win.slide_list.set_labels(dict(zip(table.slide_ids, table.labels)))
        if not win.view.has_slide():
            if session is not None and session.project.next_step() == "add slides":
                win.view.set_message(EMPTY_PROJECT_MESSAGE.format(name=session.project.name))
            else:
                win.view.set_message(EMPTY_MESSAGE)
        self.update_title()

    def update_title(self) -> None:
        from .main_window import APP_TITLE
        win = self.win
        parts = [Path(win.current_path).name] if win.current_path else []
        if win.session is not None:
            parts.append(f"project {win.session.project.name}")
        win.setWindowTitle(" \u2014 ".join(parts + [APP_TITLE]))

    def next_step_text(self) -> Optional[str]:
        session = self.win.session
        return NEXT_STEP_TEXT.get(session.project.next_step()) if session is not None else None

    def shutdown(self) -> None:
        self.thumbnails.shutdown()


def _slide_filter() -> str:
    from .main_window import slide_file_filter
    return slide_file_filter()


__all__ = ["EMPTY_PROJECT_MESSAGE", "SlideActions"]
