"""AAM-softmax with the dynamic loss gate and label correction (docs/method.md §4).

One module, one loss: additive angular margin logits, a per-sample cross-entropy, a gate that drops
samples whose log-loss exceeds ``lgl_threshold`` (the trainer fits it between epochs with
:func:`loss.gate.LGL_threshold_update_gmm`), and, from ``lc_start_epoch`` on, label correction that
recovers dropped samples whose clean view is confidently assigned to some class.
"""
from __future__ import annotations

import math
from typing import Any, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.errors import InputError

_GATE_OPEN = 1e6


class LossFunction(nn.Module):
    """AAM-softmax + loss gate + label correction.

    ``kwargs`` receives the whole option namespace; options not listed here are ignored.
    Epochs are numbered from 1 as in the trainer.
    """

    def __init__(
        self,
        nOut: int,
        nClasses: int,
        margin: float = 0.3,
        scale: float = 15,
        easy_margin: bool = False,
        gate_start_epoch: int = 5,
        lc_start_epoch: int = 9,
        lc_temperature: float = 0.1,
        lc_confidence: float = 0.5,
        lc_fix_margin: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        for name, value in (("nOut", nOut), ("nClasses", nClasses)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InputError(f"LossFunction: {name} must be a positive integer, got {value!r}")
        if not 0.0 <= margin < math.pi:
            raise InputError(f"LossFunction: margin must lie in [0, pi), got {margin!r}")
        if not scale > 0:
            raise InputError(f"LossFunction: scale must be positive, got {scale!r}")
        if not lc_temperature > 0:
            raise InputError(f"LossFunction: lc_temperature must be positive, got {lc_temperature!r}")
        if not 0.0 <= lc_confidence < 1.0:
            raise InputError(f"LossFunction: lc_confidence must lie in [0, 1), got {lc_confidence!r}")

        self.in_feats = nOut
        self.n_classes = nClasses
        self.m = float(margin)
        self.s = float(scale)
        self.easy_margin = bool(easy_margin)
        self.gate_start_epoch = int(gate_start_epoch)
        self.lc_start_epoch = int(lc_start_epoch)
        self.lc_temperature = float(lc_temperature)
        self.lc_confidence = float(lc_confidence)
        self.lc_fix_margin = bool(lc_fix_margin)
        self.lgl_threshold = _GATE_OPEN

        self.weight = nn.Parameter(torch.empty(nClasses, nOut))
        nn.init.xavier_normal_(self.weight, gain=1)

        self.cos_m = math.cos(self.m)
        self.sin_m = math.sin(self.m)
        # Below cos(pi - m), cos(theta + m) would stop decreasing in theta; use a linear stand-in.
        self.th = math.cos(math.pi - self.m)
        self.mm = math.sin(math.pi - self.m) * self.m

    def gate_update_due(self, epoch: int) -> bool:
        """Whether the trainer refits ``lgl_threshold`` on the previous epoch's losses before ``epoch``."""
        return epoch >= self.gate_start_epoch

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

    def corrected_labels(self, x_clean: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Label correction from the clean view: (argmax class, whether its probability > lc_confidence).

        Uses the unnormalised weight and a sharpened softmax. Only discrete decisions come out,
        so this runs without gradient.
        """
        with torch.no_grad():
            probs = F.softmax(F.linear(x_clean, self.weight) / self.lc_temperature, dim=1)
            label_lc = probs.argmax(dim=1)
            confident = probs.gather(1, label_lc.unsqueeze(1)).squeeze(1) > self.lc_confidence
        return label_lc, confident

    def _check_inputs(self, x: torch.Tensor, x_clean: Optional[torch.Tensor], label: torch.Tensor,
                      use_clean: bool) -> None:
        if x.dim() != 2 or x.size(1) != self.in_feats:
            raise ValueError(f"LossFunction: x must be (batch, {self.in_feats}), got {tuple(x.shape)}")
        if label.dim() != 1 or label.size(0) != x.size(0):
            raise ValueError(f"LossFunction: label must be ({x.size(0)},), got {tuple(label.shape)}")
        if label.dtype != torch.long:
            raise ValueError(f"LossFunction: label must be int64 class indices, got {label.dtype}")
        if label.numel() and (int(label.min()) < 0 or int(label.max()) >= self.n_classes):
            raise ValueError(f"LossFunction: labels must lie in [0, {self.n_classes}), got "
                             f"[{int(label.min())}, {int(label.max())}]; raise nClasses")
        if not use_clean:
            return
        if x_clean is None:
            raise ValueError("LossFunction: label correction (epoch >= lc_start_epoch="
                             f"{self.lc_start_epoch}) needs the clean-view embeddings x_clean, got None")
        if x_clean.shape != x.shape:
            raise ValueError(f"LossFunction: x_clean must have the shape of x {tuple(x.shape)}, "
                             f"got {tuple(x_clean.shape)}")

    def forward(self, x: torch.Tensor, x_clean: Optional[torch.Tensor], label: torch.Tensor,
                epoch: int = -1) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (loss, prec1 in percent, per-sample CE with its graph).

        ``x_clean`` is read only when ``epoch >= lc_start_epoch``. prec1 counts, over the whole batch,
        samples whose arg-max logit equals the gate's target: the label for kept samples, the
        corrected label for recovered ones, and, as in the original, class 0 for the rest.
        """
        use_clean = epoch >= self.lc_start_epoch
        self._check_inputs(x, x_clean, label, use_clean)

        cosine, phi = self._cosine_and_phi(x)
        logits = self._margin_at(cosine, phi, label)
        ce = F.cross_entropy(logits, label, reduction="none")
        kept = torch.log(ce.detach()) <= self.lgl_threshold
        zero = ce.new_zeros(())

        if not use_clean:
            loss = torch.where(kept, ce, zero).sum() / kept.sum().clamp(min=1)
            target = label * kept
        else:
            label_lc, confident = self.corrected_labels(x_clean)
            recovered = ~kept & confident
            logits_lc = self._margin_at(cosine, phi, label_lc) if self.lc_fix_margin else logits
            ce_lc = F.cross_entropy(logits_lc, label_lc, reduction="none")
            loss = (torch.where(kept, ce, zero) + torch.where(recovered, ce_lc, zero)).mean()
            target = label * kept + label_lc * recovered

        prec1 = (logits.detach().argmax(dim=1) == target).float().mean() * 100.0
        return loss, prec1, ce
