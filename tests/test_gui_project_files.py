"""The app with broken project files and with bugs: a project that fails to load says why in one line and the open
one stays open; an exception nobody caught becomes a dialog with a copyable report and a crash log, and the app
goes on."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from dnd_engine.project import ExtractionPlan, JobBook, Project
from dnd_gui import crash

from gui_helpers import open_window

SHOTS = Path("/work/shots")


@pytest.fixture
def window(qtbot, tmp_path):
    win = open_window(qtbot, tmp_path / "settings.ini", tmp_path / "predictions")
    yield win
    win.shutdown()


def _shot(widget, name: str) -> None:
    if SHOTS.is_dir():
        widget.grab().save(str(SHOTS / f"i22-G5-{name}.png"))


def _project(tmp_path: Path, name: str) -> Project:
    project = Project.create(tmp_path / name)
    book = JobBook(project)
    book.mark(book.add("extract", "Extract", {"extraction": ExtractionPlan().to_dict()}).id, "done")
    return project


@pytest.mark.parametrize("breakage, words", [
    ("jobs_pid", "jobs.json: 'jobs[0].pid' must be a process id (a whole number \u2265 0), got a string ('123')"),
    ("jobs_json", "unreadable job list"),
    ("slides", "project.json: 'slides' must be a list of slide paths, got a string ('/etc')"),
])
def test_a_broken_project_says_why_and_the_open_one_stays_open(window, qtbot, tmp_path, breakage, words):
    good = _project(tmp_path, "good")
    session = window.open_project(str(good.root))
    assert session is not None and window.session is session
    bad = _project(tmp_path, "bad")
    if breakage == "jobs_pid":
        data = json.loads((bad.root / "jobs.json").read_text())
        data["jobs"][0]["pid"] = "123"
        (bad.root / "jobs.json").write_text(json.dumps(data))
    elif breakage == "jobs_json":
        (bad.root / "jobs.json").write_text('{"jobs": [')
    else:
        data = json.loads((bad.root / "project.json").read_text())
        data["slides"] = "/etc"
        (bad.root / "project.json").write_text(json.dumps(data))

    assert window.open_project(str(bad.root)) is None
    assert words in window.last_error and "\n" not in window.last_error
    assert window.error_box is not None and window.error_box.isVisible()
    if breakage == "slides":
        _shot(window.error_box, "broken-project")
    # the open project is still the open one, and usable
    assert window.session is session and session.project.root == good.root
    assert window.close_project_action.isEnabled()
    assert [r.state for r in session.book.records] == ["done"]
    session.book.add("train", "still works", {})
    assert Project.open(good.root).root == good.root and len(JobBook(good).records) == 2
    assert window.close_project() and window.session is None


def test_a_job_record_without_its_settings_fails_in_its_row(window, qtbot, tmp_path):
    """A hand-edited record (a training job with no plan, interrupted) is resumed: it fails with a message in its
    row; before, the KeyError came out of the Resume menu's handler."""
    project = Project.create(tmp_path / "p")
    book = JobBook(project)
    rec = book.add("train", "Train abmil", {"method": "abmil"})
    book.mark(rec.id, "interrupted")
    session = window.open_project(str(project.root))
    assert session is not None and [r.id for r in session.resumable()] == [rec.id]
    jobs = window.resume_jobs()
    assert len(jobs) == 1
    qtbot.waitUntil(lambda: jobs[0].state.finished, timeout=30_000)
    assert jobs[0].state.value == "failed"
    assert "keeps no training settings" in jobs[0].error and "Traceback" not in jobs[0].error
    assert JobBook(project).get(rec.id).state == "failed"


@pytest.fixture
def hook(qtbot, tmp_path, window, monkeypatch):
    """The app's crash hook, installed over ``window`` with a log folder of its own; the dialogs it would show
    are recorded."""
    shown = []
    monkeypatch.setattr(crash, "show_crash_dialog", lambda parent, message, report, log: shown.append(
        (parent, message, report, log)))
    handler = crash.install(window, tmp_path / "data" / crash.LOG_FOLDER)
    handler.shown = shown
    yield handler
    handler.uninstall()
    handler.deleteLater()


def test_an_exception_in_a_slot_shows_a_report_writes_a_log_and_the_app_goes_on(window, qtbot, tmp_path, hook):
    def broken_slot():
        raise ZeroDivisionError("the bug under test")

    QTimer.singleShot(0, broken_slot)
    qtbot.waitUntil(lambda: len(hook.shown) == 1, timeout=10_000)
    parent, message, report, log = hook.shown[0]
    assert parent is window and message == "ZeroDivisionError: the bug under test"
    logs = list((tmp_path / "data" / crash.LOG_FOLDER).glob("crash-*.txt"))
    assert [str(p) for p in logs] == [log]
    text = logs[0].read_text()
    assert text == report and "broken_slot" in text and "Traceback" in text
    assert "D&D Studio" in text and "PySide6" in text and "Platform" in text and "Thread: MainThread" in text
    assert not list(logs[0].parent.glob(".*.part"))     # written atomically: nothing half-written left
    # the app is still there and responds: timers fire, actions work, a project opens
    fired = []
    QTimer.singleShot(0, lambda: fired.append(True))
    qtbot.waitUntil(lambda: fired == [True], timeout=10_000)
    assert window.isVisible()
    assert window.new_project(str(tmp_path / "after")) is not None and window.session is not None


