"""TransMIL as the D&D authors run it (MIL_REFERENCE §2.3).

Reference followed: ``models/TransMIL.py`` of isyangshu/MambaMIL, the file MariosPapadopoulos/DnD_MIL imports
(``TransMIL(in_dim, n_classes, dropout=0.25, act='relu')``). That file adapts the original szc19990412/TransMIL and
carries its own copy of lucidrains' ``nystrom-attention`` ``NystromAttention`` (same math as the package). This is
our own code; only the parameter names are theirs, so ``state_dict`` keys and shapes match exactly and their
checkpoints load with ``strict=True`` and give the same logits in eval mode.

The pipeline, for one bag of N instances: Linear(in, 512) → act → Dropout; "squaring" to H = W = ceil(√N) by
appending the first H·W − N tokens again; a class token in front; TransLayer (x + Nyström(LayerNorm x), no FFN);
PPEG (x + depthwise 7/5/3 convs over the H×W token grid in sequence order); TransLayer; LayerNorm of the class
token; Linear classifier.

Deliberate differences from the authors' file:

* Device- and dtype-agnostic: no ``.cuda()`` on the class token, the identity of the pseudo-inverse is built on
  the input's device and dtype, and the bag is cast to the weights' dtype (they call ``.float()``).
* ``H = W`` uses the exact integer ceil-square-root instead of ``np.ceil(np.sqrt(N))`` (equal for every
  realistic N). N = 1 works: the grid is 1×1 and PPEG's "same" padding handles it.
* The final LayerNorm is applied to the class token only; LayerNorm is per-token, so the result is the same as
  normalising the whole sequence and then taking token 0, without the O(N) work.
* ``act`` must be ``relu`` or ``gelu`` (theirs silently drops any other activation); ``dropout`` may be a rate or
  a bool (True → 0.25), see ``base.dropout_p``.
* ``instance_scores`` (their ``A_raw`` is None): the class-token row of layer 2's Nyström attention, formed as
  (attn1[cls]·A⁺)·attn3 without the n×n matrix, averaged over the 8 heads, with the front padding and the class
  key dropped and each squaring duplicate averaged with its original (``_NystromAttention.forward``,
  ``TransMIL._instance_scores``). With ``scores=False`` none of this runs.
* ``landmarks`` and ``pinv_iterations`` are options (theirs are fixed at 256 and 6, our defaults); they change no
  parameter shape.
* The survival head (``survival=True``) is not offered; D&D does not use it.

Memory: the Nyström attention is linear in N; the dominant saved tensors per layer are the three (heads, N, m)
matrices attn1, attn3 and attn1·A⁺ (≈0.8 GB each at N = 100k). We keep the authors' association order
((attn1·A⁺)·(attn3·V)) so eval logits are bit-identical to theirs on CPU, rather than trading one of those matrices
for rounding differences; the final LayerNorm touches only the class token, and the class-token scores are computed
under ``no_grad`` from tensors the forward pass already holds. Measured on CPU: forward + backward of one
100,000 × 1024 bag peaks at about 11 GiB RSS, so it trains on a 24 GB machine.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .base import MILModel, MILOutput, activation, dropout_p, register, xavier_init

_DIM = 512     # the authors hard-code the token width
_HEADS = 8     # dim_head = 64


def _pinv_newton_schulz(a: torch.Tensor, iters: int) -> torch.Tensor:
    """Iterative Moore–Penrose inverse of the landmark kernel (Nyströmformer eq. 16).

    The initial guess aᵀ / (max row-abs-sum · max col-abs-sum) takes both maxima over the whole tensor (all heads),
    as the authors do; a per-head maximum would be a different model.
    """
    a_abs = a.abs()
    denom = a_abs.sum(dim=-1).max() * a_abs.sum(dim=-2).max()
    z = a.transpose(-1, -2) / denom
    eye = torch.eye(a.shape[-1], device=a.device, dtype=a.dtype)
    for _ in range(iters):
        az = a @ z
        z = 0.25 * z @ (13 * eye - (az @ (15 * eye - (az @ (7 * eye - az)))))
    return z


class _NystromAttention(nn.Module):
    """Nyström self-attention with the depthwise-conv value residual (names: to_qkv, to_out.0, res_conv)."""

    def __init__(self, dim: int = _DIM, heads: int = _HEADS, landmarks: int = _DIM // 2, pinv_iterations: int = 6,
                 conv_kernel: int = 33, dropout: float = 0.1):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.landmarks = landmarks
        self.pinv_iterations = pinv_iterations
        self.scale = self.head_dim ** -0.5
        inner = heads * self.head_dim
        self.to_qkv = nn.Linear(dim, 3 * inner, bias=False)
        self.to_out = nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))
        self.res_conv = nn.Conv2d(heads, heads, (conv_kernel, 1), padding=(conv_kernel // 2, 0), groups=heads,
                                  bias=False)

    def forward(self, x: torch.Tensor, cls_row: bool = False):
        """``x`` (1, n, dim) → (1, n, dim); with ``cls_row`` also the head-mean attention row of token 0.

        Zeros are padded in *front* so the length is a multiple of the landmark count (token 0 then sits at index
        ``front``); landmarks are means of ``ceil(n / m)`` consecutive tokens, padding included, as in the reference.
        The class-token row is (attn1[front] · A⁺) · attn3, which never forms the n×n matrix; it is returned for the
        n unpadded keys (token 0 itself first), averaged over the heads (the heads are exchangeable, so no one
        head is privileged), detached: it is for heatmaps, not for training.
        """
        b, n, _ = x.shape
        m = self.landmarks
        front = (-n) % m
        if front:
            x = F.pad(x, (0, 0, front, 0))
        length = n + front
        group = -(-n // m)  # = length // m

        q, k, v = self.to_qkv(x).view(b, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = q * self.scale
        q_land = q.reshape(b, self.heads, m, group, self.head_dim).sum(dim=-2) / group
        k_land = k.reshape(b, self.heads, m, group, self.head_dim).sum(dim=-2) / group

        attn1 = (q @ k_land.transpose(-1, -2)).softmax(dim=-1)        # (b, h, length, m)
        attn2 = (q_land @ k_land.transpose(-1, -2)).softmax(dim=-1)   # (b, h, m, m)
        attn3 = (q_land @ k.transpose(-1, -2)).softmax(dim=-1)        # (b, h, m, length)
        inv = _pinv_newton_schulz(attn2, self.pinv_iterations)

        out = (attn1 @ inv) @ (attn3 @ v) + self.res_conv(v)
        out = self.to_out(out.transpose(1, 2).reshape(b, length, self.heads * self.head_dim))[:, -n:]
        if not cls_row:
            return out
        with torch.no_grad():
            row = (attn1[:, :, front:front + 1] @ inv) @ attn3     # (b, h, 1, length)
            row = row.mean(dim=1)[0, 0, front:]                    # heads averaged; padding keys dropped
        return out, row


class TransLayer(nn.Module):
    """Pre-norm residual Nyström attention; the authors' TransMIL has no feed-forward block."""

    def __init__(self, dim: int = _DIM, landmarks: int = _DIM // 2, pinv_iterations: int = 6):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.attn = _NystromAttention(dim, _HEADS, landmarks, pinv_iterations, dropout=0.1)

    def forward(self, x: torch.Tensor, cls_row: bool = False):
        if not cls_row:
            return x + self.attn(self.norm(x))
        delta, row = self.attn(self.norm(x), cls_row=True)
        return x + delta, row


class PPEG(nn.Module):
    """Pyramid position encoding: depthwise 7/5/3 convs over the squared token grid (row-major sequence order)."""

    def __init__(self, dim: int = _DIM):
        super().__init__()
        self.proj = nn.Conv2d(dim, dim, 7, 1, 3, groups=dim)
        self.proj1 = nn.Conv2d(dim, dim, 5, 1, 2, groups=dim)
        self.proj2 = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)

    def forward(self, x: torch.Tensor, side_h: int, side_w: int) -> torch.Tensor:
        b, _, c = x.shape
        grid = x[:, 1:].transpose(1, 2).reshape(b, c, side_h, side_w)
        grid = self.proj(grid) + grid + self.proj1(grid) + self.proj2(grid)
        return torch.cat((x[:, :1], grid.flatten(2).transpose(1, 2)), dim=1)


