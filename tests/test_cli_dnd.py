"""`dnd train --preset`, `dnd bench`, `dnd predict` and `dnd demo`: outputs, tables, model cards, bad input."""

import json
import re
from pathlib import Path

import pytest

from dnd_engine.cli.main import main
from dnd_engine.errors import DnDError

from bagtools import make_bags, write_bags


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def bags(tmp_path):
    b, labels = make_bags((9, 9), dim=12, seed=2)
    lab = write_bags(tmp_path / "bags", b, labels, "h5")
    return tmp_path / "bags", lab


TINY = ["--folds", 2, "--epochs", 2, "--student-epochs", 2, "--optimizer", "adam", "--lr", "1e-3", "--quiet"]


def test_train_with_preset_runs_dnd_and_writes_a_deployable_model(capsys, tmp_path, bags):
    feats, lab = bags
    code, out, err = run(capsys, "train", "--features", feats, "--labels", lab, "--preset", "paper",
                         "--clusters", 2, "--out", tmp_path / "run", *TINY)
    assert code == 0, err
    assert "base_acc" in out and "dnd_acc" in out and "paired t-test" in out and "deployable model" in out
    run_dir = tmp_path / "run"
    from dnd_engine.models.io import load_model
    model, card = load_model(run_dir / "model.safetensors")
    assert card["kind"] == "dnd-student" and card["class_names"] == ["class_0", "class_1"]
    assert card["feature_dim"] == 12 and card["dnd"]["preset"] == "paper" and card["dnd"]["n_clusters"] == 2
    assert card["cohort"]["n_slides"] == 18 and "dnd_test_acc" in card["metrics"]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["summary"]["deployed_fold"] == card["cohort"]["fold"]
    assert {"base", "dnd"} == {r.split(",")[1] for r in (run_dir / "predictions.csv").read_text().splitlines()[1:]}
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["kind"] == "dnd" and cfg["dnd"]["n_clusters"] == 2 and cfg["dnd"]["base"]["epochs"] == 2
    # resuming a finished run trains nothing and prints the same table
    code2, out2, _ = run(capsys, "train", "--features", feats, "--labels", lab, "--preset", "paper",
                         "--clusters", 2, "--out", run_dir, *TINY)
    assert code2 == 0 and out2.splitlines()[:4] == out.splitlines()[:4]
    # other settings in the same folder are refused
    code3, _, err3 = run(capsys, "train", "--features", feats, "--labels", lab, "--preset", "authors-code",
                         "--clusters", 2, "--out", run_dir, *TINY)
    assert code3 == 1 and "other settings" in err3


def test_authors_code_preset_options_reach_the_run(capsys, tmp_path, bags):
    feats, lab = bags
    code, _, err = run(capsys, "train", "--features", feats, "--labels", lab, "--preset", "authors-code",
                       "--clusters", 2, "--legacy-random-partition", "--temperature", "0.5",
                       "--out", tmp_path / "run", *TINY)
    assert code == 0, err
    dnd = json.loads((tmp_path / "run" / "config.json").read_text())["dnd"]
    assert dnd["preset"] == "authors-code" and dnd["cluster_on"] == "logits" and not dnd["constrained"]
    assert dnd["legacy_random_partition"] and dnd["temperature"] == 0.5 and dnd["student"]["optimizer"] == "sgd"
    clusters = json.loads((tmp_path / "run" / "fold_0" / "clusters" / "clusters.json").read_text())
    assert clusters["method"] == "legacy-random-partition"


def test_bench_prints_and_saves_the_table(capsys, tmp_path, bags):
    feats, lab = bags
    code, out, err = run(capsys, "bench", "--features", feats, "--labels", lab, "--methods", "mean,att_mil",
                         "--preset", "paper", "--clusters", 2, "--out", tmp_path / "bench", *TINY)
    assert code == 0, err
    md = (tmp_path / "bench" / "table.md").read_text()
    assert md.count("\n| mean |") == 1 and md.count("\n| abmil |") == 1 and "paired t-test" in md
    assert re.search(r"\| abmil \| \d+\.\d ± \d+\.\d \| \d+\.\d ± \d+\.\d \| [+-]\d+\.\d \|", md)
    rows = (tmp_path / "bench" / "table.csv").read_text().splitlines()
    assert len(rows) == 3 and "diff_auc_p" in rows[0]
    assert (tmp_path / "bench" / "abmil" / "fold_1" / "student" / "best.safetensors").is_file()
    assert "| mean |" in out


