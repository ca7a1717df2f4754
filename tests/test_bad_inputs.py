"""Bad inputs get one clear line naming what is wrong, never ``internal error``, a traceback or library log noise:
tampered model metadata (through the engine's loader, ``dnd predict`` and the app's model loader), a text file
named ``.pt``, a cut SVS, impossible ``dnd synth`` arguments and ``--weights`` for an extractor that takes none."""

import json
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest
import torch

from dnd_engine.bags.store import load_bag
from dnd_engine.cli.main import main
from dnd_engine.errors import DnDError
from dnd_engine.models import build_model
from dnd_engine.models.io import save_model
from dnd_engine.models.schema import ModelMetadataError
from dnd_engine.predict import load_deployable
from dnd_engine.state_dicts import load_state_dict

from conftest import shared_file

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "resources" / "sample_slides" / "CMU-1-Small-Region.svs"
CARD = {"extractor": "stain_stats", "feature_dim": 99, "magnification": 10.0, "patch_size": 256,
        "class_names": ["normal", "tumor"]}


# --- helpers -----------------------------------------------------------------------------------------------
def rewrite_metadata(src: Path, dst: Path, edit) -> Path:
    """Copy a safetensors file with its header's ``__metadata__`` (str → str) changed by ``edit(meta)``; the
    tensors' offsets are relative to the header's end, so only the header length changes."""
    raw = src.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    edit(header["__metadata__"])
    new = json.dumps(header).encode()
    new += b" " * (-len(new) % 8)
    dst.write_bytes(struct.pack("<Q", len(new)) + new + raw[8 + n:])
    return dst


def _json_field(key):
    """An edit of the JSON object held in metadata field ``key`` (the config or the card)."""
    def edit_with(edit):
        def apply(meta):
            value = json.loads(meta[key])
            edit(value)
            meta[key] = json.dumps(value)
        return apply
    return edit_with


_config, _card = _json_field("dnd_model"), _json_field("card")


def _set(meta, key, value):
    meta[key] = value


# the 8 cases: (edit of the metadata, the parts the message must hold)
CASES = {
    "config_invalid_json": (lambda m: _set(m, "dnd_model", '{"name": "abmil", "in_dim": 99,'),
                            ["field 'dnd_model' is not valid JSON"]),
    "card_invalid_json": (lambda m: _set(m, "card", "{extractor: stain_stats}"),
                          ["field 'card' is not valid JSON"]),
    "no_name": (_config(lambda c: c.pop("name")), ["field 'dnd_model.name' is missing", "abmil"]),
    "config_a_list": (lambda m: _set(m, "dnd_model", '["abmil", 99, 2]'),
                      ["field 'dnd_model' must be a JSON object, got a list of 3"]),
    "card_a_string": (lambda m: _set(m, "card", '"a card"'), ["field 'card' must be a JSON object"]),
    "patch_size_negative": (_card(lambda c: c.update(patch_size=-5)),
                            ["field 'card.patch_size' must be an integer from 16 to 4096, got -5"]),
    "magnification_ten": (_card(lambda c: c.update(magnification="ten")),
                          ["field 'card.magnification' must be a number above 0 and at most 100", 'got "ten"']),
    "in_dim_1e8": (_config(lambda c: c.update(in_dim=1e8)),
                   ["field 'dnd_model.in_dim' must be an integer from 1 to 65536"]),
}


@pytest.fixture(scope="module")
def good_model(tmp_path_factory) -> Path:
    """A real tiny model as the code writes it (ABMIL over stain_stats' 99-d features)."""
    path = tmp_path_factory.mktemp("models") / "good.safetensors"
    return save_model(build_model("abmil", in_dim=99, n_classes=2), path, dict(CARD))


def tampered(good_model: Path, tmp_path: Path, case: str) -> Path:
    return rewrite_metadata(good_model, tmp_path / "model.safetensors", CASES[case][0])


