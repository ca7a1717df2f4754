"""S4MIL: a diagonal state-space layer (S4D) over the bag in feature-row order, then max pooling.

Reference followed: ``S4Model`` in isyangshu/MambaMIL ``models/S4MIL.py`` (itself the HazyResearch S4D layer), as
MariosPapadopoulos/DnD_MIL imports it and builds it: ``S4Model(in_dim, n_classes, act='gelu', dropout=0.25)``.
The original method is MICS-Lab/s4_digital_pathology ``models/s4model.py`` (ReLU, no dropout, keys ``fc1``/``fc2``);
we follow the MambaMIL variant because that is what D&D trains and what its checkpoints contain.

Pipeline (MIL_REFERENCE §2.4): ``_fc1`` = Linear(in, 512) → act → Dropout; ``s4_block`` = LayerNorm(512) → S4D
(512 channels, 16 complex modes, no residual around it); max over the sequence; ``classifier`` Linear(512, C).
Every tensor of the S4D kernel is an ``nn.Parameter`` (the authors' ``register`` only makes buffers when ``lr == 0``,
which they never pass), so the parameter count is 1,085,954 at (1024, 2) and ``state_dict`` names and shapes are
theirs; their checkpoints load with ``strict=True`` and give the same eval logits. Initialisation draws random
numbers in the authors' order (Linear, D, log_dt, C, Conv1d, classifier), so one seed gives one model in both codes.

Deliberate differences:

- The kernel ``K[h, l] = 2 Re Σ_n C'_n exp(dtA_n l)`` is never formed as the authors' (H, N/2, L) complex tensor,
  which for a 100k-instance bag is 6.5 GB per copy and several copies under autograd. Positions are split as
  ``l = b·q + r`` and ``exp(dtA l) = exp(dtA b q) · exp(dtA r)``, so the kernel is one batched product of two
  (H, N/2, √L)-sized factors. Same mathematics; results differ from theirs only by float32 rounding.
- ``output_linear`` (Conv1d k=1 + GLU over channels) keeps its modules and state-dict names but runs as the equal
  matrix product, and the layer's output stays channel-first in memory (CPU speed; see ``S4DLayer.forward``).
- The ``_optim`` hints (weight decay 0 for the kernel tensors) are not attached: D&D's optimizer ignores them.
- No survival head (``survival=True`` returned hazards); D&D only classifies.
- ``act`` other than relu/gelu is an error, not a silently missing activation; ``dropout=True`` means 0.25 (the
  authors' ``nn.Dropout(True)`` would drop everything).
- ``d_model`` and ``d_state`` are options (the authors hard-code 512 and 32, the defaults here).
- The S4D layer's own dropout is left out: the authors build it with rate 0, i.e. an identity.

Instance scores (MIL_REFERENCE §2.7 leaves the choice open): each instance's exact share of the predicted class's
logit through the max pool. For channel h the instance that attains the max gets ``W[pred, h] · pooled[h]``; an
instance's score is the sum over the channels it wins (0 if it wins none). The scores therefore add up to
``logit[pred] − bias[pred]``, and an instance with a high score is one the logit really rests on. They are detached
(for heatmaps, not for training).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import MILModel, MILOutput, activation, dropout_p, register


def vandermonde_kernel(coef: torch.Tensor, dtA: torch.Tensor, length: int) -> torch.Tensor:
    """``2 Re Σ_n coef[h, n] · exp(dtA[h, n] · l)`` for l < length, as a real (H, length) tensor.

    Two-level split so memory is O(H · N · √L) instead of O(H · N · L), which is what lets long bags train.
    """
    block = max(1, math.isqrt(length - 1) + 1)          # ceil(sqrt(L))
    n_blocks = -(-length // block)
    steps = torch.arange(block, device=dtA.device)
    starts = torch.arange(n_blocks, device=dtA.device) * block
    inner = torch.exp(dtA.unsqueeze(-1) * steps)                      # (H, N, b): exp(dtA r)
    outer = coef.unsqueeze(-1) * torch.exp(dtA.unsqueeze(-1) * starts)  # (H, N, q): coef · exp(dtA b q)
    k = torch.matmul(outer.transpose(-1, -2), inner).real            # (H, q, b), row q = positions b·q + r
    return 2 * k.reshape(k.shape[0], -1)[:, :length]


class S4DKernel(nn.Module):
    """Diagonal SSM parameters; ``forward(L)`` gives the (H, L) ZOH-discretised convolution kernel."""

    def __init__(self, channels: int, state: int, dt_min: float = 1e-3, dt_max: float = 1e-1):
        super().__init__()
        modes = state // 2
        # draw order (log_dt, then C) and registration order (C first) both follow the authors
        log_dt = torch.rand(channels) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
        c = torch.randn(channels, modes, dtype=torch.cfloat)
        self.C = nn.Parameter(torch.view_as_real(c))               # complex stored as real (H, N/2, 2)
        self.log_dt = nn.Parameter(log_dt)
        self.log_A_real = nn.Parameter(torch.full((channels, modes), math.log(0.5)))
        self.A_imag = nn.Parameter(math.pi * torch.arange(modes, dtype=torch.float32).repeat(channels, 1))

    def forward(self, length: int) -> torch.Tensor:
        dt = torch.exp(self.log_dt)
        a = torch.complex(-torch.exp(self.log_A_real), self.A_imag)
        dtA = a * dt.unsqueeze(-1)
        coef = torch.view_as_complex(self.C) * (torch.exp(dtA) - 1.0) / a   # C · B̄ with B = 1 (ZOH)
        return vandermonde_kernel(coef, dtA, length)


class S4DLayer(nn.Module):
    """S4D with the authors' ``transposed=False`` layout: (..., L, H) in, (..., L, H) out."""

    def __init__(self, channels: int, state: int):
        super().__init__()
        self.D = nn.Parameter(torch.randn(channels))
        self.kernel = S4DKernel(channels, state)
        self.output_linear = nn.Sequential(nn.Conv1d(channels, 2 * channels, kernel_size=1), nn.GLU(dim=-2))

    def ssm(self, u: torch.Tensor) -> torch.Tensor:
        """Causal convolution with the kernel plus the D skip, on channel-first (..., H, L)."""
        length = u.shape[-1]
        if u.dtype in (torch.float16, torch.bfloat16):
            u = u.float()                                           # the authors' FFT runs in float32
        k = self.kernel(length).to(u.dtype)
        n = 2 * length                                               # zero padding makes the circular conv linear
        y = torch.fft.irfft(torch.fft.rfft(u, n=n) * torch.fft.rfft(k, n=n), n=n)[..., :length]
        return y + u * self.D.unsqueeze(-1)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.ssm(u.transpose(-1, -2)))                    # GELU is fixed here, whatever ``act`` is
        # output_linear (Conv1d k=1 + GLU over channels) applied as the equal matrix product: on CPU the mkldnn
        # k=1 convolution's backward is several times slower than a matmul
        conv = self.output_linear[0]
        z = torch.matmul(conv.weight.squeeze(-1), y) + conv.bias.unsqueeze(-1)
        # the result stays channel-first in memory: the max over the sequence then reads contiguous rows
        # (25x faster at L = 100k than reducing over the outer dimension of an (L, H) tensor)
        return F.glu(z, dim=-2).transpose(-1, -2)


