"""Start the desktop app: the ``dnd-studio`` entry point and ``python -m dnd_gui``.

``--screenshot PATH`` renders the window to a PNG once the first slide given on the command line has loaded (or
failed) — and, with ``--classify``, once its classification has ended — then exits, so the app can be checked on
machines without a display (``QT_QPA_PLATFORM=offscreen``). ``--selftest`` classifies the bundled sample slide
with the demo model, without a window, prints one line and exits (:mod:`dnd_gui.selftest`): it checks an install.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PySide6.QtCore import QEvent, QObject, QTimer
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from dnd_engine import __version__

from . import crash
from .jobs.background import favour_the_ui_thread, warm_up_imports
from .jobs.classify import DEMO_MODEL
from .window.main_window import APP_TITLE, MainWindow
from .resources import resources_dir
from .settings import THEMES
from .xcb_check import check_xcb

SCREENSHOT_TIMEOUT_MS = 300_000


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="dnd-studio", description=f"{APP_TITLE}: whole-slide image viewer and MIL classification. Drop slides "
        "on the window to classify them with the loaded model (the bundled demo model by default).")
    parser.add_argument("slides", nargs="*", metavar="SLIDE", help="slide files to open at start (the first is shown)")
    parser.add_argument("--model", metavar="PATH",
                        help="a D&D model file (.safetensors) or run folder to classify with "
                             f"(default: the bundled demo model, {DEMO_MODEL.name})")
    parser.add_argument("--no-model", action="store_true", help="start without loading any model")
    parser.add_argument("--classify", action="store_true", help="classify the slides given on the command line")
    parser.add_argument("--theme", choices=THEMES, help="light or dark (default: the last one used; dark at first)")
    parser.add_argument("--screenshot", metavar="PATH",
                        help="save a PNG of the window once the slide has loaded (and been classified, with "
                             "--classify), then exit (0 if it loaded)")
    parser.add_argument("--selftest", action="store_true",
                        help="open the bundled sample slide, classify it with the demo model without a window, "
                             "print the result and exit (0 if it worked): checks an install")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def _arm_screenshot(app: QApplication, window: MainWindow, path: Path, wait_for_slide: bool,
                    wait_for_job: bool) -> None:
    done = False
    state = {"loaded": False, "job": not wait_for_job}

    def finish(code: int, message: str = "") -> None:
        nonlocal done
        if done:
            return
        done = True
        path.parent.mkdir(parents=True, exist_ok=True)
        if not window.grab().save(str(path)):
            message, code = message or f"could not write the screenshot to {path}", 1
        if message:
            print(f"dnd-studio: {message}", file=sys.stderr)
        window.shutdown()
        app.exit(code)

    def maybe_finish() -> None:
        if state["loaded"] and state["job"]:
            # the view waits for its tiles so the picture is sharp
            if window.view.is_fully_loaded():
                QTimer.singleShot(150, lambda: finish(0))
            else:
                window.view.fully_painted.connect(lambda: QTimer.singleShot(150, lambda: finish(0)))

    def on_loaded(_path: str) -> None:
        state["loaded"] = True
        maybe_finish()

    def on_job(_job) -> None:
        state["job"] = True
        maybe_finish()

    if wait_for_slide:
        window.slide_loaded.connect(on_loaded)
        window.job_finished.connect(on_job)
        window.slide_failed.connect(lambda msg: QTimer.singleShot(100, lambda: finish(1, msg)))
        QTimer.singleShot(SCREENSHOT_TIMEOUT_MS, lambda: finish(2, "timed out waiting for the slide to load"))
    else:
        QTimer.singleShot(300, lambda: finish(0))


def _app_icon() -> QIcon:
    icon = QIcon()
    for png in sorted((resources_dir() / "icons").glob("dnd-studio-*.png")):
        icon.addFile(str(png))
    return icon


class FileOpenHandler(QObject):
    """macOS delivers a file double-clicked in Finder (or dropped on the Dock icon) as a ``FileOpen`` event to the
    application, not as a command-line argument: route it to the window like a path given at start."""

    def __init__(self, window: MainWindow):
        super().__init__(window)
        self.window = window

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 (Qt naming)
        if event.type() == QEvent.Type.FileOpen:
            path = event.file() or event.url().toLocalFile()
            if path:
                self.window.open_path(path)
                return True
        return False


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.selftest:
        from .selftest import main as selftest
        return selftest()
    favour_the_ui_thread()
    problem = None if QApplication.instance() is not None else check_xcb()
    if problem:  # Qt would abort with "could not load the Qt platform plugin" and no file name
        print(f"dnd-studio: {problem}", file=sys.stderr)
        return 1
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv and sys.argv[0] else "dnd-studio"])
    app.setApplicationName(APP_TITLE)
    app.setOrganizationName(APP_TITLE)
    app.setApplicationVersion(__version__)
    app.setDesktopFileName("dnd-studio")  # the .desktop file the installers write (its icon, on Wayland too)
    app.setWindowIcon(_app_icon())

    model = None if args.no_model else (args.model or (DEMO_MODEL if DEMO_MODEL.is_file() else None))
    # an exception no code caught (a bug) becomes a dialog and a crash log, and the app goes on
    crash_handler = crash.install()
    window = MainWindow(model=model, theme=args.theme)
    crash_handler.window = window
    app.installEventFilter(FileOpenHandler(window))
    window.show()
    warm_up_imports()  # torch, openslide and the engine load now, not in the middle of the first task
    if args.screenshot:
        _arm_screenshot(app, window, Path(args.screenshot), wait_for_slide=bool(args.slides),
                        wait_for_job=bool(args.classify and args.slides and model is not None))
    if args.slides:
        window.open_slide(args.slides[0])
        for extra in args.slides[1:]:
            window.add_slide_record(str(Path(extra).resolve()))
        if args.classify:
            window.classify(args.slides)
    try:
        return int(app.exec())
    finally:
        crash_handler.uninstall()


if __name__ == "__main__":
    raise SystemExit(main())
