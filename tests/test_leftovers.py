"""Nothing left behind: a killed writer's temporary file is removed by the next run (never a live writer's),
and a slide whose prediction fails part-way keeps none of its heatmaps."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnd_engine import atomic
from dnd_engine.atomic import remove_stale_temps, temp_path, write_text_atomic
from dnd_engine.features import ExtractConfig, extract_cohort, feature_dir_for
from dnd_engine.synth import make_synthetic_cohort

ROOT = Path(__file__).resolve().parents[1]
CFG = dict(extractor="stain_stats", num_workers=0, compile="off", device="cpu")


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    c = make_synthetic_cohort(tmp_path_factory.mktemp("leftovers") / "cohort", n_slides=2, size=1024, seed=4)
    return sorted(s.path for s in c.slides)


def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _parts(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.endswith(".part"))


_KILL_IN_WRITE = """
import os, signal, sys
from dnd_engine.features import ExtractConfig, extract_cohort, extract
orig = extract.FeatureWriter.write
def write(self, rows, feats):
    orig(self, rows, feats)
    self.f.flush()
    os.kill(os.getpid(), signal.SIGKILL)          # killed in the middle of the slide's feature file
extract.FeatureWriter.write = write
extract_cohort([sys.argv[1]], sys.argv[2], ExtractConfig(extractor="stain_stats", num_workers=0, compile="off",
                                                         device="cpu", batch_size=4))
"""


def test_a_feature_file_left_by_a_killed_extract_is_removed_by_the_next_run(slides, tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    p = subprocess.run([sys.executable, "-c", _KILL_IN_WRITE, str(slides[0]), str(out)], env=env,
                       capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    h5_dir = feature_dir_for(out, "stain_stats") / "h5_files"
    left = _parts(h5_dir)
    assert len(left) == 1 and left[0].name.startswith(f".{slides[0].name.split('.')[0]}.h5.")
    live = temp_path(h5_dir / "other.h5")            # a live writer's file (this process) in the same folder
    foreign = h5_dir / ".x.h5.abcdefgh.1@elsewhere.part"   # another machine's writer: cannot be judged from here
    foreign.write_bytes(b"")
    r = extract_cohort([slides[0]], out, ExtractConfig(**CFG))[0]
    assert r.status == "done"
    assert _parts(h5_dir) == sorted([live, foreign])   # the killed writer's file is gone, the others stay
    live.unlink()


def test_only_files_whose_writer_is_gone_are_stale(tmp_path):
    dead, host = _dead_pid(), atomic._HOST
    stale = tmp_path / f".a.h5.abcdefgh.{dead}@{host}.part"
    mine = tmp_path / f".b.h5.abcdefgh.{os.getpid()}@{host}.part"
    other_host = tmp_path / f".c.h5.abcdefgh.{dead}@not-{host}.part"
    old_legacy = tmp_path / ".d.json.k2j4_x9a.part"        # written before temp names carried their writer
    new_legacy = tmp_path / ".e.json.q8w7e6r5.part"
    not_ours = tmp_path / "notes.part"
    for f in (stale, mine, other_host, old_legacy, new_legacy, not_ours):
        f.write_bytes(b"x")
    hours_ago = time.time() - 2 * atomic.LEGACY_STALE_SECONDS
    os.utime(old_legacy, (hours_ago, hours_ago))
    assert sorted(remove_stale_temps(tmp_path, tmp_path / "missing")) == sorted([stale, old_legacy])
    assert mine.exists() and other_host.exists() and new_legacy.exists() and not_ours.exists()


def test_the_first_atomic_write_into_a_folder_removes_killed_writers_files(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "_swept", set())
    stale = tmp_path / f".a.json.abcdefgh.{_dead_pid()}@{atomic._HOST}.part"
    stale.write_bytes(b"")
    write_text_atomic(tmp_path / "a.json", "{}")
    assert not stale.exists() and (tmp_path / "a.json").read_text() == "{}"
    assert _parts(tmp_path) == []


def _model_file(path: Path, class_names) -> Path:
    from dnd_engine.models import build_model
    from dnd_engine.models.io import save_model
    card = {"extractor": "stain_stats", "feature_dim": 99, "magnification": 10.0, "patch_size": 256,
            "class_names": class_names}
    return save_model(build_model("abmil", in_dim=99, n_classes=2), path, card)


def test_a_card_whose_class_names_do_not_fit_the_model_fails_the_row_before_any_heatmap(slides, tmp_path):
    from dnd_engine.predict import predict_slides
    model = _model_file(tmp_path / "m.safetensors", ["normal", "tumor", "other"])
    res = predict_slides(model, slides[:1], tmp_path / "pred", device="cpu")
    assert res[0].status == "failed"
    assert "names 3 classes" in res[0].error and "2 outputs" in res[0].error
    hm = tmp_path / "pred" / "heatmaps"
    assert not hm.exists() or not list(hm.iterdir())


def test_a_slide_failing_after_some_heatmaps_removes_them(slides, tmp_path, monkeypatch):
    from dnd_engine import heatmaps, predict
    from dnd_engine.errors import DnDError
    model = _model_file(tmp_path / "m.safetensors", ["normal", "tumor"])

    def broken(*a, **k):
        raise DnDError("disk full")
    monkeypatch.setattr(heatmaps, "write_heatmap_geojson", broken)    # after the PNG is written
    res = predict.predict_slides(model, slides[:1], tmp_path / "pred", device="cpu")
    assert res[0].status == "failed" and "disk full" in res[0].error
    assert list((tmp_path / "pred" / "heatmaps").iterdir()) == []
    monkeypatch.undo()
    res = predict.predict_slides(model, slides[:1], tmp_path / "pred", device="cpu")   # the same slide, fine now
    assert res[0].status == "done" and Path(res[0].outputs["student_png"]).is_file()
