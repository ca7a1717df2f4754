"""The main window: menus, drag-and-drop, the slide view and the properties dock.

Slides are opened through :meth:`MainWindow.open_slide` (menu, drops, command line and tests alike); the
reading happens on a worker (:mod:`.slide_loader`), and a file that fails leaves the current slide on screen.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QMimeData, Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QDockWidget, QFileDialog, QMainWindow, QMessageBox, QWidget

from dnd_engine.slides import SLIDE_EXTENSIONS, Slide, is_slide_path

from .slide_loader import LoadedSlide, SlideLoader
from .slide_properties import SlidePropertiesPanel, summary_line
from .slide_view import EMPTY_MESSAGE, SlideView

APP_TITLE = "D&D Studio"


def slide_file_filter() -> str:
    patterns = " ".join(f"*{ext}" for ext in sorted(set(SLIDE_EXTENSIONS)))
    return f"Slides ({patterns});;All files (*)"


def dropped_file(mime: QMimeData) -> str | None:
    """The local file a drop should open: the first slide-like one, else the first file (to explain why not)."""
    if not mime.hasUrls():
        return None
    files = [url.toLocalFile() for url in mime.urls() if url.isLocalFile() and url.toLocalFile()]
    if not files:
        return None
    return next((f for f in files if is_slide_path(f)), files[0])


class MainWindow(QMainWindow):
    """One slide at a time. ``slide_loaded``/``slide_failed`` fire after the window has shown the outcome."""

    slide_loaded = Signal(str)  # path
    slide_failed = Signal(str)  # one-line message (also kept in ``last_error``)

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.slide: Slide | None = None
        self.slide_info: dict | None = None
        self.last_error: str = ""
        self.last_load_thread_id: int | None = None
        self.error_box: QMessageBox | None = None
        self._last_dir = ""

        self.view = SlideView(self)
        self.setCentralWidget(self.view)

        self.properties = SlidePropertiesPanel()
        self.properties_dock = QDockWidget("Slide properties", self)
        self.properties_dock.setObjectName("slidePropertiesDock")
        self.properties_dock.setWidget(self.properties)
        self.properties_dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetClosable
                                         | QDockWidget.DockWidgetFeature.DockWidgetMovable)
        self.addDockWidget(Qt.DockWidgetArea.RightDockWidgetArea, self.properties_dock)

        self._loader = SlideLoader(self)
        self._loader.loaded.connect(self._on_loaded)
        self._loader.failed.connect(self._on_failed)

        self._build_menus()
        self.setAcceptDrops(True)
        self.setWindowTitle(APP_TITLE)
        self.resize(1280, 800)
        self.resizeDocks([self.properties_dock], [360], Qt.Orientation.Horizontal)
        self.statusBar().showMessage("Open a slide with File \u25b8 Open Slide\u2026 or drop one on the window")

    # --- menus -----------------------------------------------------------------------------------------
    def _build_menus(self) -> None:
        file_menu = self.menuBar().addMenu("&File")
        self.open_action = self._action("&Open Slide\u2026", QKeySequence.StandardKey.Open, self.choose_slide)
        quit_action = self._action("&Quit", QKeySequence("Ctrl+Q"), self.close)
        quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        file_menu.addAction(self.open_action)
        file_menu.addSeparator()
        file_menu.addAction(quit_action)

        view_menu = self.menuBar().addMenu("&View")
        view_menu.addAction(self._action("&Fit to Window", QKeySequence("Ctrl+0"), self.view.fit_to_window))
        view_menu.addAction(self._action("Zoom &In", QKeySequence.StandardKey.ZoomIn, self.view.zoom_in))
        view_menu.addAction(self._action("Zoom &Out", QKeySequence.StandardKey.ZoomOut, self.view.zoom_out))
        view_menu.addSeparator()
        view_menu.addAction(self.properties_dock.toggleViewAction())

    def _action(self, text: str, shortcut, slot) -> QAction:
        action = QAction(text, self)
        action.setShortcut(shortcut)
        action.triggered.connect(slot)
        self.addAction(action)  # shortcuts work even with the menu bar hidden
        return action

    def choose_slide(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open Slide", self._last_dir, slide_file_filter())
        if path:
            self._last_dir = str(Path(path).parent)
            self.open_slide(path)

    # --- opening ---------------------------------------------------------------------------------------
    def open_slide(self, path: str) -> None:
        """Start opening ``path`` in the background; the outcome arrives as ``slide_loaded``/``slide_failed``."""
        path = str(path)
        self.statusBar().showMessage(f"Opening {Path(path).name}\u2026")
        if self.slide is None:
            self.view.set_message(f"Opening {Path(path).name}\u2026")
        self._loader.load(path)

    def _on_loaded(self, result: LoadedSlide) -> None:
        previous, self.slide = self.slide, result.slide
        self.slide_info = result.info
        self.last_error = ""
        self.last_load_thread_id = result.thread_id
        self.view.set_slide_image(result.thumbnail, result.info["dimensions"])
        self.properties.show_info(result.info)
        self.setWindowTitle(f"{Path(result.path).name} \u2014 {APP_TITLE}")
        self.statusBar().showMessage(summary_line(result.info))
        if previous is not None and previous is not result.slide:
            previous.close()
        self.slide_loaded.emit(result.path)

    def _on_failed(self, path: str, message: str) -> None:
        self.last_error = message
        if self.slide is None:
            self.view.set_message(EMPTY_MESSAGE)
        self.statusBar().showMessage(f"Could not open slide: {message}")
        self._show_error(message)
        self.slide_failed.emit(message)

    def _show_error(self, message: str) -> None:
        """A non-modal warning, reused for each failure, so errors never block the window or pile up."""
        if self.error_box is None:
            box = QMessageBox(QMessageBox.Icon.Warning, "Cannot open slide", "The slide could not be opened.",
                              QMessageBox.StandardButton.Ok, self)
            box.setWindowModality(Qt.WindowModality.NonModal)
            self.error_box = box
        self.error_box.setInformativeText(message)
        self.error_box.show()
        self.error_box.raise_()

    # --- drag and drop ---------------------------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if dropped_file(event.mimeData()) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        self.dragEnterEvent(event)

    def dropEvent(self, event) -> None:
        path = dropped_file(event.mimeData())
        if path is None:
            event.ignore()
            return
        event.acceptProposedAction()
        self.open_slide(path)

    # --- shutdown --------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Wait for any running load and close the open slide; safe to call more than once."""
        self._loader.shutdown()
        if self.slide is not None:
            self.slide.close()
            self.slide = None

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)
