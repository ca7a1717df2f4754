"""Mean and Max pooling MIL: one MLP scores every instance, the instance logits are pooled.

Reference: isyangshu/MambaMIL ``models/Mean_Max_MIL.py`` (``MeanMIL``/``MaxMIL``), as MariosPapadopoulos/DnD_MIL
builds them (``MeanMIL(in_dim, C)``: ReLU, dropout 0.25, Xavier-normal Linear weights, zero biases). State-dict
keys ``head.0.*`` and ``head.3.*`` are the authors'.

Deliberate differences: no survival head; dropout may be given as a rate as well as a bool; a bag of one
instance works. The slide embedding (MIL_REFERENCE §2.7 says there is none) is the mean of the hidden vectors
for Mean pooling — exactly what the last Linear reads, since mean and Linear commute — and the pooled logits
for Max pooling.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import MILModel, MILOutput, activation, dropout_p, register, xavier_init


class _InstancePooling(MILModel):
    order_invariant = True

    def __init__(self, in_dim: int = 1024, n_classes: int = 2, dropout=0.25, act: str = "relu"):
        super().__init__(in_dim, n_classes)
        self.options = {"dropout": dropout, "act": act}
        layers = [nn.Linear(in_dim, 512), activation(act)]
        p = dropout_p(dropout)
        if p > 0:
            layers.append(nn.Dropout(p))
        else:  # keep the authors' index of the output layer (head.3) even without dropout
            layers.append(nn.Identity())
        layers.append(nn.Linear(512, n_classes))
        self.head = nn.Sequential(*layers)
        self.apply(xavier_init)


@register("mean")
class MeanMIL(_InstancePooling):
    """Average of instance logits; the instance score is the instance's logit for the predicted class."""

    reference = "isyangshu/MambaMIL models/Mean_Max_MIL.py MeanMIL"
    title = "Mean pooling"
    summary = "an MLP scores every patch and the scores are averaged; the fastest, a baseline"

    def _forward(self, x: torch.Tensor, scores: bool) -> MILOutput:
        hidden = self.head[:3](x)
        embedding = hidden.mean(dim=0, keepdim=True)
        logits = self.head[3](embedding)  # == mean of the instance logits
        inst = None
        if scores:
            inst = self.head[3](hidden)[:, logits.argmax(dim=1)[0]]
        return MILOutput(logits=logits, embedding=embedding, instance_scores=inst)


@register("max")
class MaxMIL(_InstancePooling):
    """Per-class maximum of instance logits; the instance score is its logit for the predicted class."""

    reference = "isyangshu/MambaMIL models/Mean_Max_MIL.py MaxMIL"
    title = "Max pooling"
    summary = "an MLP scores every patch and the highest score decides; fast, a baseline"

    def _forward(self, x: torch.Tensor, scores: bool) -> MILOutput:
        inst_logits = self.head(x)
        logits = inst_logits.max(dim=0, keepdim=True).values
        inst = inst_logits[:, logits.argmax(dim=1)[0]] if scores else None
        return MILOutput(logits=logits, embedding=logits, instance_scores=inst)
