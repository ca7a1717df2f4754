"""Tiny cohorts warn: clusters of one class, clusters and test folds too small to mean anything.

A 12-slide run once reported ACC 1.000 with every expert trained on one class, and nothing said so. The engine
now checks when the clusters are made (saved in clusters.json), `dnd train` prints the checks, the Results page
shows them, and the wizard warns before training (tests/test_wizard.py)."""

import json
import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest

from dnd_engine.bags import read_labels
from dnd_engine.cli.main import main
from dnd_engine.dnd.cohort_checks import (MIN_CLUSTER_SLIDES, cluster_warnings, cohort_warnings,
                                          run_warnings)
from dnd_engine.project import TrainingPlan, plan_warnings

from bagtools import make_bags, write_bags

LOAD_MS = 30_000


def test_cluster_warnings_name_one_class_clusters_and_small_ones_and_say_what_it_means():
    ws = cluster_warnings([{"normal": 0, "tumour": 4}, {"normal": 12, "tumour": 1}, {"normal": 10, "tumour": 10},
                           {"normal": 3, "tumour": 1}])
    kinds = [(w["kind"], w["cluster"]) for w in ws]
    assert kinds == [("one_class", 0), ("small_cluster", 0), ("few_of_class", 1), ("small_cluster", 3)]
    assert ws[0]["text"].startswith("cluster 1 holds only class 'tumour' (4 slides): its expert never sees the "
                                    "other class, so its accuracy says nothing")
    assert f"fewer than {MIN_CLUSTER_SLIDES}" in ws[1]["text"]
    assert cluster_warnings([{"a": 12, "b": 11}, {"a": 10, "b": 14}]) == []


def test_cohort_warnings_before_training():
    small = cohort_warnings({"normal": 6, "tumour": 6}, n_clusters=3, folds=5)
    assert any("12 slides are too few for 3 clusters" in w for w in small)
    assert any("each fold tests on about 2 slides" in w for w in small)
    assert cohort_warnings({"normal": 200, "tumour": 200}, n_clusters=3, folds=5) == []


def test_plan_warnings_follow_the_presets_number_of_clusters(tmp_path):
    csv = tmp_path / "labels.csv"
    csv.write_text("slide_id,label\n" + "".join(f"s{i},{'ab'[i % 2]}\n" for i in range(60)))
    table = read_labels(csv)
    # 60 slides, 5 folds: about 42 training slides; enough for paper's C = 3, too few for authors-code's C = 5
    assert not any("too few" in w for w in plan_warnings(table, TrainingPlan(preset="paper")))
    assert any("too few for 5 clusters" in w for w in plan_warnings(table, TrainingPlan(preset="authors-code")))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`dnd train --preset paper` on 12 bags (6 per class), 2 folds, C = 2: what the CLI printed, the run folder."""
    root = tmp_path_factory.mktemp("tiny")
    bags, labels = make_bags((6, 6), dim=8, seed=3)
    lab = write_bags(root / "bags", bags, labels, "h5")
    argv = ["train", "--features", root / "bags", "--labels", lab, "--preset", "paper", "--clusters", 2,
            "--folds", 2, "--epochs", 2, "--student-epochs", 2, "--optimizer", "adam", "--lr", "1e-3", "--quiet",
            "--device", "cpu", "--out", root / "run"]
    import contextlib
    import io
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main([str(a) for a in argv])
    assert code == 0
    return out.getvalue(), root / "run"


def test_clusters_json_keeps_the_warnings(tiny_run):
    _, run = tiny_run
    for fold in (0, 1):
        data = json.loads((run / f"fold_{fold}" / "clusters" / "clusters.json").read_text())
        assert any(w["kind"] == "small_cluster" for w in data["warnings"])
        assert all(w["text"].startswith(f"cluster {w['cluster'] + 1} ") for w in data["warnings"])


def test_dnd_train_prints_the_warnings(tiny_run):
    out, run = tiny_run
    lines = [s for s in out.splitlines() if s.startswith("warning: ")]
    assert lines and lines == [f"warning: {w}" for w in run_warnings(run)]
    assert any(f"fewer than {MIN_CLUSTER_SLIDES} training slides" in s for s in lines)
    assert any("folds test on 6 slides" in s for s in lines)


def test_results_page_shows_the_runs_warnings(qtbot, tiny_run):
    from dnd_gui.panels.results_view import ResultsView
    _, run = tiny_run
    view = ResultsView()
    qtbot.addWidget(view)
    view.resize(1366, 768)
    view.show()
    qtbot.waitExposed(view)
    try:
        with qtbot.waitSignal(view.loaded, timeout=LOAD_MS):
            view.set_runs([run])
        assert view.warnings_label.isVisible()
        text = view.warnings_label.text()
        assert all(w in text for w in run_warnings(run)) and "its accuracy" in text
        shots = os.environ.get("DND_SHOTS_DIR")
        if shots:
            view.grab().save(os.path.join(shots, "i19-D-results-warnings.png"))
    finally:
        view.shutdown()
