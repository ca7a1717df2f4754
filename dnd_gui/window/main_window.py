"""The main window: the docks around the viewer, where drops go, the status bar — and the parts that do the rest.

The window is composed, not a controller of everything: :mod:`.actions` declares the menus and when each action
is enabled, :mod:`.classification_session` keeps what is known about each slide and classifies,
:mod:`.heatmap_controller` shows a prediction's heatmap and exports it, :mod:`.project_controller` opens, closes
and trains the project. The window opens slides, routes drops and shows messages.

Every way in — menus, drops, the command line, tests — goes through the same few methods: :meth:`open_slide`,
``classify``, ``load_model``, :meth:`handle_dropped_files`. Slow work (opening a slide, decoding tiles, loading a
model, classifying, exporting) runs on worker threads; the window only shows outcomes, and every failure becomes
a one-line message in the status bar and a non-modal box, never an exception.
"""

from __future__ import annotations

import gc
import os
from pathlib import Path
from typing import Optional, Sequence

from PySide6.QtCore import QMimeData, QSettings, QStandardPaths, Qt, Signal
from PySide6.QtWidgets import (QApplication, QDockWidget, QFrame, QMainWindow, QMenu, QMessageBox,
                               QScrollArea, QStackedWidget, QTabWidget, QWidget)

from dnd_engine.model_paths import is_model_path
from dnd_engine.project.manifest import MANIFEST
from dnd_engine.slides import SLIDE_EXTENSIONS, is_slide_path

from ..jobs.classify import DEMO_MODEL
from ..panels.curves import TrainingCurves
from ..panels.inspector import Inspector
from ..jobs.queue import Job, JobQueue, JobState
from ..panels.jobs_panel import BottomDocks, JobsPanel
from ..dialogs.magnification import SlideScaleStore
from ..panels.predictions_view import PredictionsView
from ..panels.results_view import ResultsView
from ..settings import AppSettings
from ..panels.slide_list import SlideListPanel
from ..panels.start_screen import StartScreen
from ..theme import apply_theme
from ..viewer import SlideViewer
from .actions import WindowActions
from .classification_session import ClassificationSession
from .context_menus import install_context_menus
from .heatmap_controller import HeatmapController
from .project_controller import ProjectController
from .slide_controller import SlideController
from .slide_actions import SlideActions
from .status_bar import ViewerStatus
from .toolbar import build_toolbar

APP_TITLE = "D&D Studio"
_DEFAULT = object()


def slide_file_filter() -> str:
    patterns = " ".join(f"*{ext}" for ext in sorted(set(SLIDE_EXTENSIONS)))
    return f"Slides ({patterns});;All files (*)"


def dropped_files(mime: QMimeData) -> list[str]:
    """The local files (and folders) of a drop, in order; remote URLs are ignored."""
    if not mime.hasUrls():
        return []
    return [url.toLocalFile() for url in mime.urls() if url.isLocalFile() and url.toLocalFile()]


def project_folder(path: str) -> Optional[Path]:
    """The project a path names (its folder, or its manifest), else None."""
    p = Path(path)
    if p.name == MANIFEST and p.is_file():
        return p.parent
    return p if p.is_dir() and (p / MANIFEST).is_file() else None


def _scrolling(widget: QWidget) -> QScrollArea:
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidget(widget)
    return area


def _forward(target: str, name: str) -> property:
    """A window attribute that is ``self.<target>.<name>``: the part owns it, callers and tests keep the name."""
    return property(lambda self: getattr(getattr(self, target), name), doc=f"``{target}.{name}``")


def default_output_root() -> Path:
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or Path.home() / ".dnd-studio") / "predictions"


