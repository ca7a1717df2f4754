"""Shared helpers for the Qt tests: real drag-and-drop events, waiting for a fully painted viewer, and a heartbeat
that measures how long the event loop was ever kept from running."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Sequence

from PySide6.QtCore import QMimeData, QPointF, Qt, QTimer, QUrl
from PySide6.QtGui import QDragEnterEvent, QDropEvent

PAINT_MS = 20_000


def drag_enter_event(mime: QMimeData, pos=QPointF(200, 200)) -> QDragEnterEvent:
    args = (Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    try:
        return QDragEnterEvent(pos, *args)  # Qt >= 6.9 takes a QPointF (the QPoint form is deprecated)
    except TypeError:
        return QDragEnterEvent(pos.toPoint(), *args)


def file_drop_events(paths: Sequence[Path] | Path, pos=QPointF(200, 200)):
    """(mime, drag-enter event, drop event) carrying ``paths`` as file URLs, as a file manager sends them."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(p)) for p in paths])
    drop = QDropEvent(pos, Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier)
    return mime, drag_enter_event(mime, pos), drop


def wait_painted(qtbot, view, action=None, timeout: int = PAINT_MS) -> float:
    """Run ``action`` (a pan or zoom) and wait until the viewer has painted every visible tile; returns seconds."""
    t0 = time.perf_counter()
    with qtbot.waitSignal(view.fully_painted, timeout=timeout):
        (action or view.refresh)()
    return time.perf_counter() - t0


class Heartbeat:
    """A QTimer firing every ``interval_ms``; the largest gap between two beats is the longest time the event loop
    was blocked (plus the interval). Measures what a user would feel as a freeze.

    Wall-clock gaps also count the machine's other work (a loaded CPU delays every beat), so tests assert
    ``max_cpu_gap_ms`` instead: the most CPU time the UI thread itself spent between two beats, which only work on
    the UI thread raises. Wall-clock bounds belong in ``benchmarks/ui_stalls.py``."""

    def __init__(self, interval_ms: int = 5):
        self.gaps: list[float] = []
        self.cpu_gaps: list[float] = []
        self._last = 0.0
        self._last_cpu = 0.0
        self._timer = QTimer()
        self._timer.setTimerType(Qt.TimerType.PreciseTimer)
        self._timer.setInterval(interval_ms)
        self._timer.timeout.connect(self._beat)

    def _beat(self) -> None:
        now, cpu = time.perf_counter(), time.thread_time()   # the timer fires on the UI thread
        self.gaps.append(now - self._last)
        self.cpu_gaps.append(cpu - self._last_cpu)
        self._last, self._last_cpu = now, cpu

    def __enter__(self) -> "Heartbeat":
        self._last, self._last_cpu = time.perf_counter(), time.thread_time()
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self._timer.stop()

    @property
    def max_gap_ms(self) -> float:
        return max(self.gaps) * 1000.0 if self.gaps else float("inf")

    @property
    def max_cpu_gap_ms(self) -> float:
        """The most CPU time (ms) the UI thread spent between two beats: its longest stretch of work."""
        return max(self.cpu_gaps) * 1000.0 if self.cpu_gaps else float("inf")

    @property
    def beats(self) -> int:
        return len(self.gaps)


MODEL_MS = 90_000   # loading a model (first torch import on a loaded machine included)


def open_window(qtbot, settings_file: Path, output_root: Path, model=None, size=(1366, 768)):
    """A shown ``MainWindow`` with its own settings file and output folder (nothing of the user's is read or
    written), quitting without asking, with ``model`` loaded when given."""
    from PySide6.QtCore import QSettings
    from dnd_gui.window.main_window import MainWindow
    win = MainWindow(settings=QSettings(str(settings_file), QSettings.Format.IniFormat), output_root=output_root,
                     model=None, theme="dark")
    qtbot.addWidget(win)
    win.confirm_quit = lambda n: True
    win.resize(*size)
    win.show()
    qtbot.waitExposed(win)
    if model is not None:
        with qtbot.waitSignal(win.model_ready, timeout=MODEL_MS):
            win.load_model(model)
    return win

