"""The DINO loss: cross-entropy between the centred, sharpened teacher and the student, over view pairs.

With student logits for V views of B utterances and teacher logits for the 2 global views (each a
(B, K) tensor per view; the student's views 0 and 1 are the teacher's two),

    p_t,i = softmax((teacher_i - center) / teacher_temp),   log p_s,j = log_softmax(student_j / student_temp),
    loss = mean over pairs (i, j), i in {0, 1}, j in 0..V-1, j != i, of mean over the batch of -Σ_k p_t,i log p_s,j,

so a view is never compared with itself. After the loss, ``update_center`` moves the centre towards
the batch mean of the raw teacher logits over every process: ``center <- m·center + (1-m)·mean``.
Centring keeps one prototype from winning for every input; sharpening (a low teacher temperature)
keeps the teacher from spreading evenly over all of them (Caron et al., 2021, §3.1, §5.3).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from utils.distributed import get_world_size, is_distributed


@dataclass(frozen=True)
class TeacherStatistics:
    """Figures that tell a healthy teacher from a collapsed one (one process's batch, in nats).

    ``entropy``: mean over samples of the entropy of the centred, sharpened teacher distribution
    (near 0: every sample's distribution is one-hot; near log K: uniform). ``batch_entropy``: entropy
    of the batch-mean distribution (near 0: every sample picks the same prototype). ``kl``: mean over
    view pairs of KL(teacher || student) = cross-entropy − teacher entropy.
    """

    entropy: float
    batch_entropy: float
    kl: float


def entropy(probabilities: Tensor) -> Tensor:
    """Entropy in nats of each row of a (N, K) probability matrix (0·log 0 counted as 0)."""
    return -(probabilities * torch.log(probabilities.clamp_min(torch.finfo(probabilities.dtype).tiny))).sum(dim=-1)


class DINOLoss(nn.Module):
    """The loss above; ``center`` (1, K) is a buffer, so it is saved and restored with the weights."""

    def __init__(self, n_prototypes: int, student_temp: float = 0.1, center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp = student_temp
        self.center_momentum = center_momentum
        self.register_buffer("center", torch.zeros(1, n_prototypes))

    def teacher_probabilities(self, teacher: Tensor, teacher_temp: float) -> Tensor:
        """Centred and sharpened teacher distributions (N, K), float32, without autograd."""
        return F.softmax((teacher.detach().float() - self.center) / teacher_temp, dim=-1)

    def forward(self, student: Sequence[Tensor], teacher: Sequence[Tensor],
                teacher_temp: float) -> Tuple[Tensor, TeacherStatistics]:
        """Logits (B, K) per view, the student's first views being the teacher's; returns (loss, statistics)."""
        if not 0 < len(teacher) <= len(student):
            raise ValueError(f"the teacher's views must be the first of the student's, got {len(teacher)} teacher "
                             f"and {len(student)} student views")
        targets = [self.teacher_probabilities(view, teacher_temp) for view in teacher]
        log_students = [F.log_softmax(view.float() / self.student_temp, dim=-1) for view in student]
        loss = torch.stack([-(target * log_student).sum(dim=-1).mean()
                            for i, target in enumerate(targets)
                            for j, log_student in enumerate(log_students) if j != i]).mean()
        with torch.no_grad():
            # Every teacher view enters the same number of pairs, so the pairs' mean teacher entropy is
            # the mean over all teacher rows, and KL = cross-entropy - entropy holds on the means.
            all_targets = torch.cat(targets)
            per_sample = float(entropy(all_targets).mean())
            statistics = TeacherStatistics(entropy=per_sample,
                                           batch_entropy=float(entropy(all_targets.mean(dim=0, keepdim=True))),
                                           kl=float(loss) - per_sample)
        return loss, statistics

    @torch.no_grad()
    def update_center(self, teacher: Tensor) -> None:
        """``center <- m·center + (1-m)·(mean of the teacher logits over every process's batch)``."""
        batch_sum = teacher.detach().float().sum(dim=0, keepdim=True)
        count = teacher.shape[0]
        if is_distributed():
            dist.all_reduce(batch_sum)
            count *= get_world_size()
        self.center.mul_(self.center_momentum).add_(batch_sum / count, alpha=1.0 - self.center_momentum)
