"""ABMIL: attention-based MIL pooling (Ilse et al. 2018), non-gated by default as the D&D authors use it.

Reference: isyangshu/MambaMIL ``models/ABMIL.py`` ``DAttention`` (L=512, D=128, K=1), built by
MariosPapadopoulos/DnD_MIL as ``DAttention(in_dim, C, dropout=0.25, act='relu')``. Their Xavier init is
commented out, so PyTorch's default init applies here too. ``gated=True`` gives Ilse et al.'s gated attention
with the key names of the same file's ``GatedAttention`` (``attention_V``, ``attention_U``,
``attention_weights``).

Deliberate differences: the hidden vectors are never ``squeeze()``-d, so a bag of one instance works (the
authors' code breaks there); the pre-softmax attention ``A_raw`` is returned for both variants (their gated
class returns None); no survival head.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import MILModel, MILOutput, activation, dropout_p, register


@register("abmil")
class ABMIL(MILModel):
    order_invariant = True
    reference = "isyangshu/MambaMIL models/ABMIL.py DAttention (GatedAttention when gated=True)"
    title = "ABMIL"
    summary = "attention pooling (Ilse et al.): learns which patches matter; fast, a good first choice"

    def __init__(self, in_dim: int = 1024, n_classes: int = 2, dropout=0.25, act: str = "relu",
                 gated: bool = False):
        super().__init__(in_dim, n_classes)
        self.options = {"dropout": dropout, "act": act, "gated": bool(gated)}
        self.gated = bool(gated)
        layers = [nn.Linear(in_dim, 512), activation(act)]
        p = dropout_p(dropout)
        if p > 0:
            layers.append(nn.Dropout(p))
        self.feature = nn.Sequential(*layers)
        if self.gated:
            self.attention_V = nn.Sequential(nn.Linear(512, 128), nn.Tanh())
            self.attention_U = nn.Sequential(nn.Linear(512, 128), nn.Sigmoid())
            self.attention_weights = nn.Linear(128, 1)
        else:
            self.attention = nn.Sequential(nn.Linear(512, 128), nn.Tanh(), nn.Linear(128, 1))
        self.classifier = nn.Sequential(nn.Linear(512, n_classes))

    def attention_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Pre-softmax attention, shape (N,)."""
        if self.gated:
            a = self.attention_weights(self.attention_V(hidden) * self.attention_U(hidden))
        else:
            a = self.attention(hidden)
        return a[:, 0]

    def _forward(self, x: torch.Tensor, scores: bool) -> MILOutput:
        hidden = self.feature(x)
        a_raw = self.attention_logits(hidden)
        weights = torch.softmax(a_raw, dim=0)
        embedding = (weights[None, :] @ hidden)
        logits = self.classifier(embedding)
        return MILOutput(logits=logits, embedding=embedding, instance_scores=a_raw if scores else None)
