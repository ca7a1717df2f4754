"""The Predictions panel and exports (issue 19, items 9, 12, 13): a demo model's rows say DEMO in the table, in
its CSV export and in an exported heatmap PNG; the table's right-click menu opens the slide and copies the row;
the patch gallery is on screen at 1366×768 once a slide is classified."""

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import csv
import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from PySide6.QtWidgets import QApplication

from dnd_engine.predict import SlidePrediction
from dnd_engine.predictions import DEMO_MARK
from dnd_gui.jobs.exports import heatmap_png_job
from dnd_gui.panels.predictions_view import PredictionsView
from dnd_engine.heatmaps.style import HeatmapStyle

from pyramid import tissue_like, write_pyramid

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


def pred(slide_id: str, probs=(0.3, 0.7)) -> SlidePrediction:
    return SlidePrediction(slide_id, f"/data/{slide_id}.svs", "done", "tumor" if probs[1] > probs[0] else "normal",
                           list(probs), 12)


@pytest.fixture
def view(qtbot):
    v = PredictionsView()
    qtbot.addWidget(v)
    v.resize(900, 240)
    v.show()
    qtbot.waitExposed(v)
    return v


def test_demo_rows_are_marked_in_the_table_and_its_csv(view, tmp_path):
    view.add_prediction(pred("a"), ["normal", "tumor"], "demo_abmil", demo=True)
    view.add_prediction(pred("b"), ["normal", "tumor"], "run-a/abmil")
    m = view.model
    model_col = m.columns().index("Model")
    assert m.index(0, model_col).data() == "demo_abmil [DEMO]"
    assert m.index(1, model_col).data() == "run-a/abmil"
    from PySide6.QtCore import Qt
    assert "not for diagnosis" in m.index(0, 0).data(Qt.ItemDataRole.ToolTipRole)
    assert "DEMO" in view.summary.text()
    rows = list(csv.DictReader(io.StringIO(view.export_csv(tmp_path / "p.csv").read_text())))
    assert [(r["model"], r["demo"]) for r in rows] == [("demo_abmil", DEMO_MARK), ("run-a/abmil", "")]


def test_the_same_slide_by_two_runs_has_two_rows(view):
    view.add_prediction(pred("a"), ["normal", "tumor"], "run-a/abmil")
    view.add_prediction(pred("a", (0.8, 0.2)), ["normal", "tumor"], "run-b/abmil")
    view.add_prediction(pred("a", (0.6, 0.4)), ["normal", "tumor"], "run-a/abmil")   # a re-run replaces
    assert [(r.model, r.predicted) for r in view.model.rows] == [("run-a/abmil", "normal"),
                                                                 ("run-b/abmil", "normal")]


def test_right_click_menu_opens_the_slide_and_copies_the_row(qtbot, view):
    view.add_prediction(pred("a"), ["normal", "tumor"], "demo_abmil", demo=True)
    view.add_prediction(pred("b", (0.9, 0.1)), ["normal", "tumor"], "demo_abmil", demo=True)
    menu = view.context_menu(1)
    actions = {a.text(): a for a in menu.actions() if a.text()}
    assert {"Open Slide", "Copy Row"} <= set(actions)
    with qtbot.waitSignal(view.slide_selected) as opened:
        actions["Open Slide"].trigger()
    assert opened.args == ["/data/b.svs"]
    actions["Copy Row"].trigger()
    text = QApplication.clipboard().text()
    assert text.split("\t")[:3] == ["b", "done", "normal"] and text.endswith("demo_abmil [DEMO]")
    ARTIFACTS.mkdir(exist_ok=True)
    assert view.grab().save(str(ARTIFACTS / "predictions_demo_rows.png"))
    # the menu is wired to the table's right click
    from PySide6.QtCore import Qt
    assert view.table.contextMenuPolicy() == Qt.ContextMenuPolicy.CustomContextMenu


@pytest.mark.parametrize("demo", [True, False])
def test_exported_heatmap_png_of_a_demo_model_carries_the_mark(tmp_path, demo):
    slide = write_pyramid(tmp_path / "s.svs", tissue_like(1024, 768, seed=3), downsamples=(1, 4))
    xs, ys = np.meshgrid(np.arange(0, 1024, 256), np.arange(0, 768, 256))
    coords = np.stack([xs.ravel(), ys.ravel()], 1)
    scores = np.linspace(0, 1, len(coords))
    out = tmp_path / "h.png"
    heatmap_png_job(out, str(slide), coords, 256.0, scores, HeatmapStyle(), None, demo=demo)(
        SimpleNamespace(progress=lambda *a: None, cancelled=lambda: False, log=lambda m: None))
    img = np.asarray(Image.open(out).convert("RGB"))
    band = img[: max(12, img.shape[0] // 40)]
    # the banner: a dark strip across the top with bright (yellow) text in it
    dark = (band.mean(axis=2) < 70).mean()
    yellow = ((band[..., 0] > 200) & (band[..., 1] > 170) & (band[..., 2] < 90)).sum()
    assert (dark > 0.5 and yellow > 20) == demo


def test_patch_gallery_is_on_screen_at_1366x768(qtbot, tmp_path):
    from PySide6.QtCore import QSettings
    from dnd_engine.synth import make_synthetic_cohort
    from dnd_gui.jobs.classify import DEMO_MODEL
    from dnd_gui.jobs.queue import JobState
    from dnd_gui.window.main_window import MainWindow
    slide = make_synthetic_cohort(tmp_path / "cohort", n_slides=2, size=2048, seed=11).slides[0].path
    win = MainWindow(settings=QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat),
                     output_root=tmp_path / "out", model=None, theme="dark")
    qtbot.addWidget(win)
    win.resize(1366, 768)
    win.show()
    qtbot.waitExposed(win)
    with qtbot.waitSignal(win.model_ready, timeout=90_000):
        win.load_model(DEMO_MODEL)
    with qtbot.waitSignal(win.slide_loaded, timeout=20_000):
        win.open_slide(str(slide))
    with qtbot.waitSignal(win.job_finished, timeout=180_000) as done:
        win.classify_current()
    assert done.args[0].state == JobState.DONE, done.args[0].error
    gallery = win.inspector.gallery
    qtbot.waitUntil(lambda: gallery.loaded, timeout=20_000)
    QApplication.processEvents()
    top = gallery.top
    first = top.visualItemRect(top.item(0))
    corner = top.viewport().mapTo(win.inspector.viewport(), first.bottomRight())
    assert win.inspector.viewport().rect().contains(corner)      # the top patch is in view, not below the fold
    assert not gallery.visibleRegion().isEmpty()
    ARTIFACTS.mkdir(exist_ok=True)
    assert win.grab().save(str(ARTIFACTS / "gallery_1366x768.png"))
