"""The model zoo's shared contract, plus Mean/Max pooling and ABMIL against the authors' layouts."""

import pytest
import torch

from dnd_engine.errors import DnDError
from dnd_engine.models import ModelInputError, build_model, model_class
from dnd_engine.models.io import ModelFileError, load_authors_checkpoint, load_model, save_model

ALL = ["mean", "max", "abmil", "transmil", "s4mil", "mambamil"]
# MIL_REFERENCE.md §2.6: in_dim 1024, 2 classes; each extra class adds 513
PARAMS = {"mean": 525_826, "max": 525_826, "abmil": 591_619, "transmil": 2_672_146, "s4mil": 1_085_954,
          "mambamil": 4_227_843}
# the authors' state-dict layouts (isyangshu/MambaMIL models/Mean_Max_MIL.py and models/ABMIL.py)
KEYS = {
    "mean": {"head.0.weight": (512, 1024), "head.0.bias": (512,), "head.3.weight": (2, 512), "head.3.bias": (2,)},
    "abmil": {"feature.0.weight": (512, 1024), "feature.0.bias": (512,), "attention.0.weight": (128, 512),
              "attention.0.bias": (128,), "attention.2.weight": (1, 128), "attention.2.bias": (1,),
              "classifier.0.weight": (2, 512), "classifier.0.bias": (2,)},
    "abmil_gated": {"feature.0.weight": (512, 1024), "feature.0.bias": (512,), "attention_V.0.weight": (128, 512),
                    "attention_V.0.bias": (128,), "attention_U.0.weight": (128, 512), "attention_U.0.bias": (128,),
                    "attention_weights.weight": (1, 128), "attention_weights.bias": (1,),
                    "classifier.0.weight": (2, 512), "classifier.0.bias": (2,)},
}
KEYS["max"] = KEYS["mean"]


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", ALL)
def test_parameter_counts_match_the_authors(name):
    assert n_params(build_model(name, in_dim=1024, n_classes=2)) == PARAMS[name]
    assert n_params(build_model(name, in_dim=1024, n_classes=7)) == PARAMS[name] + 5 * 513


@pytest.mark.parametrize("name", ["mean", "max", "abmil", "abmil_gated"])
def test_state_dict_layout_is_the_authors(name):
    m = build_model("abmil", gated=True) if name == "abmil_gated" else build_model(name)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == KEYS[name]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("n", [1, 2, 37])
def test_one_interface_for_all(name, n):
    torch.manual_seed(0)
    m = build_model(name, in_dim=24, n_classes=3).eval()
    out = m(torch.randn(n, 24))
    assert out.logits.shape == (1, 3) and out.embedding.dim() == 2 and out.embedding.shape[0] == 1
    assert out.instance_scores.shape == (n,) and torch.isfinite(out.instance_scores).all()
    assert out.probs.sum().item() == pytest.approx(1.0, abs=1e-5) and 0 <= out.prediction < 3
    assert m(torch.zeros(1, n, 24)).logits.shape == (1, 3)               # (1, N, D) is accepted too
    assert m(torch.randn(n, 24), scores=False).instance_scores is None


@pytest.mark.parametrize("name", ALL)
def test_bad_bags_are_refused(name):
    m = build_model(name, in_dim=8, n_classes=2)
    with pytest.raises(ModelInputError, match="feature dimension 9 does not match the model's 8"):
        m(torch.randn(4, 9))
    with pytest.raises(ModelInputError, match="empty"):
        m(torch.randn(0, 8))
    with pytest.raises(ModelInputError, match="one bag at a time"):
        m(torch.randn(2, 4, 8))


@pytest.mark.parametrize("name", ALL)
def test_order_invariance_where_the_method_has_it(name):
    torch.manual_seed(1)
    m = build_model(name, in_dim=16, n_classes=2).eval()
    x = torch.randn(50, 16)
    perm = torch.randperm(50)
    a, b = m(x), m(x[perm])
    if model_class(name).order_invariant:
        assert torch.allclose(a.logits, b.logits, atol=1e-5)
        assert torch.allclose(a.instance_scores[perm], b.instance_scores, atol=1e-5)
    else:
        assert not torch.allclose(a.logits, b.logits, atol=1e-6)          # sequence models see the order


