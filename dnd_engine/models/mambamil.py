"""MambaMIL with SRMamba layers (Yang et al., MICCAI 2024), as the D&D authors build it.

References followed: isyangshu/MambaMIL ``models/MambaMIL.py`` and ``mamba/mamba_ssm/modules/srmamba.py`` (the
files MariosPapadopoulos/DnD_MIL imports, built there as ``MambaMIL(in_dim, C, dropout=0.25, act='gelu', layer=2,
rate=10, type='SRMamba')``; MambaMIL's own scripts use rate 5), and for the scan the math of state-spaces/mamba
``selective_scan_ref`` / ``mamba_inner_ref`` (see ``selective_scan.py``). Our own code: only the parameter names
are theirs, so ``state_dict`` keys and shapes equal the authors' model and their checkpoints load with
``strict=True`` (4,227,843 parameters at in_dim 1024 and 2 classes).

Pipeline (MIL_REFERENCE §2.5) for one bag of N instances: ``_fc1`` Linear(in, 512) → act → Dropout; ``layer`` times
``h + SRMamba(LayerNorm(h))``; LayerNorm; attention pooling (Linear 512→128, Tanh, Linear 128→1, softmax over N);
``classifier`` Linear(512, C). SRMamba (d_model 512, d_state 16, d_conv 4, expand 2, dt_rank 32): ``in_proj`` gives
x and z (1024 channels each). The forward branch runs causal depthwise conv (k=4) + SiLU, ``x_proj`` → (Δ_low, B,
C), Δ = softplus(``dt_proj``(Δ_low)), the selective scan with A = −exp(``A_log``) and skip ``D``. The SR branch
runs the same with the ``_b`` parameters on the sequence zero-padded to a multiple of ``rate`` and read
column-wise (x_0, x_rate, x_2rate, …, x_1, x_{1+rate}, …); the padded tokens are scanned too, as in the authors'
kernel call, and the result is put back in order and cropped. ``out_proj((y_fwd + y_sr) ⊙ SiLU(z))``.
Init: Xavier-normal for every Linear, zero biases (so ``dt_proj.bias`` is 0, not Mamba's inverse-softplus init),
A_log = log(1..16), D = 1, conv layers PyTorch default; random numbers are drawn in the authors' order, including
their repeated ``self.apply(initialize_weights)``, so one seed gives the same weights in both codes.

Deliberate differences:

- No CUDA kernels needed: the scan is ``selective_scan.py`` (blocked, parallel over the sequence, hand-written
  backward); on CUDA it runs as fused Triton kernels (``scan_triton.py``) when Triton imports, and mamba_ssm's
  ``selective_scan_fn`` is used instead if it imports. The authors'
  non-fused fallback in srmamba.py is broken (undefined ``y_f``, overwritten x) and never ran; we follow their
  fused path (``mamba_inner_fn_no_out_proj``), whose math is ``mamba_inner_ref``.
- Both branches gate with the same SiLU(z) (the SR branch's z is reordered and put back with its y), so we sum
  the branch outputs first and gate once: ``(y_f + y_sr) ⊙ SiLU(z)`` equals their ``y_f ⊙ SiLU(z) + y_sr ⊙
  SiLU(z)`` up to float rounding. The two branches run as one scan with 2 × 1024 channels.
- Training (grad enabled, ``checkpoint=True``) processes the sequence in chunks of ``chunk`` tokens (CPU 2048,
  CUDA 16384) carrying the scan state and the conv context; each chunk keeps only its input between forward and
  backward and recomputes conv, projections and states in the backward (``selective_scan.checkpointed_scan``).
  Same gradients as ``checkpoint=False`` up to float rounding. Chunk outputs are written straight into bag order
  (``_AddRows``) and the gate + ``out_proj`` keep only y and z (``_GatedProjection``), so per layer the saved
  activations are about 5.6k floats per instance. Measured on CPU, one forward + backward of a 100,000 × 1024 bag:
  peak RSS 10.7 GiB with glibc's default malloc, 7.2 GiB with ``MALLOC_MMAP_THRESHOLD_=65536`` (the difference is
  freed heap that glibc keeps).
- ``instance_scores`` are the pooling attention's pre-softmax scores (the authors compute them and return
  ``A_raw=None``); ``embedding`` is the attention-pooled 512-vector the classifier reads.
- ``type``: "SRMamba" (default) and "Mamba" (mamba_ssm 1.1.2 ``mamba_simple.Mamba``: the forward branch alone,
  keys without ``_b``). "BiMamba" (Vim's module) is refused. No survival head. ``act`` must be relu or gelu
  (theirs silently skips any other); ``dropout=True`` means 0.25.

Validated outside the repository against a per-token transcription of the authors' fused path (their layout,
F.conv1d, the einops-style reorder, ``selective_scan_ref``): same initial weights for the same seed, eval logits
within 1.5e-6 for N = 1, 7, 23, 300, 2000 (rate 10; also rate 5 and "Mamba"), gradients within 1.2e-6 relative.
Training step (forward + backward + SGD, one bag) on one CPU thread of a shared 2-core machine: 7.4-9.4× S4MIL's at
10k instances over repeated runs of ``benchmarks/train_speed.py`` (about 14 s vs 1.5-1.9 s).
"""

