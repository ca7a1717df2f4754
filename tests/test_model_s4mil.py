"""S4MIL: shapes, instance scores, checkpoint layout, and the S4D layer against slow direct evaluations."""

from __future__ import annotations

import cmath
import io

import pytest
import torch

from dnd_engine.models import build_model
from dnd_engine.models.s4mil import S4MIL, vandermonde_kernel

# the authors' S4Model(1024, 2, act='gelu', dropout=0.25) state_dict, in order (isyangshu/MambaMIL models/S4MIL.py)
EXPECTED_STATE = [
    ("_fc1.0.weight", (512, 1024)),
    ("_fc1.0.bias", (512,)),
    ("s4_block.0.weight", (512,)),
    ("s4_block.0.bias", (512,)),
    ("s4_block.1.D", (512,)),
    ("s4_block.1.kernel.C", (512, 16, 2)),
    ("s4_block.1.kernel.log_dt", (512,)),
    ("s4_block.1.kernel.log_A_real", (512, 16)),
    ("s4_block.1.kernel.A_imag", (512, 16)),
    ("s4_block.1.output_linear.0.weight", (1024, 512, 1)),
    ("s4_block.1.output_linear.0.bias", (1024,)),
    ("classifier.weight", (2, 512)),
    ("classifier.bias", (2,)),
]


def _model(seed=0, **kw):
    torch.manual_seed(seed)
    return build_model("s4mil", **kw)


def _jitter_ssm(layer, seed=1):
    """Move the SSM tensors off their structured init so the kernel tests see generic values."""
    g = torch.Generator().manual_seed(seed)
    k = layer.kernel
    with torch.no_grad():
        k.log_dt.add_(0.3 * torch.randn(k.log_dt.shape, generator=g))
        k.log_A_real.add_(0.5 * torch.randn(k.log_A_real.shape, generator=g))
        k.A_imag.add_(0.5 * torch.randn(k.A_imag.shape, generator=g))
        layer.D.add_(torch.randn(layer.D.shape, generator=g))


def _ssm_params(layer):
    """(dt (H,), A (H, M) complex, C (H, M) complex, D (H,)) as float64 / complex128 python-friendly tensors."""
    k = layer.kernel
    dt = torch.exp(k.log_dt.detach().double())
    a = torch.complex(-torch.exp(k.log_A_real.detach().double()), k.A_imag.detach().double())
    c = torch.view_as_complex(k.C.detach().double())
    return dt, a, c, layer.D.detach().double()


@pytest.mark.parametrize("n", [1, 5, 1000])
def test_output_shapes(n):
    m = _model().eval()
    out = m(torch.randn(n, 1024))
    assert out.logits.shape == (1, 2)
    assert out.embedding.shape == (1, 512)
    assert out.instance_scores.shape == (n,)
    assert m(torch.randn(1, n, 1024), scores=False).instance_scores is None


@pytest.mark.parametrize("n", [1, 5, 300])
def test_instance_scores_are_exact_logit_shares(n):
    m = _model(in_dim=32, n_classes=3, d_model=64).eval()
    with torch.no_grad():
        out = m(torch.randn(n, 32))
    s = out.instance_scores
    assert s.shape == (n,) and torch.isfinite(s).all()
    pred = out.prediction
    target = out.logits[0, pred] - m.classifier.bias[pred]
    assert torch.allclose(s.sum(), target, atol=1e-4), (float(s.sum()), float(target))
    # the embedding is the max-pooled vector the classifier reads
    assert torch.allclose(m.classifier(out.embedding), out.logits)
    if n > 1:
        assert (s != 0).any()


def test_instance_scores_credit_the_channel_winners():
    """Per channel, only the instance holding the max is credited, with W[pred, h] · max; others stay 0."""
    m = _model(d_model=16, d_state=4, in_dim=6).eval()
    x = torch.randn(30, 6)
    with torch.no_grad():
        out = m(x)
        h = m.s4_block(m._fc1(x))
    pred = out.prediction
    expected = torch.zeros(30)
    for ch in range(16):
        i = int(h[:, ch].argmax())
        expected[i] += float(m.classifier.weight[pred, ch].detach() * h[i, ch])
    assert torch.allclose(out.instance_scores, expected, atol=1e-6)
    assert (out.instance_scores == 0).sum() >= 30 - 16
    assert torch.equal(out.embedding[0], h.max(dim=0).values)


def test_gradients_reach_every_parameter():
    m = _model().train()
    out = m(torch.randn(16, 1024), scores=False)
    torch.nn.functional.cross_entropy(out.logits, torch.tensor([1])).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_parameter_count():
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(_model()) == 1_085_954
    assert count(_model(n_classes=7)) == 1_085_954 + 5 * 513
    # every kernel tensor is a trainable parameter, none a buffer (the authors' register() with lr=None)
    assert list(_model().buffers()) == []


def test_state_dict_layout_matches_authors():
    sd = _model().state_dict()
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == EXPECTED_STATE


def test_strict_load_from_written_layout_and_round_trip():
    g = torch.Generator().manual_seed(5)
    sd = {k: 0.1 * torch.randn(shape, generator=g) for k, shape in EXPECTED_STATE}
    a = _model(seed=1).eval()
    a.load_state_dict(sd, strict=True)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in sd.items())
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = build_model(**a.config()).eval()
    b.load_state_dict(torch.load(buf), strict=True)
    x = torch.randn(20, 1024)
    with torch.no_grad():
        before = a(x).logits
        assert torch.equal(before, b(x).logits)
        b.s4_block[1].kernel.log_dt.add_(0.1)          # the check can fail: the kernel tensors do matter
        assert not torch.allclose(before, b(x).logits)