def assert_clean(err: str, parts) -> None:
    """One line on stderr holding ``parts``, no internals and no log noise."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    assert "internal error" not in err and "Traceback" not in err and "tifffile" not in err, err
    for part in parts:
        assert part in lines[0], (part, err)


# --- item 2: tampered model metadata -------------------------------------------------------------------------
def test_the_rewritten_good_model_still_loads(good_model, tmp_path):
    """The helper keeps a file valid when it changes nothing (so each case below tests only its edit)."""
    copy = rewrite_metadata(good_model, tmp_path / "copy.safetensors", lambda m: None)
    assert load_deployable(copy).card["class_names"] == ["normal", "tumor"]


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampered_metadata_is_named_by_the_engine_loader(good_model, tmp_path, case):
    bad = tampered(good_model, tmp_path, case)
    with pytest.raises(ModelMetadataError) as info:
        load_deployable(bad)
    message = str(info.value)
    assert message.startswith("model.safetensors: its metadata field '"), message
    assert "\n" not in message
    for part in CASES[case][1]:
        assert part in message, (part, message)


@pytest.mark.parametrize("case", sorted(CASES))
def test_tampered_metadata_through_dnd_predict(good_model, tmp_path, capfd, case):
    bad = tampered(good_model, tmp_path, case)
    rc = main(["predict", str(SAMPLE), "--model", str(bad), "--out", str(tmp_path / "out"), "--quiet",
               "--device", "cpu"])
    err = capfd.readouterr().err
    assert rc == 1
    assert_clean(err, ["model.safetensors: its metadata field"] + CASES[case][1])


@pytest.mark.parametrize("case", ["no_name", "patch_size_negative", "in_dim_1e8", "card_a_string"])
def test_the_app_shows_the_metadata_error_and_keeps_its_model(qtbot, tmp_path, good_model, case):
    from dnd_gui.jobs.classify import DEMO_MODEL
    from gui_helpers import MODEL_MS, open_window
    win = open_window(qtbot, tmp_path / "settings.ini", tmp_path / "out", DEMO_MODEL, size=(1366, 768))
    bad = tampered(good_model, tmp_path, case)
    with qtbot.waitSignal(win.model_failed, timeout=MODEL_MS) as failed:
        win.load_model(str(bad))
    message = failed.args[0]
    assert "its metadata field" in message and all(p in message for p in CASES[case][1]), message
    assert "cannot load the model (" not in message          # the generic fallback for unexpected errors
    assert win.error_box.isVisible() and message in win.error_box.informativeText()
    assert win.model is not None and win.model.is_demo       # the previous model stays active
    box = win.slide_list.model_box.status.text()
    assert "stays active" in box and box.count("model.safetensors") == 1, box
    if case == "patch_size_negative":
        qtbot.wait(200)                                       # let the wrapped labels lay out before the grab
        shots = Path("/work/shots")
        if shots.is_dir():
            win.grab().save(str(shots / "i22-G2-model-metadata-error.png"))


# --- item 3(a): a text file named .pt ----------------------------------------------------------------------
def test_a_text_file_named_pt_is_not_called_a_pickled_object(tmp_path):
    text = tmp_path / "slide_1.pt"
    text.write_text("slide_id,label\nslide_1,tumor\n")
    with pytest.raises(DnDError) as info:
        load_bag(text)
    assert "slide_1.pt: this feature bag is not a PyTorch file" in str(info.value)
    assert "pickled" not in str(info.value)
    with pytest.raises(DnDError) as info:
        load_state_dict(text)
    assert "is not a PyTorch file" in str(info.value) and "unpickling" not in str(info.value)


def test_a_real_pickle_is_still_refused_as_one(tmp_path):
    legacy = tmp_path / "evil.pt"
    legacy.write_bytes(pickle.dumps({"features": torch.zeros(3, 4).numpy()}, protocol=2))
    with pytest.raises(DnDError) as info:
        load_bag(legacy)
    assert "pickled object" in str(info.value)
    saved = tmp_path / "good.pt"
    torch.save(torch.ones(5, 7), saved)
    assert tuple(load_bag(saved).shape) == (5, 7)


# --- item 3(b): a cut SVS ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def cut_slides(tmp_path_factory):
    """Copies of CMU-1-Small-Region.svs cut at several lengths: inside the header, inside the tiles, and after
    the main image (only the thumbnail and label pages lost: tifffile logs their bad offsets)."""
    src = shared_file("wsi", "CMU-1-Small-Region.svs")
    data = src.read_bytes()
    folder = tmp_path_factory.mktemp("cut")
    for frac in (0.002, 0.3, 0.6, 0.8, 0.99):
        (folder / f"cut_{int(frac * 1000):03d}.svs").write_bytes(data[:int(len(data) * frac)])
    return folder


def test_dnd_info_on_cut_svs_says_one_line_each(cut_slides, capfd):
    for path in sorted(cut_slides.glob("cut_00*.svs")) + sorted(cut_slides.glob("cut_[36]*.svs")):
        rc = main(["info", str(path)])
        err = capfd.readouterr().err
        assert rc == 1
        assert_clean(err, [f"{path.name}: ", "damaged or incomplete"])
        assert "out of range" not in err


def test_dnd_extract_on_cut_svs_fails_those_slides_without_log_noise(cut_slides, tmp_path):
    """In a process of its own: pytest's log capture would hide what Python's last-resort handler prints."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "dnd_engine.cli", "extract", "--slides", str(cut_slides),
                           "--out", str(tmp_path / "out"), "--quiet", "--workers", "1", "--device", "cpu"],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    rc, out, err = proc.returncode, proc.stdout, proc.stderr
    assert rc == 3, out                      # some slides failed, others (the main image intact) were extracted
    assert "tifffile" not in err and "invalid page offset" not in err and "Traceback" not in err, err
    rows = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("cut_")}
    assert "damaged or incomplete" in rows["cut_300"] and "failed" in rows["cut_300"]
    assert "done" in rows["cut_990"]


