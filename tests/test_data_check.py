"""The engine answers what the wizard used to decide itself (issue 20, item 1): the labels CSV read row by row,
one data check for the wizard, `dnd train` and the project, one all-or-nothing transaction that applies data to a
project, the models' titles and summaries, the devices, the weights lookup."""

from pathlib import Path

import pytest

from dnd_engine.bags import LabelsError, read_label_rows, read_labels
from dnd_engine.device import list_devices, resolve_device
from dnd_engine.features.registry import default_extractor, get_spec
from dnd_engine.models import model_class, model_names
from dnd_engine.project import Project
from dnd_engine.project.data_check import check_data

from bagtools import make_bags, write_bags


@pytest.fixture
def bags_dir(tmp_path):
    """Six bags, 3 per class, in a plain folder; their labels CSV beside it."""
    bags, labels = make_bags((3, 3), dim=4, n_inst=(3, 5), seed=2)
    csv = write_bags(tmp_path / "bags", bags, labels, "pt")
    return tmp_path / "bags", csv, labels


def _csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# --- read_label_rows ------------------------------------------------------------------------------------------
def test_read_label_rows_keeps_every_row_with_its_problem_and_the_engine_aliases(tmp_path):
    p = _csv(tmp_path / "l.csv", "Case_ID,label,split\n"
                                 "a,x,training\n"
                                 "b,y,Validation\n"
                                 "a,y,test\n"           # duplicate of line 2
                                 ",y,train\n"           # empty id
                                 "c,x,holdout\n"        # not a split name
                                 "\n"
                                 "d,y,testing\n")
    rows = read_label_rows(p)
    assert rows.has_split and [r.line for r in rows.rows] == [2, 3, 4, 5, 6, 8]
    assert [r.status for r in rows.rows] == ["ok", "ok", "duplicate (of line 2)", "empty slide_id or label",
                                             "split not train/val/test", "ok"]
    assert rows.rows[2].problem == "duplicate slide id 'a' (lines 2 and 4)"
    table = read_labels(p)                       # built on the rows: the same usable slides and problems
    assert table == rows.table()
    assert table.slide_ids == ["a", "b", "d"] and table.splits == ["train", "val", "test"]
    assert table.problems == [r.problem for r in rows.rows if not r.ok]


def test_read_label_rows_refuses_a_file_without_the_columns_in_one_line(tmp_path):
    with pytest.raises(LabelsError, match=r"needs a header with 'slide_id' and 'label' columns; found \['name'"):
        read_label_rows(_csv(tmp_path / "l.csv", "name,class\na,x\n"))
    with pytest.raises(LabelsError, match="not found"):
        read_label_rows(tmp_path / "nope.csv")


# --- check_data -----------------------------------------------------------------------------------------------
def test_check_data_flags_duplicates_unknown_slides_and_unlabelled_bags(bags_dir, tmp_path):
    feats, _, labels = bags_dir
    ids = sorted(labels)
    csv = _csv(tmp_path / "bad.csv", "slide_id,label\n" + "".join(f"{s},{labels[s]}\n" for s in ids[:4])
               + f"ghost,{labels[ids[0]]}\n{ids[0]},{labels[ids[0]]}\n")
    r = check_data(features=feats, labels_csv=csv, folds=2)
    assert r.kind == "bag" and r.available == ids
    assert r.missing == ["ghost"] and r.duplicates == [ids[0]] and r.unlabelled == ids[4:]
    assert {row.slide_id: row.status for row in r.rows if row.line >= 6} == {"ghost": "no bag",
                                                                              ids[0]: "duplicate (of line 2)"}
    assert any("1 slide(s) in the labels CSV have no feature bag: ghost" in e for e in r.errors)
    assert any(f"duplicate slide id '{ids[0]}'" in e for e in r.errors)
    assert r.notes == [f"2 bag(s) in the folder have no label and are left out: {ids[4]}, {ids[5]}"]
    with pytest.raises(LabelsError) as info:
        r.raise_for_problems()
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{csv}: ")


def test_check_data_fold_problems_are_apart_and_a_split_column_needs_none(bags_dir, tmp_path):
    feats, csv, _ = bags_dir
    r = check_data(features=feats, labels_csv=csv, folds=5)
    assert r.errors == [] and r.counts() == {"class_0": 3, "class_1": 3}
    assert r.small_classes() == ["class_0", "class_1"]
    assert r.fold_problems() and "5-fold cross-validation needs at least 5" in r.fold_problems()[0]
    assert r.fold_problems(3) == [] and r.problems(3) == []


def test_check_data_bad_inputs_are_one_line_messages(bags_dir, tmp_path):
    feats, csv, _ = bags_dir
    r = check_data(features=tmp_path / "nowhere", labels_csv=csv)
    assert r.folder_errors == [f"features folder not found: {tmp_path / 'nowhere'}"]
    with pytest.raises(LabelsError, match=r"^features folder not found"):   # not blamed on the CSV
        r.raise_for_problems()
    r = check_data(features=feats, labels_csv=_csv(tmp_path / "cols.csv", "slide_id,klass\na,x\n"))
    assert len(r.errors) == 1 and "needs a header with 'slide_id' and 'label'" in r.errors[0]
    assert check_data(features=feats).errors == ["choose a labels CSV"]
    assert check_data(labels_csv=csv, kind="bag").errors[0] == "choose a feature folder"
    assert check_data(labels_csv=csv).errors[0] == "choose a slides folder"


