"""The app's last line of defence: an exception nobody caught becomes a dialog, a crash log, and no exit.

Every expected failure (a bad slide, a broken project, a model that will not load) is caught where it happens and
shown as one line. What is left are bugs. By default PySide prints a traceback for an exception in a slot or a
thread to a terminal the user usually does not have, and the click that raised it silently does nothing. Here
``sys.excepthook`` (slots, Qt virtual overrides, ``QThread.run``) and ``threading.excepthook`` (Python threads)
hand it to :class:`CrashHandler`, which

* writes a crash log (traceback, versions, platform) to ``<app data>/crash-logs/crash-<time>.txt``, atomically,
  from the thread that raised (a log is written even if the GUI thread is the one in trouble);
* shows, on the GUI thread, a non-modal dialog with a short message and a **Copy report** button, reused while
  it is open (a slot that raises on every repaint must not open a hundred windows);
* returns: the event loop goes on, the window stays usable.

:func:`install` is what ``dnd_gui.app`` calls at start; tests call it too (with their own log folder) and
replace :func:`show_crash_dialog` to see what would have been shown.
"""

from __future__ import annotations

import datetime as _dt
import platform
import sys
import threading
import traceback
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QObject, QStandardPaths, Qt, Signal, qVersion
from PySide6.QtWidgets import (QApplication, QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QPlainTextEdit,
                               QPushButton, QStyle, QVBoxLayout, QWidget)

from dnd_engine.text import first_line

LOG_FOLDER = "crash-logs"
MAX_LOGS = 20            # per session: a slot raising on every repaint must not fill the disk
SUMMARY_CHARS = 240
# libraries named in a report when the app already imported them (a report never imports anything)
_LIBRARIES = ("numpy", "torch", "openslide", "tifffile", "safetensors", "h5py", "PIL")


def data_dir() -> Path:
    """The app's data folder (the one ``predictions/`` lives in)."""
    base = QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    return Path(base or Path.home() / ".dnd-studio")


def default_log_dir() -> Path:
    return data_dir() / LOG_FOLDER


def versions() -> list:
    """``name version`` lines: the app, Python, Qt, the platform, and the heavy libraries already loaded."""
    from dnd_engine import __version__
    import PySide6
    lines = [f"D&D Studio {__version__}", f"Python {platform.python_version()} ({sys.executable})",
             f"PySide6 {PySide6.__version__}, Qt {qVersion()}",
             f"Platform {platform.platform()} ({platform.machine()})"]
    app = QApplication.instance()
    if app is not None:
        lines.append(f"Qt platform plugin {QApplication.platformName()}")
    for name in _LIBRARIES:
        module = sys.modules.get(name)
        if module is not None:
            lines.append(f"{name} {getattr(module, '__version__', '?')}")
    return lines


def summary(exc_type, exc) -> str:
    """One short line for the dialog: the exception's type and the first line of its message."""
    text = first_line(exc, None)
    line = f"{exc_type.__name__}: {text}" if text else exc_type.__name__
    return line if len(line) <= SUMMARY_CHARS else line[: SUMMARY_CHARS - 1] + "\u2026"


def format_report(exc_type, exc, tb, thread: str = "") -> str:
    """What a bug report needs: when, where (thread), the versions, and the full traceback."""
    when = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    head = [f"D&D Studio crash report, {when}", f"Thread: {thread or threading.current_thread().name}",
            *versions(), ""]
    return "\n".join(head) + "\n" + "".join(traceback.format_exception(exc_type, exc, tb))


def write_crash_log(report: str, folder: Path) -> Optional[Path]:
    """``folder/crash-<time>.txt`` (atomic: temp file then rename); None when it cannot be written — a crash
    report must never raise a second error."""
    from dnd_engine.atomic import write_text_atomic
    from dnd_engine.errors import DnDError
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    try:
        return write_text_atomic(Path(folder) / f"crash-{stamp}.txt", report)
    except (OSError, DnDError):
        return None


