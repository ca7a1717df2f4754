"""The main window composed of parts (issue 20, item 2): declared actions whose enabled and checked states follow
the state they need, one heatmap style that the action and the checkbox both follow, the engine's labels reader
and model-path rule, and the model loader on the shared newest-request-wins worker."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import threading
from pathlib import Path

import pytest

from dnd_engine.model_paths import is_model_path
from dnd_gui.jobs import classify as classification
from dnd_gui.jobs.classify import ModelLoader, labels_near, read_labels_csv
from dnd_gui.window import MainWindow
from dnd_gui.window.actions import ACTIONS, MENUS, WindowState

from gui_helpers import open_window
from pyramid import tissue_like, write_pyramid
from test_gui_predict import CLASSES, fake_prediction

LOAD_MS = 20_000
SPECS = {s.id: s for s in ACTIONS}


def enabled(action_id: str, **state) -> bool:
    rule = SPECS[action_id].enabled
    return True if rule is None else rule(WindowState(**state))


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("window_parts") / "pyramid.svs"
    return write_pyramid(path, tissue_like(4096, 3072, seed=5, blobs=4), downsamples=(1, 4, 16))


@pytest.fixture
def window(qtbot, tmp_path) -> MainWindow:
    return open_window(qtbot, tmp_path / "settings.ini", tmp_path / "out")


# --- the rules, as plain functions of the state --------------------------------------------------------------
def test_every_menu_entry_is_a_declared_action_and_every_action_has_a_menu():
    def ids(entries):
        for e in entries:
            if isinstance(e, tuple):
                yield from ids(e[1])
            elif isinstance(e, str) and not e.startswith("menu:"):
                yield e
    in_menus = [i for _title, entries in MENUS for i in ids(entries)]
    assert sorted(in_menus) == sorted(SPECS) and len(in_menus) == len(set(in_menus))


def test_no_project_disables_the_project_actions_and_a_project_enables_them():
    for action in ("close_project_action", "resume_action"):
        assert not enabled(action)
    assert enabled("close_project_action", has_project=True)
    assert not enabled("resume_action", has_project=True)       # nothing stopped: nothing to resume
    assert enabled("resume_action", has_project=True, resumable=True)
    assert enabled("new_project_action") and enabled("open_project_action") and enabled("train_action")


def test_slide_heatmap_and_model_rules():
    assert not enabled("close_action") and enabled("close_action", has_slide=True)
    assert not enabled("remove_slide_action") and enabled("remove_slide_action", has_slide=True)
    assert not enabled("classify_current_action", has_slide=True)
    assert enabled("classify_current_action", has_slide=True, has_model=True)
    for action in ("export_png_action", "export_geojson_action"):
        assert not enabled(action, has_slide=True) and enabled(action, has_slide=True, has_heatmap=True)
    assert not enabled("export_csv_action") and enabled("export_csv_action", has_predictions=True)
    assert enabled("magnification_20", presets=frozenset({10, 20})) and not enabled("magnification_40")
    heat = SPECS["show_heatmap_action"].checked
    assert heat(WindowState(heatmap_visible=True)) and not heat(WindowState(heatmap_visible=False))


# --- the window follows the rules as its state changes -------------------------------------------------------
def test_window_actions_follow_project_slide_and_heatmap_state(qtbot, window, pyramid, tmp_path):
    win = window
    assert not hasattr(win, "_refresh_actions")
    assert not win.close_project_action.isEnabled() and not win.resume_action.isEnabled()
    assert not win.close_action.isEnabled() and not win.export_png_action.isEnabled()
    assert not any(a.isEnabled() for a in win.magnification_actions.values())   # no slide: no magnification

    win.new_project(str(tmp_path / "study"))
    assert win.close_project_action.isEnabled() and not win.resume_action.isEnabled()
    win.close_project()
    assert not win.close_project_action.isEnabled()

    with qtbot.waitSignal(win.slide_loaded, timeout=LOAD_MS):
        win.open_slide(str(pyramid))
    assert win.close_action.isEnabled() and win.slide_actions.remove_action.isEnabled()
    assert not win.export_png_action.isEnabled() and not win.export_csv_action.isEnabled()
    assert not win.classify_current_action.isEnabled()              # no model
    assert any(a.isEnabled() for a in win.magnification_actions.values())

    with qtbot.waitSignal(win.prediction_shown, timeout=LOAD_MS):
        win.add_prediction(fake_prediction(pyramid), CLASSES, "test-model")
    assert win.heatmap_layer is not None
    assert win.export_png_action.isEnabled() and win.export_geojson_action.isEnabled()
    assert win.export_csv_action.isEnabled()

    win.close_slide()
    assert win.heatmap_layer is None
    assert not win.close_action.isEnabled() and not win.export_png_action.isEnabled()
    assert not win.slide_actions.remove_action.isEnabled()
    assert not any(a.isEnabled() for a in win.magnification_actions.values())


def test_heatmap_visibility_is_one_state_the_action_and_the_checkbox_follow(qtbot, window, pyramid):
    win = window
    with qtbot.waitSignal(win.slide_loaded, timeout=LOAD_MS):
        win.open_slide(str(pyramid))
    with qtbot.waitSignal(win.prediction_shown, timeout=LOAD_MS):
        win.add_prediction(fake_prediction(pyramid), CLASSES, "test-model")
    layer, box = win.heatmap_layer, win.inspector.heatmap.show_box
    styles = []
    win.heatmap.changed.connect(lambda: styles.append(win.heatmap_style))

    win.show_heatmap_action.trigger()                                   # the menu (or H)
    assert len(styles) == 1                                             # one change, no echo back
    assert not win.heatmap_style.visible and not box.isChecked() and not layer.isVisible()
    assert not win.show_heatmap_action.isChecked()

    box.setChecked(True)                                                # the inspector's checkbox
    assert len(styles) == 2
    assert win.heatmap_style.visible and win.show_heatmap_action.isChecked() and layer.isVisible()


def test_window_files_are_small():
    folder = Path(__file__).resolve().parents[1] / "dnd_gui" / "window"
    sizes = {p.name: len(p.read_text().splitlines()) for p in folder.glob("*.py")}
    assert "main_window.py" in sizes and max(sizes.values()) <= 450, sizes


# --- engine logic the window used to hold --------------------------------------------------------------------
def test_labels_csv_with_an_alias_id_column_is_read_as_dnd_train_reads_it(tmp_path):
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    (cohort / "labels.csv").write_text("case_id,label\nslide_a,tumor\nslide_b,normal\n")
    assert read_labels_csv(cohort / "labels.csv") == {"slide_a": "tumor", "slide_b": "normal"}
    assert labels_near(cohort / "slide_a.svs") == {"slide_a": "tumor", "slide_b": "normal"}


def test_load_labels_with_an_alias_column_fills_the_table_and_the_list(qtbot, window, tmp_path):
    path = tmp_path / "truth.csv"
    path.write_text("slide,label\nx,tumor\n")
    assert window.classification.load_labels(str(path)) == {"x": "tumor"}
    assert window.last_error == ""
    assert window.predictions.model.true_labels == {"x": "tumor"}


def test_model_paths_follow_the_engine_rule(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    assert is_model_path(run) and is_model_path(run / "model.safetensors")
    assert not is_model_path(tmp_path / "empty") and not is_model_path(tmp_path / "notes.txt")
    assert not is_model_path(tmp_path / "missing.safetensors")


# --- the model loader: only the newest request reports -------------------------------------------------------
def test_model_loader_reports_only_the_newest_request(qtbot, monkeypatch):
    release = threading.Event()

    def fake_load(path):
        if path == "first":
            release.wait(30)
        return f"model {path}"
    monkeypatch.setattr(classification, "load_model_checked", fake_load)
    loader = ModelLoader()
    loaded, failed = [], []
    loader.loaded.connect(loaded.append)
    loader.failed.connect(lambda p, m: failed.append((p, m)))
    loader.load("first")
    loader.load("second")
    assert loader.busy()
    release.set()
    qtbot.waitUntil(lambda: bool(loaded), timeout=LOAD_MS)
    loader.shutdown()
    assert loaded == ["model second"] and failed == [] and not loader.busy()


def test_model_loader_failure_is_one_line(qtbot, monkeypatch):
    def broken(path):
        raise RuntimeError("weights corrupted\nTraceback details")
    monkeypatch.setattr(classification, "load_model_checked", broken)
    loader = ModelLoader()
    failed = []
    loader.failed.connect(lambda p, m: failed.append((p, m)))
    loader.load("m.safetensors")
    qtbot.waitUntil(lambda: bool(failed), timeout=LOAD_MS)
    loader.shutdown()
    assert failed == [("m.safetensors", "cannot load the model (RuntimeError: weights corrupted)")]
