"""One fold loop, one split spec, one predictions writer (issue 20, item 3).

Plain and D&D cross-validation share ``training/folds.py``: the checks, the splits (``SplitSpec``), the
``config.json`` guard, the resumable fold loop and the run's files; their predictions CSVs go through the one
accumulating writer of ``dnd_engine.predictions``. The run files pinned here (summary.json keys, the predictions
layout) are what the loop wrote before it was shared; a resumed run writes them byte for byte as a fresh one.
"""

import csv
import io
import json
import math
import os
import shutil
import threading
from dataclasses import fields

import pytest

from bagtools import make_bags, write_bags
from dnd_engine.dnd import CVSettings, preset_config, run_dnd_cv
from dnd_engine.errors import DnDError
from dnd_engine.predictions import write_cv_predictions
from dnd_engine.training import CVConfig, TrainConfig, run_cross_validation
from dnd_engine.training.folds import SplitSpec, finish_run, load_cohort, run_folds, start_run
from dnd_engine.training.metrics import mean_std

RUN_FILES = ("summary.json", "summary.csv", "predictions.csv")


@pytest.fixture
def cohort(tmp_path):
    bags, labels = make_bags((7, 7), dim=8, seed=2)
    return write_bags(tmp_path / "bags", bags, labels, "h5"), sorted(bags)