# --- item 3(c): dnd synth arguments ------------------------------------------------------------------------
@pytest.mark.parametrize("args, parts", [
    (["--n-slides", "1"], ["--n-slides must be at least --n-classes (2)", "got 1"]),
    (["--n-classes", "1"], ["--n-classes must be a whole number from 2 to", "got 1"]),
    (["--n-slides", "3", "--n-classes", "4"], ["--n-slides must be at least --n-classes (4)"]),
    (["--size", "100"], ["--size must be from 512 to", "got 100"]),
    (["--size", "1000000"], ["--size must be from 512 to 32768"]),
    (["--magnification", "0"], ["--magnification must be above 0"]),
    (["--magnification", "nan"], ["--magnification must be above 0"]),
    (["--seed", "-1"], ["--seed must be a whole number from 0"]),
])
def test_dnd_synth_refuses_impossible_arguments(tmp_path, capfd, args, parts):
    rc = main(["synth", "--out", str(tmp_path / "cohort")] + args)
    assert rc == 1
    assert_clean(capfd.readouterr().err, parts)
    assert not (tmp_path / "cohort" / "slides").exists() or not any((tmp_path / "cohort" / "slides").iterdir())


# --- item 3(d): --weights for an extractor that takes none --------------------------------------------------
def test_dnd_extract_refuses_weights_for_stain_stats(tmp_path, capfd):
    weights = tmp_path / "evil.pt"
    weights.write_bytes(pickle.dumps({"x": 1}))
    rc = main(["extract", "--slides", str(SAMPLE), "--out", str(tmp_path / "out"), "--extractor", "stain_stats",
               "--weights", str(weights), "--quiet"])
    assert rc == 1
    assert_clean(capfd.readouterr().err, ["stain_stats takes no weights; drop --weights"])
    assert not list((tmp_path / "out").rglob("*.h5"))


def test_dnd_predict_refuses_weights_for_stain_stats(good_model, tmp_path, capfd):
    weights = tmp_path / "evil.pt"
    weights.write_bytes(pickle.dumps({"x": 1}))
    rc = main(["predict", str(SAMPLE), "--model", str(good_model), "--out", str(tmp_path / "out"),
               "--weights", str(weights), "--quiet", "--device", "cpu"])
    assert rc == 1
    assert_clean(capfd.readouterr().err, ["stain_stats takes no weights; drop --weights"])


