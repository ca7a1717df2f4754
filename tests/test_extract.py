import shutil

import h5py
import numpy as np
import pytest
import torch

from dnd_engine.errors import Cancelled, OutputError
from dnd_engine.features import ExtractConfig, extract_cohort, extract_slide, feature_dir_for
from dnd_engine.patching import read_coords_h5


@pytest.fixture
def slides_dir(tmp_path, cmu_slide):
    d = tmp_path / "slides"
    d.mkdir()
    shutil.copy(cmu_slide, d / cmu_slide.name)
    return d


def test_extract_writes_clam_layout(slides_dir, tmp_path, no_part_files):
    out = tmp_path / "out"
    cfg = ExtractConfig(num_workers=2, batch_size=4)
    ticks = []
    res = extract_cohort(slides_dir, out, cfg, slide_progress=lambda d, t, m: ticks.append((d, t)))
    assert [r.status for r in res] == ["done"]
    r = res[0]
    fdir = feature_dir_for(out, "stain_stats")
    with h5py.File(fdir / "h5_files" / "CMU-1-Small-Region.h5", "r") as f:
        F, C = f["features"][:], f["coords"][:]
        assert f.attrs["extractor"] == "stain_stats" and f.attrs["feature_dim"] == F.shape[1]
        assert f["coords"].attrs["patch_size"] == 512 and f["coords"].attrs["patch_level"] == 0
    assert F.shape == (r.n_patches, 99) and F.dtype == np.float32 and np.isfinite(F).all()
    pcoords, _ = read_coords_h5(out / "patches" / "CMU-1-Small-Region.h5")
    assert np.array_equal(pcoords, C)                       # feature rows follow the patch file's order
    pt = torch.load(fdir / "pt_files" / "CMU-1-Small-Region.pt", weights_only=True)
    assert torch.equal(pt, torch.from_numpy(F))
    for name in ("CMU-1-Small-Region.geojson", "CMU-1-Small-Region_mask.png", "CMU-1-Small-Region_qc.jpg"):
        assert (out / "tissue" / name).stat().st_size > 0
    assert (fdir / "extraction_summary.csv").read_text().count("done") == 1
    assert ticks[-1] == (r.n_patches, r.n_patches) and len(ticks) > 2    # batch-level progress
    no_part_files(out)


def test_extraction_is_deterministic_and_independent_of_workers(slides_dir, tmp_path):
    a = extract_cohort(slides_dir, tmp_path / "a", ExtractConfig(num_workers=0, batch_size=3))[0]
    b = extract_cohort(slides_dir, tmp_path / "b", ExtractConfig(num_workers=2, batch_size=8))[0]
    with h5py.File(a.features_h5, "r") as fa, h5py.File(b.features_h5, "r") as fb:
        assert np.allclose(fa["features"][:], fb["features"][:], atol=1e-5)
        assert np.array_equal(fa["coords"][:], fb["coords"][:])


def test_finished_slides_are_skipped_on_rerun(slides_dir, tmp_path):
    out = tmp_path / "out"
    first = extract_cohort(slides_dir, out, ExtractConfig(num_workers=0))[0]
    h5 = feature_dir_for(out, "stain_stats") / "h5_files" / "CMU-1-Small-Region.h5"
    mtime = h5.stat().st_mtime_ns
    again = extract_cohort(slides_dir, out, ExtractConfig(num_workers=0))[0]
    assert again.status == "skipped" and again.n_patches == first.n_patches and h5.stat().st_mtime_ns == mtime
    # a crash between the h5 and the .pt rename: the .pt is rebuilt from the finished h5
    pt = feature_dir_for(out, "stain_stats") / "pt_files" / "CMU-1-Small-Region.pt"
    pt.unlink()
    extract_cohort(slides_dir, out, ExtractConfig(num_workers=0))
    assert pt.exists()
    redo = extract_cohort(slides_dir, out, ExtractConfig(num_workers=0, overwrite=True))[0]
    assert redo.status == "done"


