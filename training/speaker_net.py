"""The trained network: speaker encoder, loss and the L2 pull towards the pre-trained weights (docs/method.md §4, §5).

``SpeakerNet`` keeps the original's attribute names ``__S__`` (encoder) and ``__L__`` (loss), so its
state dict has the original checkpoints' keys: ``__S__.model.*``, ``__S__.backend.*``, ``__L__.weight``.

Differences from the original that leave results unchanged:

* the WavLM parameters outside the transformer layers are in no optimiser group (docs/method.md §10:
  they never change); here they are also frozen (``requires_grad=False``), which skips computing gradients
  that the original computed and threw away. Their distance to the pre-trained weights still enters
  the L2 term, as in the original;
* the clean view feeds only label correction's discrete decisions, so it is embedded without autograd
  and only from ``lc_start_epoch`` on (the original ran a full autograd forward of it every step). It
  still runs in train mode (dropout, layer drop), as in the original;
* the pre-trained reference weights of the L2 term are moved to the training device once (the
  original copied them from the CPU every step).

One divergence, for batches where the loss gate drops every sample (loss exactly 0): the original's
``loss / loss.detach()`` is 0/0 and puts NaN into every weight; here the denominator is floored at
the smallest positive float, so such a step is driven by the L2 term alone. Any other step is unchanged.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any, Dict, List, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from models import get_model_factory
from utils.errors import InputError

logger = logging.getLogger(__name__)

REG_EPSILON = 1e-5
"""Added to the detached L2 distance in its normalisation, as in the original."""


def bf16_autocast_supported(device: torch.device) -> bool:
    """Whether bf16 autocast runs on ``device`` (every CPU; CUDA devices with bf16 support)."""
    if device.type == "cpu":
        return True
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return False


def bf16_autocast(device: torch.device, wanted: bool) -> torch.autocast:
    """bf16 autocast on ``device`` when ``wanted`` (``--mixedprec``) and supported there, else a disabled one."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                          enabled=wanted and bf16_autocast_supported(device))


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper (or ``model`` itself)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class SpeakerNet(nn.Module):
    """Speaker encoder ``__S__`` (``models.<model>.MainModel``) and loss ``__L__`` (``loss.<trainfunc>``).

    ``kwargs`` is the whole option namespace; the encoder and the loss pick what they need.
    The encoder must expose ``model`` (the WavLM, with ``encoder.layers``) and ``reference_state``
    (pre-trained weights by WavLM parameter name).
    """

    def __init__(self, model: str, trainfunc: str, nPerSpeaker: int, weight_finetuning_reg: float = 0.001,
                 mixedprec: bool = False, **kwargs: Any) -> None:
        super().__init__()
        self.__S__ = get_model_factory(model)(**kwargs)
        self.__L__ = importlib.import_module("loss." + trainfunc).LossFunction(**kwargs)
        self.nPerSpeaker = nPerSpeaker
        self.weight_finetuning_reg = float(weight_finetuning_reg)
        self.mixedprec = bool(mixedprec)
        self._warned_no_bf16 = False
        self._freeze_outside_layers()
        self._references = self._reference_tensors()

    @property
    def layers(self) -> nn.ModuleList:
        """The backbone's transformer layers (12 in Base+, 24 in Large)."""
        return self.__S__.model.encoder.layers

    def _freeze_outside_layers(self) -> None:
        in_layers = {id(p) for p in self.layers.parameters()}
        for parameter in self.__S__.model.parameters():
            if id(parameter) not in in_layers:
                parameter.requires_grad_(False)

    def _reference_tensors(self) -> Dict[str, Tensor]:
        """Pre-trained tensors for every WavLM parameter the checkpoint holds.

        Every trainable WavLM parameter must have one: the L2 term then reaches it every step, even
        in a layer that layer drop skipped, which is why DDP needs no ``find_unused_parameters``.
        """
        reference_state = self.__S__.reference_state
        references = {}
        for name, parameter in self.__S__.model.named_parameters():
            if name not in reference_state:
                if parameter.requires_grad:
                    raise InputError(f"the pre-trained checkpoint lacks trainable WavLM parameter {name!r}")
                continue
            if reference_state[name].shape != parameter.shape:
                raise InputError(f"pre-trained {name!r} has shape {tuple(reference_state[name].shape)}, "
                                 f"the model {tuple(parameter.shape)}")
            references[name] = reference_state[name]
        return references

    def _references_on(self, device: torch.device) -> Dict[str, Tensor]:
        """The reference tensors on ``device``, moved there on first use only."""
        if next(iter(self._references.values())).device != device:
            self._references = {k: v.to(device) for k, v in self._references.items()}
        return self._references

    def weight_distance(self) -> Tensor:
        """r = Σ ‖θ − θ₀‖₂ over every WavLM parameter present in the pre-trained checkpoint."""
        parameters = dict(self.__S__.model.named_parameters())
        references = self._references_on(next(iter(parameters.values())).device)
        return torch.stack([torch.linalg.vector_norm(parameters[name] - ref)
                            for name, ref in references.items()]).sum()

    def needs_clean_view(self, epoch: int) -> bool:
        """Whether the loss reads the clean view's embeddings in ``epoch`` (label correction)."""
        return epoch >= self.__L__.lc_start_epoch

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
            embeddings = self.__S__(augmented)
        clean_embeddings = None
        if self.needs_clean_view(epoch):
            with torch.no_grad(), self._autocast(device):
                clean_embeddings = self.__S__(clean).float()
        loss, prec1, ce = self.__L__(embeddings.float(), clean_embeddings, labels, epoch)
        distance = self.weight_distance()
        loss_scale = loss.detach().clamp_min(torch.finfo(loss.dtype).tiny)
        total = loss / loss_scale + self.weight_finetuning_reg * distance / (distance.detach() + REG_EPSILON)
        return total, loss.detach(), prec1.detach(), ce.detach()


def parameter_groups(net: SpeakerNet, LR_MHFA: float, LR_Transformer: float,
                     LLRD_factor: float) -> List[Dict[str, Any]]:
    """AdamW groups (docs/method.md §5): everything outside WavLM at LR_MHFA, layer i at LR_Transformer·LLRD_factor^i.

    The other WavLM parameters belong to no group (docs/method.md §10), for every depth of backbone.
    """
    in_wavlm = {id(p) for p in net.__S__.model.parameters()}
    groups = [{"params": [p for p in net.parameters() if id(p) not in in_wavlm], "lr": LR_MHFA}]
    for index, layer in enumerate(net.layers):
        groups.append({"params": list(layer.parameters()), "lr": LR_Transformer * LLRD_factor ** index})
    grouped = {id(p) for group in groups for p in group["params"]}
    stray = [name for name, p in net.named_parameters() if p.requires_grad and id(p) not in grouped]
    if stray:
        raise ValueError(f"trainable parameters outside every optimiser group: {stray}")
    return groups