from __future__ import annotations

import math
from typing import Iterator, List, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import selective_scan as ss
from .base import MILModel, MILOutput, activation, dropout_p, register, xavier_init

TYPES = {"srmamba": "SRMamba", "mamba": "Mamba"}
DEFAULT_CHUNK = {"cpu": 2048, "cuda": 16384}  # tokens per checkpointed chunk (training)


class SRMambaMixer(nn.Module):
    """One SRMamba block (``sr=True``) or mamba_ssm's plain ``Mamba`` block (``sr=False``), on (L, d_model)."""

    def __init__(self, d_model: int = 512, d_state: int = 16, d_conv: int = 4, expand: int = 2, sr: bool = True,
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init_floor: float = 1e-4):
        super().__init__()
        self.d_model, self.d_state, self.d_conv = d_model, d_state, d_conv
        self.d_inner = expand * d_model
        self.dt_rank = math.ceil(d_model / 16)
        self.sr = bool(sr)
        d, sfx = self.d_inner, (("", "_b") if self.sr else ("",))
        self.suffixes = sfx
        # creation order = the authors' (it fixes both the random draws and the state_dict order)
        self.in_proj = nn.Linear(d_model, 2 * d, bias=False)
        for s in sfx:
            setattr(self, "conv1d" + s, nn.Conv1d(d, d, d_conv, groups=d, padding=d_conv - 1, bias=True))
        for s in sfx:
            setattr(self, "x_proj" + s, nn.Linear(d, self.dt_rank + 2 * d_state, bias=False))
        for s in sfx:
            setattr(self, "dt_proj" + s, nn.Linear(self.dt_rank, d, bias=True))
        # Mamba's dt init (MambaMIL's Xavier re-init overrides it; kept so the block alone is Mamba's)
        std = self.dt_rank ** -0.5
        for s in sfx:
            nn.init.uniform_(getattr(self, "dt_proj" + s).weight, -std, std)
        dt = torch.exp(torch.rand(d) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_init_floor)
        with torch.no_grad():
            for s in sfx:
                getattr(self, "dt_proj" + s).bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        a_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(d, 1)
        self.A_log = nn.Parameter(a_log.clone())
        if self.sr:
            self.A_b_log = nn.Parameter(a_log.clone())
        self.D = nn.Parameter(torch.ones(d))
        if self.sr:
            self.D_b = nn.Parameter(torch.ones(d))
        self.out_proj = nn.Linear(d, d_model, bias=False)
        self.scan_fn = ss.selective_scan  # swappable (tests run a per-token reference through the same model)

    def _branch_params(self) -> List[torch.Tensor]:
        out = []
        for s in self.suffixes:
            conv = getattr(self, "conv1d" + s)
            dtp = getattr(self, "dt_proj" + s)
            out += [conv.weight, conv.bias, getattr(self, "x_proj" + s).weight, dtp.weight, dtp.bias,
                    getattr(self, "A_log" if s == "" else "A_b_log"), getattr(self, "D" + s)]
        return out

    def _prep(self, piece, tail, *params):
        """Conv + SiLU, x_proj, dt_proj + softplus for all branches on one chunk: the scan's (u, Δ, A, B, C, D)."""
        nb = len(self.suffixes)
        p = [params[7 * i: 7 * i + 7] for i in range(nb)]  # per branch: conv w, conv b, x_proj, dt w, dt b, A_log, D

        def both(i, f=lambda t: t):
            return torch.cat([f(q[i]) for q in p]) if nb > 1 else f(p[0][i])

        # causal depthwise conv (PyTorch's cross-correlation with k-1 zeros on the left) of all branches at once, as
        # k shifted multiply-adds in token-major layout: F.conv1d's (oneDNN) backward was about as fast on one
        # thread but took 13 s instead of 0.1 s per chunk with 2 threads on a loaded machine
        k, L = self.d_conv, piece.shape[0]
        x = torch.cat([tail, piece])                                           # (k-1+L, ch)
        w = both(0).view(-1, k)
        conv = both(1)
        for j in range(k):
            conv = torch.addcmul(conv, x[j:j + L], w[:, j])
        u = F.silu(conv)
        d, r, n = self.d_inner, self.dt_rank, self.d_state
        x_dbl = [F.linear(u[:, i * d:(i + 1) * d], p[i][2]) for i in range(nb)]   # (L, r + 2n) each
        if nb > 1:  # one dt matmul for both branches: a block-diagonal weight, no (L, 2d) concatenation after
            dt_low = torch.cat([xd[:, :r] for xd in x_dbl], 1)
            dl = F.softplus(F.linear(dt_low, torch.block_diag(*[q[3] for q in p]), both(4)))
        else:
            dl = F.softplus(F.linear(x_dbl[0][:, :r], p[0][3], p[0][4]))
        B = torch.stack([xd[:, r:r + n] for xd in x_dbl], 1)                     # (L, branches, n)
        C = torch.stack([xd[:, r + n:] for xd in x_dbl], 1)
        return u, dl, both(5, lambda a: -torch.exp(a.float())), B, C, both(6)

    def _chunks(self, X: torch.Tensor, checkpoint: bool, chunk: Optional[int]) -> Iterator[torch.Tensor]:
        """The scan output (D·u included) of each chunk of X, in order, carrying the state and the conv context."""
        params = self._branch_params()
        Lp, ch = X.shape
        grad = torch.is_grad_enabled() and (X.requires_grad or any(p.requires_grad for p in params))
        fast = X.is_cuda and self.scan_fn is ss.selective_scan and ss._fast_scan_fn() is not None
        if fast or (grad and not checkpoint):
            size = Lp  # the CUDA kernel takes no start state; without checkpointing chunks would buy nothing
        else:
            size = max(int(chunk or DEFAULT_CHUNK.get(X.device.type, DEFAULT_CHUNK["cpu"])), self.d_conv)
        context = self.d_conv - 1
        h, prev = None, None
        for piece in X.split(size):  # split, not slices: slicing would cost a full-size gradient buffer per chunk
            tail = X.new_zeros(context, ch) if prev is None else prev[prev.shape[0] - context:]
            if grad and checkpoint and not fast:
                y, h = ss.checkpointed_scan(self._prep, (piece, tail, *params), h0=h)
            else:
                y, h = self.scan_fn(*self._prep(piece, tail, *params), h0=h, return_state=True)
            yield y
            prev = piece

    def forward(self, hs: torch.Tensor, rate: int = 10, checkpoint: bool = True,
                chunk: Optional[int] = None) -> torch.Tensor:
        L, d = hs.shape[0], self.d_inner
        x = F.linear(hs, self.in_proj.weight[:d])
        z = F.linear(hs, self.in_proj.weight[d:])
        if self.sr:
            K = -(-L // rate)
            Lp = K * rate
            if Lp > L:
                x = F.pad(x, (0, 0, 0, Lp - L))
            order = torch.arange(Lp, device=x.device).view(K, rate).t().reshape(-1)  # column-wise read
            X = torch.cat([x, x.index_select(0, order)], dim=1)
        else:
            Lp, order, X = L, None, x
        del x
        # each chunk's output goes straight to its bag positions, so no second full-size copy is ever alive
        y = torch.zeros(Lp, d, dtype=torch.float32, device=X.device)
        rows = torch.arange(Lp, device=X.device)
        s = 0
        for out in self._chunks(X, checkpoint, chunk):
            e = s + out.shape[0]
            y = _AddRows.apply(y, rows[s:e], out[:, :d])
            if order is not None:  # the SR branch, read back into bag order
                y = _AddRows.apply(y, order[s:e], out[:, d:])
            s = e
        return _GatedProjection.apply(y[:L].to(z.dtype), z, self.out_proj.weight)


class _AddRows(torch.autograd.Function):
    """``y[index] += src`` in place, keeping only ``index`` (``index_add_``'s autograd would keep ``src`` alive)."""

    @staticmethod
    def forward(ctx, y, index, src):
        ctx.mark_dirty(y)
        ctx.save_for_backward(index)
        return y.index_add_(0, index, src.to(y.dtype))

    @staticmethod
    def backward(ctx, grad):
        index, = ctx.saved_tensors
        return grad, None, grad.index_select(0, index)


class _GatedProjection(torch.autograd.Function):
    """``out_proj(y ⊙ SiLU(z))`` keeping only y and z for the backward (autograd would also keep SiLU(z) and the
    gated product: 2 × N × 1024 floats per layer, 0.8 GB per layer at 100k instances)."""

    @staticmethod
    def forward(ctx, y, z, weight):
        ctx.save_for_backward(y, z, weight)
        return F.linear(y * F.silu(z), weight)

    @staticmethod
    def backward(ctx, dout):
        y, z, weight = ctx.saved_tensors
        sig = torch.sigmoid(z)
        gate = z * sig                                                       # SiLU(z)
        d_weight = (dout.t() @ (y * gate).to(dout.dtype)).to(weight.dtype)
        d_gated = (dout @ weight.to(dout.dtype)).to(y.dtype)
        d_y = d_gated * gate
        # SiLU'(z) = σ + SiLU(z)(1 − σ), formed in place (a few N × 1024 temporaries fewer at the backward's peak)
        one_minus = sig.neg_().add_(1)
        deriv = gate.mul_(one_minus).sub_(one_minus).add_(1)
        return d_y, d_gated.mul_(y).mul_(deriv), d_weight


@register("mambamil")
class MambaMIL(MILModel):
    """MambaMIL as D&D builds it (see the module docstring for the reference and the differences)."""

    order_invariant = False
    memory = "linear"
    reference = ("isyangshu/MambaMIL models/MambaMIL.py + mamba/mamba_ssm/modules/srmamba.py (as imported by "
                 "MariosPapadopoulos/DnD_MIL); scan math: state-spaces/mamba selective_scan_ref")
    title = "MambaMIL"
    summary = ("two Mamba (selective state-space) layers and attention pooling; the slowest here: its scan runs in "
               "plain PyTorch")
    slow = True

    def __init__(self, in_dim: int = 1024, n_classes: int = 2, dropout=0.25, act: str = "gelu", layer: int = 2,
                 rate: int = 10, type: str = "SRMamba", checkpoint: bool = True, chunk: Optional[int] = None):
        super().__init__(in_dim, n_classes)
        p = dropout_p(dropout)
        key = str(type).lower()
        if key not in TYPES:
            raise ValueError(f"MambaMIL type must be 'SRMamba' or 'Mamba', got {type!r}"
                             + (" (BiMamba needs Vim's module, which is not ported)" if key == "bimamba" else ""))
        if int(layer) != layer or int(layer) < 1:
            raise ValueError(f"layer must be an integer ≥ 1, got {layer}")
        if int(rate) != rate or int(rate) < 1:
            raise ValueError(f"rate must be an integer ≥ 1, got {rate}")
        if chunk is not None and int(chunk) < 4:
            raise ValueError(f"chunk must be ≥ 4 tokens, got {chunk}")
        self.type, self.rate = TYPES[key], int(rate)
        self.checkpoint = bool(checkpoint)
        self.chunk = None if chunk is None else int(chunk)
        self.options = {"dropout": p, "act": act.lower(), "layer": int(layer), "rate": self.rate,
                        "type": self.type, "checkpoint": self.checkpoint, "chunk": self.chunk}

        fc1 = [nn.Linear(self.in_dim, 512), activation(act)]
        if p > 0:
            fc1.append(nn.Dropout(p))
        self._fc1 = nn.Sequential(*fc1)
        self.norm = nn.LayerNorm(512)
        self.layers = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(512), SRMambaMixer(512, d_state=16, d_conv=4, expand=2,
                                                          sr=self.type == "SRMamba"))
            for _ in range(int(layer)))
        self.classifier = nn.Linear(512, self.n_classes)
        self.attention = nn.Sequential(nn.Linear(512, 128), nn.Tanh(), nn.Linear(128, 1))
        self.apply(xavier_init)  # the authors' self.apply(initialize_weights): same draws, same order

    def _forward(self, x: torch.Tensor, scores: bool) -> MILOutput:
        h = self._fc1(x.to(self.classifier.weight.dtype))
        for layer in self.layers:
            h = h + layer[1](layer[0](h), rate=self.rate, checkpoint=self.checkpoint, chunk=self.chunk)
        h = self.norm(h)
        a_raw = self.attention(h)[:, 0]                                         # (N,) pre-softmax
        embedding = torch.softmax(a_raw, dim=0)[None, :] @ h                    # (1, 512)
        logits = self.classifier(embedding)
        return MILOutput(logits=logits, embedding=embedding, instance_scores=a_raw if scores else None)
