"""Mamba's selective scan (the S6 recurrence) in plain PyTorch, parallel over the sequence, on any device.

Math followed: ``selective_scan_ref`` in state-spaces/mamba ``mamba_ssm/ops/selective_scan_interface.py`` (the copy
vendored in isyangshu/MambaMIL ``mamba/mamba_ssm/ops``), for real ``A`` and input-dependent ``B``/``C``::

    h_t = exp(Δ_t ⊗ A) ⊙ h_{t-1} + (Δ_t u_t) ⊗ B_t          (per channel c and state n)
    y_t = ⟨h_t, C_t⟩ + D ⊙ u_t

Why not the reference: it is a per-token Python loop whose autograd graph keeps ``L · channels · d_state`` floats
per saved tensor (0.65 GB per 10k tokens for one Mamba branch); the D&D authors' runs took 1.2 s per training step
at 1k instances and 54 s at 10k on an H200. mamba_ssm's CUDA ``selective_scan_fn`` is used when it imports and the
tensors are on CUDA (and no start state is given), but it is never required.

On CUDA, when Triton imports, ``scan_triton.py`` runs the same recurrence as two fused kernels (forward, backward)
with the same contract; the blocked scan below is the CPU path and the fallback.

Design of the blocked scan (measured on a 2-core CPU):

- **Blocked two-pass scan, no overflow.** A sub-chunk of ``sub`` tokens is cut into blocks of ``block`` tokens.
  Pass 1 runs the recurrence inside every block at once from a zero state — a loop over the ``block`` positions,
  each step one vectorised op over (blocks × channels × d_state) — giving each block's end state; the block
  carries are scanned (a short loop, or the same method recursively when there are many blocks); pass 2 reruns
  the blocks from their true start states and reads out ``y``. Every factor is a decay ``exp(Δ·A) ≤ 1`` (Δ ≥ 0,
  A < 0): no ``exp(-cumsum)`` division and no log-space trick, so nothing can overflow. The decays are computed
  once per sub-chunk (``exp2``, about twice as fast as ``exp`` on CPU) and shared by both passes.
- **Layout.** States are (blocks, groups, d_state, channels): channels innermost, so every sum over the state or
  over channels is a vectorised reduction (sums over a trailing dim of 16, or ``bmm`` with a 1-column operand,
  were 3-5× slower on CPU). G groups share B and C (G = 2 runs MambaMIL's two branches as one scan).
- **Sub-chunks carry the state.** CPU: ``sub`` = 64, ``block`` = 16, so the working set stays near the caches
  (measured per (token, channel, state), one thread: ≈3.5 ns forward, ≈11 ns backward; larger sub-chunks were
  20-35 % slower, smaller ones paid more per-op overhead). CUDA: ``sub`` = 8192 (fewer, larger kernels; about
  1 GB per buffer).
- **Hand-written backward** (``_SelectiveScanFn``): it keeps the inputs and each sub-chunk's start state
  (1/``sub`` of the state history) and recomputes per sub-chunk the decays and states, then runs the adjoint
  ``g_t = C_t dy_t + exp(Δ_{t+1}A) g_{t+1}`` backward with the same blocked two-pass method, then every gradient.
  Autograd through the loops would keep each step's (blocks × channels × d_state) operands.
- **Threads on CPU** (``CPU_SCAN_THREADS``, default None = torch's setting, or ``DND_SCAN_THREADS``): the loops
  issue thousands of small ops, each ending in an OpenMP barrier. On a quiet 2-core machine torch's 2 threads are
  faster (a 10k-instance training step 8.2–9.2 s vs 12.0 s with 1 thread); on an oversubscribed one a descheduled
  worker stalls every barrier (a 1000-instance forward took 38 s with 2 threads, 1.2 s with 1), so set 1 there.
- State accumulation is float32 (inputs are cast), also under autocast.

``checkpointed_scan`` is the training path of ``mambamil.py``: one chunk's preprocessing (conv, projections) + scan
whose backward recomputes the preprocessing, so a chunk keeps only its input, and — unlike
``torch.utils.checkpoint`` — the scan's forward is not run a second time just to be thrown away.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Callable, List, Optional, Sequence, Tuple

import torch

from . import scan_triton

LOG2E = 1.0 / math.log(2.0)

# (block, sub) per device type: see the module docstring
DEFAULTS = {"cpu": (16, 64), "cuda": (16, 8192)}
_SHORT = 64  # carry scans at most this long run as a plain loop


# Intra-op threads for the scan's many small CPU ops (None: torch's setting). See the module docstring.
CPU_SCAN_THREADS: Optional[int] = int(os.environ["DND_SCAN_THREADS"]) if os.environ.get("DND_SCAN_THREADS") else None


def default_sizes(device: torch.device) -> Tuple[int, int]:
    return DEFAULTS.get(device.type, DEFAULTS["cpu"])


@contextlib.contextmanager
def _cpu_threads(x: torch.Tensor):
    """At most ``CPU_SCAN_THREADS`` intra-op threads inside the scan's loops; torch's setting is restored on exit."""
    n, old = CPU_SCAN_THREADS, torch.get_num_threads()
    if x.device.type != "cpu" or n is None or n >= old:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ----------------------------------------------------------------------------------------------------------------
# explicit linear recurrence (used for the block carries)


def linear_recurrence(a: torch.Tensor, b: torch.Tensor, h0: Optional[torch.Tensor], block: int) -> torch.Tensor:
    """All states ``x_k = a_k ⊙ x_{k-1} + b_k`` (k < K, ``x_{-1} = h0`` or 0) for explicit (K, ...) ``a``, ``b``."""
    K = a.shape[0]
    if K <= _SHORT or block < 2:
        out = torch.empty_like(b)
        x = h0
        for k in range(K):
            if x is None:
                out[k].copy_(b[k])
            else:
                torch.addcmul(b[k], a[k], x, out=out[k])
            x = out[k]
        return out
    nb = -(-K // block)
    pad = nb * block - K
    if pad:  # a = 1, b = 0 leaves the state unchanged
        a = torch.cat([a, a.new_ones((pad,) + a.shape[1:])])
        b = torch.cat([b, b.new_zeros((pad,) + b.shape[1:])])
    aT = a.view((nb, block) + a.shape[1:]).transpose(0, 1)
    bT = b.view((nb, block) + b.shape[1:]).transpose(0, 1)
    x = bT[0].clone()
    prod = aT[0].clone()
    for t in range(1, block):
        x.mul_(aT[t]).add_(bT[t])
        prod.mul_(aT[t])
    ends = linear_recurrence(prod, x, h0, block)  # state at the end of each block
    start = torch.empty_like(ends)
    if h0 is None:
        start[0].zero_()
    else:
        start[0].copy_(h0)
    start[1:].copy_(ends[:-1])
    out = torch.empty((block, nb) + b.shape[1:], dtype=b.dtype, device=b.device)
    for t in range(block):
        start.mul_(aT[t]).add_(bT[t])
        out[t].copy_(start)
    return out.transpose(0, 1).reshape((nb * block,) + b.shape[1:])[:K]


# ----------------------------------------------------------------------------------------------------------------
# the blocked scan: forward and backward without autograd


def _pieces(L: int, sub: int) -> List[Tuple[int, int]]:
    return [(s, min(L, s + sub)) for s in range(0, L, sub)]


def _padded(t: torch.Tensor, rows: int) -> torch.Tensor:
    if t.shape[0] == rows:
        return t
    return torch.cat([t, t.new_zeros((rows - t.shape[0],) + t.shape[1:])])


def _state_layout(h: torch.Tensor, G: int) -> torch.Tensor:
    """(ch, n) → (G, n, ch/G): channels innermost, so every sum over the state is a vectorised op."""
    ch, n = h.shape
    return h.view(G, ch // G, n).transpose(1, 2).contiguous()


def _channel_layout(h: torch.Tensor) -> torch.Tensor:
    """(G, n, dg) → (ch, n)."""
    G, n, dg = h.shape
    return h.transpose(1, 2).reshape(G * dg, n)


class _Piece:
    """One sub-chunk in block-major layout: index [t, k] is position ``k·T + t``. States are (nb, G, n, dg).

    Tokens added to fill the last block have Δ = 0 (decay 1, no input), so they leave the state unchanged.
    """

    def __init__(self, u, dl, du, B, C, s, e, block):
        L, ch = u.shape
        G, n = B.shape[1], B.shape[2]
        dg = ch // G
        T = block
        nb = -(-(e - s) // T)
        rows = nb * T
        self.T, self.nb, self.rows, self.G, self.dg, self.n, self.ch = T, nb, rows, G, dg, n, ch

        # time-major copies (1/n of the state work): every per-position slice is contiguous, so the readouts are
        # plain bmm calls on 3-d views
        def seq(x):  # (L, ch) → (T, nb, G, 1, dg)
            return _padded(x[s:e], rows).view(nb, T, G, 1, dg).transpose(0, 1).contiguous()

        def state(x):  # (L, G, n) → (T, nb, G, n, 1)
            return _padded(x[s:e], rows).view(nb, T, G, n, 1).transpose(0, 1).contiguous()

        self.u, self.dl, self.du = seq(u), seq(dl), seq(du)
        self.B, self.C = state(B), state(C)
        # per-position views, made once (indexing in the loops costs more than the small ops on CPU)
        self.du_t, self.dl_t = self.du.unbind(0), self.dl.unbind(0)
        self.B_t, self.C_t = self.B.unbind(0), self.C.unbind(0)
        self.B_row_t = self.B.view(T, nb * G, 1, n).unbind(0)                              # (nb·G, 1, n)
        self.C_row_t = self.C.view(T, nb * G, 1, n).unbind(0)
        self.du_row_t = self.du.view(T, nb * G, 1, dg).unbind(0)                           # (nb·G, 1, dg)

    def flat(self, x: torch.Tensor) -> torch.Tensor:
        """(nb, G, a, b) → (nb·G, a, b), a view."""
        return x.view((self.nb * self.G,) + x.shape[2:])

    def flat_t(self, x: torch.Tensor):
        """(T, nb, G, a, b) → per-position (nb·G, a, b) views."""
        return x.view((self.T, self.nb * self.G) + x.shape[3:]).unbind(0)

    def decays(self, A2: torch.Tensor) -> torch.Tensor:
        """exp(Δ_t ⊗ A) at every position, (T, nb, G, n, dg)."""
        a = torch.empty((self.T, self.nb, self.G, self.n, self.dg), dtype=A2.dtype, device=A2.device)
        torch.mul(self.dl, A2, out=a)
        return torch.exp2(a, out=a)

    def block_decay(self, A2: torch.Tensor) -> torch.Tensor:
        return torch.exp2(self.dl.sum(0) * A2)                                           # (nb, G, n, dg)

    def seq_rows(self, x: torch.Tensor, length: int) -> torch.Tensor:
        """(T, nb, G, ·, dg|n) → (length, ...) in sequence order."""
        return x.transpose(0, 1).reshape((self.rows,) + x.shape[2:])[:length]


def _block_starts(p: _Piece, a: torch.Tensor, A2: torch.Tensor, h: Optional[torch.Tensor], block: int):
    """Pass 1 and the carry scan: the true state entering each block (nb, G, n, dg), and the state at the end."""
    at = a.unbind(0)
    loc = torch.mul(p.du_t[0], p.B_t[0])  # every block at once, from a zero state
    for t in range(1, p.T):
        loc.mul_(at[t]).addcmul_(p.du_t[t], p.B_t[t])
    ends = linear_recurrence(p.block_decay(A2), loc, h, block)
    start = loc                                                                            # reused
    if h is None:
        start[0].zero_()
    else:
        start[0].copy_(h)
    start[1:].copy_(ends[:-1])
    return start, ends[-1].clone()


def _scan_forward(u, dl, A, B, C, h0, block, sub):
    """y (L, ch) without the D term, the last state (ch, n), and each sub-chunk's start state (for the backward)."""
    L, ch = u.shape
    G, n = B.shape[1], B.shape[2]
    A2 = _state_layout(A, G) * LOG2E                                                       # (G, n, dg)
    du = dl * u
    y = u.new_empty(L, ch)
    pieces = _pieces(L, sub)
    # the start states outlive this call: one buffer, allocated before the temporaries (fewer heap holes)
    piece_starts = u.new_empty(len(pieces), G, n, ch // G)
    h = None
    if h0 is not None:
        h = piece_starts[0]
        h.copy_(_state_layout(h0, G))
    for i, (s, e) in enumerate(pieces):
        if i and h is not None:
            piece_starts[i].copy_(h)
            h = piece_starts[i]
        p = _Piece(u, dl, du, B, C, s, e, block)
        a = p.decays(A2)
        state, h = _block_starts(p, a, A2, h, block)
        yT = u.new_empty(p.T, p.nb * G, 1, p.dg)
        at, yt, state3 = a.unbind(0), yT.unbind(0), p.flat(state)
        for t in range(p.T):  # pass 2: from the true start states, reading out y
            state.mul_(at[t]).addcmul_(p.du_t[t], p.B_t[t])
            torch.bmm(p.C_row_t[t], state3, out=yt[t])
        y[s:e] = p.seq_rows(yT.view(p.T, p.nb, ch), e - s)
    h_last = u.new_zeros(ch, n) if h is None else _channel_layout(h)
    return y, h_last, [None if i == 0 and h0 is None else piece_starts[i] for i in range(len(pieces))]


def _scan_backward(u, dl, A, B, C, starts, dy, dh_last, block, sub):
    """Gradients (du, dΔ, dA, dB, dC, dh0) of ``scan_forward`` given dy (L, ch) and dh_last (ch, n) or None.

    Per sub-chunk, from its saved start state: decays, pass 1 and the states again; then the adjoint
    ``g_t = C_t dy_t + a_{t+1} g_{t+1}`` backward with the same two-pass blocked method, and the gradients.
    """
    L, ch = u.shape
    G, n = B.shape[1], B.shape[2]
    A_s = _state_layout(A, G)
    A2 = A_s * LOG2E
    du_in = dl * u
    d_u = torch.empty_like(u)
    d_dl = torch.empty_like(dl)
    d_B = torch.empty_like(B)
    d_C = torch.empty_like(C)
    d_A = torch.zeros_like(A_s)
    g_next = None if dh_last is None else _state_layout(dh_last.float(), G)   # adjoint at the sub-chunk's end
    for i, (s, e) in reversed(list(enumerate(_pieces(L, sub)))):
        p = _Piece(u, dl, du_in, B, C, s, e, block)
        T, nb, dg = p.T, p.nb, p.dg
        dyT = _padded(dy[s:e], p.rows).view(nb, T, G, 1, dg).transpose(0, 1).contiguous()  # (T, nb, G, 1, dg)
        a = p.decays(A2)
        start, _ = _block_starts(p, a, A2, starts[i], block)
        at, dyt = a.unbind(0), dyT.unbind(0)
        H = torch.empty_like(a)  # the states again
        Ht = H.unbind(0)
        for t in range(T):
            torch.mul(start if t == 0 else Ht[t - 1], at[t], out=Ht[t])
            Ht[t].addcmul_(p.du_t[t], p.B_t[t])
        # sums over channels as (1 × dg) @ (dg × n)ᵀ-view products (with a (dg × 1) operand instead, MKL's bmm
        # was 8× slower on CPU)
        dCT = torch.bmm(dyT.view(-1, 1, dg), H.view(-1, n, dg).transpose(1, 2))          # (T·nb·G, 1, n)
        # pass A: block-local adjoints at each block's first position (nothing arriving from the right)
        g = torch.mul(dyt[T - 1], p.C_t[T - 1])
        g.mul_(at[T - 1])
        for t in range(T - 2, -1, -1):
            g.addcmul_(dyt[t], p.C_t[t])
            g.mul_(at[t])
        # adjoint arriving at each block's last position from the right: R_{k-1} = P_k R_k + a_{k,0} g_{k,0}
        rev = linear_recurrence(p.block_decay(A2).flip(0), g.flip(0), g_next, block)
        R = torch.empty_like(g)
        if g_next is None:
            R[nb - 1].zero_()
        else:
            R[nb - 1].copy_(g_next)
        if nb > 1:
            R[:nb - 1].copy_(rev[:nb - 1].flip(0))
        g_next = rev[nb - 1].clone()
        # pass B: the true adjoints, and every gradient
        g = R
        q = torch.empty_like(g)
        dA_acc = torch.empty_like(g)
        gB = u.new_empty(T, nb, G, 1, dg)
        dl_a = u.new_empty(T, nb, G, 1, dg)
        dBT = u.new_empty(T, nb, G, 1, n)
        gBt, dl_at, dBt = p.flat_t(gB), dl_a.unbind(0), p.flat_t(dBT)
        g3t = p.flat(g).transpose(1, 2)                                                  # (nb·G, dg, n) view
        g3 = p.flat(g)
        for t in range(T - 1, -1, -1):
            g.addcmul_(dyt[t], p.C_t[t])                                                # g = ∂L/∂h_t
            torch.bmm(p.B_row_t[t], g3, out=gBt[t])
            torch.bmm(p.du_row_t[t], g3t, out=dBt[t])
            g.mul_(at[t])                                                                 # what flows to h_{t-1}
            torch.mul(g, start if t == 0 else Ht[t - 1], out=q)                          # ∂L/∂a_t · a_t
            if t == T - 1:
                torch.mul(q, p.dl_t[t], out=dA_acc)
            else:
                dA_acc.addcmul_(q, p.dl_t[t])
            torch.sum(q.mul_(A_s), dim=-2, keepdim=True, out=dl_at[t])
        d_A += dA_acc.sum(0)
        d_dl[s:e] = p.seq_rows(torch.addcmul(dl_a, p.u, gB), e - s).reshape(e - s, ch)
        d_u[s:e] = p.seq_rows(gB * p.dl, e - s).reshape(e - s, ch)
        d_B[s:e] = p.seq_rows(dBT.view(T, nb, G, n), e - s)
        d_C[s:e] = p.seq_rows(dCT.view(T, nb, G, n), e - s)
    d_h0 = u.new_zeros(ch, n) if g_next is None else _channel_layout(g_next)
    return d_u, d_dl, _channel_layout(d_A), d_B, d_C, d_h0


def scan_forward(u, dl, A, B, C, h0, block, sub):
    """y, last state and what the backward needs: the fused Triton kernels on CUDA (``scan_triton``), else the
    blocked scan above."""
    if scan_triton.supports(u, B):
        return scan_triton.scan_forward(u, dl, A, B, C, h0)
    with _cpu_threads(u):
        return _scan_forward(u, dl, A, B, C, h0, block, sub)


def scan_backward(u, dl, A, B, C, starts, dy, dh_last, block, sub):
    if isinstance(starts, torch.Tensor):  # the forward took the Triton path (its start states are one tensor)
        return scan_triton.scan_backward(u, dl, A, B, C, starts, dy, dh_last)
    with _cpu_threads(u):
        return _scan_backward(u, dl, A, B, C, starts, dy, dh_last, block, sub)


# ----------------------------------------------------------------------------------------------------------------
# autograd wrappers


def _sizes(x: torch.Tensor, block: Optional[int], sub: Optional[int]) -> Tuple[int, int]:
    b0, s0 = default_sizes(x.device)
    block = int(block or b0)
    sub = int(sub or s0)
    if block < 1 or sub < 1:
        raise ValueError(f"block and sub must be ≥ 1, got {block}, {sub}")
    return block, max(block, sub - sub % block)


class _SelectiveScanFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, dl, A, B, C, h0, block, sub):
        y, h_last, starts = scan_forward(u, dl, A, B, C, h0, block, sub)
        ctx.save_for_backward(u, dl, A, B, C)
        ctx.starts, ctx.sizes, ctx.has_h0 = starts, (block, sub), h0 is not None
        return y, h_last

    @staticmethod
    def backward(ctx, dy, dh_last):
        u, dl, A, B, C = ctx.saved_tensors
        d_u, d_dl, d_A, d_B, d_C, d_h0 = scan_backward(u, dl, A, B, C, ctx.starts, dy.float().contiguous(),
                                                       dh_last, *ctx.sizes)
        return d_u, d_dl, d_A, d_B, d_C, (d_h0 if ctx.has_h0 else None), None, None


