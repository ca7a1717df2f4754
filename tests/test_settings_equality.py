"""One rule for D&D settings: a value the user did not set is the preset's, in `dnd train` and in the app's plan.

Before, ``TrainingPlan.n_clusters = 3`` overrode every preset, so the app trained authors-code with C = 3 where
`dnd train --preset authors-code` used C = 5.
"""

import pytest

import json

from dnd_engine.cli.main import build_parser
from dnd_engine.cli.training_options import dnd_config_from_args, model_options_from_args
from dnd_engine.dnd.presets import PRESETS, apply_overrides, preset_config
from dnd_engine.errors import DnDError
from dnd_engine.project import TrainingPlan

# the same choices, as `dnd train` options and as TrainingPlan fields
OVERRIDES = [
    ([], {}),
    (["--clusters", "2"], {"n_clusters": 2}),
    (["--temperature", "0.5", "--lambda-base", "0.3", "--lambda-expert", "2"],
     {"temperature": 0.5, "lambda_base": 0.3, "lambda_expert": 2.0}),
    (["--base-epochs", "7", "--expert-epochs", "8", "--student-epochs", "9"],
     {"epochs_base": 7, "epochs_expert": 8, "epochs_student": 9}),
    (["--clusters", "4", "--student-epochs", "11"], {"n_clusters": 4, "epochs_student": 11}),
]


def cli_config(argv, method="abmil"):
    args = build_parser().parse_args(["train", "--features", "f", "--labels", "l.csv", "--model", method] + argv)
    return dnd_config_from_args(args, args.model, model_options_from_args(args))


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("argv,fields", OVERRIDES)
def test_cli_and_app_build_the_same_dnd_settings(preset, argv, fields):
    common = ["--preset", preset, "--seed", "4", "--device", "cpu"]
    cli = cli_config(common + argv)
    app = TrainingPlan(methods=["abmil"], preset=preset, seed=4, device="cpu", **fields).dnd_config("abmil")
    assert app.to_dict() == cli.to_dict()


@pytest.mark.parametrize("preset", PRESETS)
def test_unset_values_are_the_presets(preset):
    want = preset_config(preset, "abmil")
    got = TrainingPlan(methods=["abmil"], preset=preset).dnd_config("abmil")
    assert (got.n_clusters, got.temperature, got.lambda_base, got.student.epochs) == \
        (want.n_clusters, want.temperature, want.lambda_base, want.student.epochs)
    assert cli_config(["--preset", preset]).n_clusters == want.n_clusters


def test_apply_overrides_keeps_the_preset_for_none_and_refuses_unknown_keys():
    base = preset_config("authors-code")
    same = apply_overrides(base, n_clusters=None, temperature=None)
    assert same.to_dict() == base.to_dict()
    changed = apply_overrides(base, {"n_clusters": 2, "expert.epochs": 3, "epochs": 5, "seed": 9})
    assert (changed.n_clusters, changed.expert.epochs, changed.base.epochs, changed.student.seed) == (2, 3, 5, 9)
    assert base.n_clusters == 5                          # the preset's object is not touched
    with pytest.raises(DnDError, match="unknown D&D setting 'clusters'"):
        apply_overrides(base, clusters=2)


@pytest.mark.parametrize("preset", PRESETS)
def test_plan_records_keep_unset_values_unset_and_old_records_load(preset):
    """A job record (jobs.json) or project.json stores an unset value as null, which reads back as the preset's;
    a record written when the plan held explicit values (C = 3 for every preset) still loads, with those values."""
    plan = TrainingPlan(methods=["abmil"], preset=preset)
    record = json.loads(json.dumps(plan.to_dict()))
    assert record["n_clusters"] is None and record["epochs_student"] is None
    back = TrainingPlan.from_dict(record)
    assert back.dnd_config("abmil").to_dict() == plan.dnd_config("abmil").to_dict()
    assert back.dnd_config("abmil").n_clusters == preset_config(preset).n_clusters
    old = dict(record, n_clusters=3, lambda_base=1.0, lambda_expert=1.0, temperature=1.0, epochs_base=200,
               epochs_expert=200, epochs_student=300)
    assert TrainingPlan.from_dict(old).dnd_config("abmil").n_clusters == 3
    absent = {k: v for k, v in record.items() if k not in ("n_clusters", "temperature")}
    assert TrainingPlan.from_dict(absent).dnd_config("abmil").n_clusters == preset_config(preset).n_clusters
