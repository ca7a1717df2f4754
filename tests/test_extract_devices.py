"""Several devices on one machine (issue 21, item 3): ``dnd extract --devices``, one encoder process per device.

Tested with two CPU processes (``cpu,cpu``): the same code runs per device on a GPU box. The device processes
start with spawn, so the extractor factories they are given live at module level here (spawn imports this module).
"""

import functools
import multiprocessing
import os
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torch.nn as nn

from dnd_engine.cli.main import main
from dnd_engine.errors import Cancelled, DnDError
from dnd_engine.features import ExtractConfig, extract_cohort, feature_dir_for
from dnd_engine.features import devices as devices_mod
from dnd_engine.features.devices import extract_on_devices, parse_devices, process_share
from dnd_engine.features.registry import Extractor, get_spec, build_extractor

N_SLIDES = 5


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Five small synthetic slides and their one-device (cpu) stain_stats extraction, the reference."""
    from dnd_engine.synth import make_synthetic_cohort
    root = tmp_path_factory.mktemp("devices")
    make_synthetic_cohort(root / "c", n_slides=N_SLIDES, size=2048, seed=3)
    slides = sorted((root / "c" / "slides").iterdir())
    ref = extract_cohort(slides, root / "ref", ExtractConfig(num_workers=0, compile="off", device="cpu"))
    assert [r.status for r in ref] == ["done"] * N_SLIDES
    return slides, root / "ref"


def _h5(path: Path) -> tuple:
    with h5py.File(path, "r") as f:
        return (f["features"][:], f["coords"][:], {k: str(v) for k, v in f.attrs.items()},
                {k: str(v) for k, v in f["coords"].attrs.items()})


def _assert_same_outputs(a: Path, b: Path, extractor: str, rtol: float = 0.0) -> None:
    fa, fb = feature_dir_for(a, extractor), feature_dir_for(b, extractor)
    names = sorted(p.name for p in (fa / "h5_files").glob("*.h5"))
    assert names and names == sorted(p.name for p in (fb / "h5_files").glob("*.h5"))
    for name in names:
        (F1, C1, A1, CA1), (F2, C2, A2, CA2) = _h5(fa / "h5_files" / name), _h5(fb / "h5_files" / name)
        assert np.array_equal(C1, C2) and A1 == A2 and CA1 == CA2, name
        if rtol == 0.0:
            assert np.array_equal(F1, F2), name                           # bit-equal
        else:
            np.testing.assert_allclose(F1, F2, rtol=rtol, atol=1e-6, err_msg=name)
        pt1 = torch.load(fa / "pt_files" / name.replace(".h5", ".pt"), weights_only=True)
        pt2 = torch.load(fb / "pt_files" / name.replace(".h5", ".pt"), weights_only=True)
        assert torch.equal(pt2, torch.from_numpy(F2)) and pt1.shape == pt2.shape


def _no_device_process_left() -> bool:
    return not [p for p in multiprocessing.active_children() if p.name.startswith("dnd-device")]


def test_cli_devices_cpu_cpu_equals_a_one_device_run(cohort, tmp_path, capsys, no_part_files):
    slides, ref = cohort
    out = tmp_path / "two"
    rc = main(["extract", "--slides", str(slides[0].parent), "--out", str(out), "--devices", "cpu,cpu",
               "--workers", "0", "--compile", "off", "--quiet"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    _assert_same_outputs(ref, out, "stain_stats")               # same h5 files, attributes, bit-equal features
    # the table says which device process did each slide, and both did some
    rows = [line for line in printed.splitlines() if line.startswith("synth_")]
    assert len(rows) == N_SLIDES
    assert any("[cpu #1]" in r for r in rows) and any("[cpu #2]" in r for r in rows)
    no_part_files(out)


def test_results_progress_and_summary_merge_every_device(cohort, tmp_path):
    slides, ref = cohort
    ticks, patch_ticks = [], []
    cfg = ExtractConfig(num_workers=0, compile="off", devices="cpu,cpu")
    res = extract_cohort(slides, tmp_path / "o", cfg, progress=lambda d, t, m: ticks.append((d, t)),
                         slide_progress=lambda d, t, m: patch_ticks.append((d, t, m)))
    assert [r.status for r in res] == ["done"] * N_SLIDES
    assert [r.slide_id for r in res] == [p.stem for p in slides]                     # cohort order
    assert {r.info["device_slot"] for r in res} == {0, 1} and {r.info["device"] for r in res} == {"cpu"}
    assert ticks[0] == (0, N_SLIDES) and ticks[-1] == (N_SLIDES, N_SLIDES)           # one merged cohort bar
    assert [d for d, _ in ticks] == sorted(d for d, _ in ticks)
    # one patch bar over the slides being encoded on both devices: "synth_001: 3/12 patches", "2 slides: 9/24 .."
    assert patch_ticks and all(0 < d <= t and m.endswith(f"{d}/{t} patches") for d, t, m in patch_ticks)
    assert patch_ticks[-1][0] == patch_ticks[-1][1]
    summary = (feature_dir_for(tmp_path / "o", "stain_stats") / "extraction_summary.csv").read_text()
    assert summary.count(",done,") == N_SLIDES                       # the parent's merged summary, every slide
    again = extract_cohort(slides, tmp_path / "o", cfg)              # resume: every slide skipped
    assert [r.status for r in again] == ["skipped"] * N_SLIDES
    assert _no_device_process_left()


# --- a small CNN (no downloaded weights): features within rtol 1e-5 of a one-device run ------------------------
def tiny_cnn(device: str) -> Extractor:
    """A resnet-like stem with random (seeded) weights under the resnet50_trunc name, 64 px input."""
    spec = replace(get_spec("resnet50_trunc"), dim=16, input_size=64, int8=False, needs_weights=False)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
                        nn.AdaptiveAvgPool2d(1))
    return Extractor(spec, net, None).configure(device, "fp32")


def test_a_cnn_on_two_processes_matches_one(cohort, tmp_path):
    slides, _ = cohort
    cfg = ExtractConfig(extractor="resnet50_trunc", num_workers=0, compile="off", precision="fp32",
                        batch_size=8, device="cpu")
    one = extract_cohort(slides, tmp_path / "one", cfg, extractor=tiny_cnn("cpu"))
    # as the app starts them (a Qt app must not fork its threads): through a fork server
    two = extract_on_devices(slides, tmp_path / "two", replace(cfg, mp_context="forkserver"), build=tiny_cnn,
                             devices=["cpu", "cpu"])
    assert [r.status for r in one] == [r.status for r in two] == ["done"] * N_SLIDES
    assert {r.info["device_slot"] for r in two} == {0, 1}
    _assert_same_outputs(tmp_path / "one", tmp_path / "two", "resnet50_trunc", rtol=1e-5)


# --- a device process that dies fails only its in-flight slide ------------------------------------------------
def dies_once(marker: str, device: str) -> Extractor:
    """stain_stats whose first batch kills its process (SIGKILL, as the OOM killer does), once per test:
    the first process to encode creates ``marker`` and dies."""
    ext = build_extractor("stain_stats", device=device, precision="fp32")
    forward = ext.forward

    def maybe_die(batch):
        try:
            os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return forward(batch)
        os.kill(os.getpid(), 9)
    ext.forward = maybe_die
    return ext


def test_a_dead_device_process_fails_only_its_in_flight_slide(cohort, tmp_path):
    slides, ref = cohort
    cfg = ExtractConfig(num_workers=0, compile="off", device="cpu")
    res = extract_on_devices(slides, tmp_path / "o", cfg, build=functools.partial(dies_once, str(tmp_path / "m")),
                             devices=["cpu", "cpu"])
    failed = [r for r in res if r.status == "failed"]
    assert len(res) == N_SLIDES and len(failed) == 1
    assert "the encoder process on cpu died (signal SIGKILL)" in failed[0].error
    assert failed[0].error.startswith(failed[0].slide_id)
    for r in res:                      # the others (returned to the pool, done by a fresh process) are right
        if r.status == "done":
            F, C, A, _ = _h5(Path(r.features_h5))
            Fr, Cr, Ar, _ = _h5(feature_dir_for(ref, "stain_stats") / "h5_files" / f"{r.slide_id}.h5")
            assert np.array_equal(F, Fr) and np.array_equal(C, Cr) and A == Ar
    assert sum(r.status == "done" for r in res) == N_SLIDES - 1
    assert _no_device_process_left()


def test_cancel_stops_every_device_process(cohort, tmp_path, no_part_files):
    slides, ref = cohort
    seen = []
    cfg = ExtractConfig(num_workers=0, compile="off", devices="cpu,cpu")
    with pytest.raises(Cancelled):
        extract_cohort(slides, tmp_path / "o", cfg, progress=lambda d, t, m: seen.append(d),
                       cancelled=lambda: bool(seen) and seen[-1] >= 1)
    assert _no_device_process_left()
    no_part_files(tmp_path / "o")                 # the slides in flight were dropped cleanly
    fdir = feature_dir_for(tmp_path / "o", "stain_stats")
    for h5 in (fdir / "h5_files").glob("*.h5"):   # what finished is complete and right
        assert np.array_equal(_h5(h5)[0], _h5(feature_dir_for(ref, "stain_stats") / "h5_files" / h5.name)[0])
    assert "cancelled" in (fdir / "extraction_summary.csv").read_text()


# --- bad values: one clear line, exit 1, before any work ------------------------------------------------------
@pytest.mark.parametrize("value, words", [
    ("tpu", "unknown device 'tpu' in --devices"),
    ("", "--devices is empty"),
    (" , ", "--devices is empty"),
    ("cpu,,cpu", "empty entry"),
    ("mps", "cpu and cuda:N devices only"),
])
def test_bad_devices_are_refused_with_one_line(value, words, tmp_path, capsys):
    rc = main(["extract", "--slides", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--devices", value])
    err = capsys.readouterr().err
    assert rc == 1 and err.startswith("error: ") and words in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_gpus_the_machine_lacks_are_refused(monkeypatch, tmp_path, capsys):
    if not torch.cuda.is_available():
        rc = main(["extract", "--slides", str(tmp_path), "--out", str(tmp_path / "o"), "--devices", "cuda:7"])
        err = capsys.readouterr().err
        assert rc == 1 and "CUDA is not available on this machine" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(DnDError, match=r"'cuda:7', but this machine has 2 GPUs \(cuda:0, cuda:1\)"):
        parse_devices("cuda:0,cuda:7")
    with pytest.raises(DnDError, match="mixes cpu and cuda"):
        parse_devices("cpu,cuda:0")
    assert parse_devices("cuda") == ["cuda:0", "cuda:1"]
    assert parse_devices(" cuda:1 , cuda:0,cuda:1") == ["cuda:1", "cuda:0", "cuda:1"]
    assert parse_devices("cpu,CPU") == ["cpu", "cpu"]


def test_device_and_devices_together_are_refused(tmp_path, capsys):
    rc = main(["extract", "--slides", str(tmp_path), "--out", str(tmp_path / "o"), "--device", "cpu",
               "--devices", "cpu,cpu"])
    assert rc == 1 and "give --device or --devices, not both" in capsys.readouterr().err


def test_devices_and_ray_together_are_refused_by_the_cli_and_the_engine(tmp_path, capsys):
    rc = main(["extract", "--slides", str(tmp_path), "--out", str(tmp_path / "o"), "--devices", "cpu,cpu",
               "--ray", "local"])
    assert rc == 1 and "not both" in capsys.readouterr().err
    from dnd_engine.errors import DnDError
    from dnd_engine.features.extract import ExtractConfig, extract_cohort
    with pytest.raises(DnDError, match="not both"):
        extract_cohort([], tmp_path / "o2", ExtractConfig(extractor="stain_stats", devices="cpu,cpu", ray="local"))
    assert not (tmp_path / "o2").exists()


def test_cores_are_split_between_device_processes(monkeypatch):
    monkeypatch.setattr(devices_mod, "usable_cores", lambda: 16)
    assert process_share("cpu", 2, None) == (8, 2)          # encoder threads, readers (≤ 4 readers on a CPU)
    assert process_share("cuda:0", 2, None) == (8, 8)       # a GPU's readers get the cores
    assert process_share("cpu", 4, 3) == (4, 3)             # --workers counts per process
    monkeypatch.setattr(devices_mod, "usable_cores", lambda: 2)
    assert process_share("cpu", 2, None) == (1, 1)


# --- device processes exit with their parent ------------------------------------------------------------------
@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_device_processes_exit_when_extract_is_killed(cohort, tmp_path):
    """A SIGKILLed ``dnd extract --devices cpu,cpu`` leaves no device process behind; they are stopped first, so
    only dying with the parent can end them (as tests/test_readers_exit.py does for the patch readers)."""
    import signal
    import subprocess
    import sys
    from test_readers_exit import ROOT, _children, _running, _wait

    def device_children(pid: int) -> set:
        return {c for c in _children(pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()}

    slides, _ = cohort
    p = subprocess.Popen([sys.executable, "-m", "dnd_engine.cli", "extract", "--slides", str(slides[0].parent),
                          "--out", str(tmp_path / "o"), "--devices", "cpu,cpu", "--workers", "0", "--compile", "off",
                          "--quiet"], env=dict(os.environ, PYTHONPATH=str(ROOT)), stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE)
    kids: set = set()
    try:
        # both processes are at work (each prepares a slide of its own first), so both are past their start
        patches = [tmp_path / "o" / "patches" / f"{s.stem}.h5" for s in slides[:2]]
        assert _wait(lambda: p.poll() is not None or all(f.exists() for f in patches), 600, 0.05)
        assert p.poll() is None, p.stderr.read().decode()[-3000:]
        os.kill(p.pid, signal.SIGSTOP)
        kids = device_children(p.pid)
        assert len(kids) == 2
        for k in kids:
            os.kill(k, signal.SIGSTOP)
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        assert _wait(lambda: not any(_running(k) for k in kids), 120, 0.1), "device processes outlived dnd extract"
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        for k in kids:
            if _running(k):
                os.kill(k, signal.SIGKILL)


def cannot_start(device: str):
    os._exit(3)


def test_processes_that_cannot_start_give_one_error(cohort, tmp_path, monkeypatch):
    slides, _ = cohort
    monkeypatch.setattr(devices_mod, "MAX_DEATHS", 1)        # one try per device (3 in use) keeps the test short
    with pytest.raises(DnDError, match=r"no encoder process could start \(cpu: exit code 3\)"):
        extract_on_devices(slides, tmp_path / "o", ExtractConfig(num_workers=0, compile="off"), build=cannot_start,
                           devices=["cpu", "cpu"])
    assert _no_device_process_left()