def test_check_data_on_slides_refuses_two_files_with_one_id(tmp_path):
    folder = tmp_path / "slides"
    (folder / "sub").mkdir(parents=True)
    files = [folder / "a.svs", folder / "b.tif", folder / "sub" / "a.ndpi"]
    for f in files:
        f.write_bytes(b"x")
    csv = _csv(tmp_path / "l.csv", "slide_id,label\na,x\nb,y\nc,y\n")
    r = check_data(slides=files, labels_csv=csv)
    assert r.duplicates == ["a"] and r.folder_errors == ["two slides share the id 'a': a.svs and a.ndpi"]
    assert {row.slide_id: row.status for row in r.rows}["c"] == "no slide"
    r = check_data(slides=folder, labels_csv=csv)             # the folder's own slides (a, b): c has none
    assert r.available == ["a", "b"] and r.missing == ["c"] and r.kind == "slide"
    assert check_data(slides=folder / "a.svs", labels_csv=csv).folder_errors[0].endswith(
        "is a file: choose the folder that holds the slides")


def test_project_label_problems_is_the_data_check(bags_dir, tmp_path):
    feats, csv, _ = bags_dir
    p = Project.create(tmp_path / "p")
    assert p.label_problems() == ["no labels CSV chosen"]
    p.apply_data(features=feats, labels=csv)
    assert p.label_problems(folds=5) == check_data(features=feats, labels_csv=p.labels_path).problems(5) != []
    assert p.data_report(folds=3).ok


def test_dnd_train_checks_the_data_with_check_data(bags_dir, tmp_path, monkeypatch, capsys):
    from dnd_engine.cli.main import main
    from dnd_engine.project import data_check
    feats, _, labels = bags_dir
    seen = []
    real = data_check.check_data
    monkeypatch.setattr(data_check, "check_data", lambda **kw: (seen.append(kw), real(**kw))[1])
    dup = _csv(tmp_path / "dup.csv", "slide_id,label\n" + "".join(f"{s},{c}\n" for s, c in labels.items())
               + f"{next(iter(labels))},class_1\n")
    code = main(["train", "--features", str(feats), "--labels", str(dup), "--folds", "2", "--epochs", "1",
                 "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "duplicate slide id" in err and len(err.strip().splitlines()) == 1
    assert seen and seen[0]["labels_csv"] == str(dup) and not (tmp_path / "run").exists()


# --- the transaction --------------------------------------------------------------------------------------------
def test_apply_data_is_all_or_nothing(bags_dir, tmp_path, monkeypatch):
    feats, csv, _ = bags_dir
    p = Project.create(tmp_path / "p")
    old = _csv(tmp_path / "old.csv", "slide_id,label\na,x\nb,y\n")
    p.set_labels(old)
    p.save()
    before, manifest = Project.open(p.root), (p.root / "project.json").read_bytes()

    def disk_full():
        raise OSError("No space left on device")
    monkeypatch.setattr(p, "save", disk_full)
    with pytest.raises(OSError, match="No space left"):
        p.apply_data(features=feats, labels=csv)
    monkeypatch.undo()
    assert p == before and p.labels_path.read_text() == old.read_text()          # in memory
    assert (p.root / "project.json").read_bytes() == manifest and Project.open(p.root) == before   # on disk

    with pytest.raises(LabelsError):                       # the labels fail after the features were set
        p.apply_data(features=feats, labels=tmp_path / "missing.csv")
    assert p == before and p.labels_path.read_text() == old.read_text()

    p.apply_data(features=feats, labels=csv)
    assert Project.open(p.root).features_dir == feats.resolve()
    assert Project.open(p.root).labels_path.read_text() == csv.read_text()


def test_preview_data_changes_nothing(bags_dir, tmp_path):
    feats, csv, _ = bags_dir
    p = Project.create(tmp_path / "p")
    q = p.preview_data(features=feats, labels=csv)
    assert q.features_dir == feats.resolve() and q.labels_path == csv.resolve()
    assert p.features is None and p.labels is None and Project.open(p.root) == p


# --- catalogues ---------------------------------------------------------------------------------------------
def test_every_registered_model_has_a_title_and_a_one_line_summary():
    for name in model_names():
        cls = model_class(name)
        assert cls.title and cls.summary and "\n" not in cls.summary, name
    assert [model_class(n).title for n in model_names() if model_class(n).slow] == ["TransMIL", "MambaMIL"]


def test_list_devices_lists_what_resolve_device_accepts():
    devices = list_devices()
    assert devices[:2] == ["auto", "cpu"]
    for d in devices:
        resolve_device(d)


def test_the_weights_lookup_is_the_registry_s(tmp_path, monkeypatch):
    for var in ("DND_WEIGHTS_DIR", "TORCH_HOME", "HF_HUB_CACHE"):
        monkeypatch.setenv(var, str(tmp_path / "empty" / var))
    monkeypatch.delenv("UNI_CKPT_PATH", raising=False)
    spec = get_spec("resnet50_trunc")
    assert spec.located() is None and default_extractor() == "stain_stats"
    assert spec.weights_problem().startswith("resnet50_trunc needs a weights file, not found on this machine")
    assert spec.weights_problem(tmp_path / "x.pth") == f"no such weights file: {tmp_path / 'x.pth'}"
    assert get_spec("stain_stats").weights_problem() is None and get_spec("stain_stats").located() is None
    folder = tmp_path / "w" / "resnet50_trunc"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"x" * 16)
    monkeypatch.setenv("DND_WEIGHTS_DIR", str(tmp_path / "w"))
    assert spec.located() == spec.locate() and spec.weights_problem() is None
    assert default_extractor() == "resnet50_trunc"
