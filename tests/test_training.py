"""Trainer, metrics and cross-validated runs: learning, exact resume, selection, cancel, outputs."""

import json

import numpy as np
import pytest
import torch

from dnd_engine.bags import BagDataset
from dnd_engine.errors import Cancelled, DnDError
from dnd_engine.models import build_model
from dnd_engine.models.io import load_model
from dnd_engine.training import (CVConfig, TrainConfig, auc_score, classification_metrics, evaluate,
                                 run_cross_validation, train_model)

from bagtools import make_bags, write_bags


def test_metrics_binary_and_multiclass():
    y = [0, 0, 1, 1]
    p = np.array([[0.9, 0.1], [0.4, 0.6], [0.35, 0.65], [0.2, 0.8]])
    m = classification_metrics(y, p)
    assert m["acc"] == 0.75 and m["balanced_acc"] == 0.75 and m["auc"] == 1.0
    assert m["confusion"] == [[1, 1], [0, 2]]
    assert np.isnan(auc_score([1, 1], p[:2]))                 # one class present: undefined, not a crash
    # 3 classes, class 2 absent from y: macro one-vs-rest over the classes present (the authors' summary())
    y3 = [0, 0, 1, 1]
    p3 = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1]])
    from sklearn.metrics import roc_auc_score
    want = np.mean([roc_auc_score([1, 1, 0, 0], p3[:, 0]), roc_auc_score([0, 0, 1, 1], p3[:, 1])])
    assert auc_score(y3, p3) == pytest.approx(want)
    assert classification_metrics(y3, p3)["confusion"][1] == [1, 1, 0]


def _datasets(seed=0, n=(12, 12), dim=16):
    bags, labels = make_bags(n, dim=dim, seed=seed)
    ds = BagDataset.from_tensors(bags, labels)
    ids = ds.slide_ids
    val = ids[::4]
    train = [s for s in ids if s not in val]
    return ds.subset(train), ds.subset(val)


def test_trainer_learns_and_reports_each_epoch(tmp_path):
    torch.manual_seed(0)
    train, val = _datasets()
    model = build_model("abmil", in_dim=16, n_classes=2)
    seen = []
    cfg = TrainConfig(epochs=8, optimizer="adam", lr=1e-3, seed=0, device="cpu")
    res = train_model(model, train, val, cfg, tmp_path / "run", on_epoch=seen.append)
    assert [r["epoch"] for r in seen] == list(range(1, 9))
    assert {"train_loss", "val_loss", "val_acc", "val_auc", "best_epoch", "seconds"} <= set(seen[0])
    assert seen[-1]["train_loss"] < seen[0]["train_loss"]
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == list(range(1, 9))
    accs = [r["val_acc"] for r in seen]
    assert res.best_epoch == 1 + accs.index(max(accs))       # first epoch reaching the best (strict >)
    assert evaluate(model, val)["acc"] == max(accs)          # model holds the selected weights
    loaded, card = load_model(tmp_path / "run" / "best.safetensors")
    assert card["epoch"] == res.best_epoch
    x = val[0][0]
    assert torch.allclose(loaded(x).logits, model.eval()(x).logits)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_interrupted_run_resumes_bit_identically(tmp_path, optimizer):
    train, val = _datasets(seed=1)
    cfg = TrainConfig(epochs=4, optimizer=optimizer, lr=1e-3, seed=5, device="cpu")
    torch.manual_seed(0)
    full = build_model("mean", in_dim=16, n_classes=2)
    r_full = train_model(full, train, val, cfg, tmp_path / "full")

    torch.manual_seed(0)
    part = build_model("mean", in_dim=16, n_classes=2)
    state = {"epochs": 0, "checks": 0}

    def count(_rec):
        state["epochs"] += 1

    def cancel_in_epoch_3():
        if state["epochs"] >= 2:
            state["checks"] += 1
        return state["checks"] > 3
    with pytest.raises(Cancelled):
        train_model(part, train, val, cfg, tmp_path / "part", cancelled=cancel_in_epoch_3, on_epoch=count,
                    checkpoint_seconds=0)
    assert json.loads((tmp_path / "part" / "state.json").read_text())["epoch"] == 2
    assert not list((tmp_path / "part").glob("*.part"))
    again = build_model("mean", in_dim=16, n_classes=2)        # fresh process state: weights come from disk
    r_part = train_model(again, train, val, cfg, tmp_path / "part")
    assert r_part.resumed_from == 2
    assert [h["train_loss"] for h in r_part.history] == [h["train_loss"] for h in r_full.history]
    for a, b in zip(full.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)
    # with the default interval a short run keeps only its final checkpoint, and resumes exactly all the same
    torch.manual_seed(0)
    sparse = build_model("mean", in_dim=16, n_classes=2)
    state["epochs"], state["checks"] = 0, 0
    with pytest.raises(Cancelled):
        train_model(sparse, train, val, cfg, tmp_path / "sparse", cancelled=cancel_in_epoch_3, on_epoch=count,
                    checkpoint_seconds=3600)
    assert not (tmp_path / "sparse" / "state.json").exists()
    torch.manual_seed(0)
    again2 = build_model("mean", in_dim=16, n_classes=2)
    train_model(again2, train, val, cfg, tmp_path / "sparse")
    for a, b in zip(full.state_dict().values(), again2.state_dict().values()):
        assert torch.equal(a, b)
    # a finished run returns at once
    done = build_model("mean", in_dim=16, n_classes=2)
    assert train_model(done, train, val, cfg, tmp_path / "part").resumed_from == 4


