"""MambaMIL (SRMamba) and the parallel selective scan: shapes, the authors' state_dict, and exactness against a
slow per-token reference (values and gradients), including lengths that are not multiples of the block, the
sub-chunk, the checkpoint chunk or the SR rate."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from dnd_engine.models import build_model
from dnd_engine.models import selective_scan as ss
from dnd_engine.models.mambamil import MambaMIL


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """These tests run many small ops; on a shared 2-core machine OpenMP's per-op barriers make them 10-30× slower."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


# ---------------------------------------------------------------------------------------------------------------
# the authors' MambaMIL(1024, 2, layer=2, type="SRMamba"): state_dict keys and shapes, in their order

def _layer_keys(i: int):
    p = f"layers.{i}."
    return [
        (p + "0.weight", (512,)), (p + "0.bias", (512,)),
        (p + "1.A_log", (1024, 16)), (p + "1.A_b_log", (1024, 16)), (p + "1.D", (1024,)), (p + "1.D_b", (1024,)),
        (p + "1.in_proj.weight", (2048, 512)),
        (p + "1.conv1d.weight", (1024, 1, 4)), (p + "1.conv1d.bias", (1024,)),
        (p + "1.conv1d_b.weight", (1024, 1, 4)), (p + "1.conv1d_b.bias", (1024,)),
        (p + "1.x_proj.weight", (64, 1024)), (p + "1.x_proj_b.weight", (64, 1024)),
        (p + "1.dt_proj.weight", (1024, 32)), (p + "1.dt_proj.bias", (1024,)),
        (p + "1.dt_proj_b.weight", (1024, 32)), (p + "1.dt_proj_b.bias", (1024,)),
        (p + "1.out_proj.weight", (512, 1024)),
    ]


EXPECTED = ([("_fc1.0.weight", (512, 1024)), ("_fc1.0.bias", (512,)), ("norm.weight", (512,)), ("norm.bias", (512,))]
            + _layer_keys(0) + _layer_keys(1)
            + [("classifier.weight", (2, 512)), ("classifier.bias", (2,)),
               ("attention.0.weight", (128, 512)), ("attention.0.bias", (128,)),
               ("attention.2.weight", (1, 128)), ("attention.2.bias", (1,))])


# ---------------------------------------------------------------------------------------------------------------
# a slow, obviously correct per-token scan (float64 inside), with the same signature as ss.selective_scan

def reference_scan(u, delta, A, B, C, D=None, h0=None, *, return_state=False, **_):
    L, ch = u.shape
    B = B if B.dim() == 3 else B[:, None]
    C = C if C.dim() == 3 else C[:, None]
    per_group = ch // B.shape[1]
    u64, dl, A64 = u.double(), delta.double(), A.double()
    h = torch.zeros(ch, A.shape[1], dtype=torch.float64) if h0 is None else h0.double()
    ys = []
    for t in range(L):
        b_t = B[t].double().repeat_interleave(per_group, 0)       # (ch, n)
        c_t = C[t].double().repeat_interleave(per_group, 0)
        h = torch.exp(dl[t, :, None] * A64) * h + (dl[t] * u64[t])[:, None] * b_t
        ys.append((h * c_t).sum(-1))
    y = torch.stack(ys)
    if D is not None:
        y = y + u64 * D.double()
    y, h = y.to(u.dtype), h.to(u.dtype)
    return (y, h) if return_state else y


