"""Drag-and-drop classification in the window: the job, its result, the heatmap overlay and its controls, the
predictions table, cancelling, and the bad inputs that must produce a message and never a crash."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import csv
import io
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from PySide6.QtCore import QEvent, QPointF, Qt
from PySide6.QtGui import QColor, QImage, QMouseEvent
from PySide6.QtTest import QTest
from PySide6.QtWidgets import QApplication

from dnd_engine.heatmaps import colormap_lut
from dnd_engine.predict import SlidePrediction
from dnd_engine.synth import make_synthetic_cohort
from dnd_gui.jobs.classify import DEMO_MODEL
from dnd_gui.jobs.queue import JobState
from dnd_gui.window.main_window import MainWindow

from gui_helpers import MODEL_MS, Heartbeat, file_drop_events, open_window, wait_painted
from pyramid import tissue_like, write_pyramid

ROOT = Path(__file__).resolve().parents[1]
CMU = ROOT / "resources" / "sample_slides" / "CMU-1-Small-Region.svs"
ARTIFACTS = ROOT / "test-artifacts"
JOB_MS = 180_000
LOAD_MS = 20_000
CLASSES = ["normal", "tumor"]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Two small synthetic slides (2048 px, 20×: 9 patches each at the demo model's 10×) with labels.csv."""
    c = make_synthetic_cohort(tmp_path_factory.mktemp("gui_cohort") / "cohort", n_slides=2, size=2048, seed=11)
    return sorted(s.path for s in c.slides)


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gui_pyramid") / "pyramid.svs"
    return write_pyramid(path, tissue_like(4096, 3072, seed=5, blobs=4), downsamples=(1, 4, 16))


def make_window(qtbot, tmp_path, model=None) -> MainWindow:
    return open_window(qtbot, tmp_path / "settings.ini", tmp_path / "out", model, size=(1440, 900))


@pytest.fixture
def window(qtbot, tmp_path):
    return make_window(qtbot, tmp_path)


@pytest.fixture
def demo_window(qtbot, tmp_path):
    return make_window(qtbot, tmp_path, DEMO_MODEL)


def drop_on_viewer(win: MainWindow, paths) -> None:
    """A real drop: drag-enter then drop events carrying file URLs, sent where the user releases the mouse."""
    _mime, enter, drop = file_drop_events(paths)
    viewport = win.view.viewport()
    QApplication.sendEvent(viewport, enter)
    assert enter.isAccepted()
    QApplication.sendEvent(viewport, drop)
    assert drop.isAccepted()


def partial_files(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob("*") if p.name.endswith(".part")]


def viewport_pixel(win: MainWindow, level0: QPointF) -> QColor:
    win.view.viewport().repaint()
    image = win.view.viewport().grab().toImage()
    p = win.view.mapFromScene(level0)
    return QColor(image.pixel(p.x(), p.y()))


def tissue_point(rect, tissue: np.ndarray, dims) -> QPointF:
    """A level-0 point inside ``rect`` where the tissue mask (covering the slide) is tissue."""
    kx, ky = tissue.shape[1] / dims[0], tissue.shape[0] / dims[1]
    x0, y0 = int(rect.left() * kx), int(rect.top() * ky)
    part = tissue[y0:int(rect.bottom() * ky), x0:int(rect.right() * kx)]
    ys, xs = np.nonzero(part)
    assert len(xs), "the patch should hold tissue"
    i = len(xs) // 2
    return QPointF((x0 + xs[i] + 0.5) / kx, (y0 + ys[i] + 0.5) / ky)