def _grouped(B: torch.Tensor) -> torch.Tensor:
    return B.unsqueeze(1) if B.dim() == 2 else B


_FAST = None


def _fast_scan_fn():
    """mamba_ssm's CUDA ``selective_scan_fn`` when it imports, else None (never required)."""
    global _FAST
    if _FAST is None:
        try:
            from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
            _FAST = selective_scan_fn
        except Exception:  # not installed, or built for another CUDA/torch
            _FAST = False
    return _FAST or None


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: Optional[torch.Tensor] = None, h0: Optional[torch.Tensor] = None, *,
                   return_state: bool = False, block: Optional[int] = None, sub: Optional[int] = None,
                   use_fast_path: bool = True):
    """Token-major selective scan.

    ``u``, ``delta`` (L, ch) with ``delta`` already positive (softplus applied); ``A`` (ch, n), real, ≤ 0;
    ``B``, ``C`` (L, n) or (L, G, n) with G groups of ``ch // G`` channels each (G = 2 runs two Mamba branches in
    one scan); ``D`` (ch,) or None; ``h0`` (ch, n) start state or None. Returns float32 ``y`` (L, ch), and the
    last state (ch, n) too when ``return_state``.
    """
    L, ch = u.shape
    B, C = _grouped(B), _grouped(C)
    if delta.shape != u.shape or A.shape[0] != ch or B.shape != C.shape or B.shape[0] != L or ch % B.shape[1]:
        raise ValueError(f"inconsistent shapes u {tuple(u.shape)} delta {tuple(delta.shape)} A {tuple(A.shape)} "
                         f"B {tuple(B.shape)} C {tuple(C.shape)}")
    u, delta, A, B, C = u.float(), delta.float(), A.float(), B.float(), C.float()
    fast = _fast_scan_fn() if (use_fast_path and u.is_cuda and h0 is None) else None
    if fast is not None:
        out = fast(u.t()[None].contiguous(), delta.t()[None].contiguous(), A.contiguous(),
                   B.permute(1, 2, 0)[None].contiguous(), C.permute(1, 2, 0)[None].contiguous(),
                   None if D is None else D.float().contiguous(), return_last_state=return_state)
        if return_state:
            y, last = out
            return y[0].t(), last[0]
        return out[0].t()
    y, last = _SelectiveScanFn.apply(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(),
                                     C.contiguous(), None if h0 is None else h0.float(), *_sizes(u, block, sub))
    if D is not None:
        y = y + u * D.float()
    return (y, last) if return_state else y