def test_an_exception_in_a_thread_is_reported_on_the_gui_thread(window, qtbot, tmp_path, hook):
    def worker():
        raise RuntimeError("worker thread bug")

    thread = threading.Thread(target=worker, name="bg-worker")
    thread.start()
    thread.join()
    qtbot.waitUntil(lambda: len(hook.shown) == 1, timeout=10_000)
    assert hook.shown[0][1] == "RuntimeError: worker thread bug" and "Thread: bg-worker" in hook.shown[0][2]
    assert len(hook.logs) == 1 and hook.logs[0].is_file()


def test_the_crash_dialog_copies_the_report(window, qtbot, tmp_path):
    report = crash.format_report(ValueError, ValueError("bad value"), None, "MainThread")
    dialog = crash.show_crash_dialog(window, "ValueError: bad value", report, str(tmp_path / "crash-1.txt"))
    qtbot.waitExposed(dialog)
    assert dialog.isVisible() and not dialog.isModal() and "crash-1.txt" in dialog.where.text()
    dialog.details_button.setChecked(True)
    dialog.resize(720, 480)
    _shot(dialog, "crash-dialog")
    dialog.copy_button.click()
    assert QApplication.clipboard().text() == report and "ValueError: bad value" in report
    again = crash.show_crash_dialog(window, "KeyError: 'x'", report, "")
    assert again is dialog and "2 errors" in dialog.heading.text() and "No crash log" in dialog.where.text()
    dialog.close_button.click()
    assert not dialog.isVisible() and window.isVisible()


def test_the_app_installs_the_hook_for_its_whole_run(qtbot, tmp_path, monkeypatch):
    """``dnd_gui.app.main`` installs the hook before its event loop runs, and puts the previous one back after: a
    slot that raises inside ``app.exec()`` is logged in the app's data folder and shown, and the loop goes on."""
    import sys

    from PySide6.QtWidgets import QWidget

    import dnd_gui.app as app_module

    class Window(QWidget):     # stands in for MainWindow: main's hook, not the window, is under test
        def __init__(self, model=None, theme=None):
            super().__init__()

        def show(self):
            super().show()
            QTimer.singleShot(0, self.broken_slot)

        def broken_slot(self):
            raise KeyError("raised inside app.exec")

    shown = []

    def record(parent, message, report, log):
        shown.append((parent, message, log))
        QTimer.singleShot(0, QApplication.quit)    # the loop is still running: it delivers this, and ends

    monkeypatch.setattr(app_module, "MainWindow", Window)
    monkeypatch.setattr(app_module, "favour_the_ui_thread", lambda: None)
    monkeypatch.setattr(app_module, "warm_up_imports", lambda: None)
    monkeypatch.setattr(crash, "default_log_dir", lambda: tmp_path / "data" / crash.LOG_FOLDER)
    monkeypatch.setattr(crash, "show_crash_dialog", record)
    qapp = QApplication.instance()
    names = (qapp.applicationName(), qapp.organizationName(), qapp.applicationVersion(), qapp.desktopFileName())
    before = sys.excepthook
    # closing the stand-in window after app.exec() would otherwise quit the application (the last window closed):
    # every later test's event loop would then end at once
    quit_on_close = qapp.quitOnLastWindowClosed()
    qapp.setQuitOnLastWindowClosed(False)
    guard = QTimer()    # without the hook nothing would end the loop: end it anyway (the asserts then fail)
    guard.setSingleShot(True)
    guard.timeout.connect(QApplication.quit)
    guard.start(120_000)
    try:
        assert app_module.main(["--no-model"]) == 0
    finally:
        guard.stop()
        qapp.setApplicationName(names[0]), qapp.setOrganizationName(names[1])
        qapp.setApplicationVersion(names[2]), qapp.setDesktopFileName(names[3])
        for w in QApplication.topLevelWidgets():
            if isinstance(w, Window):
                w.close(), w.deleteLater()
        qapp.setQuitOnLastWindowClosed(quit_on_close)
    assert len(shown) == 1 and isinstance(shown[0][0], Window) and shown[0][1] == "KeyError: 'raised inside app.exec'"
    logs = list((tmp_path / "data" / crash.LOG_FOLDER).glob("crash-*.txt"))
    assert [str(p) for p in logs] == [shown[0][2]] and "broken_slot" in logs[0].read_text()
    assert sys.excepthook is before       # uninstalled when the app ends