@register("s4mil")
class S4MIL(MILModel):
    """S4MIL as D&D builds it (see the module docstring for the reference and the differences)."""

    order_invariant = False
    memory = "linear"
    reference = ("isyangshu/MambaMIL models/S4MIL.py S4Model (as imported by MariosPapadopoulos/DnD_MIL); "
                 "original: MICS-Lab/s4_digital_pathology models/s4model.py")
    title = "S4MIL"
    summary = "a state-space (S4D) layer over the patch sequence, then max pooling; moderate speed"

    def __init__(self, in_dim: int = 1024, n_classes: int = 2, dropout=0.25, act: str = "gelu",
                 d_model: int = 512, d_state: int = 32):
        super().__init__(in_dim, n_classes)
        p = dropout_p(dropout)
        d_model, d_state = int(d_model), int(d_state)
        if d_model < 1:
            raise ValueError(f"d_model must be ≥ 1, got {d_model}")
        if d_state < 2 or d_state % 2:
            raise ValueError(f"d_state must be even and ≥ 2 (it holds d_state/2 complex modes), got {d_state}")
        self.options = {"dropout": p, "act": act.lower(), "d_model": d_model, "d_state": d_state}

        layers = [nn.Linear(self.in_dim, d_model), activation(act)]
        if p > 0:
            layers.append(nn.Dropout(p))
        self._fc1 = nn.Sequential(*layers)
        self.s4_block = nn.Sequential(nn.LayerNorm(d_model), S4DLayer(d_model, d_state))
        self.classifier = nn.Linear(d_model, self.n_classes)

    def _forward(self, x: torch.Tensor, scores: bool) -> MILOutput:
        h = self.s4_block(self._fc1(x.to(self.classifier.weight.dtype)))   # (N, H)
        pooled, winner = h.max(dim=0)                                        # per channel: value, instance
        pooled = pooled.unsqueeze(0)
        logits = self.classifier(pooled)
        inst = None
        if scores:
            with torch.no_grad():
                pred = int(logits.argmax(dim=-1)[0])
                share = self.classifier.weight[pred] * pooled[0]
                inst = torch.zeros(h.shape[0], dtype=share.dtype, device=share.device).index_add_(0, winner, share)
        return MILOutput(logits=logits, embedding=pooled, instance_scores=inst)