class MainWindow(QMainWindow):
    slide_loaded = Signal(str)          # path, after the viewer shows it
    slide_failed = Signal(str)          # one-line message (also kept in ``last_error``)
    slide_closed = Signal()
    model_ready = Signal(object)        # ReadyModel
    model_failed = Signal(str)          # one-line message
    prediction_shown = Signal(str)      # path whose prediction (and heatmap) the inspector now shows
    job_finished = Signal(object)       # Job
    project_opened = Signal(object)     # ProjectSession

    # what the parts own, under the names the window always had
    slide = _forward("slides", "slide")
    slide_info = _forward("slides", "info")
    current_path = _forward("slides", "path")
    last_load_thread_id = _forward("slides", "last_load_thread_id")
    slide_loader = _forward("slides", "loader")
    choose_slide = _forward("slides", "choose")
    open_slide = _forward("slides", "open")
    close_slide = _forward("slides", "close")
    mark_unreadable = _forward("slides", "mark_unreadable")
    records = _forward("classification", "records")
    model = _forward("classification", "model")
    classify = _forward("classification", "classify")
    add_prediction = _forward("classification", "add_prediction")
    load_model = _forward("classification", "load_model")
    add_slide_record = _forward("classification", "add_record")
    current_record = _forward("classification", "current_record")
    heatmap_layer = _forward("heatmap", "layer")
    heatmap_style = _forward("heatmap", "style")
    _patch_marker = _forward("heatmap", "patch_marker")
    set_heatmap_style = _forward("heatmap", "set_style")
    centre_on_patch = _forward("heatmap", "centre_on_patch")
    export_heatmap_png = _forward("heatmap", "export_png")
    export_heatmap_geojson = _forward("heatmap", "export_geojson")
    session = _forward("projects", "session")
    wizard = _forward("projects", "wizard")
    resume_box = _forward("projects", "resume_box")
    new_project = _forward("projects", "new_project")
    open_project = _forward("projects", "open_project")
    close_project = _forward("projects", "close_project")
    resume_jobs = _forward("projects", "resume_jobs")
    open_wizard = _forward("projects", "open_wizard")
    launch_training = _forward("projects", "launch_training")
    open_settings = _forward("projects", "open_settings")
    refresh_results = _forward("projects", "refresh_results")
    slide_file_filter = staticmethod(slide_file_filter)

    def __init__(self, parent: Optional[QWidget] = None, *, settings: Optional[QSettings] = None,
                 output_root: Optional[Path] = None, model=_DEFAULT, theme: Optional[str] = None):
        super().__init__(parent)
        self.settings = AppSettings(settings)
        self.output_root = Path(output_root) if output_root else default_output_root()
        self.last_error = ""
        self.error_box: Optional[QMessageBox] = None
        self.classify_on_drop = True
        self.confirm_quit = self._confirm_quit_with_jobs   # asked before closing with jobs running; tests replace it
        self.context_menu: Optional[QMenu] = None          # the last right-click menu (context_menus.py)

        self.view = SlideViewer(self)
        self.start_screen = StartScreen()
        self.curves = TrainingCurves()
        self.results = ResultsView()
        self.workspace = QTabWidget()
        self.workspace.setDocumentMode(True)
        self.workspace.addTab(self.view, "Slide")
        # pages with a large minimum size (results: about 900×630 px) scroll on a small screen instead of
        # growing the window past it
        self.curves_scroll = _scrolling(self.curves)
        self.results_scroll = _scrolling(self.results)
        self.workspace.addTab(self.curves_scroll, "Training")
        self.workspace.addTab(self.results_scroll, "Results")
        self.central = QStackedWidget()
        self.central.addWidget(_scrolling(self.start_screen))
        self.central.addWidget(self.workspace)
        self.setCentralWidget(self.central)
        self.inspector = Inspector()
        self.properties = self.inspector.properties
        self.slide_list = SlideListPanel()   # the slides panel; the project itself is ``session.project``
        self.jobs = JobQueue(self)
        self.jobs_panel = JobsPanel(self.jobs)
        self.predictions = PredictionsView()

        self.project_dock = self._dock("Project", "projectDock", self.slide_list, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.inspector_dock = self._dock("Inspector", "inspectorDock", self.inspector,
                                         Qt.DockWidgetArea.RightDockWidgetArea)
        self.jobs_dock = self._dock("Jobs", "jobsDock", self.jobs_panel, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.predictions_dock = self._dock("Predictions", "predictionsDock", self.predictions,
                                           Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.jobs_dock, self.predictions_dock)
        self.jobs_dock.raise_()

        self.scales = SlideScaleStore(self.settings, lambda: self.session.project if self.session else None)
        self.slides = SlideController(self)
        self.classification = ClassificationSession(self)
        self.heatmap = HeatmapController(self)
        self.projects = ProjectController(self)

        self.status = ViewerStatus(self.statusBar())
        self.window_actions = WindowActions(self)   # builds ``self.<id>`` for every action (open_action …)
        self.magnification_actions = self.window_actions.magnification_actions
        self.theme_actions = self.window_actions.theme_actions
        self.window_actions.build_menus((self.project_dock, self.inspector_dock, self.jobs_dock, self.predictions_dock))
        self.project_menu = self.window_actions.menus["project"]
        self.slides.refresh_recent()
        self.projects.refresh_recent()
        self.toggle_minimap(self.settings.flag("view/minimap", True))
        self.toggle_scale_bar(self.settings.flag("view/scale_bar", True))
        self._connect()
        self.slide_actions = SlideActions(self)    # add/remove slides and folders, header, thumbnails, title
        self.slide_actions.thumbnails.failed.connect(self.mark_unreadable)
        self.toolbar = build_toolbar(self)
        install_context_menus(self)
        self.setAcceptDrops(True)
        self.setWindowTitle(APP_TITLE)
        self.resize(1440, 900)
        self.resizeDocks([self.project_dock, self.inspector_dock], [250, 360], Qt.Orientation.Horizontal)
        self.resizeDocks([self.jobs_dock], [190], Qt.Orientation.Vertical)
        geometry, state = self.settings.window_state()
        if geometry is not None:
            self.restoreGeometry(geometry)
        if state is not None:
            self.restoreState(state)
        self.bottom_docks = BottomDocks(self.jobs_panel, self.jobs_dock, [(  # an empty Jobs panel takes no space
            self.predictions_dock, lambda: bool(self.predictions.model.rows), self.predictions.model.rowsInserted)])
        self.set_theme(theme or self.settings.theme(), remember=False)
        self.statusBar().showMessage("Open a slide with File \u25b8 Open Slide\u2026, or drop slides on the window "
                                     "to classify them")
        if model is _DEFAULT:
            model = DEMO_MODEL if DEMO_MODEL.is_file() else None
        if model is not None:
            self.load_model(model)
        else:
            self.slide_list.model_box.show_none()
        # The ~300k objects of torch, sklearn and Qt loaded so far live as long as the app. Moving them out of
        # the cyclic collector's reach matters: a full collection triggered on a job's thread holds the GIL for
        # 0.3-0.9 s here and froze the window while training ran.
        gc.freeze()

    # --- construction ------------------------------------------------------------------------------------
    def _dock(self, title: str, name: str, widget: QWidget, area) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)
        dock.setWidget(widget)
        dock.setFeatures(QDockWidget.DockWidgetFeature.DockWidgetClosable
                         | QDockWidget.DockWidgetFeature.DockWidgetMovable
                         | QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.addDockWidget(area, dock)
        return dock

    def _connect(self) -> None:
        self.view.view_changed.connect(self._refresh_view_status)
        self.view.cursor_moved.connect(self._on_cursor)
        self.view.tile_error.connect(lambda msg: self.statusBar().showMessage(msg, 8000))
        self.slide_list.slide_activated.connect(self._activate_slide)
        self.slide_list.model_box.load_requested.connect(self.classification.choose_model)
        self.predictions.slide_selected.connect(self._activate_slide)
        self.predictions.export_button.clicked.connect(self.heatmap.choose_export_csv)
        self.jobs.job_finished.connect(self._on_job_finished)
        st = self.start_screen
        st.new_project_requested.connect(lambda: self.new_project())
        st.open_project_requested.connect(lambda: self.open_project())
        st.open_slide_requested.connect(self.choose_slide)
        st.recent_project_chosen.connect(lambda p: self.open_project(p))
        self.results.slide_requested.connect(self.projects.open_project_slide)
        self.results.model_chosen.connect(self.projects.use_project_model)
        # the actions' enabled and checked states follow every change of the state their rules read
        model = self.predictions.model
        for signal in (self.slide_loaded, self.slide_closed, self.classification.changed, self.heatmap.changed,
                       self.projects.changed, self.view.view_changed, model.rowsInserted, model.rowsRemoved,
                       model.modelReset):
            signal.connect(self.window_actions.sync)
        self.window_actions.sync()

    # --- messages ----------------------------------------------------------------------------------------
    def _show_error(self, title: str, message: str, heading: str = "") -> None:
        """A non-modal warning, reused for each failure, so errors never block the window or pile up."""
        self.last_error = message
        self.statusBar().showMessage(f"{heading or title}: {message}")
        if self.error_box is None:
            box = QMessageBox(QMessageBox.Icon.Warning, title, "", QMessageBox.StandardButton.Ok, self)
            box.setWindowModality(Qt.WindowModality.NonModal)
            self.error_box = box
        self.error_box.setWindowTitle(title)
        self.error_box.setText(heading or title)
        self.error_box.setInformativeText(message)
        self.error_box.show()
        self.error_box.raise_()

    def _on_job_finished(self, job: Job) -> None:
        if job.state == JobState.FAILED:
            self._show_error("Job failed", job.error, job.title)
        elif job.state == JobState.CANCELLED:
            self.statusBar().showMessage(f"{job.title}: cancelled; nothing half-written was kept", 8000)
        self.job_finished.emit(job)

    def classify_current(self) -> None:
        if self.current_path:
            self.classify([self.current_path])

    def _activate_slide(self, path: str) -> None:
        if path != self.current_path:
            self.open_slide(path)

    # --- drops and paths from the system -----------------------------------------------------------------
    def dragEnterEvent(self, event) -> None:
        if dropped_files(event.mimeData()):
            event.acceptProposedAction()
        else:
            event.ignore()

    def dragMoveEvent(self, event) -> None:
        self.dragEnterEvent(event)

    def dropEvent(self, event) -> None:
        files = dropped_files(event.mimeData())
        if not files:
            event.ignore()
            return
        event.acceptProposedAction()
        self.handle_dropped_files(files)

    def handle_dropped_files(self, files: Sequence[str]) -> None:
        """Route dropped paths by kind: a model is loaded, slides are opened (the first) and classified, anything
        else is explained."""
        files = [os.path.abspath(f) for f in files]
        projects = [f for f in files if Path(f).is_dir() and project_folder(f) is not None]
        folders = [f for f in files if Path(f).is_dir() and f not in projects and not is_model_path(f)]
        if projects:
            self.open_project(projects[0])
        for folder in folders:  # a folder's slides are listed (linked to the open project), not classified
            self.slide_actions.add_folder(folder)
        files = [f for f in files if f not in projects and f not in folders]
        models = [f for f in files if is_model_path(f)]
        slides = [f for f in files if f not in models and is_slide_path(f) and not Path(f).is_dir()]
        others = [f for f in files if f not in models and f not in slides]
        if models:
            self.load_model(models[0])
        if others:
            names = ", ".join(Path(f).name for f in others[:3]) + (" \u2026" if len(others) > 3 else "")
            kinds = ", ".join(sorted({e for e in SLIDE_EXTENSIONS if not e.startswith(".ome")}))
            self._show_error("Not a slide", f"{names}: not a slide file (slides end in {kinds})",
                             f"{len(others)} dropped file{'s are' if len(others) > 1 else ' is'} not a slide")
        if not slides:
            return
        for s in slides:
            self.add_slide_record(s)
        self.open_slide(slides[0])
        if not self.classify_on_drop:
            return
        if self.model is None and not self.classification.loader.busy():
            self.statusBar().showMessage("No model loaded: the slides are open but not classified "
                                         "(File \u25b8 Load Model\u2026)", 8000)
            return
        self.classify(slides)

    def open_path(self, path: str) -> None:
        """A path handed over by the system (a double-click in a file manager, Finder's open event): a project is
        opened, a model loaded, a slide shown (not classified: the user only asked to look at it)."""
        p = Path(path)
        project = project_folder(str(p))
        if project is not None:
            self.open_project(str(project))
        elif is_model_path(p):
            self.load_model(str(p))
        elif is_slide_path(str(p)) and p.exists():
            self.add_slide_record(str(p.resolve()))
            self.open_slide(str(p))
        else:
            self._show_error("Open", f"{p.name}: not a slide, model or project", f"Cannot open {p.name}")

    # --- view and status ---------------------------------------------------------------------------------
    def show_tab(self, widget: QWidget) -> None:
        """Leave the start screen for the workspace and bring ``widget`` (viewer, curves, results) forward."""
        self.central.setCurrentWidget(self.workspace)
        self.workspace.setCurrentWidget(widget)

    def toggle_minimap(self, checked: bool) -> None:
        self.view.minimap.wanted = bool(checked)
        self.view.minimap.setVisible(bool(checked) and self.view.has_slide())
        self.settings.set_flag("view/minimap", checked)

    def toggle_scale_bar(self, checked: bool) -> None:
        self.view.scale_bar.wanted = bool(checked)
        self.view.scale_bar.set_scale(self.view.mpp, self.view.zoom)
        self.settings.set_flag("view/scale_bar", checked)

    def set_theme(self, theme: str, remember: bool = True) -> None:
        app = QApplication.instance()
        if app is not None:
            apply_theme(app, theme)
        self.theme = theme
        if remember:
            self.settings.set_theme(theme)
        self.window_actions.sync()

    def _refresh_view_status(self) -> None:
        self.status.show_view(self.view)

    def _on_cursor(self, point) -> None:
        self.status.show_cursor(point, self.view.mpp)
        self.heatmap.hover(point)

    # --- help ----------------------------------------------------------------------------------------------
    def about_model(self) -> None:
        if self.model is None:
            QMessageBox.information(self, "Model", "No model is loaded.")
            return
        card = self.model.card
        text = f"<b>{self.model.name}</b><br>{self.model.summary().replace(chr(10), '<br>')}"
        if card.get("notes"):
            text += f"<p>{card['notes']}</p>"
        QMessageBox.information(self, "About the Model", text)

    def about(self) -> None:
        from dnd_engine import __version__
        QMessageBox.about(self, f"About {APP_TITLE}",
                          f"<b>{APP_TITLE}</b> {__version__}<p>Whole-slide image classification with multiple "
                          "instance learning and Divide-and-Distill. Research software: not for diagnosis.</p>")

    # --- shutdown ------------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Cancel jobs, stop every worker and close the open slide; safe to call more than once."""
        self.jobs.shutdown()
        self.results.shutdown()
        self.slides.loader.shutdown()
        self.classification.shutdown()
        self.inspector.gallery.wait()
        self.slide_actions.shutdown()
        self.view.shutdown()
        self.slides.release()

    def _confirm_quit_with_jobs(self, n: int) -> bool:
        box = QMessageBox(QMessageBox.Icon.Question, APP_TITLE,
                          f"{n} job{'s are' if n != 1 else ' is'} still running or queued.", parent=self)
        box.setInformativeText("Quit anyway? Training and extraction keep their checkpoints: reopen the project "
                               "and choose Project \u25b8 Resume Interrupted Jobs to continue.")
        box.setStandardButtons(QMessageBox.StandardButton.Cancel)
        quit_button = box.addButton("Quit", QMessageBox.ButtonRole.DestructiveRole)
        box.setDefaultButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        return box.clickedButton() is quit_button

    def closeEvent(self, event) -> None:
        active = self.jobs.active()
        if active and not self.confirm_quit(len(active)):
            event.ignore()
            return
        self.settings.set_window_state(self.saveGeometry(), self.saveState())
        self.settings.sync()
        self.shutdown()
        super().closeEvent(event)


__all__ = ["APP_TITLE", "MainWindow", "default_output_root", "dropped_files", "project_folder", "slide_file_filter"]
