"""The selective scan's forward and backward as two fused Triton kernels, for CUDA tensors.

Why: the blocked PyTorch scan (``selective_scan.py``) is memory-bound on a GPU — each of its steps is one
elementwise kernel over a (blocks × channels × d_state) state, about 2,900 kernels per MambaMIL training step at 10k
instances, 64 ms on an H200, while S4MIL's whole step takes 5 ms. Here each program owns a block of ``BD`` channels
and keeps their (BD × d_state) state in registers; it walks the sequence in chunks of ``T`` tokens, and inside a
chunk the recurrence ``h_t = a_t h_{t-1} + b_t`` is a ``tl.associative_scan`` over the chunk (parallel over the
tokens), so the only sequential work is one carry per chunk. Inputs are read once and the state history is never
written to memory (only each chunk's start state, 1/T of it, for the backward).

The math is the one ``selective_scan.py`` documents (``selective_scan_ref`` of state-spaces/mamba); the backward:

    g_t = C_t dy_t + a_{t+1} g_{t+1}                        (g = ∂L/∂h, a reverse scan; g_L = ∂L/∂h_last)
    ∂u_t = Δ_t Σ_n g_t B_t          ∂Δ_t = u_t Σ_n g_t B_t + Σ_n g_t (a_t h_{t-1}) A
    ∂A   = Σ_t g_t (a_t h_{t-1}) Δ_t ∂B_t = Σ_c g_t Δ_t u_t    ∂C_t = Σ_c h_t dy_t      ∂h_0 = a_0 g_0

with ``a_t h_{t-1} = h_t − Δ_t u_t B_t`` (no shifted state needed). Sums over channels span programs, so each
program writes its partial ∂B, ∂C and they are summed per group afterwards (deterministic, no atomics).

Used by ``selective_scan.scan_forward`` / ``scan_backward`` when the tensors are on CUDA and Triton imports;
``DND_SCAN_TRITON=0`` turns it off. With ``TRITON_INTERPRET=1`` set before import the same kernels run on CPU
tensors through Triton's interpreter (``ALLOW_CPU``) — that is how the tests check them against the PyTorch scan
without a GPU. Bags too long for int32 offsets (about 4M tokens at 2048 channels) take the blocked scan.
"""

from __future__ import annotations

import os
from typing import Optional

import torch

try:  # Triton ships with CUDA builds of torch; never required
    import triton
    import triton.language as tl
except Exception:  # pragma: no cover - depends on the install
    triton = None

# Tests set this (with TRITON_INTERPRET=1 before import) to send CPU tensors through the kernels too.
ALLOW_CPU = False
_I32 = 2 ** 31

# Chunk length T, channels per program BD and warps per program; chosen on an H100 with benchmarks/mamba_scan_gpu.py.
CONFIG = {"T": 32, "BD": 16, "warps": 8}


def enabled() -> bool:
    return triton is not None and os.environ.get("DND_SCAN_TRITON", "1") != "0"


