import numpy as np
import pytest
import torch

from dnd_engine.errors import DnDError, WeightsMissingError
from dnd_engine.features import build_extractor, get_spec, list_extractors
from dnd_engine.features.patch_dataset import PatchDataset
from dnd_engine.slides import open_slide


@pytest.fixture(scope="module")
def real_patches(cmu_slide):
    """Eight real 256 px patches at 10x (512 px at level 0 of the 20x CMU slide), plus one blank patch."""
    coords = np.array([[512, 1024], [1024, 1024], [512, 1536], [1024, 1536], [512, 2048], [1024, 2048],
                       [1536, 1536], [1024, 2560], [0, 0]])
    ds = PatchDataset(str(cmu_slide), coords, 0, 512, 256)
    return torch.stack([ds[i] for i in range(len(ds))])


def test_registry_lists_the_three_extractors():
    assert set(list_extractors()) >= {"stain_stats", "resnet50_trunc", "uni_v1"}
    assert get_spec("resnet50_trunc").dim == 1024 and get_spec("uni_v1").dim == 1024
    assert not get_spec("stain_stats").needs_weights
    with pytest.raises(DnDError, match="unknown extractor"):
        get_spec("nope")


def test_stain_stats_is_deterministic_and_separates_tissue_from_glass(real_patches):
    e = build_extractor("stain_stats")
    a, b = e(real_patches), e(real_patches)
    assert a.shape == (9, e.dim) and a.dtype == torch.float32 and torch.isfinite(a).all()
    assert torch.equal(a, b)
    # hematoxylin mean (OD-deconvolved, feature block 6+21) is higher on tissue than on the blank corner
    h_mean = a[:, 6 + 21]
    assert (h_mean[:8] > h_mean[8] + 0.02).all()
    # features vary across tissue patches (not a constant vector)
    assert a[:8].std(0).mean() > 1e-3


def test_stain_stats_batch_independent(real_patches):
    e = build_extractor("stain_stats")
    full = e(real_patches)
    single = torch.cat([e(real_patches[i:i + 1]) for i in range(len(real_patches))])
    assert torch.allclose(full, single, atol=1e-5)


def test_resnet50_trunc_missing_weights_say_where_to_put_them(tmp_path, monkeypatch):
    monkeypatch.setenv("DND_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsMissingError) as ei:
        build_extractor("resnet50_trunc")
    msg = str(ei.value)
    assert "resnet50-0676ba61.pth" in msg and str(tmp_path / "torch") in msg and "\n" not in msg
    with pytest.raises(WeightsMissingError, match="not found"):
        build_extractor("resnet50_trunc", weights=tmp_path / "missing.pth")


def test_resnet50_trunc_loads_a_torchvision_checkpoint(tmp_path, monkeypatch, real_patches):
    """A full torchvision ResNet-50 state dict (with layer4 and fc) loads into the truncated network."""
    from torchvision.models import resnet50
    torch.manual_seed(1)
    full = resnet50(weights=None).eval()
    ckpt = tmp_path / "torch" / "hub" / "checkpoints" / "resnet50-0676ba61.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(full.state_dict(), ckpt)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    e = build_extractor("resnet50_trunc", precision="fp32")       # found in the torch hub cache
    assert e.weights_path == ckpt and len(e.weights_sha256()) == 64
    x = real_patches[:2, 16:240, 16:240].contiguous()             # 224 px input
    y = e(x)
    assert y.shape == (2, 1024)
    # the same numbers as torchvision's own layers up to layer3 + average pool
    with torch.no_grad():
        t = (x.permute(0, 3, 1, 2).float() / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / \
            torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        f = full.maxpool(full.relu(full.bn1(full.conv1(t))))
        ref = full.layer3(full.layer2(full.layer1(f))).mean((2, 3))
    assert torch.allclose(y, ref, atol=1e-4, rtol=1e-4)
    assert torch.equal(e(x), y)                                   # deterministic


def test_wrong_weights_file_is_refused(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"foo": torch.zeros(3)}, bad)
    with pytest.raises(DnDError, match="not a ResNet-50 checkpoint"):
        build_extractor("resnet50_trunc", weights=bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsMissingError, match="cannot load"):
        build_extractor("resnet50_trunc", weights=junk)


def test_pickled_code_is_never_executed(tmp_path):
    """weights_only=True: a checkpoint carrying a pickled callable is refused, not run."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    p = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, p, pickle_module=pickle)
    with pytest.raises(WeightsMissingError, match="cannot load"):
        build_extractor("resnet50_trunc", weights=p)


def test_uni_v1_architecture_and_missing_weights(tmp_path, monkeypatch):
    monkeypatch.delenv("UNI_CKPT_PATH", raising=False)
    monkeypatch.setenv("DND_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsMissingError, match="uni_v1"):
        build_extractor("uni_v1")
    e = build_extractor("uni_v1", random_init=True, precision="fp32")
    n_params = sum(p.numel() for p in e.net.parameters())
    assert 300e6 < n_params < 310e6            # ViT-L/16: 303M parameters without a head
    y = e(torch.randint(0, 255, (1, 224, 224, 3), dtype=torch.uint8))
    assert y.shape == (1, 1024) and torch.isfinite(y).all()


def test_fp16_on_cpu_is_refused():
    with pytest.raises(DnDError, match="fp16 needs a CUDA"):
        build_extractor("stain_stats", precision="fp16")


def test_patch_dataset_matches_read_region_and_resize(cmu_slide):
    from PIL import Image
    ds = PatchDataset(str(cmu_slide), np.array([[1024, 1536]]), 0, 512, 224)
    with open_slide(cmu_slide) as s:
        ref = np.asarray(s.read_region((1024, 1536), 0, (512, 512)).resize((224, 224), Image.Resampling.BILINEAR))
    assert ds[0].shape == (224, 224, 3) and ds[0].dtype == torch.uint8
    assert np.array_equal(ds[0].numpy(), ref)


def test_weights_file_with_pickled_objects_is_refused_without_unsafe_advice(tmp_path):
    import pickle

    from dnd_engine.errors import DnDError
    from dnd_engine.state_dicts import load_state_dict
    bad = tmp_path / "evil.pth"
    bad.write_bytes(pickle.dumps({"weights": object}))
    with pytest.raises(DnDError) as info:
        load_state_dict(bad)
    msg = str(info.value)
    assert "refused" in msg and "weights_only=False" not in msg and "\n" not in msg
