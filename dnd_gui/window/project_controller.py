"""The open project's lifecycle in the window: create, open, close, train, resume, and what the window shows of it.

The project itself (:class:`dnd_engine.project.Project`) and its jobs (:class:`~dnd_gui.jobs.project_session.
ProjectSession`) decide everything; this controller only asks the user (folders, "resume now?", "quit with jobs
running?") and keeps the curves, the results page, the slide list and the recent-projects menu in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QFileDialog, QMessageBox

from dnd_engine.errors import DnDError
from dnd_engine.project import ExtractionPlan, JobBook, JobRecord, Project, ProjectError, TrainingPlan

from ..jobs.project_session import ProjectSession
from ..wizard import TrainingWizard

if TYPE_CHECKING:  # pragma: no cover
    from .main_window import MainWindow


class ProjectController(QObject):
    """Holds ``session`` (the open project's :class:`ProjectSession`, or None), the wizard and the resume box."""

    changed = Signal()   # a project was opened or closed, or its jobs changed what can be resumed

    def __init__(self, win: "MainWindow"):
        super().__init__(win)
        self.win = win
        self.session: Optional[ProjectSession] = None
        self.wizard: Optional[TrainingWizard] = None
        self.resume_box: Optional[QMessageBox] = None
        for signal in (win.jobs.job_added, win.jobs.job_finished, win.jobs.job_requeued):
            signal.connect(lambda *_: self.changed.emit())   # what can be resumed follows the jobs

    @property
    def project(self) -> Optional[Project]:
        return self.session.project if self.session is not None else None

    # --- recent projects ---------------------------------------------------------------------------------
    def refresh_recent(self) -> None:
        win = self.win
        menu = win.recent_projects_menu
        menu.clear()
        paths = win.settings.recent_projects()
        for path in paths:
            menu.addAction(path, lambda _=False, p=path: self.open_project(p))
        menu.setEnabled(bool(paths))
        win.start_screen.set_recent(paths)

    # --- opening and closing -----------------------------------------------------------------------------
    def new_project(self, folder: Optional[str] = None) -> Optional[ProjectSession]:
        """Create a project in ``folder`` (asked for when not given) and open it."""
        win = self.win
        if folder is None:
            folder = QFileDialog.getExistingDirectory(win, "New Project \u2014 choose an empty folder",
                                                      win.settings.last_dir("projects"))
            if not folder:
                return None
        try:
            project = Project.create(folder)
        except (ProjectError, OSError) as exc:
            win._show_error("New Project", str(exc), "The project could not be created")
            return None
        win.settings.set_last_dir("projects", str(Path(folder).parent))
        return self._set_project(project)

    def open_project(self, folder: Optional[str] = None) -> Optional[ProjectSession]:
        win = self.win
        if folder is None:
            folder = QFileDialog.getExistingDirectory(win, "Open Project", win.settings.last_dir("projects"))
            if not folder:
                return None
        # everything that can fail is read before the open project is closed: a broken project leaves it open
        try:
            project = Project.open(folder)
            if self.session is not None and self.session.project.root == project.root:
                return self.session
            book = JobBook(project)
        except (DnDError, OSError) as exc:
            win._show_error("Open Project", str(exc), "The project could not be opened")
            return None
        return self._set_project(project, book)

    def close_project(self) -> bool:
        """Close the open project; refused (False) while its jobs run and the user does not confirm."""
        win = self.win
        if self.session is None:
            return True
        active = self.session.active_jobs()
        if active and not win.confirm_quit(len(active)):
            return False
        for job in active:
            job.cancel()
        self.session.deleteLater()
        self.session = None
        win.curves.clear()
        win.results.set_runs([])
        win.slide_actions.refresh()
        self.changed.emit()
        return True

    def _set_project(self, project: Project, book: Optional[JobBook] = None) -> Optional[ProjectSession]:
        win = self.win
        if not self.close_project():
            return None
        session = ProjectSession(project, win.jobs, win, book=book)
        self.session = session
        session.epoch.connect(win.curves.add_record)
        session.train_started.connect(self._on_train_started)
        session.run_finished.connect(self._on_run_finished)
        session.changed.connect(self._on_project_changed)
        win.settings.add_recent_project(str(project.root))
        self.refresh_recent()
        self._list_slides()
        missing = project.missing_slides()
        for path in missing:
            win.slide_list.set_status(path, "file not found", "failed")
        runs = [d for d in project.run_dirs() if d.is_dir()]
        if runs:
            win.curves.load_history(runs[-1])
        self.refresh_results()
        model = project.model_path
        if model is not None and model.is_file():
            win.load_model(model)
        win.slide_actions.refresh()  # the project's name and next step in the panel and the title
        win.central.setCurrentWidget(win.workspace)
        win.statusBar().showMessage(
            f"Project {project.name}: {len(project.slides)} slides"
            + (f" ({len(missing)} not found)" if missing else "") + f", {len(project.runs)} runs", 10000)
        interrupted = session.interrupted()
        if interrupted:
            self._offer_resume(interrupted)
        self.changed.emit()
        win.project_opened.emit(session)
        return session

    def _list_slides(self) -> None:
        for path in self.session.project.slides:
            self.win.add_slide_record(path)

    def _on_project_changed(self) -> None:
        if self.session is None:
            return
        self._list_slides()
        self.refresh_results()
        self.win.slide_actions.refresh()

    # --- training and its results ------------------------------------------------------------------------
    def _on_train_started(self, run_dir: str, title: str) -> None:
        """One training run's curves at a time: its finished folds (a resumed run) from disk, then live epochs."""
        win = self.win
        win.curves.clear()
        if Path(run_dir).is_dir():
            win.curves.load_history(run_dir)
        win.workspace.setTabText(win.workspace.indexOf(win.curves_scroll),
                                 f"Training \u2014 {title}".replace("&", "&&"))  # "&" would be a mnemonic

    def _on_run_finished(self, run_dir: str) -> None:
        self.refresh_results()
        model = self.session.project.model_path if self.session is not None else None
        # a first trained model replaces no model or the demo, never a model the user chose
        current = self.win.model
        if model is not None and model.is_file() and (current is None or current.is_demo):
            self.win.load_model(model)

    def refresh_results(self) -> None:
        if self.session is None:
            self.win.results.set_runs([])
            return
        self.win.results.set_runs([d for d in self.session.project.run_dirs() if (d / "summary.json").is_file()])

    def open_wizard(self) -> Optional[TrainingWizard]:
        """The training wizard for the open project (a new project is created first when none is open)."""
        if self.session is None and self.new_project() is None:
            return None
        if self.wizard is not None and self.wizard.isVisible():
            self.wizard.raise_()
            return self.wizard
        self.wizard = TrainingWizard(self.session.project, self.win)
        self.wizard.launch_requested.connect(self.launch_training)
        self.wizard.setWindowModality(Qt.WindowModality.WindowModal)
        self.wizard.show()
        return self.wizard

    def open_settings(self):
        """File ▸ Settings (window-modal): where this project's extraction jobs run. Returns the dialog (tests)."""
        from ..dialogs.settings import SettingsDialog
        dialog = SettingsDialog(self.win.settings, self.win)
        dialog.open()
        return dialog

    def launch_training(self, extraction: Optional[ExtractionPlan], training: TrainingPlan) -> list:
        win = self.win
        if self.session is None:
            return []
        try:
            win.scales.adopt(self.session.project)     # magnifications set before the project existed
            jobs = self.session.launch(extraction, training, ray_address=win.settings.ray_address())
        except ProjectError as exc:
            win._show_error("Train", str(exc), "The jobs could not be started")
            return []
        self._list_slides()
        win.show_tab(win.curves_scroll)
        win.jobs_dock.raise_()
        win.statusBar().showMessage(f"{len(jobs)} job{'s' if len(jobs) != 1 else ''} queued", 8000)
        return jobs

    def open_project_slide(self, sid: str) -> None:
        path = self.session.project.slide_path(sid) if self.session is not None else None
        if path is None or not path.is_file():
            self.win.statusBar().showMessage(f"{sid}: the slide file is not linked to this project (features only)"
                                             if path is None else f"{sid}: {path} not found", 8000)
            return
        self.win.add_slide_record(str(path))
        self.win.open_slide(str(path))

    def use_project_model(self, path: str) -> None:
        """Make ``path`` the project's classification model and load it."""
        if self.session is not None:
            try:
                self.session.set_model(path)
            except ProjectError as exc:
                self.win._show_error("Model", str(exc))
                return
        self.win.load_model(path)

    # --- resuming ----------------------------------------------------------------------------------------
    def _offer_resume(self, records: Sequence[JobRecord]) -> None:
        from .main_window import APP_TITLE
        names = "".join(f"<li>{r.title} \u2014 {r.message or r.state}</li>" for r in records[:8])
        box = QMessageBox(QMessageBox.Icon.Information, APP_TITLE,
                          f"{len(records)} job{'s' if len(records) != 1 else ''} of this project stopped before "
                          "finishing.", parent=self.win)
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
        win = self.win
        if self.session is None:
            return []
        jobs = self.session.resume(None if records is None else list(records))
        if jobs:
            win.show_tab(win.curves_scroll)
            win.jobs_dock.raise_()
            win.statusBar().showMessage(f"Resumed {len(jobs)} job{'s' if len(jobs) != 1 else ''}", 8000)
        else:
            win.statusBar().showMessage("No interrupted jobs to resume", 5000)
        self.changed.emit()
        return jobs


__all__ = ["ProjectController"]
