"""Start the desktop app: the ``dnd-studio`` entry point and ``python -m dnd_gui``.

``--screenshot PATH`` renders the window to a PNG once the slide given on the command line has loaded (or
failed) and exits, so the app can be checked on machines without a display (``QT_QPA_PLATFORM=offscreen``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from dnd_engine import __version__

from .main_window import APP_TITLE, MainWindow

SCREENSHOT_TIMEOUT_MS = 120_000


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="dnd-studio", description=f"{APP_TITLE}: whole-slide image classification.")
    parser.add_argument("slide", nargs="?", help="a slide file to open at start")
    parser.add_argument("--screenshot", metavar="PATH",
                        help="save a PNG of the window once the slide has loaded, then exit (0 if it loaded)")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    return parser.parse_args(argv)


def _arm_screenshot(app: QApplication, window: MainWindow, path: Path, wait_for_slide: bool) -> None:
    done = False

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

    if wait_for_slide:
        # A short delay lets the fit-to-window and dock layout settle before grabbing.
        window.slide_loaded.connect(lambda _path: QTimer.singleShot(100, lambda: finish(0)))
        window.slide_failed.connect(lambda msg: QTimer.singleShot(100, lambda: finish(1, msg)))
        QTimer.singleShot(SCREENSHOT_TIMEOUT_MS, lambda: finish(2, "timed out waiting for the slide to load"))
    else:
        QTimer.singleShot(300, lambda: finish(0))


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(sys.argv[1:] if argv is None else list(argv))
    app = QApplication.instance() or QApplication([sys.argv[0] if sys.argv and sys.argv[0] else "dnd-studio"])
    app.setApplicationName(APP_TITLE)
    app.setOrganizationName(APP_TITLE)
    app.setApplicationVersion(__version__)

    window = MainWindow()
    window.show()
    if args.screenshot:
        _arm_screenshot(app, window, Path(args.screenshot), wait_for_slide=bool(args.slide))
    if args.slide:
        window.open_slide(args.slide)
    return int(app.exec())


if __name__ == "__main__":
    raise SystemExit(main())
