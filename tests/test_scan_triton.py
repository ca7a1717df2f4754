"""The fused Triton selective scan (``scan_triton.py``) against the blocked PyTorch scan.

Without a GPU the kernels run through Triton's interpreter on CPU tensors, in a subprocess (TRITON_INTERPRET must be
set before Triton is imported); with one, they are compiled and compared on CUDA.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dnd_engine.models import build_model
from dnd_engine.models import scan_triton as st
from dnd_engine.models import selective_scan as ss
from test_model_mambamil import _scan_inputs

ROOT = Path(__file__).resolve().parents[1]
needs_triton = pytest.mark.skipif(st.triton is None, reason="Triton is not installed")


def _inputs(L, ch, n, G, seed=0, device="cpu"):
    """The scan inputs of the MambaMIL tests (with a start state), plus gradients arriving at y and the last state."""
    u, dl, A, B, C, _, h0 = _scan_inputs(L, ch, n, G, h0=True, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    dy = torch.randn(L, ch, generator=g)
    dh = torch.randn(ch, n, generator=g)
    return [x.to(device) for x in (u, dl, A, B, C, h0, dy, dh)]


def _rel(a, b):
    return float((a - b).abs().max() / (b.abs().max() + 1e-12))


def _compare(L, ch, n, G, with_state, device="cpu", tol=2e-5):
    u, dl, A, B, C, h0, dy, dh = _inputs(L, ch, n, G, device=device)
    if not with_state:
        h0 = dh = None
    assert st.supports(u, B)
    y0, last0, starts0 = ss._scan_forward(u, dl, A, B, C, h0, 16, 64)
    y1, last1, starts1 = st.scan_forward(u, dl, A, B, C, h0)
    assert _rel(y1, y0) < tol and _rel(last1, last0) < tol
    g0 = ss._scan_backward(u, dl, A, B, C, starts0, dy, dh, 16, 64)
    g1 = st.scan_backward(u, dl, A, B, C, starts1, dy, dh)
    for name, a, b in zip(("du", "ddelta", "dA", "dB", "dC", "dh0"), g1, g0):
        assert a.shape == b.shape, name
        if name == "dh0" and not with_state:
            continue
        assert _rel(a, b) < tol, (name, _rel(a, b))


_INTERPRETED = textwrap.dedent("""
    import sys, torch
    sys.path[:0] = [{root!r}, {tests!r}]
    from dnd_engine.models import scan_triton as st
    import test_scan_triton as t
    st.CONFIG.update(T=16, BD=8, warps=4)
    st.ALLOW_CPU = True
    # several chunks with a short last one; one group and two; with and without start/end states
    t._compare(70, 32, 4, 2, True)
    t._compare(33, 16, 8, 1, False)
    t._compare(16, 16, 16, 2, True)
    print("OK")
""")


@needs_triton
def test_kernels_match_blocked_scan_in_the_interpreter():
    code = _INTERPRETED.format(root=str(ROOT), tests=str(ROOT / "tests"))
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("OK"), proc.stdout[-2000:] + proc.stderr[-4000:]


def test_cpu_tensors_never_take_the_kernels():
    u, dl, A, B, C, *_ = _inputs(20, 32, 16, 2)
    assert not st.supports(u, B)
    _, _, starts = ss.scan_forward(u, dl, A, B, C, None, 16, 64)
    assert isinstance(starts, list)


def test_unsupported_shapes_fall_back(monkeypatch):
    monkeypatch.setattr(st, "ALLOW_CPU", True)
    monkeypatch.setattr(st, "triton", st.triton or object())
    u, _, _, B, *_ = _inputs(20, 24, 16, 2)          # 12 channels per group: not a multiple of BD = 16
    assert not st.supports(u, B)
    u, _, _, B, *_ = _inputs(20, 32, 12, 2)          # d_state not a power of two
    assert not st.supports(u, B)
    monkeypatch.setenv("DND_SCAN_TRITON", "0")
    u, _, _, B, *_ = _inputs(20, 32, 16, 2)
    assert not st.supports(u, B)


# ---------------------------------------------------------------------------------------------------------------
# CUDA (skipped where absent)

cuda = pytest.mark.skipif(not torch.cuda.is_available() or st.triton is None, reason="needs CUDA and Triton")


@cuda
@pytest.mark.parametrize("L,with_state", [(1, True), (300, False), (4099, True)])
def test_kernels_match_blocked_scan_on_cuda(L, with_state):
    _compare(L, 2048, 16, 2, with_state, device="cuda", tol=1e-4)


@cuda
def test_mambamil_training_step_agrees_with_blocked_scan_on_cuda(monkeypatch):
    torch.manual_seed(0)
    m = build_model("mambamil").cuda().train()
    x = torch.randn(3000, 1024, device="cuda")

    def run(flag):
        monkeypatch.setenv("DND_SCAN_TRITON", flag)
        m.zero_grad()
        torch.manual_seed(1)
        out = m(x)
        out.logits.sum().backward()
        return out.logits.detach(), [p.grad.clone() for p in m.parameters()]
    (l1, g1), (l0, g0) = run("1"), run("0")
    assert _rel(l1, l0) < 1e-4
    # relative to the largest gradient of all: the pooling attention's last bias has a gradient that is zero in
    # exact arithmetic (softmax ignores a shared shift), so its own scale is float noise (3.7e-9 on an H100)
    scale = max(float(b.abs().max()) for b in g0)
    worst = max(float((a - b).abs().max()) for a, b in zip(g1, g0))
    assert worst < 1e-5 * scale, (worst, scale)
