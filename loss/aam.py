"""AAM-softmax (additive angular margin; Deng et al., CVPR 2019) without a gate: a plain loss for the speaker trainer.

logits = s·cos(θ_j) for every class j, with cos(θ_y + m) at the label y (a linear stand-in below
cos(π − m), where cos(θ + m) would stop decreasing, unless ``easy_margin``); the loss is the mean
cross-entropy. ``loss/aamsoftmax.py`` adds the published system's loss gate and label correction.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from loss.speaker_loss import SpeakerLoss
from utils.errors import InputError


class AAMSoftmax(SpeakerLoss):
    """``weight`` (nClasses × nOut) holds one row per class; the cosines use the normalised rows."""

    def __init__(self, nOut: int, nClasses: int, margin: float = 0.3, scale: float = 15, easy_margin: bool = False,
                 **kwargs: Any) -> None:
        super().__init__()
        for name, value in (("nOut", nOut), ("nClasses", nClasses)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"LossFunction: {name} must be a positive integer, got {value!r}")
        if not 0.0 <= margin < math.pi:
            raise InputError(f"LossFunction: margin must lie in [0, pi), got {margin!r}")
        if not scale > 0:
            raise InputError(f"LossFunction: scale must be positive, got {scale!r}")
        self.in_feats = nOut
        self.n_classes = nClasses
        self.m = float(margin)
        self.s = float(scale)
        self.easy_margin = bool(easy_margin)
        self.weight = nn.Parameter(torch.empty(nClasses, nOut))
        nn.init.xavier_normal_(self.weight, gain=1)
        self.cos_m = math.cos(self.m)
        self.sin_m = math.sin(self.m)
        self.th = math.cos(math.pi - self.m)
        self.mm = math.sin(math.pi - self.m) * self.m

    def _cosine_and_phi(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """cos(theta) to every class and its margin version phi, both (B, nClasses)."""
        cosine = F.linear(F.normalize(x), F.normalize(self.weight))
        sine = torch.sqrt((1.0 - cosine * cosine).clamp(0, 1))
        phi = cosine * self.cos_m - sine * self.sin_m
        if self.easy_margin:
            phi = torch.where(cosine > 0, phi, cosine)
        else:
            phi = torch.where(cosine > self.th, phi, cosine - self.mm)
        return cosine, phi

    def _margin_at(self, cosine: torch.Tensor, phi: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scaled logits carrying the margin at ``target`` only."""
        at_target = F.one_hot(target, self.n_classes).bool()
        return self.s * torch.where(at_target, phi, cosine)

    def margin_logits(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """AAM logits s*(onehot*phi + (1-onehot)*cos) for embeddings ``x`` (B, nOut)."""
        cosine, phi = self._cosine_and_phi(x)
        return self._margin_at(cosine, phi, target)

    def _check_inputs(self, x: torch.Tensor, label: torch.Tensor) -> None:
        if x.dim() != 2 or x.size(1) != self.in_feats:
            raise ValueError(f"LossFunction: x must be (batch, {self.in_feats}), got {tuple(x.shape)}")
        if label.dim() != 1 or label.size(0) != x.size(0):
            raise ValueError(f"LossFunction: label must be ({x.size(0)},), got {tuple(label.shape)}")
        if label.dtype != torch.long:
            raise ValueError(f"LossFunction: label must be int64 class indices, got {label.dtype}")
        if label.numel() and (int(label.min()) < 0 or int(label.max()) >= self.n_classes):
            raise ValueError(f"LossFunction: labels must lie in [0, {self.n_classes}), got "
                             f"[{int(label.min())}, {int(label.max())}]; raise nClasses")

    def forward(self, x: torch.Tensor, x_clean: Optional[torch.Tensor], label: torch.Tensor,
                epoch: int = -1) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean CE, top-1 accuracy in percent against the labels, per-sample CE); ``x_clean`` is not read."""
        self._check_inputs(x, label)
        logits = self.margin_logits(x, label)
        ce = F.cross_entropy(logits, label, reduction="none")
        prec1 = (logits.detach().argmax(dim=1) == label).float().mean() * 100.0
        return ce.mean(), prec1, ce


LossFunction = AAMSoftmax