# ----------------------------------------------------------------------------------------------------------------
# checkpointed chunk: preprocessing + scan, recomputed in the backward without rerunning the scan forward

Prep = Callable[..., Tuple[torch.Tensor, ...]]


class _CheckpointedScanFn(torch.autograd.Function):
    """``prep(*inputs) → (u, Δ, A, B, C, D)`` then the scan, keeping only ``inputs`` and the sub-chunk starts.

    ``torch.utils.checkpoint`` would rerun the scan's forward during the backward only to throw ``y`` away; here the
    backward reruns ``prep`` (under autograd, with the forward's autocast state) and goes straight to the scan's
    hand-written backward, which needs the sub-chunk start states saved by the forward.
    """

    @staticmethod
    def forward(ctx, prep, sizes, h0, *inputs):
        dev = inputs[0].device.type
        ctx.autocast = (dev, torch.is_autocast_enabled(dev), torch.get_autocast_dtype(dev))
        with torch.no_grad():
            u, dl, A, B, C, D = _as_scan_inputs(prep(*inputs))
            y, h_last, starts = scan_forward(u, dl, A, B, C, h0, *sizes)
            if D is not None:
                y.addcmul_(u, D)
        ctx.prep, ctx.sizes, ctx.starts, ctx.has_h0 = prep, sizes, starts, h0 is not None
        ctx.save_for_backward(*inputs)
        return y, h_last

    @staticmethod
    def backward(ctx, dy, dh_last):
        inputs = ctx.saved_tensors
        need = ctx.needs_input_grad[3:]
        leaves = [x.detach().requires_grad_(bool(r) and x.is_floating_point()) for x, r in zip(inputs, need)]
        dev, enabled, dtype = ctx.autocast
        with torch.enable_grad(), torch.autocast(dev, dtype=dtype, enabled=enabled):
            outs = _as_scan_inputs(ctx.prep(*leaves))
        u, dl, A, B, C, D = [None if o is None else o.detach() for o in outs]
        dy = dy.float().contiguous()
        d_u, d_dl, d_A, d_B, d_C, d_h0 = scan_backward(u, dl, A, B, C, ctx.starts, dy, dh_last, *ctx.sizes)
        grads = [d_u, d_dl, d_A, d_B, d_C]
        if D is not None:
            d_u.addcmul_(dy, D)
            grads.append((dy * u).sum(0))
        pairs = [(o, g) for o, g in zip(outs, grads) if o is not None and o.requires_grad]
        wrt = [x for x in leaves if x.requires_grad]
        got = iter(torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True)
                   if pairs and wrt else [])
        d_inputs = [next(got) if x.requires_grad else None for x in leaves]
        return (None, None, d_h0 if ctx.has_h0 else None, *d_inputs)


def _as_scan_inputs(outs: Sequence[Optional[torch.Tensor]]):
    u, dl, A, B, C, D = outs
    return (u.float().contiguous(), dl.float().contiguous(), A.float().contiguous(),
            _grouped(B).float().contiguous(), _grouped(C).float().contiguous(), None if D is None else D.float())


def checkpointed_scan(prep: Prep, inputs: Sequence[torch.Tensor], h0: Optional[torch.Tensor] = None,
                      block: Optional[int] = None, sub: Optional[int] = None):
    """``selective_scan(*prep(*inputs), h0=h0, return_state=True)`` whose backward recomputes ``prep``."""
    sizes = _sizes(inputs[0], block, sub)
    return _CheckpointedScanFn.apply(prep, sizes, h0, *inputs)
