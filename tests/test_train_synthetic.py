"""Every MIL model learns the synthetic cohort end to end (slides → stain_stats bags → `dnd train`)."""

import json

import pytest

from dnd_engine.cli.main import main
from dnd_engine.models import model_names

# CI-sized: TransMIL's Nyström pseudo-inverse runs on 256×256 per head for any bag up to 256 instances (about 1 s
# per step on 2 CPU cores), so the fast run uses 64 landmarks; the slow test below keeps the default.
FAST_OPTIONS = {"transmil": ["--option", "landmarks=64"]}


def _train(model, feats, labels, out, extra=()):
    code = main(["train", "--features", str(feats), "--labels", str(labels), "--model", model, "--folds", "2",
                 "--epochs", "6", "--optimizer", "adam", "--lr", "5e-4", "--seed", "3", "--device", "cpu",
                 "--out", str(out), "--quiet", *extra])
    assert code == 0
    return json.loads((out / "summary.json").read_text())["summary"]


@pytest.mark.parametrize("model", ["mean", "max", "abmil", "transmil", "s4mil", "mambamil"])
def test_model_learns_synthetic_cohort(model, synth_features, tmp_path):
    assert model in model_names()
    feats, labels = synth_features
    summary = _train(model, feats, labels, tmp_path / "run", FAST_OPTIONS.get(model, ()))
    assert summary["test_auc"]["mean"] >= 0.8            # chance is 0.5


@pytest.mark.slow
def test_transmil_default_landmarks_learns_synthetic_cohort(synth_features, tmp_path):
    feats, labels = synth_features
    assert _train("transmil", feats, labels, tmp_path / "run")["test_auc"]["mean"] >= 0.8