def test_one_bad_slide_never_stops_the_batch(slides_dir, tmp_path, no_part_files):
    (slides_dir / "a_empty.svs").write_bytes(b"")
    (slides_dir / "b_text.svs").write_text("not a slide")
    data = (slides_dir / "CMU-1-Small-Region.svs").read_bytes()
    (slides_dir / "c_truncated.svs").write_bytes(data[: len(data) // 3])
    blank = np.full((600, 600, 3), 250, np.uint8)
    from PIL import Image
    Image.fromarray(blank).save(slides_dir / "d_blank.png")
    out = tmp_path / "out"
    res = extract_cohort(slides_dir, out, ExtractConfig(num_workers=0, base_magnification=20))
    status = {r.slide_id: r.status for r in res}
    assert status == {"a_empty": "failed", "b_text": "failed", "c_truncated": "failed", "d_blank": "failed",
                      "CMU-1-Small-Region": "done"}
    errors = {r.slide_id: r.error for r in res}
    assert "empty" in errors["a_empty"] and "no tissue" in errors["d_blank"]
    assert all("\n" not in e for e in errors.values())
    fdir = feature_dir_for(out, "stain_stats")
    assert sorted(p.stem for p in (fdir / "h5_files").iterdir()) == ["CMU-1-Small-Region"]
    assert sorted(p.stem for p in (fdir / "pt_files").iterdir()) == ["CMU-1-Small-Region"]
    no_part_files(out)


def test_cancel_leaves_no_partial_file(slides_dir, tmp_path, no_part_files):
    out = tmp_path / "out"
    calls = {"n": 0}

    def cancelled():
        calls["n"] += 1
        return calls["n"] > 3      # after segmentation, during the feature batches

    with pytest.raises(Cancelled):
        extract_slide(slides_dir / "CMU-1-Small-Region.svs", out, ExtractConfig(num_workers=0, batch_size=2),
                      cancelled=cancelled)
    fdir = feature_dir_for(out, "stain_stats")
    assert not (fdir / "h5_files" / "CMU-1-Small-Region.h5").exists()
    assert not (fdir / "pt_files" / "CMU-1-Small-Region.pt").exists()
    no_part_files(out)


def test_unwritable_output_folder(slides_dir, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="cannot create output folder"):
        extract_cohort(slides_dir, blocker / "out", ExtractConfig(num_workers=0))


def test_corrupt_tiles_fail_their_slide_only(slides_dir, tmp_path, no_part_files):
    """Level-0 tiles destroyed after the header: segmentation (on level 1) works, reading patches fails."""
    import tifffile
    from pyramid import tissue_like, write_pyramid
    p = write_pyramid(slides_dir / "corrupt.svs", tissue_like(4096, 4096, seed=5), (1, 4), mpp=0.5, app_mag=20)
    with tifffile.TiffFile(p) as tf:
        page = tf.pages[0]
        offsets, counts = page.dataoffsets, page.databytecounts
    data = bytearray(p.read_bytes())
    for off, n in list(zip(offsets, counts))[::2]:
        data[off:off + n] = b"\0" * n
    p.write_bytes(bytes(data))
    out = tmp_path / "out"
    res = extract_cohort(slides_dir, out, ExtractConfig(num_workers=2, batch_size=8))
    status = {r.slide_id: r.status for r in res}
    assert status == {"CMU-1-Small-Region": "done", "corrupt": "failed"}
    err = next(r.error for r in res if r.slide_id == "corrupt")
    assert "corrupt.svs" in err and "\n" not in err
    fdir = feature_dir_for(out, "stain_stats")
    assert not (fdir / "h5_files" / "corrupt.h5").exists() and not (fdir / "pt_files" / "corrupt.pt").exists()
    no_part_files(out)


def test_batches_span_slides_and_rows_land_in_the_right_file(tmp_path, cmu_slide):
    """Two copies of the slide under different names, odd batch size: every row equals the single-slide run."""
    d = tmp_path / "slides"
    d.mkdir()
    shutil.copy(cmu_slide, d / "a.svs")
    shutil.copy(cmu_slide, d / "b.svs")
    res = extract_cohort(d, tmp_path / "out", ExtractConfig(num_workers=2, batch_size=5))
    ref = extract_cohort([cmu_slide], tmp_path / "ref", ExtractConfig(num_workers=0, batch_size=64))[0]
    with h5py.File(ref.features_h5, "r") as f:
        F = f["features"][:]
    assert len(F) % 5 != 0                     # so some batch holds rows of both slides
    for r in res:
        with h5py.File(r.features_h5, "r") as f:
            assert np.allclose(f["features"][:], F, atol=1e-5)


@pytest.mark.parametrize("threads", [1, 3])
def test_slides_are_prepared_ahead_in_a_background_thread(tmp_path, cmu_slide, monkeypatch, threads):
    """Tissue, grid and patch files of the next slides are made off the main process (which feeds the encoder,
    and must survive a native library aborting on a crafted slide), by one or several preparation processes;
    results keep the cohort's order, a failing slide included."""
    import os
    import time
    from dnd_engine.features import extract as extract_mod

    d = tmp_path / "slides"
    d.mkdir()
    for name in ("a", "c", "d"):
        shutil.copy(cmu_slide, d / f"{name}.svs")
    (d / "b.svs").write_text("not a slide")
    real, log = extract_mod._prepare_slide, tmp_path / "seen.txt"

    def spy(index, path, *args):      # runs in a preparation process (forked: it sees this stand-in)
        with open(log, "a") as f:
            f.write(f"{index} {os.getpid()} {time.perf_counter()!r}\n")
        return real(index, path, *args)

    monkeypatch.setattr(extract_mod, "_prepare_slide", spy)
    monkeypatch.setattr(extract_mod, "prepare_threads", lambda: threads)
    starts = []
    res = extract_cohort(d, tmp_path / "out", ExtractConfig(num_workers=0, batch_size=4, mp_context="fork"),
                         slide_progress=lambda done, n, msg: starts.append(time.perf_counter()) if done == n else None)
    assert [(r.slide_id, r.status) for r in res] == [("a", "done"), ("b", "failed"), ("c", "done"), ("d", "done")]
    assert "not a slide" in res[1].error or "b.svs" in res[1].error
    seen = [(int(i), int(pid), float(t)) for i, pid, t in (line.split() for line in log.read_text().splitlines())]
    assert sorted(i for i, _, _ in seen) == [0, 1, 2, 3]          # each once (processes may start them out of order)
    assert all(pid != os.getpid() for _, pid, _ in seen)
    # slide 'c' (index 2) was being prepared before slide 'a' finished encoding: prepared ahead
    assert {i: t for i, _, t in seen}[2] < starts[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_extraction_matches_the_cpu_row_for_row(tmp_path, cmu_slide):
    """The GPU path (pieces sent as they arrive and batched on the device, one batch in flight while the
    previous one is written) gives the CPU's features, in the same rows."""
    from dnd_engine.features import build_extractor

    d = tmp_path / "slides"
    d.mkdir()
    shutil.copy(cmu_slide, d / "a.svs")
    shutil.copy(cmu_slide, d / "b.svs")
    feats = {}
    for dev in ("cpu", "cuda"):
        ext = build_extractor("resnet50_trunc", random_init=True, device=dev, precision="fp32")
        cfg = ExtractConfig(extractor="resnet50_trunc", num_workers=2, batch_size=5, device=dev, compile="off")
        res = extract_cohort(d, tmp_path / dev, cfg, extractor=ext)
        assert [r.status for r in res] == ["done", "done"]
        feats[dev] = []
        for r in res:
            with h5py.File(r.features_h5, "r") as f:
                feats[dev].append(f["features"][:])
    for c, g in zip(feats["cpu"], feats["cuda"]):
        assert c.shape == g.shape and len(c) % 5 != 0
        cos = (c * g).sum(1) / (np.linalg.norm(c, axis=1) * np.linalg.norm(g, axis=1))
        assert cos.min() > 0.999