def test_resume_refuses_other_settings(tmp_path):
    train, val = _datasets()
    train_model(build_model("mean", in_dim=16, n_classes=2), train, val,
                TrainConfig(epochs=1, device="cpu"), tmp_path / "r")
    with pytest.raises(DnDError, match="different training run"):
        train_model(build_model("mean", in_dim=16, n_classes=2), train, val,
                    TrainConfig(epochs=1, lr=0.1, device="cpu"), tmp_path / "r")


def test_selection_last_and_early_stopping():
    train, val = _datasets()
    r = train_model(build_model("max", in_dim=16, n_classes=2), train, val,
                    TrainConfig(epochs=3, selection="last", device="cpu"))
    assert r.best_epoch == 3
    r = train_model(build_model("max", in_dim=16, n_classes=2), train, val,
                    TrainConfig(epochs=50, optimizer="sgd", lr=1e-9, patience=2, device="cpu"))
    assert r.stopped_early and len(r.history) == 3 and r.best_epoch == 1   # nothing improves at lr 1e-9
    r = train_model(build_model("max", in_dim=16, n_classes=2), train, None, TrainConfig(epochs=2, device="cpu"))
    assert r.best_epoch == 2                                                  # no validation: last epoch


def test_bad_training_settings():
    with pytest.raises(DnDError, match="optimizer"):
        TrainConfig(optimizer="lbfgs").validate()
    with pytest.raises(DnDError, match="epochs"):
        TrainConfig(epochs=0).validate()
    with pytest.raises(DnDError, match="CUDA is not available"):
        train, val = _datasets()
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        train_model(build_model("mean", in_dim=16, n_classes=2), train, val, TrainConfig(epochs=1, device="cuda"))


def test_cross_validation_run_folder_and_resume(tmp_path):
    bags, labels = make_bags((9, 9, 9), dim=8, seed=2)
    lab = write_bags(tmp_path / "bags", bags, labels, "h5")
    cfg = CVConfig(model="abmil", folds=3, train=TrainConfig(epochs=3, optimizer="adam", lr=1e-3, device="cpu"))
    res = run_cross_validation(tmp_path / "bags", lab, tmp_path / "run", cfg)
    run = tmp_path / "run"
    for name in ("config.json", "summary.csv", "summary.json", "predictions.csv", "splits/splits_2.csv",
                 "fold_0/best.safetensors", "fold_0/metrics.jsonl", "fold_2/results.json"):
        assert (run / name).is_file(), name
    preds = (run / "predictions.csv").read_text().splitlines()
    assert preds[0] == "fold,slide_id,label,predicted,p_class_0,p_class_1,p_class_2"
    assert sorted(r.split(",")[1] for r in preds[1:]) == sorted(bags)        # each slide tested once
    assert res.class_names == ["class_0", "class_1", "class_2"]
    assert 0.0 <= res.summary["test_acc"]["mean"] <= 1.0
    summary = (run / "summary.csv").read_text().splitlines()
    assert summary[0].startswith("fold,test_acc") and summary[-2].startswith("mean") and summary[-1].startswith("std")
    # re-running resumes: finished folds are read back, not retrained
    before = (run / "fold_1" / "best.safetensors").stat().st_mtime_ns
    res2 = run_cross_validation(tmp_path / "bags", lab, tmp_path / "run", cfg)
    assert (run / "fold_1" / "best.safetensors").stat().st_mtime_ns == before
    assert res2.summary == res.summary
    other = CVConfig(model="mean", folds=3, train=cfg.train)
    with pytest.raises(DnDError, match="other settings"):
        run_cross_validation(tmp_path / "bags", lab, tmp_path / "run", other)


def test_cross_validation_uses_the_split_column(tmp_path):
    bags, labels = make_bags((6, 6), dim=8, seed=3)
    ids = list(bags)
    splits = {s: ("test" if i % 4 == 0 else "val" if i % 4 == 1 else "train") for i, s in enumerate(ids)}
    lab = write_bags(tmp_path / "bags", bags, labels, "pt", splits=splits)
    cfg = CVConfig(model="mean", folds=5, train=TrainConfig(epochs=1, device="cpu"))
    res = run_cross_validation(tmp_path / "bags", lab, tmp_path / "run", cfg)
    assert len(res.folds) == 1 and res.folds[0]["n_test"] == sum(v == "test" for v in splits.values())
