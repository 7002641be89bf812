"""The trained network: speaker encoder, loss and the L2 pull towards the initial weights (docs/method.md §4, §5).

``SpeakerNet`` keeps the original's attribute names ``__S__`` (encoder) and ``__L__`` (loss), so its
state dict has the original checkpoints' keys: ``__S__.model.*``, ``__S__.backend.*``, ``__L__.weight``.
The encoder is any :class:`models.encoder.SpeakerEncoder` (the config's ``model:``), the loss any
:class:`loss.speaker_loss.SpeakerLoss` (``trainfunc:``).

Differences from the original that leave results unchanged:

* the clean view feeds only label correction's discrete decisions, so it is embedded without autograd,
  only in the epochs where the loss reads it, and only for the rows whose label can change (the rows
  the gate drops: ``SpeakerLoss.clean_view_rows``); the original ran a full autograd forward of the whole
  batch every step. It still runs in train mode (dropout, layer drop), as in the original; with dropout
  on, its random draws therefore differ from the original's (docs/method.md §10). An encoder with batch
  norms (ECAPA-TDNN) embeds it with their running statistics: a handful of rows has no batch statistics
  worth the name, and the clean view must not move the running statistics;
* the reference weights of the L2 term are moved to the training device once (the original copied
  them from the CPU every step).

One divergence, for batches where the loss gate drops every sample (loss exactly 0): the original's
``loss / loss.detach()`` is 0/0 and puts NaN into every weight; here the denominator is floored at
the smallest positive float, so such a step is driven by the L2 term alone. Any other step is unchanged.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from loss import loss_function
from models.encoder import SpeakerEncoder, get_model_factory
from utils.device import bf16_autocast, bf16_autocast_supported
from utils.errors import InputError

logger = logging.getLogger(__name__)

REG_EPSILON = 1e-5
"""Added to the detached L2 distance in its normalisation, as in the original."""


class SpeakerNet(nn.Module):
    """Speaker encoder ``__S__`` (``MainModel`` of the encoder named by ``model``) and loss ``__L__``
    (``LossFunction`` of ``loss/<trainfunc>.py``).

    ``kwargs`` is the whole option namespace; the encoder and the loss pick what they need.
    """

    def __init__(self, model: str, trainfunc: str, nPerSpeaker: int, weight_finetuning_reg: float = 0.001,
                 mixedprec: bool = False, **kwargs: Any) -> None:
        super().__init__()
        self.__S__: SpeakerEncoder = get_model_factory(model)(**kwargs)
        self.__L__ = loss_function(trainfunc)(**kwargs)
        self.nPerSpeaker = nPerSpeaker
        self.weight_finetuning_reg = float(weight_finetuning_reg)
        self.mixedprec = bool(mixedprec)
        self._warned_no_bf16 = False
        self._references = self._reference_tensors()
        if not self._references and self.weight_finetuning_reg:
            logger.info("The encoder has no initial weights to pull towards: the L2 term is off")

    def _reference_tensors(self) -> Dict[str, Tensor]:
        """The encoder's reference weights, in the order of its parameters (the L2 sum's order), shapes checked."""
        reference = self.__S__.reference_weights()
        references = {}
        for name, parameter in self.__S__.named_parameters():
            if name in reference:
                if reference[name].shape != parameter.shape:
                    raise InputError(f"initial weight {name!r} has shape {tuple(reference[name].shape)}, "
                                     f"the model {tuple(parameter.shape)}")
                references[name] = reference[name]
        return references

    def _references_on(self, device: torch.device) -> Dict[str, Tensor]:
        """The reference tensors on ``device``, moved there on first use only."""
        if next(iter(self._references.values())).device != device:
            self._references = {k: v.to(device) for k, v in self._references.items()}
        return self._references

    def weight_distance(self) -> Tensor:
        """r = Σ ‖θ − θ₀‖₂ over every encoder parameter that has a reference weight (0 without any)."""
        parameters = dict(self.__S__.named_parameters())
        if not self._references:
            return next(iter(parameters.values())).new_zeros(())
        references = self._references_on(next(iter(parameters.values())).device)
        return torch.stack([torch.linalg.vector_norm(parameters[name] - ref)
                            for name, ref in references.items()]).sum()

    def needs_clean_view(self, epoch: int) -> bool:
        """Whether the loss reads the clean view's embeddings in ``epoch`` (label correction)."""
        return self.__L__.needs_clean_view(epoch)

    def _autocast(self, device: torch.device) -> torch.autocast:
        if self.mixedprec and not bf16_autocast_supported(device) and not self._warned_no_bf16:
            logger.warning("--mixedprec: bf16 autocast is not supported on %s; training in float32", device)
            self._warned_no_bf16 = True
        return bf16_autocast(device, self.mixedprec)

    def forward(self, augmented: Tensor, clean: Tensor, labels: Tensor,
                epoch: int) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        """One training step's forward: (total objective, loss, top-1 accuracy %, per-sample CE).

        total = loss / loss.detach() + weight_finetuning_reg · r / (r.detach() + 1e-5); the last
        three outputs are detached. The loss runs in float32 whatever the autocast setting.
        """
        device = augmented.device
        with self._autocast(device):
            embeddings = self.__S__(augmented).float()
        clean_embeddings = None
        if self.needs_clean_view(epoch):
            rows = self.__L__.clean_view_rows(embeddings.detach(), labels, epoch)
            clean_embeddings = self.clean_view(clean, rows, embeddings.shape[1])
        loss, prec1, ce = self.__L__(embeddings, clean_embeddings, labels, epoch)
        loss_scale = loss.detach().clamp_min(torch.finfo(loss.dtype).tiny)
        total = loss / loss_scale
        if self._references:
            distance = self.weight_distance()
            total = total + self.weight_finetuning_reg * distance / (distance.detach() + REG_EPSILON)
        return total, loss.detach(), prec1.detach(), ce.detach()

    @torch.no_grad()
    def clean_view(self, clean: Tensor, rows: Optional[Tensor], size: int) -> Tensor:
        """Embeddings (B, size) of the clean view's ``rows`` (every row when None), zeros in the others; no
        forward at all when no row is asked for."""
        if rows is None:
            with self._autocast(clean.device), running_batch_norms(self.__S__):
                return self.__S__(clean).float()
        out = clean.new_zeros(clean.shape[0], size, dtype=torch.float32)
        if bool(rows.any()):
            with self._autocast(clean.device), running_batch_norms(self.__S__):
                out[rows] = self.__S__(clean[rows]).float()
        return out


@contextlib.contextmanager
def running_batch_norms(module: nn.Module) -> Iterator[None]:
    """The batch norms inside ``module`` normalise with their running statistics and leave them as they are."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    for norm in norms:
        norm.eval()
    try:
        yield
    finally:
        for norm in norms:
            norm.train()


def parameter_groups(net: SpeakerNet, LR_MHFA: float, LR_Transformer: float,
                     LLRD_factor: float) -> List[Dict[str, Any]]:
    """AdamW groups (docs/method.md §5): the encoder's head and the loss at LR_MHFA, its backbone at LR_Transformer
    (for WavLM, layer i at LR_Transformer·LLRD_factor^i). Every trainable parameter is in exactly one group."""
    groups = net.__S__.parameter_groups(LR_MHFA, LR_Transformer, LLRD_factor)
    groups[0]["params"] = [*groups[0]["params"], *net.__L__.parameters()]
    grouped = [id(p) for group in groups for p in group["params"]]
    stray = [name for name, p in net.named_parameters() if p.requires_grad and id(p) not in set(grouped)]
    if stray or len(grouped) != len(set(grouped)):
        raise ValueError(f"every trainable parameter must be in exactly one optimiser group; outside: {stray}")
    return groups
