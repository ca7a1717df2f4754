"""`dnd extract --ray`: a cohort run on a Ray cluster (a head and one worker node this test starts on 127.0.0.1)
gives the same files as a local run, resumes, reports progress and failures, honours cancellation; without Ray,
one line says how to install it."""

import subprocess
import sys

import h5py
import numpy as np
import pytest

from dnd_engine.cli.main import main
from dnd_engine.errors import Cancelled
from dnd_engine.features import ExtractConfig, extract_cohort, feature_dir_for


def _reset_ray_auth() -> None:
    """Ray caches the token it read first: its own tests reset that cache when they change the token."""
    try:
        from ray._private.authentication_test_utils import reset_auth_token_state
    except ImportError:
        return
    reset_auth_token_state()


@pytest.fixture(scope="module")
def ray_cluster():
    from raycluster import LocalRayCluster
    cluster = LocalRayCluster()
    try:
        with pytest.MonkeyPatch.context() as mp:
            for k, v in cluster.driver_env.items():    # before Ray is imported: it reads them once
                mp.setenv(k, v)
            pytest.importorskip("ray")
            _reset_ray_auth()
            yield cluster.start()
    finally:
        cluster.stop()
        if "ray" in sys.modules and sys.modules["ray"] is not None:
            _reset_ray_auth()           # later tests (a private local Ray) must not present this token


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Three small synthetic slides and one file that is no slide (it fails, locally and on the cluster)."""
    from dnd_engine.synth import make_synthetic_cohort
    root = tmp_path_factory.mktemp("ray_cohort")
    make_synthetic_cohort(root / "c", n_slides=3, size=2048, seed=5)
    slides = root / "c" / "slides"
    (slides / "broken.tif").write_bytes(b"II*\x00" + b"\x00" * 200)
    return slides


def _features(out):
    found = {}
    for f in sorted((feature_dir_for(out, "stain_stats") / "h5_files").glob("*.h5")):
        with h5py.File(f, "r") as h:
            found[f.stem] = (h["features"][:], h["coords"][:], dict(h.attrs), dict(h["coords"].attrs))
    return found


def _summary(out):
    import csv
    with open(feature_dir_for(out, "stain_stats") / "extraction_summary.csv") as f:
        return {r["slide_id"]: r for r in csv.DictReader(f)}


def test_ray_run_equals_a_local_run_and_resumes(ray_cluster, cohort, tmp_path, capsys, no_part_files):
    args = ["extract", "--slides", str(cohort), "--extractor", "stain_stats", "--quiet"]
    assert main(args + ["--out", str(tmp_path / "local")]) == 3        # the broken file fails, the rest are done
    assert main(args + ["--out", str(tmp_path / "ray"), "--ray", ray_cluster.address]) == 3
    ref, got = _features(tmp_path / "local"), _features(tmp_path / "ray")
    assert len(ref) == 3 and set(got) == set(ref)
    for sid, (feats, coords, attrs, cattrs) in ref.items():
        g_feats, g_coords, g_attrs, g_cattrs = got[sid]
        np.testing.assert_array_equal(g_coords, coords)
        np.testing.assert_allclose(g_feats, feats, rtol=1e-5, atol=1e-6)
        assert {k: str(v) for k, v in g_attrs.items()} == {k: str(v) for k, v in attrs.items()}
        assert {k: str(v) for k, v in g_cattrs.items()} == {k: str(v) for k, v in cattrs.items()}
    rows = _summary(tmp_path / "ray")
    assert rows["broken"]["status"] == "failed" and rows["broken"]["error"]
    assert rows["broken"]["error"] == _summary(tmp_path / "local")["broken"]["error"]
    assert sorted(s for s, r in rows.items() if r["status"] == "done") == sorted(ref)
    no_part_files(tmp_path / "ray")

    # resume: a second run on the cluster skips every finished slide, and reports progress as a local run does
    ticks, patches = [], []
    results = extract_cohort(cohort, tmp_path / "ray", ExtractConfig(extractor="stain_stats", ray=ray_cluster.address),
                             progress=lambda d, n, m: ticks.append((d, n)),
                             slide_progress=lambda d, n, m: patches.append((d, n)))
    assert sorted(r.status for r in results) == ["failed"] + ["skipped"] * 3
    assert ticks[0] == (0, 4) and ticks[-1] == (4, 4) and not patches


def test_ray_run_reports_patches_and_honours_cancel(ray_cluster, cohort, tmp_path, no_part_files):
    patches = []
    with pytest.raises(Cancelled):
        extract_cohort(cohort, tmp_path / "out", ExtractConfig(extractor="stain_stats", ray=ray_cluster.address),
                       slide_progress=lambda d, n, m: patches.append((d, n, m)),
                       cancelled=lambda: bool(patches))            # cancel once the first patches are written
    assert patches and patches[0][0] > 0 and "patches" in patches[0][2]
    no_part_files(tmp_path / "out")
    rows = _summary(tmp_path / "out")
    assert "cancelled" in {r["status"] for r in rows.values()}
    for sid, r in rows.items():       # a finished slide's file is whole; no other slide has one
        h5 = feature_dir_for(tmp_path / "out", "stain_stats") / "h5_files" / f"{sid}.h5"
        assert h5.exists() == (r["status"] == "done")


def test_without_ray_one_line_says_how_to_install(tmp_path, capsys, cmu_slide, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)          # import ray fails, as where it is not installed
    code = main(["extract", "--slides", str(cmu_slide), "--out", str(tmp_path / "o"), "--ray", "local"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and err.splitlines() == ["error: --ray needs Ray: pip install 'dnd-studio[cluster]'"]
    assert not (tmp_path / "o").exists()


def test_a_bad_address_is_refused_in_one_line(tmp_path, capsys, cmu_slide):
    code = main(["extract", "--slides", str(cmu_slide), "--out", str(tmp_path / "o"), "--ray", "not an address"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "Ray address must be auto, local or HOST:PORT" in err


def test_nothing_imports_ray_unless_asked(tmp_path, cohort):
    code = ("import sys; from dnd_engine.cli.main import main; "
            f"main(['extract', '--slides', {str(cohort / 'synth_000.tif')!r}, '--out', {str(tmp_path / 'o')!r}, '--quiet', "
            "'--workers', '0']); import dnd_gui.settings; print('ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr[-2000:]
