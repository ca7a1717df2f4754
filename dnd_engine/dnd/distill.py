"""Stage 4: the distillation loss, with the teachers' soft targets computed once.

Loss per slide (MIL_REFERENCE §1.7; the paper's eq. with the code's temperature):
``λ_ce·CE(s, y) + λ_base·T²·KL(softmax(b/T) ‖ softmax(s/T)) + (λ_expert/C)·T²·Σ_c KL(softmax(e_c/T) ‖ softmax(s/T))``
— KL from teacher to student, ``batchmean`` over the batch, every expert teaching every slide. The teachers are
frozen and in eval mode (no dropout), so their logits are the same every epoch: caching them once per training
slide is exact, and makes a student epoch cost one forward/backward per slide like a plain epoch (the authors'
code recomputes 1 + C teacher passes per slide per epoch).
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F

from ..atomic import atomic_path
from ..bags import BagDataset
from ..device import resolve_device
from ..errors import DnDError
from ..models import MILModel
from ..progress import CancelFn, ProgressFn, check_cancelled


def kl_teacher_student(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) ‖ softmax(s/T)), summed over classes and averaged over the batch (``batchmean``)."""
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    p_t = F.softmax(teacher_logits / temperature, dim=-1)
    return F.kl_div(log_p_s, p_t, reduction="batchmean")


def distillation_loss(student_logits: torch.Tensor, target: torch.Tensor, base_logits: torch.Tensor,
                      expert_logits: Sequence[torch.Tensor], *, temperature: float = 1.0, lambda_ce: float = 1.0,
                      lambda_base: float = 1.0, lambda_expert: float = 1.0) -> torch.Tensor:
    """The D&D objective for one batch (``student_logits`` (B, K), teachers' logits of the same shape)."""
    t2 = temperature ** 2
    loss = lambda_ce * F.cross_entropy(student_logits, target)
    if lambda_base:
        loss = loss + lambda_base * t2 * kl_teacher_student(student_logits, base_logits, temperature)
    if lambda_expert and len(expert_logits):
        kl = sum(kl_teacher_student(student_logits, e, temperature) for e in expert_logits)
        loss = loss + (lambda_expert / len(expert_logits)) * t2 * kl
    return loss


@torch.no_grad()
def teacher_logits(teachers: Sequence[MILModel], ds: BagDataset, device="cpu", *,
                   progress: Optional[ProgressFn] = None, cancelled: Optional[CancelFn] = None) -> Dict[str, torch.Tensor]:
    """slide id → (n_teachers, n_classes) float32 logits: one eval-mode pass of every teacher over ``ds``."""
    device = resolve_device(device)
    states = [t.training for t in teachers]
    for t in teachers:
        t.eval().to(device)
    out: Dict[str, torch.Tensor] = {}
    try:
        for i in range(len(ds)):
            check_cancelled(cancelled)
            x, _, sid = ds[i]
            x = x.to(device)
            out[sid] = torch.cat([t(x, scores=False).logits.float().cpu() for t in teachers], dim=0)
            if progress is not None:
                progress(i + 1, len(ds), "teacher soft targets")
    finally:
        for t, s in zip(teachers, states):
            t.train(s)
    return out


def save_teacher_logits(logits: Dict[str, torch.Tensor], path: str | Path, names: List[str]) -> None:
    from safetensors.torch import save_file
    with atomic_path(path) as tmp:
        save_file({sid: v.contiguous() for sid, v in logits.items()}, str(tmp),
                  metadata={"teachers": ",".join(names)})


def load_teacher_logits(path: str | Path) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file
    return load_file(str(path))


class DistillLoss:
    """``loss_fn(logits, target, slide_id)`` for the trainer, reading cached teacher logits (row 0 = base).

    The teachers' tempered probabilities and log-probabilities are computed once here too, so a step adds one
    log-softmax and one weighted sum to the cross-entropy; equal to :func:`distillation_loss` (tested).
    """

    def __init__(self, cached: Dict[str, torch.Tensor], *, temperature: float, lambda_ce: float = 1.0,
                 lambda_base: float = 1.0, lambda_expert: float = 1.0):
        self.t = float(temperature)
        self.lambda_ce = float(lambda_ce)
        self.targets: Dict[str, tuple] = {}
        for sid, logits in cached.items():
            logits = logits.float()
            n_exp = logits.shape[0] - 1
            w = torch.tensor([lambda_base] + [lambda_expert / n_exp] * n_exp if n_exp else [lambda_base],
                             dtype=torch.float32) * self.t ** 2
            z = logits / self.t
            self.targets[sid] = (w[:, None] * torch.softmax(z, dim=-1), torch.log_softmax(z, dim=-1))
        self._device = torch.device("cpu")

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, slide_id: str) -> torch.Tensor:
        try:
            wp, log_p = self.targets[slide_id]
        except KeyError:
            raise DnDError(f"no teacher soft targets for slide {slide_id!r}") from None
        if logits.device != self._device:          # move every target once, on the first step
            self.targets = {k: (a.to(logits.device), b.to(logits.device)) for k, (a, b) in self.targets.items()}
            self._device = logits.device
            wp, log_p = self.targets[slide_id]
        log_ps = torch.log_softmax(logits.float() / self.t, dim=-1)          # (1, K)
        kl = (wp * (log_p - log_ps)).sum()                                     # Σ_i w_i T² KL(p_i ‖ p_s)
        return self.lambda_ce * F.cross_entropy(logits, target) + kl


__all__ = ["DistillLoss", "distillation_loss", "kl_teacher_student", "load_teacher_logits", "save_teacher_logits",
           "teacher_logits"]
