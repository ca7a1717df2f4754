"""Feature bags, labels CSV and splits: layouts users bring, and every bad input refused in one line."""

import collections

import h5py
import numpy as np
import pytest
import torch

from dnd_engine.bags import (BagDataset, BagError, LabelsError, find_bags, load_bag, read_labels, read_split,
                             stratified_kfold, write_split)
from dnd_engine.bags.labels import LabelTable

from bagtools import make_bags, write_bags


def _csv(tmp_path, text, name="labels.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_labels_read_classes_and_splits(tmp_path):
    t = read_labels(_csv(tmp_path, "slide_id,label,split\na,LUSC,train\nb,LUAD,Validation\nc,LUAD,test\n"))
    assert t.slide_ids == ["a", "b", "c"] and t.splits == ["train", "val", "test"]
    assert t.classes == ["LUAD", "LUSC"] and t.targets == [1, 0, 0]
    numeric = read_labels(_csv(tmp_path, "slide_id,label\na,10\nb,2\nc,1\n", "n.csv"))
    assert numeric.classes == ["1", "2", "10"]     # numeric labels sort numerically


@pytest.mark.parametrize("text,needle", [
    ("slide_id,label\na,x\na,y\nb,y\n", "duplicate slide id 'a'"),
    ("slide_id,label\na,x\nb,x\n", "only one class"),
    ("slide_id,label,split\na,x,train\nb,y,holdout\n", "not one of train, val, test"),
    ("slide_id,label\n", "no rows"),
])
def test_labels_problems_are_reported(tmp_path, text, needle):
    t = read_labels(_csv(tmp_path, text))
    assert any(needle in p for p in t.find_problems())
    with pytest.raises(LabelsError, match=needle.replace("(", r"\(")):
        t.check()


def test_labels_missing_bags_and_too_few_per_class(tmp_path):
    t = read_labels(_csv(tmp_path, "slide_id,label\na,x\nb,x\nc,y\nd,y\ne,y\n"))
    with pytest.raises(LabelsError, match="2 slide\\(s\\) in the labels CSV have no feature bag: a, b"):
        t.check(available=["c", "d", "e"])
    with pytest.raises(LabelsError, match="class 'x' has 2 slide\\(s\\); 3-fold"):
        t.check(folds=3)
    with pytest.raises(LabelsError, match="needs a header"):
        read_labels(_csv(tmp_path, "a,x\nb,y\n", "nohead.csv"))
    with pytest.raises(LabelsError, match="not found"):
        read_labels(tmp_path / "absent.csv")


def test_find_bags_in_every_layout(tmp_path):
    bags, labels = make_bags((2, 2), dim=4)
    write_bags(tmp_path / "flat", bags, labels, "pt")
    assert set(find_bags(tmp_path / "flat")) == set(bags)
    write_bags(tmp_path / "clam" / "h5_files", bags, labels, "h5")
    write_bags(tmp_path / "clam" / "pt_files", bags, labels, "pt")
    found = find_bags(tmp_path / "clam")
    assert set(found) == set(bags) and all(p.suffix == ".h5" for p in found.values())
    write_bags(tmp_path / "ours" / "features_resnet50_trunc" / "h5_files", bags, labels, "h5")
    assert set(find_bags(tmp_path / "ours")) == set(bags)
    tri = tmp_path / "trident" / "features_uni_v1"
    tri.mkdir(parents=True)
    for sid, x in bags.items():
        with h5py.File(tri / f"{sid}.h5", "w") as f:
            f["features"] = x.numpy()
    assert set(find_bags(tmp_path / "trident")) == set(bags)
    (tmp_path / "ours" / "features_uni_v1" / "h5_files").mkdir(parents=True)
    with pytest.raises(BagError, match="several extractors"):
        find_bags(tmp_path / "ours")
    with pytest.raises(BagError, match="no feature bags"):
        find_bags(tmp_path / "ours" / "features_uni_v1")


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_load_bag_formats_and_refusals(tmp_path, capsys):
    x = torch.randn(5, 3)
    torch.save(x, tmp_path / "t.pt")
    torch.save({"features": x, "coords": torch.zeros(5, 2)}, tmp_path / "d.pt")
    torch.save(x[None], tmp_path / "b.pt")
    for n in ("t", "d", "b"):
        assert torch.equal(load_bag(tmp_path / f"{n}.pt"), x)
    torch.save({"features": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(BagError, match="pickled object"):
        load_bag(tmp_path / "evil.pt")
    assert "pwned" not in capsys.readouterr().out
    bad = x.clone()
    bad[2, 1] = float("nan")
    torch.save(bad, tmp_path / "nan.pt")
    with pytest.raises(BagError, match="1 of 5 feature rows hold NaN or inf"):
        load_bag(tmp_path / "nan.pt")
    with h5py.File(tmp_path / "inf.h5", "w") as f:
        f["features"] = np.array([[1.0, np.inf]], dtype=np.float32)
    with pytest.raises(BagError, match="NaN or inf"):
        load_bag(tmp_path / "inf.h5")
    torch.save(torch.zeros(0, 3), tmp_path / "empty.pt")
    with pytest.raises(BagError, match="empty"):
        load_bag(tmp_path / "empty.pt")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(BagError, match="cannot read"):
        load_bag(tmp_path / "junk.h5")


def test_dataset_refuses_mixed_dimensions(tmp_path):
    torch.save(torch.randn(4, 8), tmp_path / "a.pt")
    torch.save(torch.randn(4, 9), tmp_path / "b.pt")
    table = LabelTable(["a", "b"], ["x", "y"])
    ds = BagDataset.from_folder(tmp_path, table)
    with pytest.raises(BagError, match="feature dimensions differ"):
        ds.validate()
    with pytest.raises(BagError, match="feature dimensions differ"):
        ds.feature_dim()


def test_dataset_cache_and_subset(tmp_path):
    bags, labels = make_bags((3, 3), dim=4)
    lab = write_bags(tmp_path / "bags", bags, labels)
    ds = BagDataset.from_folder(tmp_path / "bags", read_labels(lab))
    assert ds.validate() == 4 and len(ds) == 6
    sub = ds.subset(["s004", "s001"])
    x, y, sid = sub[0]
    assert sid == "s004" and y == 1 and torch.equal(x, bags["s004"])
    assert sub._cache is ds._cache


def _table(n_per_class):
    ids, labs = [], []
    for c, n in enumerate(n_per_class):
        for i in range(n):
            ids.append(f"{c}_{i:02d}")
            labs.append(f"c{c}")
    return LabelTable(ids, labs)


def test_stratified_kfold_partitions_and_is_seeded():
    t = _table((30, 12, 7))
    splits = stratified_kfold(t, 5, seed=3, val_frac=0.1)
    assert len(splits) == 5
    tests = [s for sp in splits for s in sp.test]
    assert sorted(tests) == sorted(t.slide_ids)           # every slide tested exactly once
    label = dict(zip(t.slide_ids, t.labels))
    for sp in splits:
        assert not (set(sp.train) & set(sp.val)) and not (set(sp.train) & set(sp.test))
        assert not (set(sp.val) & set(sp.test))
        assert set(sp.train) | set(sp.val) | set(sp.test) == set(t.slide_ids)
        per_class = collections.Counter(label[s] for s in sp.test)
        assert per_class["c0"] == 6 and per_class["c1"] in (2, 3) and per_class["c2"] in (1, 2)
        assert {label[s] for s in sp.val} == {"c0", "c1", "c2"}   # each class validated
    assert [s.test for s in stratified_kfold(t, 5, seed=3)] == [s.test for s in splits]
    assert [s.test for s in stratified_kfold(t, 5, seed=4)] != [s.test for s in splits]
    with pytest.raises(LabelsError, match="class 'c2' has 7"):
        stratified_kfold(t, 8)


def test_split_files_round_trip_and_read_authors_format(tmp_path):
    sp = stratified_kfold(_table((6, 6)), 3, seed=1)[0]
    write_split(sp, tmp_path / "splits_0.csv")
    back = read_split(tmp_path / "splits_0.csv")
    assert back.as_dict() == sp.as_dict()
    # the authors' files: pandas index column, zero-padded ids, short columns padded with empty cells
    (tmp_path / "theirs.csv").write_text(",train,val,test\n0,007,010,011\n1,008,,\n2,009,,\n")
    theirs = read_split(tmp_path / "theirs.csv")
    assert theirs.train == ["007", "008", "009"] and theirs.val == ["010"] and theirs.test == ["011"]