def rows_of(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def snapshot(run):
    return {name: (run / name).read_bytes() for name in RUN_FILES}


def test_plain_and_dnd_runs_share_one_split_spec():
    assert CVSettings is SplitSpec
    assert issubclass(CVConfig, SplitSpec)
    assert [f.name for f in fields(SplitSpec)] == ["folds", "val_frac", "split_seed", "splits_dir"]
    assert CVConfig(folds=3, model="mean").folds == 3


def test_the_fold_loop_takes_any_fit_function_and_resumes(tmp_path, cohort):
    labels_csv, ids = cohort
    spec = SplitSpec(folds=3, val_frac=0.15)
    data = load_cohort(tmp_path / "bags", labels_csv, spec)
    config = {"kind": "test", "folds": len(data.splits)}
    out = start_run(tmp_path / "run", config, lambda c: c.get("kind"), data.splits)
    fitted, progress, epochs = [], [], []

    def fit(fold):
        fitted.append(fold.index)
        fold.progress(1, 1, "half")
        fold.on_epoch({"epoch": 1})
        probs = [0.25, 0.75]
        return {"fold": fold.index, "n_test": len(fold.test), "score": 0.5 + fold.index,
                "predictions": [{"fold": fold.index, "slide_id": s, "label": "class_0", "predicted": "class_1",
                                 "probs": probs} for s in fold.test.slide_ids]}

    def run(fit_fn):
        return run_folds(data, out, fit_fn, steps=[2, 2, 2], with_model=False, report=lambda r: "",
                         progress=lambda d, t, m: progress.append((d, t)), on_epoch=epochs.append)

    folds = run(fit)
    assert fitted == [0, 1, 2]
    assert progress == [(1, 6), (3, 6), (5, 6)]                # each fold's steps offset into the run's
    assert [e["fold"] for e in epochs] == [0, 1, 2]
    for i in range(3):
        assert json.loads((out / f"fold_{i}" / "results.json").read_text())["score"] == 0.5 + i
        assert {r["fold"] for r in rows_of(out / f"fold_{i}" / "predictions.csv")} == {str(i)}
    finish_run(out, folds, data.class_names, with_model=False, summary={}, summary_text="x\n", extra={})
    assert sorted(r["slide_id"] for r in rows_of(out / "predictions.csv")) == ids      # each slide tested once

    def must_not_fit(fold):
        raise AssertionError(f"fold {fold.index} was fitted again")
    assert run(must_not_fit) == folds                                      # finished folds are read back
    (out / "fold_1" / "results.json").unlink()
    fitted.clear()
    assert run(fit) == folds and fitted == [1]                             # only the unfinished one is fitted
    with pytest.raises(DnDError, match="other settings"):
        start_run(out, {"kind": "other"}, lambda c: c.get("kind"), data.splits)


def test_cv_predictions_merge_by_fold_model_and_slide(tmp_path):
    path = tmp_path / "predictions.csv"

    def row(fold, arm, sid, p):
        return {"fold": fold, "arm": arm, "slide_id": sid, "label": "a", "predicted": "a", "probs": [p, 1 - p]}
    write_cv_predictions(path, [row(0, "base", "s1", 0.5), row(0, "dnd", "s1", 0.6)], ["a", "b"], with_model=True)
    write_cv_predictions(path, [row(1, "base", "s2", 0.7), row(0, "dnd", "s1", 0.9)], ["a", "b"], with_model=True)
    assert path.read_text().splitlines()[0] == "fold,model,slide_id,label,predicted,p_a,p_b"
    assert [(r["fold"], r["model"], r["slide_id"], r["p_a"]) for r in rows_of(path)] == [
        ("0", "base", "s1", "0.500000"), ("0", "dnd", "s1", "0.900000"), ("1", "base", "s2", "0.700000")]
    assert not list(tmp_path.glob(".*.part"))


def test_a_writer_in_another_process_waits_for_the_folder_lock(tmp_path):
    """The writer takes an advisory lock on the folder, so a CLI and the app merging into one file never lose
    each other's rows. Here the test holds the lock as another process would (its own open of the folder)."""
    fcntl = pytest.importorskip("fcntl")
    path = tmp_path / "predictions.csv"
    write_cv_predictions(path, [{"fold": 0, "slide_id": "s1", "label": "a", "predicted": "a", "probs": [1.0]}],
                         ["a"], with_model=False)
    fd = os.open(tmp_path, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    writer = threading.Thread(target=write_cv_predictions, args=(path, [
        {"fold": 0, "slide_id": "s2", "label": "a", "predicted": "a", "probs": [1.0]}], ["a"]),
        kwargs={"with_model": False})
    try:
        writer.start()
        writer.join(0.5)
        assert writer.is_alive()                  # waiting for the lock (it cannot have written without it)
        assert [r["slide_id"] for r in rows_of(path)] == ["s1"]
    finally:
        os.close(fd)                              # releases the lock
    writer.join()
    assert [r["slide_id"] for r in rows_of(path)] == ["s1", "s2"]


def check_summary_values(run, folds_key_order, summary):
    """summary.json: the folds without their predictions, each metric's mean/std over the folds."""
    data = json.loads((run / "summary.json").read_text())
    assert list(data["folds"][0]) == folds_key_order
    for key, stats in data["summary"].items():
        if isinstance(stats, dict) and "mean" in stats and not key.startswith("diff"):
            m, s = mean_std([math.nan if f.get(key) is None else f[key] for f in data["folds"]])
            assert (stats["mean"], stats["std"]) == pytest.approx((m, s), nan_ok=True)
    fold_rows = [r for i in range(len(data["folds"])) for r in rows_of(run / f"fold_{i}" / "predictions.csv")]
    assert rows_of(run / "predictions.csv") == fold_rows
    assert list(data) == ["folds", "summary", "class_names", summary]


def test_plain_run_files_are_unchanged_by_a_resume(tmp_path, cohort):
    labels_csv, ids = cohort
    cfg = CVConfig(model="abmil", folds=3, train=TrainConfig(epochs=2, optimizer="adam", lr=1e-3, device="cpu"))
    run = tmp_path / "run"
    run_cross_validation(tmp_path / "bags", labels_csv, run, cfg)
    check_summary_values(run, ["fold", "best_epoch", "epochs_run", "n_train", "n_val", "n_test", "val_acc",
                               "val_balanced_acc", "val_auc", "val_loss", "val_confusion", "test_acc",
                               "test_balanced_acc", "test_auc", "test_loss", "test_confusion"], "model")
    assert list(json.loads((run / "summary.json").read_text())["summary"]) == [
        "val_acc", "val_balanced_acc", "val_auc", "test_acc", "test_balanced_acc", "test_auc"]
    fresh = snapshot(run)
    shutil.rmtree(run / "fold_1")
    run_cross_validation(tmp_path / "bags", labels_csv, run, cfg)
    assert snapshot(run) == fresh


def test_dnd_run_files_are_unchanged_by_a_resume(tmp_path, cohort):
    labels_csv, ids = cohort
    cfg = preset_config("paper", "mean")
    for t in (cfg.base, cfg.expert, cfg.student):
        t.epochs, t.device = 1, "cpu"
    cfg.n_clusters = 2
    run = tmp_path / "run"
    run_dnd_cv(tmp_path / "bags", labels_csv, run, cfg, CVSettings(folds=2, val_frac=0.15))
    keys = ["fold", "n_train", "n_val", "n_test", "cluster_sizes", "cluster_method"]
    for arm in ("base", "dnd"):
        for part in ("val", "test"):
            keys += [f"{arm}_{part}_{k}" for k in ("acc", "auc", "balanced_acc", "loss", "confusion")]
    keys += ["expert_0_test_acc", "expert_0_test_auc", "expert_1_test_acc", "expert_1_test_auc"]
    check_summary_values(run, keys, "dnd")
    assert rows_of(run / "predictions.csv")[0].keys() == {"fold", "model", "slide_id", "label", "predicted",
                                                          "p_class_0", "p_class_1"}
    fresh = snapshot(run)
    (run / "fold_0" / "results.json").unlink()
    run_dnd_cv(tmp_path / "bags", labels_csv, run, cfg, CVSettings(folds=2, val_frac=0.15))
    assert snapshot(run) == fresh
