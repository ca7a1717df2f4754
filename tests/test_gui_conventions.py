"""What a QuPath user expects of the window (issue 19, items 9, 11, 12 and 14): folders dropped and slides added to
or removed from a project without the wizard, the project's name and next step in view, right-click menus on the
slide list and the viewer, a toolbar, thumbnails and labels in the slide list, zoom presets that agree with the
wheel, and a clear message when Qt's X11 libraries are missing."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path

import pytest
from PySide6.QtCore import QPoint, QPointF, Qt, QUrl
from PySide6.QtGui import QAction, QGuiApplication, QImage, QWheelEvent
from PySide6.QtWidgets import QApplication

from dnd_engine.project import Project, ProjectError
from dnd_engine.synth import make_synthetic_cohort
from dnd_gui.window import context_menus
from dnd_gui.window.main_window import MainWindow
from dnd_gui.xcb_check import XCB_LIBRARIES, check_xcb, missing_xcb_libraries, uses_xcb

from gui_helpers import file_drop_events, open_window, wait_painted

ROOT = Path(__file__).resolve().parents[1]
CMU = ROOT / "resources" / "sample_slides" / "CMU-1-Small-Region.svs"  # 2220 × 2967 px, 20×, 0.499 µm/px
LOAD_MS = 20_000
SHOTS = Path(os.environ.get("DND_SHOTS", ROOT / "test-artifacts"))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """A folder of two small synthetic slides (``slides/``) with ``labels.csv`` one folder up."""
    c = make_synthetic_cohort(tmp_path_factory.mktemp("conventions") / "cohort", n_slides=2, size=2048, seed=3)
    return Path(c.slides[0].path).parent


def make_window(qtbot, tmp_path) -> MainWindow:
    return open_window(qtbot, tmp_path / "settings.ini", tmp_path / "out")


@pytest.fixture
def window(qtbot, tmp_path):
    win = make_window(qtbot, tmp_path)
    yield win
    win.shutdown()


def open_cmu(qtbot, win: MainWindow) -> None:
    with qtbot.waitSignal(win.slide_loaded, timeout=LOAD_MS):
        win.open_slide(str(CMU))


def drop(win: MainWindow, paths) -> None:
    _mime, enter, drop_event = file_drop_events(paths)
    viewport = win.view.viewport()
    QApplication.sendEvent(viewport, enter)
    assert enter.isAccepted()
    QApplication.sendEvent(viewport, drop_event)
    assert drop_event.isAccepted()


def shot(widget, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    for _ in range(3):
        QApplication.processEvents()
    assert widget.grab().save(str(SHOTS / name))


def menu_texts(menu) -> list[str]:
    return [a.text() for a in menu.actions() if not a.isSeparator()]


def menu_action(menu, start: str) -> QAction:
    matches = [a for a in menu.actions() if a.text().startswith(start)]
    assert matches, f"no {start!r} in {menu_texts(menu)}"
    return matches[0]


# --- item 14: the missing X11 libraries are named ------------------------------------------------------------
ALL_LIBS = [lib for lib, _ in XCB_LIBRARIES] + ["libc.so.6"]


def test_xcb_check_names_the_missing_library_and_its_package():
    have = [lib for lib in ALL_LIBS if lib not in ("libxcb-icccm.so.4", "libxcb-keysyms.so.1")]
    env = {"QT_QPA_PLATFORM": "xcb", "DISPLAY": ":0"}
    message = check_xcb(env, "linux", available=have, loads=lambda lib: False)
    assert message is not None and "\n" not in message
    assert "libxcb-icccm.so.4" in message and "libxcb-keysyms.so.1" in message
    assert "sudo apt install libxcb-icccm4 libxcb-keysyms1" in message
    assert "libxcb-cursor" not in message
    # a library the loader can open after all (an unusual folder) is not reported
    assert check_xcb(env, "linux", available=have, loads=lambda lib: lib == "libxcb-icccm.so.4").count("libxcb") == 2
    assert check_xcb(env, "linux", available=ALL_LIBS, loads=lambda lib: False) is None
    assert missing_xcb_libraries(None) == []  # the system's list unknown: nothing is claimed missing


def test_xcb_check_runs_only_where_qt_will_use_xcb():
    assert uses_xcb({"QT_QPA_PLATFORM": "xcb"}, "linux")
    assert uses_xcb({"DISPLAY": ":0"}, "linux")
    assert not uses_xcb({"QT_QPA_PLATFORM": "offscreen"}, "linux")
    assert not uses_xcb({"XDG_SESSION_TYPE": "wayland", "WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert not uses_xcb({}, "darwin") and not uses_xcb({}, "win32")
    assert check_xcb({"QT_QPA_PLATFORM": "offscreen"}, "linux", available=[], loads=lambda lib: False) is None


def test_app_prints_the_missing_library_instead_of_starting_qt(monkeypatch, capsys):
    import dnd_gui.app as app

    class NoQt:
        @staticmethod
        def instance():
            return None

        def __init__(self, *args):
            raise AssertionError("Qt must not be started when its platform libraries are missing")

    monkeypatch.setattr(app, "QApplication", NoQt)
    monkeypatch.setattr(app, "check_xcb", lambda: "cannot start the window: Qt's X11 (xcb) platform needs "
                                                  "libxcb-cursor.so.0, not installed on this system.")
    assert app.main(["--no-model"]) == 1
    err = capsys.readouterr().err
    assert "libxcb-cursor.so.0" in err and err.count("\n") == 1


# --- item 9: small defects --------------------------------------------------------------------------------
def test_about_menu_shows_the_ampersand(window):
    about = [a for a in window.findChildren(QAction) if a.menuRole() == QAction.MenuRole.AboutRole]
    assert len(about) == 1
    shown = about[0].text().replace("&&", "\0").replace("&", "").replace("\0", "&")  # as the menu renders it
    assert shown == "About D&D Studio"


def test_export_actions_are_disabled_without_a_classified_slide(qtbot, window):
    win = window
    for action in (win.export_png_action, win.export_geojson_action, win.export_csv_action):
        assert not action.isEnabled(), action.text()
    open_cmu(qtbot, win)
    assert not win.export_png_action.isEnabled()  # a slide, but no heatmap to export


def test_closing_a_slide_clears_its_status_text(qtbot, window):
    win = window
    open_cmu(qtbot, win)
    assert "2220" in win.statusBar().currentMessage()
    win.close_slide()
    assert "2220" not in win.statusBar().currentMessage()
    assert CMU.name not in win.windowTitle()


def test_magnification_presets_and_the_wheel_stop_at_the_same_magnification(qtbot, window):
    win = window
    open_cmu(qtbot, win)
    view = win.view
    presets = view.available_presets()
    assert 40 in presets and win.magnification_actions[40].isEnabled()  # 2× digital zoom on a 20× scan
    centre = QPointF(view.viewport().rect().center())
    for _ in range(40):  # wheel all the way in
        event = QWheelEvent(centre, view.viewport().mapToGlobal(centre), QPoint(0, 0), QPoint(0, 120),
                            Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier, Qt.ScrollPhase.NoScrollPhase,
                            False)
        view.wheelEvent(event)
    assert view.magnification == pytest.approx(max(presets), rel=1e-3)
    view.set_magnification(max(presets))
    assert view.magnification == pytest.approx(max(presets), rel=1e-3)


# --- item 11: folders, project slides without the wizard, the next step, the name -------------------------
def test_project_adds_and_removes_slides(tmp_path):
    slides = tmp_path / "slides"
    slides.mkdir()
    for name in ("a.svs", "b.tif", "notes.txt"):
        (slides / name).write_bytes(b"x")
    project = Project.create(tmp_path / "proj")
    assert project.next_step() == "add slides"
    added = project.add_slides(str(slides))
    assert [p.name for p in added] == ["a.svs", "b.tif"]
    assert project.add_slides([str(slides / "a.svs")]) == []  # already linked: skipped
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.ndpi").write_bytes(b"x")
    with pytest.raises(ProjectError, match="share the id 'a'"):
        project.add_slides([str(other / "a.ndpi")])
    with pytest.raises(ProjectError, match="no slide files"):
        project.add_slides(str(tmp_path / "proj"))
    assert project.next_step() == "train"
    assert project.remove_slides([str(slides / "a.svs")]) == [str((slides / "a.svs").resolve())]
    project.save()
    assert [Path(p).name for p in Project.open(project.root).slides] == ["b.tif"]
    assert (slides / "a.svs").is_file()  # unlinked, not deleted


def test_new_project_shows_its_name_and_the_next_step(qtbot, window, tmp_path):
    win = window
    assert not win.slide_list.header.isVisible()
    win.new_project(str(tmp_path / "Study A"))
    header = win.slide_list.header
    assert header.isVisible() and "Study A" in header.name.text()
    assert header.step == "add slides" and "add slides" in header.next_step.text()
    assert header.add_button.isDefault() and not header.train_button.isEnabled()
    assert "Study A" in win.windowTitle()
    assert "Add Slides" in win.view._message and "Train a Model" in win.view._message
    assert win.slide_actions.add_action in win.project_menu.actions()
    shot(win, "i19-E-new-project.png")


def test_dropping_a_folder_adds_its_slides_to_the_open_project(qtbot, window, cohort, tmp_path):
    win = window
    session = win.new_project(str(tmp_path / "proj"))
    slides = sorted(str(p.resolve()) for p in cohort.glob("*.tif"))
    with qtbot.waitSignal(win.slide_loaded, timeout=LOAD_MS):  # the first one is shown
        drop(win, [cohort])
    assert Project.open(session.project.root).slides == slides  # linked and saved at once
    assert win.slide_list.paths() == slides
    assert not win.jobs.jobs  # listed, not classified
    header = win.slide_list.header
    assert header.step == "train" and "2 slides" in header.detail.text() and header.train_button.isEnabled()
    # the project's name stays in view with a slide open
    assert "proj" in win.windowTitle() and Path(slides[0]).name in win.windowTitle()
    # thumbnails and labels (the cohort's labels.csv) in the list
    qtbot.waitUntil(lambda: all(win.slide_list.has_thumbnail(p) for p in slides), timeout=LOAD_MS)
    labels = {r.split(",")[0]: r.split(",")[1] for r in (cohort.parent / "labels.csv").read_text().split()[1:]}
    for p in slides:
        assert labels[Path(p).stem] in win.slide_list._item(p).text().split("\n")[0]
    win.slide_list.list.setCurrentRow(1)
    shot(win, "i19-E-project-with-slides.png")


def test_dropping_a_folder_without_a_project_lists_its_slides(qtbot, window, cohort):
    win = window
    with qtbot.waitSignal(win.slide_loaded, timeout=LOAD_MS):
        drop(win, [cohort])
    assert sorted(win.slide_list.paths()) == sorted(str(p.resolve()) for p in cohort.glob("*.tif"))
    assert win.session is None and not win.jobs.jobs


def test_dropping_a_folder_without_slides_says_so(qtbot, window, tmp_path):
    (tmp_path / "empty").mkdir()
    drop(window, [tmp_path / "empty"])
    assert "no slide files" in window.last_error and "\n" not in window.last_error
    assert window.slide_list.paths() == []


# --- item 12: right-click menus and the toolbar -----------------------------------------------------------
def test_slide_list_menu_opens_classifies_removes_and_shows_in_folder(qtbot, window, cohort, tmp_path,
                                                                       monkeypatch):
    win = window
    session = win.new_project(str(tmp_path / "proj"))
    slides = sorted(str(p.resolve()) for p in cohort.glob("*.tif"))
    with qtbot.waitSignal(win.slide_loaded, timeout=LOAD_MS):
        win.slide_actions.add(slides)
    menu = context_menus.slide_menu(win, slides[1])
    texts = menu_texts(menu)
    assert texts[0].startswith("Open") and texts[1].startswith("Classify")
    assert "Remove from Project" in texts and "Show in Folder" in texts
    assert not menu_action(menu, "Classify").isEnabled()  # no model loaded
    # the menu as the user sees it
    item = win.slide_list._item(slides[1])
    pos = win.slide_list.list.visualItemRect(item).center()
    win.slide_list.list.customContextMenuRequested.emit(pos)
    assert win.context_menu is not None and win.context_menu.isVisible()
    shot(win.context_menu, "i19-E-slide-menu.png")
    win.context_menu.close()

    opened = []
    monkeypatch.setattr(context_menus, "open_url", lambda url: opened.append(url) or True)
    monkeypatch.setattr(context_menus.sys, "platform", "linux")
    menu_action(menu, "Show in Folder").trigger()
    assert opened == [QUrl.fromLocalFile(str(Path(slides[1]).parent))]

    with qtbot.waitSignal(win.slide_loaded, timeout=LOAD_MS):
        menu_action(menu, "Open").trigger()
    assert win.current_path == slides[1]

    menu_action(context_menus.slide_menu(win, slides[1]), "Remove from Project").trigger()
    assert win.current_path is None and slides[1] not in win.slide_list.paths()
    assert Project.open(session.project.root).slides == [slides[0]]
    assert Path(slides[1]).is_file()


def test_viewer_menu_copies_the_position_exports_the_view_and_goes_to_a_patch(qtbot, window, tmp_path):
    from test_gui_predict import fake_prediction
    win = window
    open_cmu(qtbot, win)
    wait_painted(qtbot, win.view)
    view = win.view
    pos = view.viewport().rect().center()
    menu = context_menus.viewer_menu(win, pos)
    point = view.mapToScene(pos)
    copy = menu_action(menu, "Copy Position")
    assert copy.isEnabled() and "\u00b5m" in copy.text()
    copy.trigger()
    text = QGuiApplication.clipboard().text()
    assert text == f"x {point.x() * 0.499:.1f} \u00b5m, y {point.y() * 0.499:.1f} \u00b5m"
    assert not menu_action(menu, "Go to Patch").isEnabled()  # no heatmap yet

    out = tmp_path / "view.png"
    assert context_menus.export_view(win, str(out))
    image = QImage(str(out))
    assert image.width() == view.viewport().width() and not list(tmp_path.glob("*.part"))

    win.add_prediction(fake_prediction(CMU, size=(2220, 2967), ps0=256.0), ["normal", "tumor"], "fake")
    qtbot.waitUntil(lambda: win.heatmap_layer is not None, timeout=LOAD_MS)
    assert win.export_png_action.isEnabled()
    menu = context_menus.viewer_menu(win, pos)
    assert menu_action(menu, "Go to Patch").isEnabled()
    assert any(t.startswith("Go to Patch ") and "under the pointer" in t for t in menu_texts(menu))
    view.customContextMenuRequested.emit(pos)
    assert win.context_menu.isVisible()
    shot(win.context_menu, "i19-E-viewer-menu.png")
    shot(win, "i19-E-viewer-menu-window.png")
    win.context_menu.close()
    assert context_menus.go_to_patch(win, 5)
    assert view.visible_rect().contains(win.heatmap_layer.patch_rect(5))
    assert not context_menus.go_to_patch(win, 10_000)


def test_toolbar_holds_the_common_actions(window):
    win = window
    actions = win.toolbar.actions()
    for a in (win.open_action, win.open_project_action, win.slide_actions.add_folder_action, win.load_model_action,
              win.classify_current_action, win.train_action, win.fit_action, win.show_heatmap_action,
              win.export_png_action):
        assert a in actions, a.text()
        assert not a.icon().isNull()
    assert win.toolbar.isVisible()
    assert win.toolbar.objectName()  # its place survives a restart (saveState)