class CrashDialog(QDialog):
    """Non-modal: "Something went wrong", the short message, where the log is, and Copy report / Close."""

    def __init__(self, parent: Optional[QWidget] = None):
        super().__init__(parent)
        self.setObjectName("crashDialog")
        self.setWindowTitle("D&D Studio \u2014 unexpected error")
        self.setModal(False)
        self.report = ""
        self.count = 0
        icon = QLabel()
        icon.setPixmap(self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxCritical).pixmap(40, 40))
        icon.setAlignment(Qt.AlignmentFlag.AlignTop)
        self.heading = QLabel()
        self.heading.setWordWrap(True)
        self.message = QLabel()
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.where = QLabel()
        self.where.setWordWrap(True)
        self.where.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details = QPlainTextEdit()
        self.details.setReadOnly(True)
        self.details.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.details.setVisible(False)
        self.details.setMinimumHeight(200)
        buttons = QDialogButtonBox()
        self.copy_button = QPushButton("Copy report")
        self.copy_button.setToolTip("Copy the traceback, versions and platform, to paste into a bug report")
        self.details_button = QPushButton("Details")
        self.details_button.setCheckable(True)
        self.close_button = QPushButton("Close")
        buttons.addButton(self.copy_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.details_button, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.addButton(self.close_button, QDialogButtonBox.ButtonRole.RejectRole)
        self.copy_button.clicked.connect(self.copy_report)
        self.details_button.toggled.connect(self.details.setVisible)
        self.close_button.clicked.connect(self.close)
        text = QVBoxLayout()
        text.addWidget(self.heading)
        text.addWidget(self.message)
        text.addWidget(self.where)
        row = QHBoxLayout()
        row.addWidget(icon)
        row.addLayout(text, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addWidget(self.details, 1)
        layout.addWidget(buttons)
        self.setMinimumWidth(520)

    def show_crash(self, message: str, report: str, log_path: str) -> None:
        self.count += 1
        self.report = report
        again = f" ({self.count} errors so far; the last one is shown)" if self.count > 1 else ""
        self.heading.setText(f"<b>Something went wrong.</b> D&amp;D Studio keeps running: you can go on "
                             f"working, but what you just did may not have finished.{again}")
        self.message.setText(message)
        self.where.setText(f"A crash log was saved to {log_path}" if log_path else
                           "No crash log could be saved; use Copy report to keep the details.")
        self.details.setPlainText(report)
        self.copy_button.setText("Copy report")
        self.show()
        self.raise_()

    def copy_report(self) -> None:
        QApplication.clipboard().setText(self.report)
        self.copy_button.setText("Copied")


_dialog: Optional[CrashDialog] = None


def show_crash_dialog(parent: Optional[QWidget], message: str, report: str, log_path: str) -> QDialog:
    """Show (or update, while it is open) the crash dialog over ``parent``. Tests replace this function."""
    global _dialog
    try:
        reuse = _dialog is not None and _dialog.isVisible() and _dialog.parentWidget() is parent
    except RuntimeError:    # deleted with its window
        reuse = False
    if not reuse:
        _dialog = CrashDialog(parent)
    _dialog.show_crash(message, report, log_path)
    return _dialog


class CrashHandler(QObject):
    """The hooks, the log folder and the window the dialog belongs to. Lives on the GUI thread; ``crashed`` is
    emitted from whichever thread raised and delivered (queued) to the GUI thread."""

    crashed = Signal(str, str, str)     # short message, report, crash log path ("" when none was written)

    def __init__(self, window: Optional[QWidget] = None, log_dir: Optional[Path] = None,
                 parent: Optional[QObject] = None):
        super().__init__(parent)
        self.window = window
        self.log_dir = Path(log_dir) if log_dir is not None else default_log_dir()
        self.logs: list = []            # paths written this session
        self.handled = 0
        self._busy = threading.local()
        self._previous = None
        self._previous_thread = None
        self.crashed.connect(self._show, Qt.ConnectionType.QueuedConnection)

    # --- the hooks ---------------------------------------------------------------------------------------
    def install(self) -> "CrashHandler":
        if self._previous is None:
            self._previous, self._previous_thread = sys.excepthook, threading.excepthook
            sys.excepthook = self._sys_hook
            threading.excepthook = self._thread_hook
        return self

    def uninstall(self) -> None:
        if self._previous is not None:
            if sys.excepthook == self._sys_hook:
                sys.excepthook = self._previous
            if threading.excepthook == self._thread_hook:
                threading.excepthook = self._previous_thread
            self._previous = self._previous_thread = None

    def _sys_hook(self, exc_type, exc, tb) -> None:
        self.handle(exc_type, exc, tb, threading.current_thread().name)

    def _thread_hook(self, args) -> None:
        if args.exc_type is SystemExit:
            return
        self.handle(args.exc_type, args.exc_value, args.exc_traceback,
                    args.thread.name if args.thread is not None else "")

    # --- handling ----------------------------------------------------------------------------------------
    def handle(self, exc_type, exc, tb, thread: str = "") -> None:
        """Log and report one uncaught exception; never raises (an error in here goes to Python's own hook)."""
        if issubclass(exc_type, KeyboardInterrupt) or getattr(self._busy, "on", False):
            sys.__excepthook__(exc_type, exc, tb)
            return
        self._busy.on = True
        try:
            traceback.print_exception(exc_type, exc, tb, file=sys.stderr)   # a terminal, when there is one
            report = format_report(exc_type, exc, tb, thread)
            path = write_crash_log(report, self.log_dir) if len(self.logs) < MAX_LOGS else None
            if path is not None:
                self.logs.append(path)
            self.handled += 1
            self.crashed.emit(summary(exc_type, exc), report, str(path or ""))
        except BaseException:   # noqa: BLE001 - the hook of last resort must not raise
            sys.__excepthook__(exc_type, exc, tb)
        finally:
            self._busy.on = False

    def _show(self, message: str, report: str, log_path: str) -> None:
        try:
            try:
                window = self.window if self.window is not None and self.window.isVisible() else None
            except RuntimeError:    # the window was deleted
                window = None
            show_crash_dialog(window, message, report, log_path)
        except Exception:   # noqa: BLE001 - raising here would come back to this very slot, forever
            traceback.print_exc()


def install(window: Optional[QWidget] = None, log_dir: Optional[Path] = None) -> CrashHandler:
    """Install the app-wide hooks; returns the handler (``uninstall()`` puts the previous hooks back)."""
    handler = CrashHandler(window, log_dir, parent=QApplication.instance())
    return handler.install()


__all__ = ["CrashDialog", "CrashHandler", "LOG_FOLDER", "MAX_LOGS", "default_log_dir", "format_report", "install",
           "show_crash_dialog", "summary", "versions", "write_crash_log"]