def supports(u: torch.Tensor, B: torch.Tensor, bd: Optional[int] = None) -> bool:
    """Whether these tensors can take the Triton path: CUDA (or the interpreter), d_state a power of two, and
    every program's channel block inside one group."""
    if not enabled() or not (u.is_cuda or ALLOW_CPU):
        return False
    L, ch = u.shape
    G, n = B.shape[1], B.shape[2]
    bd = bd or CONFIG["BD"]
    # offsets are int32 in the kernels: the largest index is about (chunks·T + 1)·ch·n
    small = (L + CONFIG["T"] + 1) * ch * n < _I32
    return n >= 1 and (n & (n - 1)) == 0 and (ch // G) % bd == 0 and L >= 1 and small


if triton is not None:
    # triton.jit reads each kernel's source: where it cannot (a frozen app ships bytecode only), no Triton path
    try:
        @triton.jit
        def _combine(a1, b1, a2, b2):
            # (a1, b1) is what has been scanned so far, (a2, b2) the next element: x ↦ a2 (a1 x + b1) + b2
            return a1 * a2, a2 * b1 + b2

        @triton.jit
        def _chunk_states(u_ptr, dl_ptr, B_ptr, C_ptr, t, tm, d, n, g, h, A2, CH, G, N: tl.constexpr):
            """One chunk's inputs and states h_t from its start state ``h``: the forward computes them, the
            backward recomputes them, with this one piece of code. Tokens past the end get Δ = 0 (h unchanged)."""
            td = t[:, None] * CH + d[None, :]
            dl = tl.load(dl_ptr + td, mask=tm, other=0.0)                                 # (T, BD)
            u = tl.load(u_ptr + td, mask=tm, other=0.0)
            tn = t[:, None] * (G * N) + g * N + n[None, :]
            Bt = tl.load(B_ptr + tn, mask=tm, other=0.0)                                  # (T, N)
            Ct = tl.load(C_ptr + tn, mask=tm, other=0.0)
            a = tl.exp2(dl[:, :, None] * A2[None, :, :])                                  # (T, BD, N)
            b = (dl * u)[:, :, None] * Bt[:, None, :]
            ac, bc = tl.associative_scan((a, b), 0, _combine)
            return td, dl, u, Bt, Ct, a, b, ac * h[None, :, :] + bc

        @triton.jit
        def _fwd_kernel(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, h0_ptr, y_ptr, hlast_ptr, starts_ptr,
                        L, CH, DG, G,
                        HAS_H0: tl.constexpr, T: tl.constexpr, BD: tl.constexpr, N: tl.constexpr):
            pid = tl.program_id(0)
            d = pid * BD + tl.arange(0, BD)
            n = tl.arange(0, N)
            tt = tl.arange(0, T)
            g = (pid * BD) // DG
            dn = d[:, None] * N + n[None, :]
            A2 = tl.load(A_ptr + dn) * 1.4426950408889634                                 # (BD, N), log2 units
            if HAS_H0:
                h = tl.load(h0_ptr + dn)
            else:
                h = tl.zeros((BD, N), dtype=tl.float32)
            nchunks = tl.cdiv(L, T)
            for c in range(0, nchunks):
                t = c * T + tt
                tm = (t < L)[:, None]
                tl.store(starts_ptr + c * CH * N + dn, h)
                td, dl, u, Bt, Ct, a, b, hs = _chunk_states(u_ptr, dl_ptr, B_ptr, C_ptr, t, tm, d, n, g, h, A2,
                                                            CH, G, N)
                y = tl.sum(hs * Ct[:, None, :], axis=2)                                   # (T, BD)
                tl.store(y_ptr + td, y, mask=tm)
                h = tl.sum(tl.where((tt == T - 1)[:, None, None], hs, 0.0), axis=0)      # padded tokens keep h
            tl.store(hlast_ptr + dn, h)

        @triton.jit
        def _bwd_kernel(u_ptr, dl_ptr, A_ptr, B_ptr, C_ptr, starts_ptr, dy_ptr, dhlast_ptr,
                        du_ptr, ddl_ptr, dA_ptr, dBp_ptr, dCp_ptr, dh0_ptr,
                        L, CH, DG, G,
                        HAS_DHLAST: tl.constexpr, T: tl.constexpr, BD: tl.constexpr, N: tl.constexpr):
            pid = tl.program_id(0)
            d = pid * BD + tl.arange(0, BD)
            n = tl.arange(0, N)
            tt = tl.arange(0, T)
            g = (pid * BD) // DG
            dn = d[:, None] * N + n[None, :]
            A = tl.load(A_ptr + dn)
            A2 = A * 1.4426950408889634
            if HAS_DHLAST:
                carry = tl.load(dhlast_ptr + dn)                                          # g beyond the last token
            else:
                carry = tl.zeros((BD, N), dtype=tl.float32)
            dA = tl.zeros((BD, N), dtype=tl.float32)
            dh0 = tl.zeros((BD, N), dtype=tl.float32)
            nchunks = tl.cdiv(L, T)
            for i in range(0, nchunks):
                c = nchunks - 1 - i
                t = c * T + tt
                tm = (t < L)[:, None]
                tm1 = (t + 1 < L)[:, None]
                h = tl.load(starts_ptr + c * CH * N + dn)
                td, dl, u, Bt, Ct, a, b, hs = _chunk_states(u_ptr, dl_ptr, B_ptr, C_ptr, t, tm, d, n, g, h, A2,
                                                            CH, G, N)
                dl_next = tl.load(dl_ptr + td + CH, mask=tm1, other=0.0)                   # Δ_{t+1}; 0 past the end
                dy = tl.load(dy_ptr + td, mask=tm, other=0.0)
                du_in = dl * u                                                            # (T, BD)
                alpha = tl.exp2(dl_next[:, :, None] * A2[None, :, :])                      # a_{t+1}
                beta = dy[:, :, None] * Ct[:, None, :]
                gc, gb = tl.associative_scan((alpha, beta), 0, _combine, reverse=True)
                gt = gc * carry[None, :, :] + gb                                          # g_t
                gB = tl.sum(gt * Bt[:, None, :], axis=2)                                  # (T, BD)
                prev = hs - b                                                             # a_t h_{t-1}
                q = gt * prev
                tl.store(du_ptr + td, dl * gB, mask=tm)
                tl.store(ddl_ptr + td, u * gB + tl.sum(q * A[None, :, :], axis=2), mask=tm)
                dA += tl.sum(q * dl[:, :, None], axis=0)
                pn = pid * L * N + t[:, None] * N + n[None, :]
                tl.store(dBp_ptr + pn, tl.sum(gt * du_in[:, :, None], axis=1), mask=tm)
                tl.store(dCp_ptr + pn, tl.sum(hs * dy[:, :, None], axis=1), mask=tm)
                carry = tl.sum(tl.where((tt == 0)[:, None, None], gt, 0.0), axis=0)      # g at the chunk's start
                if c == 0:
                    dh0 = tl.sum(tl.where((tt == 0)[:, None, None], gt * a, 0.0), axis=0)
            tl.store(dA_ptr + dn, dA)
            tl.store(dh0_ptr + dn, dh0)
    except Exception:  # pragma: no cover - e.g. OSError from inspect.getsource in a PyInstaller bundle
        triton = None   # supports() is then False: the kernels are never looked up


def _dims(u, B, bd):
    L, ch = u.shape
    G, n = B.shape[1], B.shape[2]
    return L, ch, G, n, ch // G, ch // bd


def scan_forward(u, dl, A, B, C, h0, block=None, sub=None):
    """Same contract as ``selective_scan.scan_forward``; ``starts`` is one (chunks, ch, n) tensor here."""
    T, bd, warps = CONFIG["T"], CONFIG["BD"], CONFIG["warps"]
    L, ch, G, n, dg, progs = _dims(u, B, bd)
    u, dl, A, B, C = (x.contiguous() for x in (u, dl, A, B, C))   # the kernels index dense row-major tensors
    h0 = None if h0 is None else h0.float().contiguous()
    y = torch.empty_like(u)
    h_last = u.new_empty(ch, n)
    starts = u.new_empty(-(-L // T), ch, n)
    _fwd_kernel[(progs,)](u, dl, A, B, C, h0 if h0 is not None else h_last, y, h_last, starts,
                          L, ch, dg, G, HAS_H0=h0 is not None, T=T, BD=bd, N=n, num_warps=warps)
    return y, h_last, starts


def scan_backward(u, dl, A, B, C, starts, dy, dh_last, block=None, sub=None):
    """Same contract as ``selective_scan.scan_backward``: (du, dΔ, dA, dB, dC, dh0)."""
    T, bd, warps = CONFIG["T"], CONFIG["BD"], CONFIG["warps"]
    L, ch, G, n, dg, progs = _dims(u, B, bd)
    u, dl, A, B, C, dy = (x.contiguous() for x in (u, dl, A, B, C, dy))
    d_u, d_dl = torch.empty_like(u), torch.empty_like(dl)
    d_A, d_h0 = torch.empty_like(A), u.new_empty(ch, n)
    dBp, dCp = u.new_empty(progs, L, n), u.new_empty(progs, L, n)
    dhl = dh_last.float().contiguous() if dh_last is not None else d_h0
    _bwd_kernel[(progs,)](u, dl, A, B, C, starts, dy, dhl, d_u, d_dl, d_A, dBp, dCp, d_h0,
                          L, ch, dg, G, HAS_DHLAST=dh_last is not None, T=T, BD=bd, N=n, num_warps=warps)
    per_group = dg // bd
    d_B = dBp.view(G, per_group, L, n).sum(1).transpose(0, 1).contiguous()          # (L, G, n)
    d_C = dCp.view(G, per_group, L, n).sum(1).transpose(0, 1).contiguous()
    return d_u, d_dl, d_A, d_B, d_C, d_h0
