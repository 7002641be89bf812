"""AAM-softmax with the dynamic loss gate and label correction: the published system's loss (docs/method.md §4).

The AAM logits of :mod:`loss.aam`, a per-sample cross-entropy, a gate that drops samples whose
log-loss exceeds ``lgl_threshold``, and, from ``lc_start_epoch`` on, label correction that recovers
dropped samples whose clean view is confidently assigned to some class. Both are hooks of the loss
interface (loss/speaker_loss.py): before each epoch from ``gate_start_epoch`` on, the main process fits
the threshold on the previous epoch's losses (:func:`loss.gate.LGL_threshold_update_gmm`), and the
threshold is the hook state every process receives and a resume restores.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F

from loss.aam import AAMSoftmax
from loss.gate import LGL_threshold_update_gmm
from utils.errors import InputError

logger = logging.getLogger(__name__)

_GATE_OPEN = 1e6


class LossFunction(AAMSoftmax):
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
        super().__init__(nOut, nClasses, margin, scale, easy_margin)
        if not lc_temperature > 0:
            raise InputError(f"LossFunction: lc_temperature must be positive, got {lc_temperature!r}")
        if not 0.0 <= lc_confidence < 1.0:
            raise InputError(f"LossFunction: lc_confidence must lie in [0, 1), got {lc_confidence!r}")
        self.gate_start_epoch = int(gate_start_epoch)
        self.lc_start_epoch = int(lc_start_epoch)
        self.lc_temperature = float(lc_temperature)
        self.lc_confidence = float(lc_confidence)
        self.lc_fix_margin = bool(lc_fix_margin)
        self.lgl_threshold = _GATE_OPEN
        self._figures: Dict[str, float] = {}

    def needs_clean_view(self, epoch: int) -> bool:
        return epoch >= self.lc_start_epoch

    def kept(self, ce: torch.Tensor) -> torch.Tensor:
        """The gate: the samples whose log cross-entropy is at most the threshold."""
        return torch.log(ce.detach()) <= self.lgl_threshold

    def clean_view_rows(self, x: torch.Tensor, label: torch.Tensor, epoch: int) -> Optional[torch.Tensor]:
        """The rows the gate drops: only their corrected label can enter the loss and the accuracy."""
        with torch.no_grad():
            return ~self.kept(F.cross_entropy(self.margin_logits(x, label), label, reduction="none"))

    def before_epoch(self, epoch: int, previous_losses: str) -> None:
        """From ``gate_start_epoch`` on, refit the gate threshold on the previous epoch's losses.

        A missing file (a run resumed from a checkpoint copied without its loss files) or a fit
        without a single crossing keeps the current threshold.
        """
        if epoch < self.gate_start_epoch:
            return
        if not os.path.isfile(previous_losses):
            logger.warning("No per-sample loss file %s; keeping the gate threshold at %g", previous_losses,
                           self.lgl_threshold)
            return
        self.lgl_threshold = float(LGL_threshold_update_gmm(previous_losses, self.lgl_threshold))
        logger.info("Gate threshold (log CE) %.6g from %s", self.lgl_threshold, previous_losses)

    def hook_state(self) -> Dict[str, Any]:
        return {"gate_threshold": float(self.lgl_threshold)}

    def load_hook_state(self, state: Mapping[str, Any]) -> None:
        self.lgl_threshold = float(state["gate_threshold"])

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

    def _check_clean(self, x: torch.Tensor, x_clean: Optional[torch.Tensor]) -> None:
        if x_clean is None:
            raise ValueError("LossFunction: label correction (epoch >= lc_start_epoch="
                             f"{self.lc_start_epoch}) needs the clean-view embeddings x_clean, got None")
        if x_clean.shape != x.shape:
            raise ValueError(f"LossFunction: x_clean must have the shape of x {tuple(x.shape)}, "
                             f"got {tuple(x_clean.shape)}")

    def forward(self, x: torch.Tensor, x_clean: Optional[torch.Tensor], label: torch.Tensor,
                epoch: int = -1) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return (loss, prec1 in percent, per-sample CE with its graph).

        ``x_clean`` is read only when ``epoch >= lc_start_epoch``, and only in the rows the gate drops
        (:meth:`clean_view_rows`): the corrected label of a kept row is never used. prec1 counts, over the whole batch,
        samples whose arg-max logit equals the gate's target: the label for kept samples, the
        corrected label for recovered ones, and, as in the original, class 0 for the rest.
        """
        use_clean = self.needs_clean_view(epoch)
        self._check_inputs(x, label)
        if use_clean:
            self._check_clean(x, x_clean)

        cosine, phi = self._cosine_and_phi(x)
        logits = self._margin_at(cosine, phi, label)
        ce = F.cross_entropy(logits, label, reduction="none")
        kept = self.kept(ce)
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
        self._figures = {"kept": float(kept.float().mean())}
        if use_clean:
            self._figures["recovered"] = float(recovered.float().mean())
        return loss, prec1, ce

    def step_figures(self) -> Dict[str, float]:
        """The fraction of the batch the gate kept and, under label correction, the fraction it recovered."""
        return self._figures