def test_bench_help_offers_both_presets_and_rejects_unknown_methods(capsys, bags, tmp_path):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    out = capsys.readouterr().out
    assert "paper" in out and "authors-code" in out
    feats, lab = bags
    code, _, err = run(capsys, "bench", "--features", feats, "--labels", lab, "--methods", "mean,gnn",
                       "--out", tmp_path / "b")
    assert code == 1 and "unknown method" in err and not (tmp_path / "b").exists()


@pytest.fixture(scope="module")
def synth_model(synth_features, tmp_path_factory):
    """A D&D model trained (briefly) on the synthetic cohort's stain_stats features."""
    feats, labels = synth_features
    out = tmp_path_factory.mktemp("synth_dnd") / "run"
    assert main(["train", "--features", str(feats), "--labels", str(labels), "--preset", "paper", "--folds", "2",
                 "--epochs", "8", "--student-epochs", "8", "--optimizer", "adam", "--lr", "5e-4", "--quiet",
                 "--out", str(out)]) == 0
    return out, Path(labels).parent / "slides"


def test_predict_writes_predictions_and_heatmaps_and_survives_a_bad_file(capsys, tmp_path, synth_model):
    run_dir, slides = synth_model
    slide = sorted(slides.glob("*.tif*"))[0]
    bad = tmp_path / "not_a_slide.svs"
    bad.write_text("hello")
    code, out, err = run(capsys, "predict", "--model", run_dir, slide, bad, "--out", tmp_path / "pred",
                         "--heatmaps", "all", "--quiet")
    assert code == 1                                           # one slide failed, the other is done
    rows = (tmp_path / "pred" / "predictions.csv").read_text().splitlines()
    assert rows[0].startswith("slide_id,status,predicted,p_normal,p_tumor")
    done = [r for r in rows[1:] if ",done," in r]
    failed = [r for r in rows[1:] if ",failed," in r]
    assert len(done) == 1 and len(failed) == 1 and "not_a_slide" in failed[0]
    hm = tmp_path / "pred" / "heatmaps"
    sid = slide.name.split(".")[0]
    for name in ("student", "base", "expert_0"):
        assert (hm / f"{sid}_{name}_heatmap.png").is_file()
        gj = json.loads((hm / f"{sid}_{name}_heatmap.geojson").read_text())
        assert gj["type"] == "FeatureCollection" and gj["features"][0]["geometry"]["type"] == "Polygon"
        assert "p_tumor" in gj["features"][0]["properties"]["measurements"]
    assert "failed" in out and sid in out


def test_predict_refuses_mismatched_models_in_one_line(capsys, tmp_path, bags, synth_model):
    feats, lab = bags
    _, slides = synth_model
    slide = sorted(slides.glob("*.tif*"))[0]
    assert run(capsys, "train", "--features", feats, "--labels", lab, "--preset", "paper", "--clusters", 2,
               "--out", tmp_path / "run12", *TINY)[0] == 0
    code, _, err = run(capsys, "predict", "--model", tmp_path / "run12", slide, "--out", tmp_path / "p")
    assert code == 1 and "does not say which feature extractor" in err       # .h5 bags without provenance
    code, _, err = run(capsys, "predict", "--model", tmp_path / "run12", slide, "--extractor", "stain_stats",
                       "--out", tmp_path / "p")
    assert code == 1 and "expects 12-d features" in err and "99-d" in err
    code, _, err = run(capsys, "predict", "--model", tmp_path / "nothing", slide, "--out", tmp_path / "p")
    assert code == 1 and "model not found" in err


def test_magnification_the_slide_cannot_reach_is_refused(synth_model):
    from dnd_engine.predict import check_slide
    _, slides = synth_model
    slide = sorted(slides.glob("*.tif*"))[0]
    check_slide({"magnification": 10.0}, slide)
    with pytest.raises(DnDError, match="scanned at 20x but the model needs 40x"):
        check_slide({"magnification": 40.0}, slide)


def test_demo_runs_end_to_end_and_finds_the_lesions(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, "demo", "--out", tmp_path / "demo")
    assert code == 0, err[-2000:]
    for stage in ("1/5", "2/5", "3/5", "4/5", "5/5"):
        assert stage in err
    assert "| abmil |" in out and "paired t-test" in out
    auc = float(re.search(r"patch-level AUC (\d\.\d+)", out).group(1))
    assert auc >= 0.8                                           # the student's heatmap finds the planted lesions
    png = re.search(r"heatmap: (\S+CMU-1-Small-Region_student_heatmap\.png)", out).group(1)
    assert Path(png).is_file()
    gj = json.loads(Path(png.replace(".png", ".geojson")).read_text())
    assert gj["features"] and gj["features"][0]["properties"]["measurements"]
    assert (tmp_path / "demo" / "dnd_run" / "model.safetensors").is_file()
    assert (tmp_path / "demo" / "dnd_run" / "table.md").is_file()