def save_artifact(widget, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    for _ in range(3):
        QApplication.processEvents()  # let the docks and the status bar settle their layout before the picture
    path = ARTIFACTS / name
    assert widget.grab().save(str(path))
    return path


def fake_prediction(path: Path, size=(4096, 3072), ps0=512.0) -> SlidePrediction:
    """A finished prediction over a full patch grid: student scores grow left → right, base top → bottom."""
    xs, ys = np.meshgrid(np.arange(0, size[0], ps0), np.arange(0, size[1], ps0))
    coords = np.stack([xs.ravel(), ys.ravel()], axis=1).astype(np.int64)
    scores = {"student": coords[:, 0] / size[0] + 0.01 * coords[:, 1] / size[1],
              "base": coords[:, 1] / size[1] + 0.01 * coords[:, 0] / size[0],
              "expert_0": -coords[:, 0].astype(float)}
    return SlidePrediction(path.stem, str(path), "done", "tumor", [0.2, 0.8], len(coords), coords=coords,
                           patch_size_level0=ps0, scores=scores,
                           model_probs={"student": [0.2, 0.8], "base": [0.4, 0.6], "expert_0": [0.7, 0.3]})


# --- the main path ------------------------------------------------------------------------------------------
def test_drop_classifies_the_slide_and_shows_prediction_and_heatmap(qtbot, demo_window, cohort, tmp_path):
    win, slide = demo_window, str(cohort[0])
    with Heartbeat() as beat, qtbot.waitSignal(win.job_finished, timeout=JOB_MS) as finished:
        with qtbot.waitSignal(win.slide_loaded, timeout=LOAD_MS):
            drop_on_viewer(win, [cohort[0]])
        assert len(win.jobs.jobs) == 1 and not win.jobs.jobs[0].state.finished  # the window did not wait for it
    print(f"longest event-loop gap while classifying: {beat.max_gap_ms:.0f} ms over {beat.beats} beats")
    job = finished.args[0]
    assert job.state == JobState.DONE, job.error
    qtbot.waitUntil(lambda: win.heatmap_layer is not None, timeout=LOAD_MS)

    pred = win.records[slide].prediction
    assert pred.status == "done" and pred.predicted in CLASSES and pred.n_patches > 0
    box = win.inspector.prediction
    assert box.predicted_text == pred.predicted
    assert box.bars.names == CLASSES and sum(box.bars.probs) == pytest.approx(1.0, abs=1e-5)
    assert box.demo_note.isVisible()                           # the demo model is never mistaken for a real one
    assert win.slide_list.status_text(slide).startswith(pred.predicted)

    layer = win.heatmap_layer
    assert layer.scene() is win.view.scene() and layer.isVisible() and layer.painted_cells > 0
    assert layer.clipped_to_tissue                             # colour on tissue only, the glass stays clean
    assert win.inspector.heatmap.count_label.text() == f"{pred.n_patches} of {pred.n_patches} patches shown"
    # the overlay is really on screen: a tissue pixel of the hottest patch changes when the heatmap is hidden
    wait_painted(qtbot, win.view)
    centre = tissue_point(layer.patch_rect(int(np.argmax(layer.raw))), win.records[slide].tissue,
                          win.slide_info["dimensions"])
    with_heat = viewport_pixel(win, centre)
    win.show_heatmap_action.trigger()
    assert not layer.isVisible() and not win.inspector.heatmap.show_box.isChecked()
    without_heat = viewport_pixel(win, centre)
    win.show_heatmap_action.trigger()
    assert layer.isVisible() and with_heat != without_heat

    # the predictions table, the true label from the cohort's labels.csv, and the files on disk
    table = win.predictions.model
    assert [r.slide_id for r in table.rows] == [Path(slide).stem]
    assert table.true_labels.get(Path(slide).stem) in CLASSES
    out = tmp_path / "out" / "demo_abmil_stain_stats"
    rows = list(csv.DictReader(io.StringIO((out / "predictions.csv").read_text())))
    assert [r["slide_id"] for r in rows] == [Path(slide).stem] and rows[0]["predicted"] == pred.predicted
    assert Path(pred.outputs["student_png"]).is_file() and Path(pred.outputs["student_geojson"]).is_file()
    assert not partial_files(out)
    qtbot.waitUntil(lambda: win.inspector.gallery.loaded, timeout=LOAD_MS)
    save_artifact(win, "gui_drop_synthetic_heatmap.png")


def test_predict_screenshots_of_the_bundled_slide_with_its_heatmap(qtbot, demo_window):
    """The artefacts a reviewer looks at: the real bundled slide classified by the demo model, dark and light."""
    win = demo_window
    with qtbot.waitSignal(win.slide_loaded, timeout=LOAD_MS):
        win.open_slide(str(CMU))
    with qtbot.waitSignal(win.job_finished, timeout=JOB_MS) as finished:
        win.classify_current()
    assert finished.args[0].state == JobState.DONE, finished.args[0].error
    qtbot.waitUntil(lambda: win.heatmap_layer is not None, timeout=LOAD_MS)
    win.predictions_dock.raise_()
    gallery = win.inspector.gallery
    qtbot.waitUntil(lambda: gallery.loaded, timeout=LOAD_MS)
    wait_painted(qtbot, win.view)
    dark = save_artifact(win, "gui_main_window_heatmap_dark.png")
    win.set_theme("light")
    qtbot.wait(50)
    light = save_artifact(win, "gui_main_window_heatmap_light.png")
    # zoomed in on the most attended patch, as a reader checks the evidence
    item = gallery.items("top")[0]
    QTest.mouseClick(gallery.top.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     gallery.top.visualItemRect(item).center())
    wait_painted(qtbot, win.view)
    zoomed = save_artifact(win, "gui_main_window_top_patch.png")
    for shot in (dark, light, zoomed):
        image = QImage(str(shot))
        assert image.width() >= 1400 and image.height() >= 850


def test_cancel_stops_the_predict_job_and_leaves_no_partial_files(qtbot, demo_window, cohort, tmp_path):
    win = demo_window
    first, second = (str(p) for p in cohort)
    job = win.classify([first, second])
    row = win.jobs_panel.row_for(job)
    with qtbot.waitSignal(job.result, timeout=JOB_MS):   # the first slide is done, the second is under way
        pass
    with qtbot.waitSignal(win.job_finished, timeout=JOB_MS):
        assert row.cancel_button.isEnabled()
        QTest.mouseClick(row.cancel_button, Qt.MouseButton.LeftButton)
        assert not row.cancel_button.isEnabled()          # a second click cannot be queued
    assert job.state == JobState.CANCELLED
    assert "cancelled" in row.message.text()
    assert win.records[first].prediction.status == "done"  # what was finished is kept
    assert win.records[second].prediction is None
    assert win.slide_list.status_text(second) == "cancelled"

    out = tmp_path / "out" / "demo_abmil_stain_stats"
    assert not partial_files(tmp_path / "out")
    rows = list(csv.DictReader(io.StringIO((out / "predictions.csv").read_text())))
    assert [r["slide_id"] for r in rows] == [Path(first).stem]
    assert not list(out.rglob(f"{Path(second).stem}_*heatmap*"))
    for h5 in out.rglob("*.h5"):                          # whatever feature files exist are whole
        with h5py.File(h5, "r") as f:
            if "features" in f:
                assert f["features"].shape[0] == f["coords"].shape[0] > 0


def test_predict_job_cancelled_inside_extraction_stops_instead_of_failing_the_slide(cohort, tmp_path):
    """The engine raises Cancelled from inside a slide's extraction; it must end the job, not become a 'failed'
    slide that the job then walks past (the job function is driven directly: no window, no race)."""
    from dnd_engine.errors import Cancelled
    from dnd_gui.jobs.classify import classify_job, load_model_checked

    class Context:
        def __init__(self):
            self.results, self.stop = [], False

        def progress(self, done, total, message=""):
            if "features" in message and "slide 2 of 2" in message:
                self.stop = True          # the second slide's features are being written: cancel now

        def cancelled(self):
            return self.stop

        def log(self, message):
            pass

        def emit(self, result):
            self.results.append(result)

    ctx = Context()
    run = classify_job(load_model_checked(DEMO_MODEL), [str(p) for p in cohort], tmp_path / "out")
    with pytest.raises(Cancelled):
        run(ctx)
    assert [r.prediction.status for r in ctx.results] == ["done"]
    assert not partial_files(tmp_path / "out")


# --- bad inputs: a message, never a crash ----------------------------------------------------------------------
def test_drop_of_files_that_are_not_slides_is_explained(qtbot, demo_window, tmp_path):
    win = demo_window
    notes, table = tmp_path / "notes.txt", tmp_path / "cohort.csv"
    notes.write_text("not a slide\n")
    table.write_text("slide_id,label\n")
    drop_on_viewer(win, [notes, table])
    assert win.error_box is not None and win.error_box.isVisible()
    assert "notes.txt" in win.last_error and "cohort.csv" in win.last_error and "not a slide" in win.last_error
    assert "\n" not in win.last_error and win.last_error in win.statusBar().currentMessage()
    assert win.jobs.jobs == [] and win.slide is None


def test_predict_on_an_unreadable_slide_reports_why(qtbot, demo_window, tmp_path):
    win = demo_window
    broken = tmp_path / "broken.svs"
    broken.write_text("this is not a slide\n")
    with qtbot.waitSignal(win.job_finished, timeout=JOB_MS) as finished:
        with qtbot.waitSignal(win.slide_failed, timeout=LOAD_MS):
            drop_on_viewer(win, [broken])
    job = finished.args[0]
    assert job.state == JobState.FAILED and "broken.svs" in job.error   # no slide classified: failed, not "Done"
    assert win.error_box.isVisible() and "broken.svs" in win.last_error
    pred = win.records[str(broken)].prediction
    assert pred.status == "failed" and "broken.svs" in pred.error and "\n" not in pred.error
    assert win.slide_list.status_text(str(broken)) == "failed"
    row = win.predictions.model.rows[0]
    assert row.status == "failed" and row.error == pred.error
    assert win.heatmap_layer is None


def _write_model(path: Path, extractor: str, in_dim: int) -> Path:
    from dnd_engine.models import build_model
    from dnd_engine.models.io import save_model
    card = {"extractor": extractor, "feature_dim": in_dim, "magnification": 10.0, "patch_size": 256,
            "class_names": CLASSES}
    return save_model(build_model("abmil", in_dim=in_dim, n_classes=2), path, card)


@pytest.mark.parametrize("case", ["missing_weights", "feature_dim"])
def test_predict_refuses_a_model_that_cannot_run_and_keeps_the_demo(qtbot, demo_window, tmp_path, monkeypatch,
                                                                     case):
    win = demo_window
    if case == "missing_weights":
        empty = tmp_path / "no_weights"
        for var in ("DND_WEIGHTS_DIR", "TORCH_HOME", "HF_HOME", "HF_HUB_CACHE"):
            monkeypatch.setenv(var, str(empty / var.lower()))
        bad = _write_model(tmp_path / "resnet_model.safetensors", "resnet50_trunc", 1024)
        expected = ("weights for extractor 'resnet50_trunc' are missing", "put the file at")
    else:
        bad = _write_model(tmp_path / "wide_model.safetensors", "stain_stats", 1024)
        expected = ("expects 1024-d features", "'stain_stats' gives 99-d")
    with qtbot.waitSignal(win.model_failed, timeout=MODEL_MS) as failed:
        drop_on_viewer(win, [bad])                     # a dropped model file is loaded, as File ▸ Load Model
    message = failed.args[0]
    assert all(part in message for part in expected), message
    assert win.error_box.isVisible() and message in win.error_box.informativeText()
    assert win.model is not None and win.model.is_demo  # the working model stays active
    assert "stays active" in win.slide_list.model_box.status.text()
    assert win.jobs.jobs == []


# --- heatmap controls and the predictions table (injected predictions: no model run) ------------------------
def test_heatmap_controls_hover_gallery_and_exports(qtbot, window, pyramid, tmp_path):
    win = window
    with qtbot.waitSignal(win.slide_loaded, timeout=LOAD_MS):
        win.open_slide(str(pyramid))
    pred = fake_prediction(pyramid)
    with qtbot.waitSignal(win.prediction_shown, timeout=LOAD_MS):
        win.add_prediction(pred, CLASSES, "test-model")
    layer, controls = win.heatmap_layer, win.inspector.heatmap
    n = len(pred.coords)
    assert layer.model == "student" and layer.painted_cells > 0
    assert [controls.model_combo.itemText(i) for i in range(controls.model_combo.count())] == \
        ["Student (D&D)", "Base model", "Expert 1"]

    # colormap: the rightmost patch (highest student score) takes the top colour of the chosen map
    hot = int(np.argmax(pred.scores["student"]))
    cell = layer.patch_rect(hot).center()
    ix, iy = int(cell.x() / layer.cell), int(cell.y() / layer.cell)
    assert QColor(layer.image().pixel(ix, iy)) == QColor(*colormap_lut("jet")[255])   # dark red
    controls.colormap_combo.setCurrentText("gray")
    assert QColor(layer.image().pixel(ix, iy)) == QColor(255, 255, 255)
    # opacity and threshold
    controls.opacity.setValue(80)
    assert layer.opacity() == pytest.approx(0.8)
    before = layer.painted_cells
    controls.threshold.setValue(50)
    shown = layer.count_at_or_above(0.5)
    assert 0 < shown < n and layer.painted_cells < before
    assert controls.count_label.text() == f"{shown} of {n} patches shown"
    controls.threshold.setValue(0)
    # switching to the base model's heatmap: now the bottom row is hottest
    controls.model_combo.setCurrentIndex(1)
    assert layer.model == "base" and win.records[str(pyramid)].heatmap_model == "base"
    assert int(np.argmax(layer.raw)) == int(np.argmax(pred.scores["base"]))

    # hover: the patch under the pointer and its score
    wait_painted(qtbot, win.view)
    target = layer.patch_rect(5).center()
    pos = QPointF(win.view.mapFromScene(target))
    move = QMouseEvent(QEvent.Type.MouseMove, pos, win.view.viewport().mapToGlobal(pos), Qt.MouseButton.NoButton,
                       Qt.MouseButton.NoButton, Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(win.view.viewport(), move)
    assert controls.hover.text().startswith("Patch 5: attention")
    assert f"{pred.scores['base'][5]:.4g}" in controls.hover.text()
    assert "\u00b5m" in win.status.cursor.text()

    # the gallery: top patches of the shown model, a click centres the view on the patch, outlined
    gallery = win.inspector.gallery
    top = [gallery.index_of(item) for item in gallery.items("top")]
    bottom = [gallery.index_of(item) for item in gallery.items("bottom")]
    assert top[0] == int(np.argmax(pred.scores["base"])) and bottom[0] == int(np.argmin(pred.scores["base"]))
    item = gallery.items("top")[2]
    QTest.mouseClick(gallery.top.viewport(), Qt.MouseButton.LeftButton, Qt.KeyboardModifier.NoModifier,
                     gallery.top.visualItemRect(item).center())
    rect = layer.patch_rect(gallery.index_of(item))
    centre = win.view.visible_rect().center()
    assert abs(centre.x() - rect.center().x()) < 2 and abs(centre.y() - rect.center().y()) < 2
    assert win.view.mapFromScene(rect).boundingRect().height() == pytest.approx(
        min(win.view.viewport().width(), win.view.viewport().height()) / 3, abs=3)
    assert win._patch_marker is not None and win._patch_marker.rect() == rect

    # exports: the PNG as drawn (base model, gray) and one QuPath tile per patch
    png, geojson = tmp_path / "exports" / "heat.png", tmp_path / "exports" / "heat.geojson"
    for export, target_path in ((win.export_heatmap_png, png), (win.export_heatmap_geojson, geojson)):
        with qtbot.waitSignal(win.job_finished, timeout=JOB_MS) as done:
            export(str(target_path))
        assert done.args[0].state == JobState.DONE, done.args[0].error
    image = QImage(str(png))
    assert not image.isNull() and max(image.width(), image.height()) == 2048
    fc = json.loads(geojson.read_text())
    assert len(fc["features"]) == n and fc["dnd_studio"]["model"] == "base"
    m = fc["features"][7]["properties"]["measurements"]
    assert m["attention"] == pytest.approx(pred.scores["base"][7]) and m["p_tumor"] == pytest.approx(0.6)
    assert not partial_files(tmp_path / "exports")


def test_predictions_table_sorts_exports_csv_and_opens_the_selected_slide(qtbot, window, pyramid, tmp_path):
    win = window
    preds = []
    for path, probs in ((pyramid, [0.2, 0.8]), (CMU, [0.9, 0.1])):
        p = fake_prediction(Path(path))
        p.probs, p.predicted = probs, CLASSES[int(np.argmax(probs))]
        preds.append(p)
    failed = SlidePrediction("gone", str(tmp_path / "gone.svs"), "failed", error="gone.svs: no such file")
    for p in preds + [failed]:
        win.add_prediction(p, CLASSES, "test-model")
    win.predictions.model.set_true_labels({"pyramid": "tumor", "CMU-1-Small-Region": "tumor"})
    view = win.predictions
    assert "2 slides classified, 1 failed" in view.summary.text() and "1/2 agree" in view.summary.text()

    tumor_col = view.model.columns().index("p(tumor)")
    view.table.sortByColumn(tumor_col, Qt.SortOrder.DescendingOrder)
    order = [view.proxy.index(r, 0).data() for r in range(view.proxy.rowCount())]
    assert order == ["pyramid", "CMU-1-Small-Region", "gone"]
    view.table.sortByColumn(tumor_col, Qt.SortOrder.AscendingOrder)
    assert view.proxy.index(view.proxy.rowCount() - 1, 0).data() == "pyramid"

    out = view.export_csv(tmp_path / "table.csv")
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["slide_id"] for r in rows] == ["pyramid", "CMU-1-Small-Region", "gone"]
    assert rows[0]["p_tumor"] == "0.800000" and rows[0]["correct"] == "true" and rows[1]["correct"] == "false"
    assert rows[2]["status"] == "failed" and rows[2]["error"] == "gone.svs: no such file"

    # selecting a row opens its slide, with its prediction in the inspector
    with qtbot.waitSignal(win.slide_loaded, timeout=LOAD_MS) as loaded:
        view.table.selectRow(view.proxy.rowCount() - 1)    # ascending: pyramid is last
    assert loaded.args[0] == str(pyramid)
    qtbot.waitUntil(lambda: win.inspector.prediction.predicted_text == "tumor", timeout=LOAD_MS)
    assert win.heatmap_layer is not None