@pytest.mark.parametrize("name", ALL)
def test_model_file_round_trip_and_authors_checkpoints(name, tmp_path):
    torch.manual_seed(2)
    m = build_model(name, in_dim=20, n_classes=4).eval()
    x = torch.randn(30, 20)
    save_model(m, tmp_path / "m.safetensors", {"note": "test"})
    back, card = load_model(tmp_path / "m.safetensors")
    assert card == {"note": "test"} and back.config() == m.config()
    assert torch.equal(back(x).logits, m(x).logits)
    # the authors' code saves torch.save(model.state_dict()): it loads strictly, with weights_only
    torch.save(m.state_dict(), tmp_path / "theirs.pt")
    theirs = load_authors_checkpoint(name, tmp_path / "theirs.pt", in_dim=20, n_classes=4)
    assert torch.equal(theirs(x).logits, m(x).logits)
    with pytest.raises(ModelFileError, match="does not fit"):
        load_authors_checkpoint(name, tmp_path / "theirs.pt", in_dim=20, n_classes=3)


def test_model_file_errors(tmp_path):
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path / "absent.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(ModelFileError, match="cannot read"):
        load_model(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelFileError, match="not a D&D Studio model"):
        load_model(tmp_path / "other.safetensors")


def test_build_model_names_and_options():
    for alias, name in [("mean_mil", "mean"), ("max_mil", "max"), ("att_mil", "abmil"), ("trans_mil", "transmil"),
                        ("s4model", "s4mil"), ("mamba_mil", "mambamil")]:
        assert build_model(alias, in_dim=8).name == name
    with pytest.raises(DnDError, match="unknown model 'clam'"):
        build_model("clam")
    with pytest.raises(DnDError, match="abmil"):
        build_model("abmil", in_dim=8, no_such_option=1)
    assert build_model("abmil", in_dim=8, gated=True).config() == {"name": "abmil", "in_dim": 8, "n_classes": 2,
                                                                   "dropout": 0.25, "act": "relu", "gated": True}


def test_mean_and_max_pool_instance_logits():
    torch.manual_seed(3)
    x = torch.randn(9, 16)
    mean = build_model("mean", in_dim=16, n_classes=3).eval()
    inst = mean.head(x)
    out = mean(x)
    assert torch.allclose(out.logits, inst.mean(0, keepdim=True), atol=1e-6)
    assert torch.allclose(mean.head[3](out.embedding), out.logits, atol=1e-6)   # the embedding is what it reads
    assert torch.allclose(out.instance_scores, inst[:, out.prediction], atol=1e-6)
    mx = build_model("max", in_dim=16, n_classes=3).eval()
    inst = mx.head(x)
    out = mx(x)
    assert torch.allclose(out.logits, inst.max(0, keepdim=True).values)
    assert out.instance_scores.argmax() == inst[:, out.prediction].argmax()
    # the authors' Xavier-normal init with zero biases
    assert torch.count_nonzero(mean.head[0].bias) == 0 and torch.count_nonzero(mx.head[3].bias) == 0


@pytest.mark.parametrize("gated", [False, True])
@torch.no_grad()
def test_abmil_scores_are_the_pre_softmax_attention(gated):
    torch.manual_seed(4)
    m = build_model("abmil", in_dim=16, n_classes=2, gated=gated).eval()
    x = torch.randn(12, 16)
    out = m(x)
    h = m.feature(x)
    w = torch.softmax(out.instance_scores, 0)
    assert torch.allclose(out.embedding, w[None] @ h, atol=1e-6)
    assert torch.allclose(out.logits, m.classifier(out.embedding), atol=1e-6)
    big = x.clone()
    big[5] = x[out.instance_scores.argmax()]                                 # a copy of the top instance
    assert m(big).instance_scores[5].item() == pytest.approx(out.instance_scores.max().item(), abs=1e-5)


@pytest.mark.parametrize("name", ALL)
def test_gradients_reach_every_parameter(name):
    torch.manual_seed(5)
    m = build_model(name, in_dim=16, n_classes=3).train()
    out = m(torch.randn(40, 16), scores=False)
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([1])).backward()
    missing = [k for k, p in m.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, missing