def test_other_input_dim():
    m = _model(in_dim=166, n_classes=4).eval()
    out = m(torch.randn(33, 166))
    assert out.logits.shape == (1, 4) and torch.isfinite(out.logits).all()


def test_s4_layer_is_causal():
    torch.manual_seed(0)
    layer = _model(in_dim=8, d_model=64).s4_block[1].eval()
    u = torch.randn(64, 64)
    t = 30
    v = u.clone()
    v[t + 1:] = torch.randn(64 - t - 1, 64)
    with torch.no_grad():
        y, z = layer(u), layer(v)
    assert torch.allclose(y[: t + 1], z[: t + 1], atol=1e-5)
    assert (y[t + 1:] - z[t + 1:]).abs().max() > 1e-2


def test_instance_order_matters():
    m = _model(in_dim=16, d_model=64).eval()
    x = torch.randn(50, 16)
    with torch.no_grad():
        a = m(x).logits
        b = m(x.flip(0)).logits
    assert not torch.allclose(a, b, atol=1e-4)
    assert S4MIL.order_invariant is False


def test_kernel_matches_direct_evaluation():
    """K[h, l] = 2 Re Σ_n C_n (exp(dt A_n) − 1) / A_n · exp(dt A_n l), one term at a time in complex128."""
    layer = _model(d_model=4, d_state=6, in_dim=3).s4_block[1]
    _jitter_ssm(layer)
    dt, a, c, _ = _ssm_params(layer)
    length = 23
    direct = torch.zeros(4, length, dtype=torch.float64)
    for h in range(4):
        for n in range(3):
            an, cn, d = complex(a[h, n]), complex(c[h, n]), float(dt[h])
            b_bar = (cmath.exp(d * an) - 1) / an
            for ell in range(length):
                direct[h, ell] += 2 * (cn * b_bar * cmath.exp(d * an * ell)).real
    got = layer.kernel(length).double()
    assert torch.allclose(got, direct, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("length", [1, 2, 16, 17, 997, 20_001])
def test_vandermonde_split_matches_full_product(length):
    g = torch.Generator().manual_seed(length)
    h, n = 3, 4
    dta = torch.complex(-0.02 * torch.rand(h, n, generator=g, dtype=torch.float64),
                        torch.randn(h, n, generator=g, dtype=torch.float64))
    coef = torch.randn(h, n, generator=g, dtype=torch.complex128)
    full = 2 * (coef.unsqueeze(-1) * torch.exp(dta.unsqueeze(-1) * torch.arange(length))).sum(1).real
    assert torch.allclose(vandermonde_kernel(coef, dta, length), full, atol=1e-9)


def test_ssm_matches_recurrence():
    """The FFT convolution plus D skip equals the discretised state-space recurrence run step by step."""
    layer = _model(d_model=3, d_state=4, in_dim=3).s4_block[1].double()
    _jitter_ssm(layer, seed=2)
    dt, a, c, d = _ssm_params(layer)
    length = 40
    u = torch.randn(3, length, dtype=torch.float64)
    a_bar = torch.exp(dt.unsqueeze(-1) * a)
    b_bar = (a_bar - 1) / a
    state = torch.zeros(3, 2, dtype=torch.complex128)
    ref = torch.zeros(3, length, dtype=torch.float64)
    for t in range(length):
        state = a_bar * state + b_bar * u[:, t:t + 1]
        ref[:, t] = 2 * (c * state).sum(-1).real + d * u[:, t]
    with torch.no_grad():
        got = layer.ssm(u)
    assert torch.allclose(got, ref, atol=1e-8)


def test_layer_equals_its_declared_modules():
    """SSM → GELU → output_linear run as declared (Conv1d k=1, GLU over channels) in the authors' (B, H, L) layout."""
    layer = _model(in_dim=4, d_model=12, d_state=4).s4_block[1].eval()
    u = torch.randn(25, 12)
    with torch.no_grad():
        ref = layer.output_linear(torch.nn.functional.gelu(layer.ssm(u.t())).unsqueeze(0))[0].t()
        assert torch.allclose(layer(u), ref, atol=1e-6)
        assert torch.allclose(layer(u.unsqueeze(0))[0], ref, atol=1e-6)


def test_build_by_both_names_and_config_round_trip():
    a, b = build_model("s4mil"), build_model("s4model")
    assert type(a) is S4MIL and type(b) is S4MIL
    m = build_model("s4model", in_dim=166, n_classes=3, dropout=0.0, act="relu", d_state=8)
    assert m.config() == {"name": "s4mil", "in_dim": 166, "n_classes": 3, "dropout": 0.0, "act": "relu",
                          "d_model": 512, "d_state": 8}
    r = build_model(**m.config())
    r.load_state_dict(m.state_dict(), strict=True)
    assert not any(isinstance(x, torch.nn.Dropout) for x in m.modules())
    assert isinstance(a._fc1[1], torch.nn.GELU) and a._fc1[2].p == 0.25


def test_long_bag_trains_with_small_width():
    """A 10k-instance bag runs forward and backward (the kernel never forms an (H, N, L) tensor)."""
    m = _model(in_dim=8, d_model=16, d_state=8).train()
    out = m(torch.randn(10_000, 8), scores=False)
    out.logits.sum().backward()
    assert torch.isfinite(m.s4_block[1].kernel.log_dt.grad).all()
    assert torch.isfinite(out.logits).all()
