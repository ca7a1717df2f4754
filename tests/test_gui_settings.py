"""What the window remembers between runs (recent slides, theme, overlays, layout) and the command line."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import subprocess
import sys
from pathlib import Path

from PySide6.QtCore import QSettings
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication

from dnd_gui.window.main_window import MainWindow

ROOT = Path(__file__).resolve().parents[1]
CMU = ROOT / "resources" / "sample_slides" / "CMU-1-Small-Region.svs"


def make(qtbot, ini: Path) -> MainWindow:
    win = MainWindow(settings=QSettings(str(ini), QSettings.Format.IniFormat), output_root=ini.parent / "out",
                     model=None)
    qtbot.addWidget(win)
    win.show()
    qtbot.waitExposed(win)
    return win


def test_window_remembers_recent_slides_theme_overlays_and_layout(qtbot, tmp_path):
    ini = tmp_path / "settings.ini"
    first = make(qtbot, ini)
    with qtbot.waitSignal(first.slide_loaded, timeout=20_000):
        first.open_slide(str(CMU))
    first.set_theme("light")
    assert QApplication.instance().palette().color(QPalette.ColorRole.Window).lightness() > 200
    first.minimap_action.trigger()                      # hide the overview
    assert not first.view.minimap.isVisible()
    first.inspector_dock.hide()
    first.resize(700, 520)  # within the offscreen screen: restoreGeometry keeps windows on screen
    first.close()

    second = make(qtbot, ini)
    recent = [a.data() for a in second.recent_menu.actions() if a.data()]
    assert recent == [str(CMU.resolve())]
    assert second.theme == "light" and second.theme_actions["light"].isChecked()
    assert not second.minimap_action.isChecked() and second.scale_bar_action.isChecked()
    assert not second.inspector_dock.isVisible()        # the dock layout came back as it was left
    assert (second.width(), second.height()) == (700, 520)
    with qtbot.waitSignal(second.slide_loaded, timeout=20_000):
        next(a for a in second.recent_menu.actions() if a.data()).trigger()   # File ▸ Open Recent works
    assert not second.view.minimap.isVisible()
    second.set_theme("dark")
    assert QApplication.instance().palette().color(QPalette.ColorRole.Window).lightness() < 80


def test_dnd_studio_help_lists_the_model_option():
    exe = Path(sys.executable).with_name("dnd-studio")
    cmd = [str(exe), "--help"] if exe.is_file() else [sys.executable, "-m", "dnd_gui", "--help"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env=dict(os.environ, QT_QPA_PLATFORM="offscreen"))
    assert done.returncode == 0, done.stderr
    assert "--model PATH" in done.stdout and "--classify" in done.stdout and "--screenshot" in done.stdout
