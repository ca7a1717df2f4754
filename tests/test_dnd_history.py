"""read_history: a run folder's epoch records, in the engine (dnd_engine.dnd.history), readable without Qt."""

from __future__ import annotations

import json
from pathlib import Path

from dnd_engine.dnd.history import read_history, read_jsonl


def write_metrics(folder: Path, epochs: int, damaged: bool = False) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps({"epoch": e, "train_loss": 1.0 / (e + 1)}) for e in range(epochs)]
    if damaged:
        lines.insert(1, '{"epoch": 1, "train_lo')   # a write cut short
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")


def test_history_of_a_cross_validation_run_in_fold_and_stage_order(tmp_path):
    run = tmp_path / "run"
    for fold in (1, 0):
        f = run / f"fold_{fold}"
        write_metrics(f / "base", 2)
        for k in (10, 2):                               # expert_10 comes after expert_2, not before it
            write_metrics(f / "experts" / f"expert_{k}", 1)
        write_metrics(f / "student", 1, damaged=True)
    (run / "fold_x").mkdir()                            # not a fold
    (run / "fold_3").write_text("a file, not a fold")
    records = read_history(run)
    order = [(r["fold"], r["stage"]) for r in records]
    expected = []
    for fold in (0, 1):
        expected += [(fold, "base")] * 2 + [(fold, "expert_2"), (fold, "expert_10"), (fold, "student")]
    assert order == expected
    assert records[0] == {"epoch": 0, "train_loss": 1.0, "fold": 0, "stage": "base"}


def test_one_fold_folder_is_fold_0_and_an_empty_folder_has_no_history(tmp_path):
    write_metrics(tmp_path / "one" / "base", 3)
    assert {(r["fold"], r["stage"]) for r in read_history(tmp_path / "one")} == {(0, "base")}
    assert read_history(tmp_path / "nothing") == []


def test_read_jsonl_skips_damaged_lines_and_missing_files(tmp_path):
    write_metrics(tmp_path / "m", 2, damaged=True)
    assert [r["epoch"] for r in read_jsonl(tmp_path / "m" / "metrics.jsonl")] == [0, 1]
    assert read_jsonl(tmp_path / "absent.jsonl") == []
