"""The loss interface of the speaker trainer: a classification loss with optional between-epoch hooks.

A loss is a module ``loss/<trainfunc>.py`` defining ``LossFunction(**options)``, a subclass of
:class:`SpeakerLoss`. The trainer calls ``forward(x, x_clean, label, epoch) -> (loss, prec1, per_sample)``
every step, with ``x_clean`` (the clean view's embeddings, computed without gradient) only in epochs
where ``needs_clean_view(epoch)``, and then only in the rows ``clean_view_rows`` names (the other rows
hold zeros); ``per_sample`` (B,) is written to the epoch's loss file. Between
epochs the main process calls ``before_epoch(epoch, previous_losses)`` with the previous epoch's loss
file; what it changes must be in ``hook_state()``, which the trainer then gives every process
(``load_hook_state``), saves with each checkpoint's resume state and puts in the epoch record.

A plain loss (``loss/aam.py``) keeps every default. ``loss/aamsoftmax.py`` uses them for the dynamic
loss gate (its threshold is the hook state) and label correction (it needs the clean view).
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

from torch import Tensor, nn


class SpeakerLoss(nn.Module):
    """A loss over speaker embeddings and (pseudo-)labels; see the module docstring."""

    def forward(self, x: Tensor, x_clean: Optional[Tensor], label: Tensor,
                epoch: int = -1) -> Tuple[Tensor, Tensor, Tensor]:
        raise NotImplementedError

    def needs_clean_view(self, epoch: int) -> bool:
        """Whether ``forward`` reads the clean view's embeddings in ``epoch``."""
        return False

    def clean_view_rows(self, x: Tensor, label: Tensor, epoch: int) -> Optional[Tensor]:
        """In an epoch that needs the clean view: a (B,) bool mask of the rows whose clean view ``forward``
        reads, from the augmented view's embeddings ``x`` (no gradient); None reads every row."""
        return None

    def step_figures(self) -> Dict[str, float]:
        """Figures of the last ``forward`` for the epoch record (averaged over the epoch's steps)."""
        return {}

    def before_epoch(self, epoch: int, previous_losses: str) -> None:
        """On the main process, before ``epoch``: ``previous_losses`` is the previous epoch's ``LOSS PATH`` file
        (it may not exist, e.g. in a run's first epoch)."""

    def hook_state(self) -> Dict[str, Any]:
        """Plain values that ``before_epoch`` sets and every process needs."""
        return {}

    def load_hook_state(self, state: Mapping[str, Any]) -> None:
        """Take the values of :meth:`hook_state` (from the main process, or from a resume state)."""
