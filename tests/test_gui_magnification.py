"""Slides without magnification metadata in the app (issue 19, item 2), and plain messages for bad slides (item 9):
the dialog on drop, "set by you" in the Slide panel, the scale bar, settings across a restart, the project."""

import json
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from pathlib import Path

import pytest
from PySide6.QtWidgets import QApplication

from conftest import shared_file
from dnd_engine.slides import MagnificationOverride
from dnd_gui.dialogs import magnification as magnification_dialog
from dnd_gui.jobs.classify import DEMO_MODEL
from dnd_gui.window.main_window import MainWindow

from gui_helpers import file_drop_events, open_window

JOB_MS, LOAD_MS = 60_000, 20_000
SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts"


def make_window(qtbot, settings_file: Path, out: Path, model=None) -> MainWindow:
    return open_window(qtbot, settings_file, out, model)


def drop(win: MainWindow, paths) -> None:
    _mime, enter, event = file_drop_events(paths)
    QApplication.sendEvent(win.view.viewport(), enter)
    QApplication.sendEvent(win.view.viewport(), event)


class Answers:
    """Stands in for the dialog: records what was asked and gives ``answer``."""

    def __init__(self, answer):
        self.answer, self.asked = answer, []

    def __call__(self, parent, slide_name, current=None, *, missing=True, where=""):
        self.asked.append((slide_name, missing, where))
        return self.answer


def shot(widget, name: str) -> None:
    if SHOTS.is_dir():
        for _ in range(3):
            QApplication.processEvents()
        widget.grab().save(str(SHOTS / f"magnification-{name}.png"))


def test_dropped_slides_without_magnification_ask_then_classify_and_remember(qtbot, tmp_path, monkeypatch):
    tcga, kidney = shared_file("wsi", "tcga-cr-7395-01a-01-ts1.svs"), shared_file("wsi", "kidney-48-5.tif")
    answers = Answers(MagnificationOverride(objective_power=20))
    monkeypatch.setattr(magnification_dialog, "ask_magnification", answers)
    settings = tmp_path / "settings.ini"
    win = make_window(qtbot, settings, tmp_path / "out", DEMO_MODEL)
    done = []
    win.job_finished.connect(done.append)
    drop(win, [tcga, kidney])
    assert [a[0] for a in answers.asked] == [tcga.name, kidney.name]      # asked, not silently assumed
    assert all(where == "in the app's settings" for _n, _m, where in answers.asked)
    qtbot.waitUntil(lambda: bool(done), timeout=JOB_MS)
    pred = win.records[str(tcga)].prediction
    assert pred.status == "done", pred.error
    assert pred.n_patches > 0 and pred.predicted
    # kidney-48-5 is an overview image with one speck of tissue (a few % of one patch at any scale): it is
    # classified from the patches with the most tissue, and the prediction says it rests on little evidence
    k = win.records[str(kidney)].prediction
    assert k.status == "done", k.error
    assert k.n_patches >= 1 and k.predicted and "little tissue" in k.note
    rows = {r.slide_id: r for r in win.predictions.model.rows}
    assert "little tissue" in rows["kidney-48-5"].note
    qtbot.waitUntil(lambda: win.current_path == str(tcga) and win.slide_info["objective_power"] == 20,
                    timeout=LOAD_MS)
    qtbot.waitUntil(lambda: win.heatmap_layer is not None, timeout=LOAD_MS)
    assert win.properties.value("Objective") == "20\u00d7 (set by you)"
    assert "set by you" in win.properties.value("Pixel size")
    assert win.view.scale_bar.isVisible() and win.view.scale_bar.length_um > 0
    assert win.view.scale_bar.label.startswith("\u2248 ")    # nominal 0.5 um/px of the 20x set: not measured
    qtbot.waitUntil(lambda: win.inspector.gallery.loaded, timeout=LOAD_MS)
    shot(win, "tcga-classified")
    win.close()

    # a restart: the setting is still there (keyed by the file's content), nothing is asked again
    again = make_window(qtbot, settings, tmp_path / "out2")
    answers.asked.clear()
    with qtbot.waitSignal(again.slide_loaded, timeout=LOAD_MS):
        again.open_slide(str(kidney))
    assert again.slide_info["objective_power"] == 20 and again.slide_info["magnification_source"] == "override"
    assert again.properties.value("Objective") == "20\u00d7 (set by you)"
    assert "set by you" in again.statusBar().currentMessage()
    assert answers.asked == []


