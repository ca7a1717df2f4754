"""Crafted and damaged slides fail themselves only: through `dnd extract` and `dnd predict` (run in subprocesses,
so a native abort cannot take pytest down), and when a native reader aborts in a preparation process, a patch
reader process or the child that checks a slide before prediction."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from crafted import crafted_kinds, good_pyramid
from dnd_engine.errors import SlideError
from dnd_engine.features import ExtractConfig, extract_cohort
from dnd_engine.features import extract as extract_mod
from dnd_engine.slides import open_slide
from dnd_engine.slides.precheck import precheck_slide

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODEL = ROOT / "resources" / "models" / "demo_abmil_stain_stats.safetensors"


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Two good small pyramids and one crafted file of each kind (tile sizes, offsets, counts, image sizes)."""
    d = tmp_path_factory.mktemp("crafted") / "slides"
    d.mkdir()
    good = good_pyramid(d / "good_a.svs", seed=1)
    shutil.copy(good, d / "good_b.svs")
    for kind, damage in crafted_kinds().items():
        p = d / f"x_{kind}.svs"
        shutil.copy(good, p)
        damage(p)
    return d


def dnd(*argv, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "dnd_engine.cli", *map(str, argv)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=900)


def test_precheck_names_what_is_wrong_with_each_crafted_file(cohort):
    for kind in crafted_kinds():
        with pytest.raises(SlideError) as err:
            open_slide(cohort / f"x_{kind}.svs")
        msg = str(err.value)
        assert msg.startswith(f"x_{kind}.svs: ") and "\n" not in msg and "it is damaged or " in msg
    precheck_slide(cohort / "good_a.svs")          # a good pyramid passes, and opens
    with open_slide(cohort / "good_a.svs") as s:
        assert s.dimensions == (1024, 1024)


def test_real_slides_pass_the_precheck():
    from conftest import WSI
    real = sorted(WSI.glob("*.*")) if WSI.is_dir() else []
    if not real:
        pytest.skip("shared slides not present")
    for p in real:
        precheck_slide(p)


def test_dnd_extract_writes_the_good_slides_and_fails_the_crafted_ones(cohort, tmp_path):
    r = dnd("extract", "--slides", cohort, "--out", tmp_path / "out", "--workers", "1", "--quiet", cwd=tmp_path)
    assert r.returncode == 3, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    rows = {row["slide_id"]: row for row in
            csv.DictReader(open(tmp_path / "out" / "features_stain_stats" / "extraction_summary.csv"))}
    assert {k for k, v in rows.items() if v["status"] == "done"} == {"good_a", "good_b"}
    for kind in crafted_kinds():
        row = rows[f"x_{kind}"]
        assert row["status"] == "failed" and "it is damaged or " in row["error"], row
    assert (tmp_path / "out" / "features_stain_stats" / "h5_files" / "good_b.h5").is_file()