def _scan_inputs(L, ch, n, G, h0=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(L, ch, generator=g)
    dl = F.softplus(torch.randn(L, ch, generator=g) - 1)
    A = -torch.exp(torch.randn(ch, n, generator=g))
    B = torch.randn(L, G, n, generator=g)
    C = torch.randn(L, G, n, generator=g)
    D = torch.randn(ch, generator=g)
    H0 = torch.randn(ch, n, generator=g) if h0 else None
    return [u, dl, A, B, C, D, H0]


def _grads_close(outs, refs, leaves, tol=5e-5):
    """Gradients of a random projection of ``outs`` and of ``refs`` w.r.t. ``leaves`` agree."""
    weights = [torch.randn_like(o) for o in outs]
    got = torch.autograd.grad(sum((o * w).sum() for o, w in zip(outs, weights)), leaves)
    want = torch.autograd.grad(sum((r * w).sum() for r, w in zip(refs, weights)), leaves)
    for a, b in zip(got, want):
        _close(a, b, tol)


def _close(a, b, tol=2e-5):
    scale = b.abs().max().clamp_min(1e-3)
    assert (a - b).abs().max() <= tol * scale, f"max |Δ| {(a - b).abs().max():.3g} vs scale {scale:.3g}"


@pytest.mark.parametrize("L,ch,n,G,block,sub,h0", [
    (1, 4, 3, 1, 4, 8, False),
    (37, 6, 4, 2, 4, 12, True),     # 37 is a multiple of neither the block nor the sub-chunk
    (100, 4, 2, 1, 3, 20, False),
    (203, 4, 2, 2, 2, 203, True),   # 102 blocks in one sub-chunk: the carries are scanned recursively
])
def test_scan_matches_per_token_reference(L, ch, n, G, block, sub, h0):
    inputs = _scan_inputs(L, ch, n, G, h0)
    leaves = [x.requires_grad_() for x in inputs if x is not None]
    u, dl, A, B, C, D, H0 = inputs
    y, h = ss.selective_scan(u, dl, A, B, C, D, h0=H0, return_state=True, block=block, sub=sub)
    yr, hr = reference_scan(u, dl, A, B, C, D, h0=H0, return_state=True)
    _close(y, yr)
    _close(h, hr)
    _grads_close((y, h), (yr, hr), leaves)


def test_checkpointed_scan_matches_autograd():
    L, ch, n = 29, 6, 3
    g = torch.Generator().manual_seed(3)
    x = torch.randn(L, ch, generator=g, requires_grad=True)
    w = torch.randn(ch, ch, generator=g, requires_grad=True)
    A_log = torch.randn(ch, n, generator=g, requires_grad=True)
    proj = torch.randn(2 * n, ch, generator=g, requires_grad=True)
    D = torch.randn(ch, generator=g, requires_grad=True)
    h0 = torch.randn(ch, n, generator=g, requires_grad=True)

    def prep(x, w, A_log, proj, D):
        u = torch.tanh(x @ w)
        bc = u @ proj.t()
        return u, F.softplus(u), -torch.exp(A_log), bc[:, :n], bc[:, n:], D

    leaves = [x, w, A_log, proj, D, h0]
    y, h = ss.checkpointed_scan(prep, (x, w, A_log, proj, D), h0=h0, block=4, sub=12)
    yr, hr = reference_scan(*prep(x, w, A_log, proj, D), h0=h0, return_state=True)
    _close(y, yr)
    _grads_close((y, h), (yr, hr), leaves)


# ---------------------------------------------------------------------------------------------------------------
# the model

@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("mambamil").eval()


def test_registered_under_both_names(model):
    assert isinstance(model, MambaMIL) and isinstance(build_model("mamba_mil", in_dim=8), MambaMIL)
    assert model.order_invariant is False and model.memory == "linear" and "isyangshu/MambaMIL" in model.reference
    cfg = model.config()
    assert cfg["rate"] == 10 and cfg["layer"] == 2 and cfg["type"] == "SRMamba" and cfg["dropout"] == 0.25
    rebuilt = build_model(**{k: v for k, v in cfg.items()})
    assert list(rebuilt.state_dict()) == list(model.state_dict())


def test_parameter_counts(model):
    assert sum(p.numel() for p in model.parameters()) == 4_227_843
    assert sum(p.numel() for p in model.layers[0][1].parameters()) == 1_816_576
    assert sum(p.numel() for p in build_model("mambamil", n_classes=7).parameters()) == 4_227_843 + 5 * 513


def test_state_dict_is_the_authors(model):
    assert [(k, tuple(v.shape)) for k, v in model.state_dict().items()] == EXPECTED


def test_strict_load_round_trip(model):
    g = torch.Generator().manual_seed(5)
    sd = {k: 0.05 * torch.randn(shape, generator=g) for k, shape in EXPECTED}
    a = build_model("mambamil").eval()
    a.load_state_dict(sd, strict=True)
    b = build_model("mambamil").eval()
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(31, 1024, generator=g)
    with torch.no_grad():
        la, lb = a(x).logits, b(x).logits
    assert torch.equal(la, lb)
    with pytest.raises(RuntimeError):
        build_model("mambamil", type="Mamba").load_state_dict(sd, strict=True)


def test_init_follows_the_authors(model):
    mixer = model.layers[0][1]
    assert torch.equal(mixer.A_log, torch.log(torch.arange(1, 17.0)).repeat(1024, 1))
    assert torch.equal(mixer.D_b, torch.ones(1024))
    assert torch.count_nonzero(mixer.dt_proj.bias) == 0 and torch.count_nonzero(mixer.dt_proj_b.bias) == 0
    assert model.classifier.bias.abs().sum() == 0


@pytest.mark.parametrize("n", [1, 5, 23, 1000])
def test_output_shapes(model, n):
    with torch.no_grad():
        out = model(torch.randn(n, 1024))
        none = model(torch.randn(1, n, 1024), scores=False)
    assert out.logits.shape == (1, 2) and out.embedding.shape == (1, 512)
    assert out.instance_scores.shape == (n,) and none.instance_scores is None
    assert torch.isfinite(out.logits).all()
    _close(model.classifier(out.embedding), out.logits, 1e-6)


def test_instance_scores_are_the_pooling_attention(model):
    x = torch.randn(17, 1024)
    with torch.no_grad():
        out = model(x)
        h = model._fc1(x)
        for layer in model.layers:
            h = h + layer[1](layer[0](h), rate=10)
        want = model.attention(model.norm(h))[:, 0]
    _close(out.instance_scores, want, 1e-6)


def test_sequence_order_matters(model):
    x = torch.randn(40, 1024)
    with torch.no_grad():
        a, b = model(x).logits, model(x.flip(0)).logits
    assert not torch.allclose(a, b, atol=1e-6)


def test_gradients_reach_every_parameter():
    torch.manual_seed(1)
    m = build_model("mambamil", chunk=16).train()
    F.cross_entropy(m(torch.randn(37, 1024)).logits, torch.tensor([1])).backward()
    for name, p in m.named_parameters():
        assert p.grad is not None, name
        if name == "attention.2.bias":  # softmax is shift-invariant: its gradient is 0 in exact arithmetic
            assert p.grad.abs().max() < 1e-5
        else:
            assert p.grad.abs().max() > 0, name


def _pair(seed=2, **kw):
    torch.manual_seed(seed)
    a = build_model("mambamil", dropout=0, **kw)
    with torch.no_grad():  # move off the init (zero dt biases, A and D equal in every channel)
        for p in a.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return a, copy.deepcopy(a)


def _grads(m, x):
    loss = F.cross_entropy(m(x).logits, torch.tensor([0]))
    return [p for _, p in m.named_parameters()], torch.autograd.grad(loss, [p for p in m.parameters()])


def test_checkpointed_training_step_equals_plain():
    a, b = _pair(chunk=16)
    b.checkpoint = False
    x = torch.randn(45, 1024)
    _, ga = _grads(a, x)
    _, gb = _grads(b, x)
    for u, v in zip(ga, gb):
        _close(u, v, 1e-4)


@pytest.mark.parametrize("kind,rate,n,sizes", [("SRMamba", 10, 23, None), ("SRMamba", 5, 13, (3, 7)),
                                                ("Mamba", 10, 9, None)])
def test_model_equals_per_token_path(kind, rate, n, sizes, monkeypatch):
    """Whole model, values and gradients: parallel scan (checkpointed, small chunks) vs the per-token reference."""
    if sizes:  # several blocks and sub-chunks inside each checkpoint chunk
        monkeypatch.setitem(ss.DEFAULTS, "cpu", sizes)
    fast, slow = _pair(type=kind, rate=rate, chunk=8)
    slow.checkpoint = False
    for layer in slow.layers:
        layer[1].scan_fn = reference_scan
    x = torch.randn(n, 1024)
    fast.eval(), slow.eval()
    with torch.no_grad():
        _close(fast(x).logits, slow(x).logits, 1e-5)
    fast.train(), slow.train()
    _, ga = _grads(fast, x)
    _, gb = _grads(slow, x)
    for u, v in zip(ga, gb):
        _close(u, v, 2e-4)


def _mixer_reference(mixer, hs, rate):
    """SRMamba's forward written the authors' way, in (channels, length) layout: F.conv1d with left padding, the SR
    reorder as reshape/transpose of the zero-padded sequence ("(k w) -> (w k)"), per-token scans, each branch gated
    with its own (reordered) z, the SR output put back and cropped, then out_proj of the sum."""
    L = hs.shape[0]
    d, r, n = mixer.d_inner, mixer.dt_rank, mixer.d_state
    xz = (hs @ mixer.in_proj.weight.t()).t()                                     # (2d, L)

    def branch(xz_, conv, x_proj, dt_proj, a_log, dskip):
        x_, z_ = xz_[:d], xz_[d:]
        u = F.silu(F.conv1d(x_[None], conv.weight, conv.bias, padding=3, groups=d)[0, :, :x_.shape[1]])
        x_dbl = u.t() @ x_proj.weight.t()
        delta = F.softplus(x_dbl[:, :r] @ dt_proj.weight.t() + dt_proj.bias)
        y = reference_scan(u.t(), delta, -torch.exp(a_log), x_dbl[:, r:r + n], x_dbl[:, r + n:], dskip)
        return y.t() * F.silu(z_)                                                # (d, length)

    out = branch(xz, mixer.conv1d, mixer.x_proj, mixer.dt_proj, mixer.A_log, mixer.D)
    if mixer.sr:
        K = -(-L // rate)
        padded = F.pad(xz, (0, K * rate - L))
        reordered = padded.reshape(2 * d, K, rate).transpose(1, 2).reshape(2 * d, K * rate)
        out_b = branch(reordered, mixer.conv1d_b, mixer.x_proj_b, mixer.dt_proj_b, mixer.A_b_log, mixer.D_b)
        out = out + out_b.reshape(d, rate, K).transpose(1, 2).reshape(d, K * rate)[:, :L]
    return out.t() @ mixer.out_proj.weight.t()


@pytest.mark.parametrize("sr,rate,L", [(True, 10, 1), (True, 10, 23), (True, 5, 12), (True, 4, 40), (False, 10, 17)])
def test_mixer_equals_the_authors_layout(sr, rate, L):
    """The SR reorder, conv, gating and branch sum, checked against an independent per-token implementation."""
    from dnd_engine.models.mambamil import SRMambaMixer

    torch.manual_seed(6)
    mixer = SRMambaMixer(d_model=16, d_state=4, sr=sr)
    with torch.no_grad():
        for p in mixer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    hs = torch.randn(L, 16, requires_grad=True)
    for checkpoint in (True, False):
        want = _mixer_reference(mixer, hs, rate)
        got = mixer(hs, rate=rate, checkpoint=checkpoint, chunk=5)
        _close(got, want, 1e-5)
        gw = torch.randn_like(want)
        leaves = [hs] + list(mixer.parameters())
        for a, b in zip(torch.autograd.grad((got * gw).sum(), leaves), torch.autograd.grad((want * gw).sum(), leaves)):
            _close(a, b, 1e-4)


def test_rate_option_changes_the_sr_branch():
    a = build_model("mambamil", rate=5).eval()
    b = build_model("mambamil", rate=10).eval()
    b.load_state_dict(a.state_dict(), strict=True)
    with torch.no_grad():
        for p in a.parameters():
            p.add_(0.02 * torch.randn_like(p))
    b.load_state_dict(a.state_dict(), strict=True)
    x = torch.randn(30, 1024)
    with torch.no_grad():
        assert not torch.allclose(a(x).logits, b(x).logits, atol=1e-6)
    assert a.config()["rate"] == 5


def test_other_input_dim_and_plain_mamba():
    m = build_model("mambamil", in_dim=166).eval()
    assert sum(p.numel() for p in m.parameters()) == 4_227_843 - (1024 - 166) * 512
    with torch.no_grad():
        assert m(torch.randn(12, 166)).logits.shape == (1, 2)
    plain = build_model("mambamil", type="Mamba")
    keys = list(plain.state_dict())
    assert "layers.0.1.A_log" in keys and not any("_b" in k for k in keys)
    assert sum(p.numel() for p in plain.layers[0][1].parameters()) == 1_694_720


@pytest.mark.parametrize("bad", [dict(type="BiMamba"), dict(type="foo"), dict(rate=0), dict(layer=0),
                                 dict(act="tanh"), dict(chunk=2)])
def test_bad_options(bad):
    with pytest.raises(Exception):
        build_model("mambamil", in_dim=8, **bad)


def test_bf16_autocast_trains():
    torch.manual_seed(4)
    m = build_model("mambamil", chunk=8).train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(torch.randn(21, 1024))
    loss = F.cross_entropy(out.logits.float(), torch.tensor([1]))
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in m.parameters())


# ---------------------------------------------------------------------------------------------------------------
# CUDA (skipped where absent)

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_plain_scan_on_cuda_matches_reference():
    inputs = [x if x is None else x.cuda() for x in _scan_inputs(53, 8, 4, 2, h0=True)]
    leaves = [x.requires_grad_() for x in inputs if x is not None]
    u, dl, A, B, C, D, H0 = inputs
    y = ss.selective_scan(u, dl, A, B, C, D, h0=H0, block=4, sub=16, use_fast_path=False)
    yr = reference_scan(*[x.cpu() for x in (u, dl, A, B, C, D)], h0=H0.cpu())
    _close(y.cpu(), yr)
    gy = torch.randn_like(y)
    got = torch.autograd.grad((y * gy).sum(), leaves)
    want = torch.autograd.grad((yr * gy.cpu()).sum(), leaves)
    for a, b in zip(got, want):
        _close(a.cpu(), b.cpu(), 5e-5)


@pytest.mark.skipif(not torch.cuda.is_available() or ss._fast_scan_fn() is None,
                    reason="needs CUDA and mamba_ssm's selective_scan_fn")
def test_cuda_kernel_path_matches_plain_scan():
    inputs = [x.cuda() for x in _scan_inputs(300, 2048, 16, 2)[:6]]
    leaves = [x.requires_grad_() for x in inputs]
    fast = ss.selective_scan(*inputs, use_fast_path=True)
    plain = ss.selective_scan(*inputs, use_fast_path=False)
    _close(fast, plain, 1e-4)
    gy = torch.randn_like(fast)
    for a, b in zip(torch.autograd.grad((fast * gy).sum(), leaves), torch.autograd.grad((plain * gy).sum(), leaves)):
        _close(a, b, 1e-3)