def test_cancelling_the_question_cancels_that_slide_only(qtbot, tmp_path, monkeypatch, cmu_slide):
    tcga = shared_file("wsi", "tcga-cr-7395-01a-01-ts1.svs")
    answers = Answers(None)
    monkeypatch.setattr(magnification_dialog, "ask_magnification", answers)
    win = make_window(qtbot, tmp_path / "settings.ini", tmp_path / "out", DEMO_MODEL)
    done = []
    win.job_finished.connect(done.append)
    job = win.classify([str(tcga), str(cmu_slide)])
    assert [a[0] for a in answers.asked] == [tcga.name]       # CMU says 20x itself: not asked
    assert job is not None and [p for p, r in win.records.items() if r.job is job] == [str(cmu_slide)]
    assert "classification cancelled" in win.last_error and tcga.name in win.last_error
    assert "\n" not in win.last_error
    assert win.slide_list.status_text(str(tcga)).startswith("cancelled")
    assert win.records[str(tcga)].job is None
    assert win.classify([str(tcga)]) is None                  # cancelled again: no job at all
    qtbot.waitUntil(lambda: bool(done), timeout=JOB_MS)
    assert win.records[str(cmu_slide)].prediction.status == "done"


def test_slide_panel_sets_the_scale_into_the_open_project(qtbot, tmp_path, monkeypatch):
    from dnd_engine.project import Project
    tcga = shared_file("wsi", "tcga-cr-7395-01a-01-ts1.svs")
    win = make_window(qtbot, tmp_path / "settings.ini", tmp_path / "out")
    project = Project.create(tmp_path / "proj")
    win.open_project(str(project.root))
    assert win.session is not None
    with qtbot.waitSignal(win.slide_loaded, timeout=LOAD_MS):
        win.open_slide(str(tcga))
    assert win.properties.value("Objective") == "unknown"
    assert not win.view.scale_bar.isVisible()                 # no pixel size: no bar that would look measured
    assert win.properties.set_button is not None and win.properties.set_button.isVisible()
    win.inspector.ensureWidgetVisible(win.properties)
    shot(win.inspector, "slide-panel-unknown")
    answers = Answers(MagnificationOverride(mpp=0.25))
    monkeypatch.setattr(magnification_dialog, "ask_magnification", answers)
    with qtbot.waitSignal(win.slide_loaded, timeout=LOAD_MS):
        win.properties.set_button.click()
    assert answers.asked == [(tcga.name, True, "in the project")]
    assert win.properties.value("Pixel size") == "0.25 \u00b5m/px (set by you)"
    assert win.properties.value("Objective").startswith("40\u00d7")
    bar = win.view.scale_bar
    assert bar.isVisible() and bar.length_px == pytest.approx(bar.length_um / (0.25 / win.view.zoom))
    assert not bar.label.startswith("\u2248")                 # a pixel size the user gave is used as given
    manifest = json.loads((project.root / "project.json").read_text())
    assert list(manifest["slide_overrides"].values()) == [{"mpp": 0.25, "name": tcga.name}]
    assert win.settings.slide_overrides().entries == {}          # in the project, not the app's settings
    win.inspector.ensureWidgetVisible(win.properties)
    shot(win.inspector, "slide-panel-set-by-you")
    # and "use the file's value" forgets it again
    monkeypatch.setattr(magnification_dialog, "ask_magnification", Answers(magnification_dialog.FORGET))
    with qtbot.waitSignal(win.slide_loaded, timeout=LOAD_MS):
        win.properties.set_button.click()
    assert win.properties.value("Objective") == "unknown"
    assert json.loads((project.root / "project.json").read_text())["slide_overrides"] == {}


def test_the_dialog_proposes_the_usual_scan_and_gives_what_was_chosen(qtbot):
    dialog = magnification_dialog.MagnificationDialog("kidney-48-5.tif", where="in the app's settings")
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitExposed(dialog)
    assert dialog.power_radio.isChecked() and dialog.power_box.value() == 20 and dialog.mpp_box.value() == 0.5
    assert dialog.value() == MagnificationOverride(objective_power=20)
    shot(dialog, "dialog")
    dialog.mpp_radio.setChecked(True)
    dialog.mpp_box.setValue(0.2527)
    assert not dialog.power_box.isEnabled() and dialog.value() == MagnificationOverride(mpp=0.2527)


def test_bad_slides_show_plain_messages_in_the_window(qtbot, tmp_path, cmu_slide):
    win = make_window(qtbot, tmp_path / "settings.ini", tmp_path / "out")
    data = cmu_slide.read_bytes()
    cases = {"fake.svs": b"this is not a slide\n", "cut.svs": data[:100_000], "empty.svs": b""}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with qtbot.waitSignal(win.slide_failed, timeout=LOAD_MS) as failed:
            win.open_slide(str(tmp_path / name))
        msg = failed.args[0]
        assert msg.startswith(name) and "\n" not in msg
        assert not any(bit in msg for bit in ("header=b", "out of range", "Error", "b'")), msg