# --- the CLI sweep: ranges argparse cannot check, refused before any work -----------------------------------
@pytest.mark.parametrize("args, parts", [
    (["extract", "--batch-size", "0"], ["--batch-size must be a whole number from 1 to 4096, got 0"]),
    (["extract", "--workers", "-1"], ["--workers must be a whole number from 0 to 64, got -1"]),
    (["extract", "--tissue-threshold", "999"], ["--tissue-threshold must be a saturation from 0 to 255, got 999"]),
    (["extract", "--base-magnification", "-3"], ["--base-magnification must be an objective power above 0"]),
    (["extract", "--objective-power", "0"], ["--objective-power must be an objective power above 0"]),
    (["info", "--objective-power", "nan"], ["--objective-power must be an objective power above 0", "got nan"]),
    (["predict", "--base-magnification", "500"], ["--base-magnification must be an objective power", "got 500"]),
    (["predict", "--colormap", "nope"], ["unknown colormap 'nope' (choose from jet"]),
    (["bench", "--option", "dropout=7"], ["mean: dropout must be in [0, 1), got 7"]),
    (["demo", "--folds", "1"], ["--folds must be a whole number from 2 to 12, got 1"]),
    (["demo", "--n-slides", "1"], ["--n-slides must be at least 4", "got 1"]),
    (["demo", "--size", "10"], ["--size must be from 512 to 32768 pixels, got 10"]),
])
def test_cli_refuses_out_of_range_arguments_before_any_work(tmp_path, capfd, good_model, args, parts):
    out = tmp_path / "out"
    command, rest = args[0], args[1:]
    full = {"extract": ["extract", "--slides", str(SAMPLE), "--out", str(out), "--quiet"],
            "info": ["info", str(SAMPLE)],
            "predict": ["predict", str(SAMPLE), "--model", str(good_model), "--out", str(out), "--quiet"],
            "demo": ["demo", "--out", str(out)],
            "bench": ["bench", "--features", str(out), "--labels", str(out / "labels.csv"), "--methods", "mean,abmil",
                      "--out", str(out), "--quiet"]}[command] + rest
    assert main(full) == 1
    assert_clean(capfd.readouterr().err, parts)
    assert not out.exists() or not any(out.rglob("*.*"))


def test_a_text_file_as_model_is_not_a_safetensors_model(tmp_path, capfd):
    text = tmp_path / "model.safetensors"
    text.write_text("just some notes\n")
    rc = main(["predict", str(SAMPLE), "--model", str(text), "--out", str(tmp_path / "out"), "--quiet"])
    assert rc == 1
    assert_clean(capfd.readouterr().err, ["cannot read model file", "not a safetensors model file"])


def test_the_writer_refuses_what_the_reader_would(tmp_path):
    card = dict(CARD, patch_size=-5)
    with pytest.raises(ModelMetadataError, match="'card.patch_size' must be an integer from 16 to 4096"):
        save_model(build_model("abmil", in_dim=99, n_classes=2), tmp_path / "m.safetensors", card)
    assert not list(tmp_path.iterdir())


@pytest.fixture(scope="module")
def tiny_bags(tmp_path_factory):
    """Eight 8-d .pt bags of two classes: enough for argument checks, which refuse before any training."""
    folder = tmp_path_factory.mktemp("bags")
    lines = ["slide_id,label"]
    for i in range(8):
        torch.save(torch.randn(10, 8), folder / f"s{i}.pt")
        lines.append(f"s{i},{'ab'[i % 2]}")
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


@pytest.mark.parametrize("args, parts", [
    (["--dropout", "5"], ["abmil: dropout must be in [0, 1), got 5.0"]),
    (["--model", "mambamil", "--rate", "0"], ["mambamil: rate must be an integer"]),
    (["--weight-decay", "-1"], ["--weight-decay must be from 0 to 1, got -1"]),
    (["--seed", "-5"], ["--seed must be a whole number from 0", "got -5"]),
    (["--model", "transmil", "--option", "layer=2"], ["transmil has no option 'layer' (its options: dropout"]),
    (["--preset", "paper", "--option", "nope=1"], ["abmil has no option 'nope'"]),
])
def test_dnd_train_refuses_bad_model_options_and_ranges(tiny_bags, tmp_path, capfd, args, parts):
    rc = main(["train", "--features", str(tiny_bags), "--labels", str(tiny_bags / "labels.csv"), "--folds", "2",
               "--out", str(tmp_path / "run"), "--quiet", "--device", "cpu"] + args)
    assert rc == 1
    assert_clean(capfd.readouterr().err, parts)
    assert not (tmp_path / "run").exists()
