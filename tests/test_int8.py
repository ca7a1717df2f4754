"""Reduced-precision encoders on the CPU (int8, bf16) against the fp32 reference, on real patches."""

import logging

import h5py
import numpy as np
import pytest
import torch

from dnd_engine.errors import DnDError
from dnd_engine.features import build_extractor
from dnd_engine.features import int8 as int8_mod
from dnd_engine.features import registry
from dnd_engine.features.extract import ExtractConfig, extract_cohort
from dnd_engine.features.int8 import Int8Runner, per_patch_cosine
from dnd_engine.features.patch_dataset import PatchDataset

pytestmark = pytest.mark.skipif(int8_mod.int8_engine() is None, reason="torch has no quantized CPU kernels")


@pytest.fixture(scope="module")
def patches(cmu_slide):
    """24 real 224 px patches at 10x from the bundled slide, tissue and background."""
    xs, ys = np.meshgrid(np.arange(0, 2400, 400), np.arange(0, 1800, 450))
    coords = np.stack([xs.ravel(), ys.ravel()], 1)
    ds = PatchDataset(str(cmu_slide), coords, 0, 512, 224)
    return torch.stack([ds[i] for i in range(len(ds))])


@pytest.fixture(scope="module")
def fp32_features(patches):
    return build_extractor("resnet50_trunc", random_init=True, precision="fp32")(patches)


def test_int8_features_match_fp32_on_real_patches(patches, fp32_features):
    e = build_extractor("resnet50_trunc", random_init=True, precision="int8")
    assert e.precision == "int8" and e.channels_last and not e.can_compile()
    y = torch.cat([e(patches[:12]), e(patches[12:])])       # the first batch calibrates, the second does not
    cos = per_patch_cosine(y, fp32_features)
    assert cos.min() >= 0.999, cos.min()
    assert not torch.equal(y, fp32_features)                   # really int8, not fp32 under another name
    assert e.precision == "int8" and e.int8.checked == 6 and e.int8.worst_cosine >= 0.999
    assert "int8 (" in e.int8.summary()


def test_bf16_features_match_fp32_on_real_patches(patches, fp32_features):
    e = build_extractor("resnet50_trunc", random_init=True, precision="bf16")
    y = e(patches[:6])
    assert y.dtype == torch.float32
    assert per_patch_cosine(y, fp32_features[:6]).min() >= 0.999


def test_auto_precision_on_the_cpu(monkeypatch):
    monkeypatch.setattr(registry, "cpu_has_fast_bf16", lambda: False)
    assert build_extractor("resnet50_trunc", random_init=True).precision == "int8"
    assert build_extractor("stain_stats").precision == "fp32"
    monkeypatch.setattr(registry, "cpu_has_fast_bf16", lambda: True)
    assert build_extractor("resnet50_trunc", random_init=True).precision == "bf16"
    assert build_extractor("stain_stats").precision == "fp32"
    monkeypatch.setattr(registry, "int8_engine", lambda: None)
    monkeypatch.setattr(registry, "cpu_has_fast_bf16", lambda: False)
    assert build_extractor("resnet50_trunc", random_init=True).precision == "fp32"


def test_int8_is_refused_where_it_cannot_run():
    with pytest.raises(DnDError, match="not offered for 'stain_stats'"):
        build_extractor("stain_stats", precision="int8")
    e = build_extractor("resnet50_trunc", random_init=True, precision="fp32")
    with pytest.raises(DnDError, match="CPU only"):
        e.configure(torch.device("meta"), "int8")


def test_int8_that_fails_its_check_goes_back_to_fp32(patches, fp32_features, monkeypatch, caplog):
    """An unreachable tolerance: the first check fails even after recalibrating, and the batch and all later
    ones are fp32, bit for bit the reference."""
    monkeypatch.setattr(int8_mod, "MIN_COSINE", 1.01)
    e = build_extractor("resnet50_trunc", random_init=True, precision="int8")
    with caplog.at_level(logging.WARNING):
        y = e(patches[:8])
    assert "int8 encoder turned off" in caplog.text and "first patches" in caplog.text
    assert e.precision == "fp32" and e.int8 is None and "cosine" in e.int8_given_up
    ref = build_extractor("resnet50_trunc", random_init=True, precision="fp32")
    assert torch.allclose(y, ref(patches[:8]), atol=1e-5, rtol=1e-5)
    assert torch.allclose(e(patches[8:12]), fp32_features[8:12], atol=1e-5, rtol=1e-5)


def test_a_spot_check_that_fails_recalibrates(patches):
    """Inputs far outside the calibrated range (a contrast the first batch never showed) fail the spot check;
    the runner widens its ranges with that batch and returns features that pass."""
    torch.manual_seed(0)
    net = build_extractor("resnet50_trunc", random_init=True, precision="fp32").net.to(
        memory_format=torch.contiguous_format)
    x = patches.permute(0, 3, 1, 2).float() / 255
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (x - mean) / std
    r = Int8Runner(net, seven_bit_modules=("conv1",), check_every=1, check_patches=2)
    with torch.inference_mode():
        r(x[:8] * 0.1)                                  # calibrated on low-contrast input
        assert r.recalibrations == 0 and r.active
        out = x[8:12] * 3.0
        y = r(out)
        ref = net(out)
    assert r.recalibrations >= 1
    if r.active:
        assert per_patch_cosine(y[:2], ref[:2]).min() >= r.min_cosine
    else:
        assert y is None and "recalibrat" in r.failed


def test_extraction_defaults_to_checked_int8_on_this_cpu(tmp_path, cmu_slide, monkeypatch):
    import shutil
    monkeypatch.setattr(registry, "cpu_has_fast_bf16", lambda: False)
    d = tmp_path / "slides"
    d.mkdir()
    shutil.copy(cmu_slide, d / "a.svs")
    feats = {}
    for prec in ("auto", "fp32"):
        ext = build_extractor("resnet50_trunc", random_init=True, precision=prec)
        cfg = ExtractConfig(extractor="resnet50_trunc", num_workers=1, batch_size=8, precision=prec,
                            compile="off")
        (r,) = extract_cohort(d, tmp_path / prec, cfg, extractor=ext)
        assert r.status == "done"
        with h5py.File(r.features_h5, "r") as f:
            feats[prec] = (f.attrs["precision"], f["features"][:])
    assert feats["auto"][0] == "int8" and feats["fp32"][0] == "fp32"
    a, b = torch.from_numpy(feats["auto"][1]), torch.from_numpy(feats["fp32"][1])
    assert a.shape == b.shape and per_patch_cosine(a, b).min() >= 0.999
    with pytest.raises(DnDError, match="int8 runs eagerly"):
        extract_cohort(d, tmp_path / "c", ExtractConfig(extractor="resnet50_trunc", num_workers=1, compile="on"),
                       extractor=build_extractor("resnet50_trunc", random_init=True, precision="int8"))


def test_a_network_that_cannot_be_quantized_runs_fp32(patches, monkeypatch, caplog):
    def broken(self, x):
        raise RuntimeError("symbolically traced variables cannot be used as inputs to control flow")
    monkeypatch.setattr(Int8Runner, "_calibrate", broken)
    e = build_extractor("resnet50_trunc", random_init=True, precision="int8")
    with caplog.at_level(logging.WARNING):
        y = e(patches[:4])
    assert e.precision == "fp32" and "could not be quantized: RuntimeError" in e.int8_given_up
    assert "control flow" in caplog.text
    ref = build_extractor("resnet50_trunc", random_init=True, precision="fp32")
    assert torch.allclose(y, ref(patches[:4]), atol=1e-5, rtol=1e-5)