@register("transmil")
class TransMIL(MILModel):
    """TransMIL (Shao et al. 2021) in the MambaMIL-repo variant D&D uses."""

    order_invariant = False
    memory = "linear"
    reference = ("isyangshu/MambaMIL models/TransMIL.py (imported by MariosPapadopoulos/DnD_MIL); "
                 "original szc19990412/TransMIL; Nyström attention after lucidrains/nystrom-attention")
    title = "TransMIL"
    summary = ("a Nyström-attention transformer over the patches (reads them in grid order); slower to train, "
               "about 4× ABMIL's parameters")
    slow = True

    def __init__(self, in_dim: int = 1024, n_classes: int = 2, dropout=0.25, act: str = "relu",
                 landmarks: int = _DIM // 2, pinv_iterations: int = 6):
        super().__init__(in_dim, n_classes)
        p = dropout_p(dropout)
        if int(landmarks) < 1 or int(pinv_iterations) < 0:
            raise ValueError(f"landmarks must be ≥ 1 and pinv_iterations ≥ 0, got {landmarks}, {pinv_iterations}")
        self.options = {"dropout": p, "act": act.lower(), "landmarks": int(landmarks),
                        "pinv_iterations": int(pinv_iterations)}
        # registration order mirrors the authors' so state_dict() lists keys in their order too
        fc = [nn.Linear(self.in_dim, _DIM), activation(act)]
        if p > 0:
            fc.append(nn.Dropout(p))
        self._fc1 = nn.Sequential(*fc)
        self.pos_layer = PPEG(_DIM)
        self.cls_token = nn.Parameter(torch.empty(1, 1, _DIM))
        self.layer1 = TransLayer(_DIM, int(landmarks), int(pinv_iterations))
        self.layer2 = TransLayer(_DIM, int(landmarks), int(pinv_iterations))
        self.norm = nn.LayerNorm(_DIM)
        self.classifier = nn.Linear(_DIM, self.n_classes)
        nn.init.normal_(self.cls_token, std=1e-6)
        xavier_init(self)

    def _forward(self, x: torch.Tensor, scores: bool) -> MILOutput:
        h = self._fc1(x.to(self.cls_token.dtype)).unsqueeze(0)       # (1, N, 512)
        n = h.shape[1]
        side = math.isqrt(n - 1) + 1                                   # ceil(√n), exact
        extra = side * side - n
        if extra:
            h = torch.cat((h, h[:, :extra]), dim=1)
        h = torch.cat((self.cls_token, h), dim=1)
        h = self.layer1(h)
        h = self.pos_layer(h, side, side)
        row: Optional[torch.Tensor] = None
        if scores:
            h, row = self.layer2(h, cls_row=True)
        else:
            h = self.layer2(h)
        emb = self.norm(h[:, 0])                                       # (1, 512)
        logits = self.classifier(emb)
        inst = self._instance_scores(row, n, extra) if row is not None else None
        return MILOutput(logits=logits, embedding=emb, instance_scores=inst)

    @staticmethod
    def _instance_scores(row: torch.Tensor, n: int, extra: int) -> torch.Tensor:
        """Map layer-2's class-token row (class token first, then the H·W grid tokens) back to the N instances.

        Instance i < H·W − N appears twice (its original slot and the appended duplicate at N + i). We report the
        mean of the two weights, so every score is a per-token attention weight on the same footing and the
        duplicated instances are not inflated merely by the squaring; their total attention mass is twice that.
        """
        grid = row[1:]
        out = grid[:n].clone()
        if extra:
            out[:extra] = 0.5 * (out[:extra] + grid[n:])
        return out