def test_dnd_predict_writes_its_csv_with_failed_rows_for_crafted_slides(cohort, tmp_path):
    slides = [cohort / "good_a.svs", cohort / "x_huge_tiles.svs", cohort / "x_tile_past_end.svs"]
    r = dnd("predict", "--model", DEMO_MODEL, *slides, "--out", tmp_path / "pred", "--heatmaps", "none",
            "--quiet", cwd=tmp_path)
    assert r.returncode == 1, (r.returncode, r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    rows = {row["slide_id"]: row for row in csv.DictReader(open(tmp_path / "pred" / "predictions.csv"))}
    assert rows["good_a"]["status"] == "done"
    for sid in ("x_huge_tiles", "x_tile_past_end"):
        assert rows[sid]["status"] == "failed" and "it is damaged or " in rows[sid]["error"]


def _aborting_on(name: str, real):
    def wrapped(*args, **kw):
        if any(name in str(a) for a in args):
            os.abort()                     # what OpenSlide does on a crafted file: no try catches it
        return real(*args, **kw)
    return wrapped


def test_a_native_abort_while_preparing_fails_that_slide_only(cohort, tmp_path, monkeypatch):
    d = tmp_path / "slides"
    d.mkdir()
    for name in ("a", "boom", "c"):
        shutil.copy(cohort / "good_a.svs", d / f"{name}.svs")
    monkeypatch.setattr(extract_mod, "_prepare_slide", _aborting_on("boom.svs", extract_mod._prepare_slide))
    res = extract_cohort(d, tmp_path / "out", ExtractConfig(num_workers=0, mp_context="fork"))
    assert [(r.slide_id, r.status) for r in res] == [("a", "done"), ("boom", "failed"), ("c", "done")]
    assert res[1].error == ("boom.svs: the slide reader crashed on this file (signal SIGABRT): "
                            "it is damaged or crafted")


@pytest.mark.parametrize("reader", ["openslide", "tiles"])
def test_a_patch_reader_process_that_aborts_fails_that_slide_only(cohort, tmp_path, monkeypatch, reader):
    """read_region batches span slides (several in flight when the reader dies: each is retried alone);
    tile bands belong to one slide."""
    from dnd_engine.features import patch_dataset

    d = tmp_path / "slides"
    d.mkdir()
    for name in ("a", "boom", "c", "d"):
        shutil.copy(cohort / "good_a.svs", d / f"{name}.svs")
    real = patch_dataset.PatchReader.__getitems__

    def getitems(self, unit):
        paths = [unit.spec.path] if isinstance(unit, patch_dataset.TileBand) else [r.path for r in unit]
        if any(str(p).endswith("boom.svs") for p in paths):
            os.abort()
        return real(self, unit)

    monkeypatch.setattr(patch_dataset.PatchReader, "__getitems__", getitems)
    cfg = ExtractConfig(num_workers=2, batch_size=16, reader=reader, mp_context="fork")
    res = extract_cohort(d, tmp_path / "out", cfg)
    assert [(r.slide_id, r.status) for r in res] == [("a", "done"), ("boom", "failed"), ("c", "done"),
                                                     ("d", "done")], [r.error for r in res]
    assert res[1].error in (f"boom.svs: the slide reader crashed on this file ({how}): it is damaged or crafted"
                            for how in ("signal SIGABRT", "its process died"))    # torch says one or the other
    assert not list((tmp_path / "out").rglob("*.part"))


def test_predict_checks_each_slide_in_a_child_whose_abort_fails_that_slide(cohort, tmp_path, monkeypatch):
    from dnd_engine.predict import predict_slides
    from dnd_engine.slides import overrides

    good, boom = tmp_path / "good.svs", tmp_path / "boom.svs"
    shutil.copy(cohort / "good_a.svs", good)
    shutil.copy(cohort / "good_a.svs", boom)
    monkeypatch.setattr(overrides, "open_with_override", _aborting_on("boom.svs", overrides.open_with_override))
    res = predict_slides(DEMO_MODEL, [boom, good], tmp_path / "pred", heatmaps="none", device="cpu",
                         mp_context="fork")
    assert [(r.slide_id, r.status) for r in res] == [("boom", "failed"), ("good", "done")]
    assert "boom.svs: the slide reader crashed on this file (signal SIGABRT)" in res[0].error
    assert (tmp_path / "pred" / "predictions.csv").is_file()


def test_a_worker_replacing_a_dead_one_is_not_forked_from_the_busy_parent():
    """The first workers are forked by the caller; a replacement is started from the pool's thread while the
    caller works on, where a fork could copy a lock held by another thread (a module mid-import: the child
    waited on it forever), so it comes from a fork server instead."""
    from dnd_engine.child_pool import ChildCrashed, ChildPool
    with ChildPool(1, "fork") as pool:
        assert pool.submit(os.getppid).result() == os.getpid()
        with pytest.raises(ChildCrashed, match=r"^x\.svs: the slide reader crashed on this file \(signal SIGABRT\)"):
            pool.submit(os.abort, name="x.svs").result()
        assert pool.submit(os.getppid).result() != os.getpid()
