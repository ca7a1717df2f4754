"""The main window: project panel, viewer, inspector, jobs and predictions, menus and status bar, wired together.

Every way in — menus, drops, the command line, tests — goes through the same few methods: :meth:`open_slide`,
:meth:`classify`, :meth:`load_model`, :meth:`handle_dropped_files`. Slow work (opening a slide, decoding tiles,
loading a model, classifying, exporting) runs on worker threads; the window only shows outcomes, and every
failure becomes a one-line message in the status bar and a non-modal box, never an exception.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from PySide6.QtCore import QMimeData, QPointF, QRectF, QSettings, QStandardPaths, Qt, Signal
from PySide6.QtGui import QAction, QActionGroup, QColor, QKeySequence, QPen
from PySide6.QtWidgets import (QApplication, QDockWidget, QFileDialog, QFrame, QGraphicsRectItem, QMainWindow, QMenu,
                               QMessageBox, QScrollArea, QStackedWidget, QTabWidget, QWidget)

from dnd_engine.errors import DnDError
from dnd_engine.project import ExtractionPlan, JobBook, JobRecord, Project, ProjectError, TrainingPlan
from dnd_engine.slides import SLIDE_EXTENSIONS, Slide, is_slide_path

from .context_menus import install_context_menus
from .curves import TrainingCurves
from .classification import (DEMO_MODEL, ClassifiedSlide, ModelLoader, ReadyModel, classify_job, labels_near,
                             read_labels_csv)
from .exports import heatmap_geojson_job, heatmap_png_job
from .inspector import Inspector, model_label
from .jobs import Job, JobQueue, JobState
from .jobs_panel import BottomDocks, JobsPanel
from . import magnification_dialog
from .magnification_dialog import SlideScaleStore
from .predictions_view import PredictionsView
from .project_session import ProjectSession
from .results_view import ResultsView
from .settings import AppSettings
from .slide_actions import SlideActions
from .slide_list import SlideListPanel
from .slide_loader import LoadedSlide, SlideLoader
from .slide_properties import summary_line
from .start_screen import StartScreen
from .status_bar import ViewerStatus
from .theme import apply_theme
from .toolbar import build_toolbar
from .viewer import EMPTY_MESSAGE, MAGNIFICATION_PRESETS, SlideViewer
from .viewer.heatmap_layer import HeatmapLayer, HeatmapStyle
from .wizard import TrainingWizard

APP_TITLE = "D&D Studio"
MODEL_SUFFIXES = (".safetensors",)
_DEFAULT = object()


def slide_file_filter() -> str:
    patterns = " ".join(f"*{ext}" for ext in sorted(set(SLIDE_EXTENSIONS)))
    return f"Slides ({patterns});;All files (*)"


def dropped_files(mime: QMimeData) -> list[str]:
    """The local files (and folders) of a drop, in order; remote URLs are ignored."""
    if not mime.hasUrls():
        return []
    return [url.toLocalFile() for url in mime.urls() if url.isLocalFile() and url.toLocalFile()]


def _fill_menu(menu: QMenu, items) -> None:
    """Actions in order; ``None`` is a separator."""
    for item in items:
        if item is None:
            menu.addSeparator()
        else:
            menu.addAction(item)


def _scrolling(widget: QWidget) -> QScrollArea:
    area = QScrollArea()
    area.setWidgetResizable(True)
    area.setFrameShape(QFrame.Shape.NoFrame)
    area.setWidget(widget)
    return area


def is_model_path(path: str) -> bool:
    p = Path(path)
    return (p.is_file() and p.suffix.lower() in MODEL_SUFFIXES) or (p.is_dir() and (p / "model.safetensors").is_file())


def default_output_root() -> Path:
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or Path.home() / ".dnd-studio") / "predictions"


@dataclass
class SlideRecord:
    """What the session knows about one slide."""

    path: str
    prediction: object = None           # dnd_engine.predict.SlidePrediction
    class_names: list = field(default_factory=list)
    model_name: str = ""
    demo: bool = False
    heatmap_model: str = "student"
    tissue: object = None               # bool mask over the whole slide (np.ndarray) or None
    job: Optional[Job] = None


class MainWindow(QMainWindow):
    slide_loaded = Signal(str)          # path, after the viewer shows it
    slide_failed = Signal(str)          # one-line message (also kept in ``last_error``)
    model_ready = Signal(object)        # ReadyModel
    model_failed = Signal(str)          # one-line message
    prediction_shown = Signal(str)      # path whose prediction (and heatmap) the inspector now shows
    job_finished = Signal(object)       # Job
    project_opened = Signal(object)     # ProjectSession

    def __init__(self, parent: Optional[QWidget] = None, *, settings: Optional[QSettings] = None,
                 output_root: Optional[Path] = None, model=_DEFAULT, theme: Optional[str] = None):
        super().__init__(parent)
        self.settings = AppSettings(settings)
        self.output_root = Path(output_root) if output_root else default_output_root()
        self.slide: Optional[Slide] = None
        self.slide_info: Optional[dict] = None
        self.current_path: Optional[str] = None
        self.last_error = ""
        self.last_load_thread_id: Optional[int] = None
        self.error_box: Optional[QMessageBox] = None
        self.model: Optional[ReadyModel] = None
        self.records: dict[str, SlideRecord] = {}
        self.heatmap_layer: Optional[HeatmapLayer] = None
        self.heatmap_style = HeatmapStyle()
        self._patch_marker: Optional[QGraphicsRectItem] = None
        self._waiting_for_model: list[str] = []
        self.classify_on_drop = True

        self.session: Optional[ProjectSession] = None
        self.wizard: Optional[TrainingWizard] = None
        self.resume_box: Optional[QMessageBox] = None
        # asked before closing with jobs running; tests replace it
        self.confirm_quit = self._confirm_quit_with_jobs

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
        self.project = SlideListPanel()
        self.jobs = JobQueue(self)
        self.jobs_panel = JobsPanel(self.jobs)
        self.predictions = PredictionsView()

        self.project_dock = self._dock("Project", "projectDock", self.project, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.inspector_dock = self._dock("Inspector", "inspectorDock", self.inspector,
                                         Qt.DockWidgetArea.RightDockWidgetArea)
        self.jobs_dock = self._dock("Jobs", "jobsDock", self.jobs_panel, Qt.DockWidgetArea.BottomDockWidgetArea)
        self.predictions_dock = self._dock("Predictions", "predictionsDock", self.predictions,
                                           Qt.DockWidgetArea.BottomDockWidgetArea)
        self.tabifyDockWidget(self.jobs_dock, self.predictions_dock)
        self.jobs_dock.raise_()

        self.scales = SlideScaleStore(self.settings, lambda: self.session.project if self.session else None)
        self.properties.set_magnification_requested.connect(self.set_slide_magnification)
        self._loader = SlideLoader(self)
        self._loader.loaded.connect(self._on_loaded)
        self._loader.failed.connect(self._on_failed)
        self._model_loader = ModelLoader(self)
        self._model_loader.loaded.connect(self._on_model_loaded)
        self._model_loader.failed.connect(self._on_model_failed)

        self.status = ViewerStatus(self.statusBar())
        self._build_menus()
        self._connect()
        self.context_menu: Optional[QMenu] = None  # the last right-click menu (context_menus.py)
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
            self.project.model_box.show_none()
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

    def _action(self, text: str, slot, shortcut=None, checkable: bool = False, tip: str = "") -> QAction:
        action = QAction(text, self)
        if shortcut is not None:
            action.setShortcut(shortcut)
        action.setCheckable(checkable)
        if tip:
            action.setStatusTip(tip)
        action.triggered.connect(slot)
        self.addAction(action)  # shortcuts work even with the menu bar hidden
        return action

    def _build_menus(self) -> None:
        SK = QKeySequence.StandardKey
        file_menu = self.menuBar().addMenu("&File")
        self.open_action = self._action("&Open Slide\u2026", self.choose_slide, SK.Open)
        self.recent_menu = file_menu.addMenu("Open &Recent")
        self.classify_action = self._action("&Classify Slides\u2026", self.choose_and_classify, QKeySequence("Ctrl+K"),
                                            tip="Choose slides and classify them with the loaded model")
        self.classify_current_action = self._action("Classify &Current Slide", self.classify_current,
                                                    QKeySequence("Ctrl+Shift+K"))
        self.load_model_action = self._action("Load &Model\u2026", self.choose_model, QKeySequence("Ctrl+M"))
        self.load_labels_action = self._action("Load &Labels CSV\u2026", self.choose_labels)
        self.export_png_action = self._action("Export Heatmap as &PNG\u2026", self.choose_export_png,
                                              QKeySequence("Ctrl+E"))
        self.export_geojson_action = self._action("Export Heatmap as &GeoJSON\u2026", self.choose_export_geojson,
                                                  QKeySequence("Ctrl+Shift+E"))
        self.export_csv_action = self._action("Export Predictions &CSV\u2026", self.choose_export_csv)
        self.close_action = self._action("Close Slide", self.close_slide, SK.Close)
        quit_action = self._action("&Quit", self.close, QKeySequence("Ctrl+Q"))
        quit_action.setMenuRole(QAction.MenuRole.QuitRole)
        _fill_menu(file_menu, (self.open_action, None, self.classify_action, self.classify_current_action,
                               self.load_model_action, self.load_labels_action, None, self.export_png_action,
                               self.export_geojson_action, self.export_csv_action, None, self.close_action,
                               quit_action))
        file_menu.insertMenu(self.classify_action, self.recent_menu)
        self.settings_action = self._action("&Settings\u2026", self.open_settings, SK.Preferences,
                                            tip="Where feature extraction jobs run (a Ray cluster)")
        self.settings_action.setMenuRole(QAction.MenuRole.PreferencesRole)
        file_menu.insertAction(quit_action, self.settings_action)
        self._refresh_recent_menu()

        project_menu = self.menuBar().addMenu("&Project")
        self.project_menu = project_menu
        self.new_project_action = self._action("&New Project\u2026", lambda: self.new_project(),
                                               QKeySequence("Ctrl+Shift+N"),
                                               tip="Create a project folder for slides, labels, features and runs")
        self.open_project_action = self._action("&Open Project\u2026", lambda: self.open_project(),
                                                QKeySequence("Ctrl+Shift+O"))
        self.recent_projects_menu = QMenu("Open &Recent Project", self)
        self.close_project_action = self._action("&Close Project", self.close_project)
        self.train_action = self._action("&Train a Model\u2026", self.open_wizard, QKeySequence("Ctrl+T"),
                                         tip="The training wizard: data, preprocessing, MIL method and D&D settings")
        self.resume_action = self._action("&Resume Interrupted Jobs", self.resume_jobs,
                                          tip="Continue jobs that stopped when the app quit or crashed, from their "
                                              "last checkpoints")
        self.results_action = self._action("Show R&esults", lambda: self.show_tab(self.results_scroll))
        self.curves_action = self._action("Show Training &Curves", lambda: self.show_tab(self.curves_scroll))
        _fill_menu(project_menu, (self.new_project_action, self.open_project_action, None,
                                  self.close_project_action, None, self.train_action, self.resume_action, None,
                                  self.curves_action, self.results_action))
        project_menu.insertMenu(self.close_project_action, self.recent_projects_menu)
        self._refresh_recent_projects()

        view_menu = self.menuBar().addMenu("&View")
        self.fit_action = self._action("&Fit to Window", self.view.fit_to_window, QKeySequence("Ctrl+0"))
        view_menu.addAction(self._action("Zoom &In", self.view.zoom_in, SK.ZoomIn))
        view_menu.addAction(self._action("Zoom &Out", self.view.zoom_out, SK.ZoomOut))
        view_menu.addAction(self.fit_action)
        mag_menu = view_menu.addMenu("&Magnification")
        self.magnification_actions: dict[int, QAction] = {}
        for i, mag in enumerate(MAGNIFICATION_PRESETS, 1):
            action = self._action(f"{mag}\u00d7", lambda _=False, m=mag: self.view.set_magnification(m),
                                  QKeySequence(f"Ctrl+{i}"))
            mag_menu.addAction(action)
            self.magnification_actions[mag] = action
        view_menu.addSeparator()
        self.show_heatmap_action = self._action("Show &Heatmap", self.toggle_heatmap, QKeySequence("H"), True)
        self.show_heatmap_action.setChecked(True)
        self.minimap_action = self._action("Over&view", self.toggle_minimap, checkable=True)
        self.minimap_action.setChecked(self.settings.flag("view/minimap", True))
        self.scale_bar_action = self._action("&Scale Bar", self.toggle_scale_bar, checkable=True)
        self.scale_bar_action.setChecked(self.settings.flag("view/scale_bar", True))
        for a in (self.show_heatmap_action, self.minimap_action, self.scale_bar_action):
            view_menu.addAction(a)
        view_menu.addSeparator()
        theme_menu = view_menu.addMenu("&Theme")
        group = QActionGroup(self)
        self.theme_actions = {}
        for theme in ("light", "dark"):
            a = self._action(theme.title(), lambda _=False, t=theme: self.set_theme(t), checkable=True)
            group.addAction(a)
            theme_menu.addAction(a)
            self.theme_actions[theme] = a
        view_menu.addSeparator()
        for dock in (self.project_dock, self.inspector_dock, self.jobs_dock, self.predictions_dock):
            view_menu.addAction(dock.toggleViewAction())

        help_menu = self.menuBar().addMenu("&Help")
        help_menu.addAction(self._action("About the &Model", self.about_model))
        about = self._action(f"&About {APP_TITLE.replace('&', '&&')}", self.about)  # a single "&" is a mnemonic
        about.setMenuRole(QAction.MenuRole.AboutRole)
        help_menu.addAction(about)
        self.toggle_minimap(self.minimap_action.isChecked())
        self.toggle_scale_bar(self.scale_bar_action.isChecked())
        self._refresh_actions()

    def _connect(self) -> None:
        self.view.view_changed.connect(self._refresh_view_status)
        self.view.cursor_moved.connect(self._on_cursor)
        self.view.tile_error.connect(lambda msg: self.statusBar().showMessage(msg, 8000))
        self.view.reader_crashed.connect(self._on_reader_crashed)
        self.project.slide_activated.connect(self._activate_slide)
        self.project.model_box.load_requested.connect(self.choose_model)
        self.predictions.slide_selected.connect(self._activate_slide)
        self.predictions.export_button.clicked.connect(self.choose_export_csv)
        h = self.inspector.heatmap
        h.style_changed.connect(self.set_heatmap_style)
        h.model_changed.connect(self.set_heatmap_model)
        h.export_png.connect(self.choose_export_png)
        h.export_geojson.connect(self.choose_export_geojson)
        self.inspector.gallery.patch_clicked.connect(self.centre_on_patch)
        self.jobs.job_finished.connect(self._on_job_finished)
        st = self.start_screen
        st.new_project_requested.connect(lambda: self.new_project())
        st.open_project_requested.connect(lambda: self.open_project())
        st.open_slide_requested.connect(self.choose_slide)
        st.recent_project_chosen.connect(lambda p: self.open_project(p))
        self.results.slide_requested.connect(self.open_project_slide)
        self.results.model_chosen.connect(self.use_project_model)

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

    # --- slides ------------------------------------------------------------------------------------------
    def choose_slide(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open Slide", self.settings.last_dir("slides"),
                                              slide_file_filter())
        if path:
            self.settings.set_last_dir("slides", path)
            self.open_slide(path)

    def open_slide(self, path: str) -> None:
        """Start opening ``path`` in the background; the outcome arrives as ``slide_loaded``/``slide_failed``."""
        path = os.path.abspath(str(path))
        self.show_tab(self.view)
        self.statusBar().showMessage(f"Opening {Path(path).name}\u2026")
        if not self.view.has_slide():
            self.view.set_message(f"Opening {Path(path).name}\u2026")
        self._loader.load(path, self.scales.get(path))

    def set_slide_magnification(self) -> None:
        """Slide panel ▸ Set objective / pixel size…: ask, store for this slide, reopen it at the new scale."""
        if self.current_path and self.scales.ask_and_set(self, self.current_path, self.slide_info):
            self.open_slide(self.current_path)

    def _on_loaded(self, result: LoadedSlide) -> None:
        previous, self.slide = self.slide, result.slide
        self.slide_info = result.info
        self.current_path = result.path
        self.last_error = ""
        self.last_load_thread_id = result.thread_id
        self._remove_heatmap()
        self.view.scale_bar.approximate = result.info.get("mpp_source") == "objective"
        self.view.set_slide(result.path, result.info, result.thumbnail, result.slide)
        self.properties.show_info(result.info)
        self.slide_actions.update_title()
        self.statusBar().showMessage(summary_line(result.info))
        self.settings.add_recent(result.path)
        self._refresh_recent_menu()
        self.add_slide_record(result.path)
        self.project.set_thumbnail(result.path, result.thumbnail)
        self.project.select(result.path)
        self.predictions.select_path(result.path)
        if previous is not None and previous is not result.slide:
            previous.close()
        self._show_current_prediction()
        self._refresh_view_status()
        self._refresh_actions()
        self.slide_loaded.emit(result.path)

    def _on_failed(self, path: str, message: str) -> None:
        if not self.view.has_slide():
            self.view.set_message(f"{message}\n\n{EMPTY_MESSAGE}")
        if not self.project.status_text(path):  # a queued or classified slide's row is the classifier's to set
            self.mark_unreadable(path, message)
        self._show_error("Cannot open slide", message, "The slide could not be opened")
        self.slide_failed.emit(message)

    def _on_reader_crashed(self, message: str) -> None:
        """The shown slide's reader process died (a crafted or damaged file): close the slide, say why in the
        viewer and the list; the rest of the app carries on."""
        path = self.current_path
        self.close_slide()
        self.view.set_message(message)
        if path:
            self.mark_unreadable(path, message)
        self._show_error("Cannot read slide", message, "The slide could not be read")
        self.slide_failed.emit(message)

    def mark_unreadable(self, path: str, message: str) -> None:
        """Mark a listed slide failed, with the reason (the message without the file name it starts with)."""
        if path in self.project.paths():
            reason = message.split(": ", 1)[1] if message.startswith(Path(path).name + ": ") else message
            self.project.set_status(path, reason, "failed")

    def close_slide(self) -> None:
        self._remove_heatmap()
        self.view.clear_slide()
        if self.slide is not None:
            self.slide.close()
        self.slide, self.slide_info, self.current_path = None, None, None
        self.properties.clear_info()
        self.inspector.prediction.show_none()
        self.inspector.heatmap.set_models([])
        self.inspector.gallery.clear()
        self.slide_actions.refresh()  # the title, and the empty project's hint in the viewer
        self.statusBar().showMessage("Slide closed", 3000)  # not the closed slide's summary
        self._refresh_view_status()
        self._refresh_actions()

    def add_slide_record(self, path: str) -> SlideRecord:
        """The session's record of ``path`` (an absolute path), listed in the project panel from now on."""
        if path not in self.records:
            self.records[path] = SlideRecord(path)
            self.project.add_slide(path)
            self.slide_actions.listed(path)
        return self.records[path]

    def _activate_slide(self, path: str) -> None:
        if path != self.current_path:
            self.open_slide(path)

    def _refresh_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.settings.recent_files()
        for i, path in enumerate(recent):
            action = self.recent_menu.addAction(f"&{(i + 1) % 10} {Path(path).name}")
            action.setToolTip(path)
            action.setData(path)
            action.triggered.connect(lambda _=False, p=path: self.open_slide(p))
        if recent:
            self.recent_menu.addSeparator()
            self.recent_menu.addAction("Clear List", self._clear_recent)
        self.recent_menu.setEnabled(bool(recent))

    def _clear_recent(self) -> None:
        self.settings.clear_recent()
        self._refresh_recent_menu()

    # --- drag and drop -----------------------------------------------------------------------------------
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
        projects = [f for f in files if Path(f).is_dir() and (Path(f) / "project.json").is_file()]
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
        if self.model is None and not self._model_loader.busy():
            self.statusBar().showMessage("No model loaded: the slides are open but not classified "
                                         "(File \u25b8 Load Model\u2026)", 8000)
            return
        self.classify(slides)

    # --- models ------------------------------------------------------------------------------------------
    def choose_model(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load Model", self.settings.last_dir("models"),
                                              "D&D models (*.safetensors);;All files (*)")
        if path:
            self.settings.set_last_dir("models", path)
            self.load_model(path)

    def load_model(self, path) -> None:
        """Load and check a model in the background; the current model stays active until it passes."""
        self.project.model_box.show_loading(str(path))
        self.statusBar().showMessage(f"Loading model {Path(str(path)).name}\u2026")
        self._model_loader.load(str(path))

    def _on_model_loaded(self, model: ReadyModel) -> None:
        self.model = model
        notes = str(model.card.get("notes", ""))
        self.project.model_box.show_model(model.name, model.summary(), model.is_demo, notes)
        self.statusBar().showMessage(f"Model {model.name} ready" + (" (demo model, not for diagnosis)"
                                                                    if model.is_demo else ""), 6000)
        self._refresh_actions()
        self.model_ready.emit(model)
        waiting, self._waiting_for_model = self._waiting_for_model, []
        if waiting:
            self.classify(waiting)

    def _on_model_failed(self, path: str, message: str) -> None:
        keep = f" ({self.model.name} stays active)" if self.model is not None else ""
        name = Path(path).name          # engine messages about a file's content already start with its name
        self.project.model_box.show_error(f"{message if message.startswith(name) else f'{name}: {message}'}{keep}")
        self._show_error("Cannot use this model", message, f"{Path(path).name} cannot be used")
        if self._waiting_for_model and self.model is None:
            for p in self._waiting_for_model:
                self.project.set_status(p, "not classified: no model", "failed")
            self._waiting_for_model = []
        self._refresh_actions()
        self.model_failed.emit(message)

    def choose_labels(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Load Labels", self.settings.last_dir("labels"),
                                              "CSV files (*.csv);;All files (*)")
        if path:
            self.settings.set_last_dir("labels", path)
            try:
                labels = read_labels_csv(path)
            except Exception as exc:
                self._show_error("Cannot read labels", str(exc))
                return
            self.predictions.model.set_true_labels(labels)
            self.project.set_labels(labels)
            self.statusBar().showMessage(f"{len(labels)} true labels loaded from {Path(path).name}", 6000)

    # --- classification ----------------------------------------------------------------------------------
    def choose_and_classify(self) -> None:
        paths, _ = QFileDialog.getOpenFileNames(self, "Classify Slides", self.settings.last_dir("slides"),
                                                slide_file_filter())
        if paths:
            self.settings.set_last_dir("slides", paths[0])
            self.handle_dropped_files(paths)

    def classify_current(self) -> None:
        if self.current_path:
            self.classify([self.current_path])

    def classify(self, paths: Sequence[str]) -> Optional[Job]:
        """Queue a job that classifies ``paths`` with the loaded model; None (with a message) without one."""
        paths = [os.path.abspath(str(p)) for p in paths]
        for p in paths:
            self.add_slide_record(p)
        if self.model is None:
            if self._model_loader.busy():
                self._waiting_for_model.extend(paths)
                for p in paths:
                    self.project.set_status(p, "waiting for the model\u2026", "running")
                return None
            self._show_error("No model", "load a model first (File \u25b8 Load Model\u2026)", "Cannot classify")
            return None
        paths, cancelled, answered = self.scales.ask_missing(self, paths)
        for p in cancelled:
            self.project.set_status(p, "cancelled: magnification unknown", "failed")
        if cancelled:
            self._show_error("Classification cancelled", magnification_dialog.cancelled_message(cancelled))
        if self._loader.pending_path in answered:       # show the new scale (panel, scale bar) at once
            self.open_slide(self._loader.pending_path)
        if not paths:
            return None
        model = self.model
        names = [Path(p).name for p in paths]
        title = f"Classify {names[0]}" if len(paths) == 1 else f"Classify {len(paths)} slides"
        out_dir = self.output_root / model.name
        job = Job(f"{title} \u2014 {model.name}", classify_job(model, paths, out_dir, self.scales.for_paths(paths)))
        job.result.connect(lambda pred, m=model: self._on_prediction(pred, m))
        job.changed.connect(lambda j=job: self._on_job_progress(j))
        for p in paths:
            record = self.add_slide_record(p)
            record.job = job
            self.project.set_status(p, "queued", "running")
            labels = labels_near(p)
            if labels:
                self.predictions.model.set_true_labels(labels)
        self.jobs.submit(job)
        self.jobs_dock.raise_()
        self.statusBar().showMessage(f"{title}: queued", 4000)
        if self.current_path in paths:
            self.inspector.prediction.show_running("Queued")
        return job

    def _on_job_progress(self, job: Job) -> None:
        if job.state != JobState.RUNNING:
            return
        for path, record in self.records.items():
            if record.job is job and record.prediction is None:
                self.project.set_status(path, f"classifying\u2026 {job.fraction * 100:.0f} %", "running")
        current = self.records.get(self.current_path or "")
        if current is not None and current.job is job and current.prediction is None:
            self.inspector.prediction.show_running(job.message)

    def _on_prediction(self, result: ClassifiedSlide, model: ReadyModel) -> None:
        self.add_prediction(result.prediction, model.class_names, model.name, model.is_demo, result.tissue)

    def add_prediction(self, prediction, class_names: Sequence[str], model_name: str, demo: bool = False,
                       tissue=None) -> None:
        """Record an engine ``SlidePrediction`` and show it (inspector, heatmap) if its slide is on screen;
        ``tissue`` (a boolean mask over the whole slide) keeps the heatmap's colour on tissue."""
        path = os.path.abspath(prediction.path)
        record = self.add_slide_record(path)
        record.prediction = prediction
        record.class_names = list(class_names)
        record.model_name = model_name
        record.demo = demo
        record.heatmap_model = "student"
        record.tissue = tissue
        record.job = None
        self.predictions.add_prediction(prediction, list(class_names), model_name, demo)
        if prediction.status == "done":
            p = max(prediction.probs)
            self.project.set_status(path, f"{prediction.predicted} \u00b7 {p * 100:.0f} %", "done")
            self.statusBar().showMessage(f"{Path(path).name}: {prediction.predicted} ({p * 100:.1f} %)"
                                         + (" \u2014 demo model, not for diagnosis" if demo else ""), 10000)
        else:
            self.project.set_status(path, "failed", "failed")
            self.statusBar().showMessage(f"{Path(path).name} not classified: {prediction.error}", 10000)
        if path == self.current_path and self.view.has_slide():
            self._show_current_prediction()
        self._refresh_actions()

    def _on_job_finished(self, job: Job) -> None:
        for path, record in self.records.items():
            if record.job is job:
                record.job = None
                if record.prediction is None:
                    word = "cancelled" if job.state == JobState.CANCELLED else "not classified"
                    self.project.set_status(path, word, "failed" if job.state == JobState.FAILED else "")
                    if path == self.current_path:
                        if job.state == JobState.FAILED:
                            self.inspector.prediction.show_failure(job.error)
                        else:
                            self.inspector.prediction.show_none("Cancelled" if job.state == JobState.CANCELLED
                                                                else "Not classified")
        if job.state == JobState.FAILED:
            self._show_error("Job failed", job.error, job.title)
        elif job.state == JobState.CANCELLED:
            self.statusBar().showMessage(f"{job.title}: cancelled; nothing half-written was kept", 8000)
        self._refresh_actions()   # a cancelled project job can be resumed
        self.job_finished.emit(job)

    # --- showing a prediction ----------------------------------------------------------------------------
    def current_record(self) -> Optional[SlideRecord]:
        return self.records.get(self.current_path) if self.current_path else None

    def _remove_heatmap(self) -> None:
        if self.heatmap_layer is not None:
            self.view.remove_overlay(self.heatmap_layer)
            self.heatmap_layer = None
        if self._patch_marker is not None:
            self.view.remove_overlay(self._patch_marker)
            self._patch_marker = None
        if hasattr(self, "export_png_action"):
            self._refresh_actions()

    def _show_current_prediction(self) -> None:
        self._remove_heatmap()
        record = self.current_record()
        box, controls, gallery = self.inspector.prediction, self.inspector.heatmap, self.inspector.gallery
        pred = record.prediction if record is not None else None
        if pred is None:
            if record is not None and record.job is not None:
                box.show_running(record.job.message)
            else:
                box.show_none()
            controls.set_models([])
            gallery.clear()
            return
        if pred.status != "done":
            box.show_failure(pred.error)
            controls.set_models([])
            gallery.clear("No patches: the slide was not classified.")
            return
        box.show_prediction(pred.predicted, record.class_names, pred.probs, pred.n_patches, record.model_name,
                            record.demo, note=pred.note)
        if not pred.scores or pred.coords is None or len(pred.coords) == 0:
            controls.set_models([])
            gallery.clear("This prediction has no per-patch scores.")
            self.prediction_shown.emit(record.path)
            return
        layer = HeatmapLayer(pred.coords, pred.patch_size_level0, pred.scores, tuple(self.slide_info["dimensions"]),
                             self.heatmap_style, record.heatmap_model, record.tissue)
        self.heatmap_layer = layer
        self.view.add_overlay(layer)
        controls.set_models(layer.model_names, layer.model)
        controls.set_heatmap_style(self.heatmap_style)
        self._refresh_heatmap_details()
        self._refresh_actions()
        self.prediction_shown.emit(record.path)

    def _refresh_heatmap_details(self) -> None:
        layer = self.heatmap_layer
        if layer is None:
            return
        controls = self.inspector.heatmap
        controls.set_counts(layer.count_at_or_above(self.heatmap_style.threshold), len(layer.raw))
        self.inspector.gallery.show_patches(self.current_path, layer.coords, layer.patch_size, layer.raw,
                                            layer.normalised, self.heatmap_style.colormap)

    def set_heatmap_style(self, style: HeatmapStyle) -> None:
        old, self.heatmap_style = self.heatmap_style, style
        self.show_heatmap_action.setChecked(style.visible)
        if self.heatmap_layer is not None:
            self.heatmap_layer.set_style(style)
            self.inspector.heatmap.set_counts(self.heatmap_layer.count_at_or_above(style.threshold),
                                              len(self.heatmap_layer.raw))
            if (old.colormap, old.normalise) != (style.colormap, style.normalise):
                self._refresh_heatmap_details()

    def set_heatmap_model(self, name: str) -> None:
        record = self.current_record()
        if self.heatmap_layer is None or record is None:
            return
        self.heatmap_layer.set_model(name)
        record.heatmap_model = name
        self._refresh_heatmap_details()

    def toggle_heatmap(self, checked: bool) -> None:
        controls = self.inspector.heatmap
        if controls.show_box.isChecked() != checked:
            controls.show_box.setChecked(checked)  # emits style_changed → set_heatmap_style
        else:
            self.set_heatmap_style(controls.heatmap_style())

    def centre_on_patch(self, index: int) -> None:
        """Centre the viewer on patch ``index``, large enough to judge (a third of the view), outlined."""
        layer = self.heatmap_layer
        if layer is None:
            return
        rect = layer.patch_rect(index)
        vp = self.view.viewport().rect()
        zoom = min(vp.width(), vp.height()) / 3.0 / rect.width()
        self.view.centre_on(rect.center(), zoom)
        if self._patch_marker is None:
            marker = QGraphicsRectItem()
            pen = QPen(QColor(255, 214, 0), 3)
            pen.setCosmetic(True)
            marker.setPen(pen)
            marker.setZValue(20)
            self._patch_marker = marker
            self.view.add_overlay(marker)
        self._patch_marker.setRect(QRectF(rect))
        score = layer.raw[index]
        self.statusBar().showMessage(f"Patch {index}: attention {layer.normalised[index]:.3f} "
                                     f"(raw {score:.4g})", 6000)

    # --- exports -----------------------------------------------------------------------------------------
    def _export_target(self, title: str, suffix: str, filt: str) -> Optional[str]:
        record = self.current_record()
        if self.heatmap_layer is None or record is None:
            self._show_error("Nothing to export", "classify the slide first: it has no heatmap yet")
            return None
        default = Path(self.settings.last_dir("exports") or str(Path.home())) / \
            f"{Path(record.path).stem}_{self.heatmap_layer.model}_heatmap{suffix}"
        path, _ = QFileDialog.getSaveFileName(self, title, str(default), filt)
        if path:
            self.settings.set_last_dir("exports", path)
        return path or None

    def choose_export_png(self) -> None:
        path = self._export_target("Export Heatmap PNG", ".png", "PNG images (*.png)")
        if path:
            self.export_heatmap_png(path)

    def choose_export_geojson(self) -> None:
        path = self._export_target("Export Heatmap GeoJSON", ".geojson", "GeoJSON (*.geojson *.json)")
        if path:
            self.export_heatmap_geojson(path)

    def choose_export_csv(self) -> None:
        if not self.predictions.model.rows:
            self._show_error("Nothing to export", "no slide has been classified yet")
            return
        default = Path(self.settings.last_dir("exports") or str(Path.home())) / "predictions.csv"
        path, _ = QFileDialog.getSaveFileName(self, "Export Predictions", str(default), "CSV files (*.csv)")
        if path:
            self.settings.set_last_dir("exports", path)
            try:
                self.predictions.export_csv(path)
            except Exception as exc:
                self._show_error("Export failed", str(exc))
            else:
                self.statusBar().showMessage(f"Predictions written to {path}", 6000)

    def export_heatmap_png(self, path: str) -> Optional[Job]:
        """Render the heatmap as shown over the slide and write it as a PNG, as a job."""
        layer, record = self.heatmap_layer, self.current_record()
        if layer is None or record is None:
            return None
        fn = heatmap_png_job(path, record.path, layer.coords, layer.patch_size, layer.raw, self.heatmap_style,
                             record.tissue, demo=record.demo)
        return self._submit_export(f"Export {Path(path).name}", fn)

    def export_heatmap_geojson(self, path: str) -> Optional[Job]:
        """Write one QuPath tile per patch with its attention and the slide's class probabilities, as a job."""
        layer, record = self.heatmap_layer, self.current_record()
        if layer is None or record is None:
            return None
        pred = record.prediction
        probs = pred.model_probs.get(layer.model, pred.probs)
        fn = heatmap_geojson_job(path, layer.coords, layer.patch_size, layer.raw, probs, record.class_names,
                                 layer.model, self.heatmap_style.normalise)
        return self._submit_export(f"Export {Path(path).name}", fn)

    def _submit_export(self, title: str, fn) -> Job:
        job = Job(title, fn)
        job.finished.connect(lambda j: j.state == JobState.DONE and
                             self.statusBar().showMessage(f"Written: {j.value}", 8000))
        return self.jobs.submit(job)

    # --- view ----------------------------------------------------------------------------------------------
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
        if theme in getattr(self, "theme_actions", {}):
            self.theme_actions[theme].setChecked(True)
        self.theme = theme
        if remember:
            self.settings.set_theme(theme)

    def _refresh_view_status(self) -> None:
        self.status.show_view(self.view)
        presets = self.view.available_presets()
        for mag_value, action in self.magnification_actions.items():
            action.setEnabled(mag_value in presets)

    def _on_cursor(self, point: Optional[QPointF]) -> None:
        self.status.show_cursor(point, self.view.mpp)
        if point is None:
            if self.heatmap_layer is not None:
                self.inspector.heatmap.set_hover("Point at the slide to read a patch's score.")
            return
        layer = self.heatmap_layer
        if layer is not None:
            hit = layer.score_at(point)
            if hit is None:
                self.inspector.heatmap.set_hover("No patch here (not tissue, or not scored).")
            else:
                self.inspector.heatmap.set_hover(
                    f"Patch {hit.index}: attention {hit.normalised:.3f} "
                    f"({'percentile' if layer.style.normalise == 'percentile' else 'scaled'}), raw {hit.raw:.4g} "
                    f"\u2014 {model_label(layer.model)}")

    def _refresh_actions(self) -> None:
        has_slide = self.view.has_slide()
        self.classify_current_action.setEnabled(has_slide and self.model is not None)
        self.close_action.setEnabled(has_slide)
        has_heatmap = has_slide and self.heatmap_layer is not None
        self.export_png_action.setEnabled(has_heatmap)
        self.export_geojson_action.setEnabled(has_heatmap)
        self.export_csv_action.setEnabled(bool(self.predictions.model.rows))
        if hasattr(self, "slide_actions"):
            self.slide_actions.remove_action.setEnabled(has_slide)
        has_project = self.session is not None
        self.close_project_action.setEnabled(has_project)
        self.resume_action.setEnabled(has_project and bool(self.session.resumable()))

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

    # --- projects ------------------------------------------------------------------------------------------
    def show_tab(self, widget: QWidget) -> None:
        """Leave the start screen for the workspace and bring ``widget`` (viewer, curves, results) forward."""
        self.central.setCurrentWidget(self.workspace)
        self.workspace.setCurrentWidget(widget)

    def _refresh_recent_projects(self) -> None:
        menu = self.recent_projects_menu
        menu.clear()
        paths = self.settings.recent_projects()
        for path in paths:
            menu.addAction(path, lambda _=False, p=path: self.open_project(p))
        menu.setEnabled(bool(paths))
        self.start_screen.set_recent(paths)

    def new_project(self, folder: Optional[str] = None) -> Optional[ProjectSession]:
        """Create a project in ``folder`` (asked for when not given) and open it."""
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "New Project \u2014 choose an empty folder",
                                                      self.settings.last_dir("projects"))
            if not folder:
                return None
        try:
            project = Project.create(folder)
        except (ProjectError, OSError) as exc:
            self._show_error("New Project", str(exc), "The project could not be created")
            return None
        self.settings.set_last_dir("projects", str(Path(folder).parent))
        return self._set_project(project)

    def open_project(self, folder: Optional[str] = None) -> Optional[ProjectSession]:
        if folder is None:
            folder = QFileDialog.getExistingDirectory(self, "Open Project", self.settings.last_dir("projects"))
            if not folder:
                return None
        # everything that can fail is read before the open project is closed: a broken project leaves it open
        try:
            project = Project.open(folder)
            if self.session is not None and self.session.project.root == project.root:
                return self.session
            book = JobBook(project)
        except (DnDError, OSError) as exc:
            self._show_error("Open Project", str(exc), "The project could not be opened")
            return None
        return self._set_project(project, book)

    def close_project(self) -> bool:
        """Close the open project; refused (False) while its jobs run and the user does not confirm."""
        if self.session is None:
            return True
        active = self.session.active_jobs()
        if active and not self.confirm_quit(len(active)):
            return False
        for job in active:
            job.cancel()
        self.session.deleteLater()
        self.session = None
        self.curves.clear()
        self.results.set_runs([])
        self.slide_actions.refresh()
        self._refresh_actions()
        return True

    def _set_project(self, project: Project, book: Optional[JobBook] = None) -> Optional[ProjectSession]:
        if not self.close_project():
            return None
        session = ProjectSession(project, self.jobs, self, book=book)
        self.session = session
        session.epoch.connect(self.curves.add_record)
        session.train_started.connect(self._on_train_started)
        session.run_finished.connect(self._on_run_finished)
        session.changed.connect(self._on_project_changed)
        self.settings.add_recent_project(str(project.root))
        self._refresh_recent_projects()
        self._list_project_slides()
        missing = project.missing_slides()
        for path in missing:
            self.project.set_status(path, "file not found", "failed")
        runs = [d for d in project.run_dirs() if d.is_dir()]
        if runs:
            self.curves.load_history(runs[-1])
        self.refresh_results()
        model = project.model_path
        if model is not None and model.is_file():
            self.load_model(model)
        self.slide_actions.refresh()  # the project's name and next step in the panel and the title
        self.central.setCurrentWidget(self.workspace)
        self.statusBar().showMessage(
            f"Project {project.name}: {len(project.slides)} slides"
            + (f" ({len(missing)} not found)" if missing else "") + f", {len(project.runs)} runs", 10000)
        interrupted = session.interrupted()
        if interrupted:
            self._offer_resume(interrupted)
        self._refresh_actions()
        self.project_opened.emit(session)
        return session

    def _list_project_slides(self) -> None:
        for path in self.session.project.slides:
            self.add_slide_record(path)

    def _on_project_changed(self) -> None:
        if self.session is None:
            return
        self._list_project_slides()
        self.refresh_results()
        self.slide_actions.refresh()

    def _on_train_started(self, run_dir: str, title: str) -> None:
        """One training run's curves at a time: its finished folds (a resumed run) from disk, then live epochs."""
        self.curves.clear()
        if Path(run_dir).is_dir():
            self.curves.load_history(run_dir)
        self.workspace.setTabText(self.workspace.indexOf(self.curves_scroll),
                                  f"Training \u2014 {title}".replace("&", "&&"))  # "&" would be a mnemonic

    def _on_run_finished(self, run_dir: str) -> None:
        self.refresh_results()
        model = self.session.project.model_path if self.session is not None else None
        # a first trained model replaces no model or the demo, never a model the user chose
        if model is not None and model.is_file() and (self.model is None or self.model.is_demo):
            self.load_model(model)

    def refresh_results(self) -> None:
        if self.session is None:
            self.results.set_runs([])
            return
        self.results.set_runs([d for d in self.session.project.run_dirs() if (d / "summary.json").is_file()])

    def _offer_resume(self, records: Sequence[JobRecord]) -> None:
        names = "".join(f"<li>{r.title} \u2014 {r.message or r.state}</li>" for r in records[:8])
        box = QMessageBox(QMessageBox.Icon.Information, APP_TITLE,
                          f"{len(records)} job{'s' if len(records) != 1 else ''} of this project stopped before "
                          "finishing.", parent=self)
        box.setInformativeText(f"<ul>{names}</ul>Resume them now? They continue from their last checkpoints "
                               "(Project \u25b8 Resume Interrupted Jobs later).")
        box.setStandardButtons(QMessageBox.StandardButton.Cancel)
        resume = box.addButton("Resume", QMessageBox.ButtonRole.AcceptRole)
        box.button(QMessageBox.StandardButton.Cancel).setText("Later")
        box.setModal(False)
        box.buttonClicked.connect(lambda b: self.resume_jobs(list(records)) if b is resume else None)
        self.resume_box = box
        box.show()

    def resume_jobs(self, records: Optional[Sequence[JobRecord]] = None) -> list:
        """Resume ``records`` (default: every stopped job, cancelled ones included)."""
        if self.session is None:
            return []
        jobs = self.session.resume(None if records is None else list(records))
        if jobs:
            self.show_tab(self.curves_scroll)
            self.jobs_dock.raise_()
            self.statusBar().showMessage(f"Resumed {len(jobs)} job{'s' if len(jobs) != 1 else ''}", 8000)
        else:
            self.statusBar().showMessage("No interrupted jobs to resume", 5000)
        self._refresh_actions()
        return jobs

    def open_wizard(self) -> Optional[TrainingWizard]:
        """The training wizard for the open project (a new project is created first when none is open)."""
        if self.session is None and self.new_project() is None:
            return None
        if self.wizard is not None and self.wizard.isVisible():
            self.wizard.raise_()
            return self.wizard
        self.wizard = TrainingWizard(self.session.project, self)
        self.wizard.launch_requested.connect(self.launch_training)
        self.wizard.setWindowModality(Qt.WindowModality.WindowModal)
        self.wizard.show()
        return self.wizard

    def open_settings(self):
        """File ▸ Settings (window-modal): where extraction jobs run. Returns the dialog (for tests)."""
        from .settings_dialog import SettingsDialog
        dialog = SettingsDialog(self.settings, self)
        dialog.open()
        return dialog

    def launch_training(self, extraction: Optional[ExtractionPlan], training: TrainingPlan) -> list:
        if self.session is None:
            return []
        try:
            self.scales.adopt(self.session.project)     # magnifications set before the project existed
            jobs = self.session.launch(extraction, training, ray_address=self.settings.ray_address())
        except ProjectError as exc:
            self._show_error("Train", str(exc), "The jobs could not be started")
            return []
        self._list_project_slides()
        self.show_tab(self.curves_scroll)
        self.jobs_dock.raise_()
        self.statusBar().showMessage(f"{len(jobs)} job{'s' if len(jobs) != 1 else ''} queued", 8000)
        return jobs

    def open_path(self, path: str) -> None:
        """A path handed over by the system (a double-click in a file manager, Finder's open event): a project is
        opened, a model loaded, a slide shown (not classified: the user only asked to look at it)."""
        p = Path(path)
        if p.name == "project.json" or (p.is_dir() and (p / "project.json").is_file()):
            self.open_project(str(p.parent if p.name == "project.json" else p))
        elif is_model_path(str(p)):
            self.load_model(str(p))
        elif is_slide_path(str(p)) and p.exists():
            self.add_slide_record(str(p.resolve()))
            self.open_slide(str(p))
        else:
            self._show_error("Open", f"{p.name}: not a slide, model or project", f"Cannot open {p.name}")

    def open_project_slide(self, sid: str) -> None:
        path = self.session.project.slide_path(sid) if self.session is not None else None
        if path is None or not path.is_file():
            self.statusBar().showMessage(f"{sid}: the slide file is not linked to this project (features only)"
                                         if path is None else f"{sid}: {path} not found", 8000)
            return
        self.add_slide_record(str(path))
        self.open_slide(str(path))

    def use_project_model(self, path: str) -> None:
        """Make ``path`` the project's classification model and load it."""
        if self.session is not None:
            try:
                self.session.set_model(path)
            except ProjectError as exc:
                self._show_error("Model", str(exc))
                return
        self.load_model(path)

    # --- shutdown ------------------------------------------------------------------------------------------
    def shutdown(self) -> None:
        """Cancel jobs, stop every worker and close the open slide; safe to call more than once."""
        self.jobs.shutdown()
        self.results.shutdown()
        self._loader.shutdown()
        self._model_loader.shutdown()
        self.inspector.gallery.wait()
        self.slide_actions.shutdown()
        self.view.shutdown()
        if self.slide is not None:
            self.slide.close()
            self.slide = None

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
