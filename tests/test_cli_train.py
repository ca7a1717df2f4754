"""`dnd train`: the per-fold table, the run folder, and every bad input as one line with nothing written."""

import h5py
import numpy as np
import pytest
import torch

from dnd_engine.cli.main import main

from bagtools import make_bags, write_bags


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def cohort(tmp_path):
    bags, labels = make_bags((8, 8), dim=12, seed=4)
    lab = write_bags(tmp_path / "bags", bags, labels, "pt")
    return tmp_path / "bags", lab, bags, labels


def test_train_prints_table_and_writes_run(capsys, tmp_path, cohort):
    feats, lab, bags, _ = cohort
    code, out, err = run(capsys, "train", "--features", feats, "--labels", lab, "--model", "abmil", "--folds", 2,
                         "--epochs", 2, "--optimizer", "adam", "--lr", "1e-3", "--out", tmp_path / "run", "--quiet")
    assert code == 0, err
    assert "test_acc" in out and "test_auc" in out and "mean±std" in out
    assert (tmp_path / "run" / "summary.csv").is_file() and (tmp_path / "run" / "fold_1" / "best.safetensors").is_file()
    import json
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["model"]["name"] == "abmil" and cfg["model"]["in_dim"] == 12 and cfg["train"]["optimizer"] == "adam"


def _expect_error(capsys, tmp_path, feats, lab, needle, *extra):
    out_dir = tmp_path / "run_bad"
    code, out, err = run(capsys, "train", "--features", feats, "--labels", lab, "--folds", 2, "--epochs", 1,
                         "--out", out_dir, "--quiet", *extra)
    assert code == 1
    lines = [x for x in err.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], err
    assert "Traceback" not in err
    assert not out_dir.exists()                    # nothing half-written


def test_labels_with_unknown_slides(capsys, tmp_path, cohort):
    feats, lab, _, _ = cohort
    lab.write_text(lab.read_text() + "ghost_1,class_0\n")
    _expect_error(capsys, tmp_path, feats, lab, "no feature bag: ghost_1")


def test_labels_duplicate_ids(capsys, tmp_path, cohort):
    feats, lab, _, _ = cohort
    lab.write_text(lab.read_text() + "s000,class_1\n")
    _expect_error(capsys, tmp_path, feats, lab, "duplicate slide id 's000'")


def test_labels_one_class(capsys, tmp_path, cohort):
    feats, lab, bags, _ = cohort
    lab.write_text("slide_id,label\n" + "".join(f"{s},tumour\n" for s in bags))
    _expect_error(capsys, tmp_path, feats, lab, "only one class")


def test_class_too_small_for_the_folds(capsys, tmp_path, cohort):
    feats, lab, _, _ = cohort
    rows = lab.read_text().splitlines()
    lab.write_text("\n".join(rows[:1] + rows[1:9] + rows[9:11]) + "\n")   # class_1 keeps 2 slides
    code, out, err = run(capsys, "train", "--features", feats, "--labels", lab, "--folds", 3, "--epochs", 1,
                         "--out", tmp_path / "r", "--quiet")
    assert code == 1 and "class 'class_1' has 2 slide(s); 3-fold cross-validation needs at least 3" in err
    assert not (tmp_path / "r").exists()


def test_feature_dimension_mismatch(capsys, tmp_path, cohort):
    feats, lab, _, _ = cohort
    torch.save(torch.randn(5, 13), feats / "s003.pt")
    _expect_error(capsys, tmp_path, feats, lab, "feature dimensions differ")


def test_nan_features(capsys, tmp_path, cohort):
    feats, lab, bags, _ = cohort
    x = bags["s005"].clone()
    x[0, 0] = float("inf")
    torch.save(x, feats / "s005.pt")
    _expect_error(capsys, tmp_path, feats, lab, "s005.pt: 1 of")


def test_empty_bag(capsys, tmp_path, cohort):
    feats, lab, _, _ = cohort
    (feats / "s002.pt").unlink()
    with h5py.File(feats / "s002.h5", "w") as f:
        f["features"] = np.zeros((0, 12), dtype=np.float32)
    _expect_error(capsys, tmp_path, feats, lab, "s002.h5: the bag is empty")


class Payload:
    def __reduce__(self):
        return (exec, ("open('/tmp/dnd_pwned', 'w').write('x')",))


def test_pickled_pt_is_refused(capsys, tmp_path, cohort):
    feats, lab, _, _ = cohort
    torch.save(Payload(), feats / "s001.pt")
    _expect_error(capsys, tmp_path, feats, lab, "s001.pt: refused")
    import os
    assert not os.path.exists("/tmp/dnd_pwned")


def test_unknown_model_is_a_usage_error(capsys, tmp_path, cohort):
    feats, lab, _, _ = cohort
    with pytest.raises(SystemExit) as e:
        run(capsys, "train", "--features", feats, "--labels", lab, "--model", "nosuch", "--quiet")
    assert e.value.code == 2 and "invalid choice: 'nosuch'" in capsys.readouterr().err
