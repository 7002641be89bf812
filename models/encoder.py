"""The speaker encoder interface: what training, evaluation, export, ``embed`` and ``verify`` need from an encoder.

An encoder turns 16 kHz waveforms into speaker embeddings. Every encoder is a subclass of
:class:`SpeakerEncoder` in a module that also defines ``MainModel(**options)`` (the original's factory
name, called with the whole option namespace to build the encoder that training starts from). The
module is found by name through :data:`ENCODERS`; a config's ``model:`` may also be the dotted path of
a module of your own (e.g. ``model: mylab.encoders.tdnn``), which then needs no registry line.

What the rest of the code reads, and nothing else:

- ``forward(waveforms (B, S), lengths (B,) or None) -> (B, embedding_size)``; ``lengths`` gives each
  row's valid samples in a zero-padded batch;
- ``padding_is_exact``: whether a zero-padded row embeds exactly as the row alone (the evaluator then
  batches files of different lengths; otherwise only equal lengths);
- ``parameter_groups(head_lr, backbone_lr, layer_decay)``: the optimiser groups of the two learning
  rates (``--LR_MHFA`` for the head, ``--LR_Transformer`` for the backbone);
- ``reference_weights()``: the initial weights that the L2 regulariser pulls the fine-tuned encoder
  towards, by parameter name (empty: no pull);
- ``config()``: plain values from which ``from_config`` rebuilds the same network (stored in the
  speaker model file; also what ONNX / TorchScript export and ``embed`` / ``verify`` rebuild from);
- ``traceable()``: what ONNX / TorchScript export traces (the encoder itself unless it says otherwise).
"""
from __future__ import annotations

import importlib
from typing import Any, Dict, List, Mapping, Optional, Type

import torch
from torch import Tensor, nn

from utils.errors import InputError

ENCODERS: Dict[str, str] = {
    "wavlm_mhfa": "models.wavlm_mhfa",  # WavLM + MHFA: the published system
    "ecapa_tdnn": "models.ecapa_tdnn",  # ECAPA-TDNN, from a trainDINO.py teacher or random
    "hubert_mhfa": "models.hubert_mhfa",  # HuBERT + MHFA (docs/backbones.md)
    "wav2vec2_mhfa": "models.wav2vec2_mhfa",  # wav2vec 2.0 + MHFA (docs/backbones.md)
}
"""Encoder name (a config's ``model:``) -> the module that defines it."""

ALIASES: Dict[str, str] = {"Baseline.Spk_Encoder": "wavlm_mhfa", "spk_encoder": "wavlm_mhfa"}
"""Other names of registered encoders: the published config's, and this project's earlier one."""


class SpeakerEncoder(nn.Module):
    """Waveforms (B, S) at 16 kHz to speaker embeddings (B, ``embedding_size``); see the module docstring."""

    padding_is_exact: bool = False

    def forward(self, waveforms: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        raise NotImplementedError

    @property
    def embedding_size(self) -> int:
        raise NotImplementedError

    def parameter_groups(self, head_lr: float, backbone_lr: float, layer_decay: float) -> List[Dict[str, Any]]:
        """Optimiser groups of the trainable parameters; the first group is the head's (the trainer adds the
        loss's parameters to it). Every trainable parameter must be in exactly one group."""
        raise NotImplementedError

    def reference_weights(self) -> Dict[str, Tensor]:
        """Initial weights by parameter name, for the L2 pull; the default has none."""
        return {}

    def config(self) -> Dict[str, Any]:
        """Keyword arguments of ``__init__`` (plain values) that rebuild this network."""
        raise NotImplementedError

    def traceable(self) -> nn.Module:
        """The network ONNX / TorchScript export traces: this one, or an equivalent copy where the forward uses an
        operation the exporters do not take."""
        return self

    @classmethod
    def from_config(cls, config: Mapping[str, Any], state: Optional[Mapping[str, Tensor]] = None) -> "SpeakerEncoder":
        """The network of ``config`` built on the meta device, ``state``'s tensors becoming its parameters.

        No weights are initialised or copied. Without ``state`` the parameters stay meta tensors.
        """
        with torch.device("meta"):
            encoder = cls(**config)
        if state is not None:
            encoder.load_state_dict(state, strict=True, assign=True)
        return encoder


def canonical_name(name: str) -> str:
    """The registry name of ``name`` (an alias resolved), or ``name`` unchanged (a module path)."""
    return ALIASES.get(name, name)


def encoder_module(name: str) -> Any:
    """The module defining encoder ``name``: a registry name or alias, or a module's dotted path.

    For the original's ``models.<model>`` plug-ins, a name that is neither is also tried under ``models.``.
    """
    name = canonical_name(name)
    candidates = [ENCODERS[name]] if name in ENCODERS else [name, f"models.{name}"]
    for module_name in candidates:
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name is None or not (module_name == error.name or module_name.startswith(error.name + ".")):
                raise  # the module exists but an import inside it failed: show that
    raise InputError(f"unknown model {name!r}: known encoders are {', '.join(sorted(ENCODERS))} (aliases "
                     f"{', '.join(sorted(ALIASES))}), or give the dotted path of a module defining MainModel")


def get_model_factory(name: str) -> Any:
    """``MainModel`` of encoder ``name``: the factory the trainer calls with the option namespace."""
    module = encoder_module(name)
    factory = getattr(module, "MainModel", None)
    if not callable(factory):
        raise InputError(f"model module {module.__name__} defines no MainModel")
    return factory


def encoder_name(encoder: SpeakerEncoder) -> str:
    """The name that finds ``encoder``'s module again: its registry name, else its module's path."""
    module = type(encoder).__module__
    return next((name for name, path in ENCODERS.items() if path == module), module)


def encoder_class(name: str) -> Type[SpeakerEncoder]:
    """The :class:`SpeakerEncoder` subclass that module ``name`` defines (its ``ENCODER`` attribute)."""
    module = encoder_module(name)
    found = getattr(module, "ENCODER", None)
    if not (isinstance(found, type) and issubclass(found, SpeakerEncoder)):
        raise InputError(f"model module {module.__name__} defines no ENCODER (a SpeakerEncoder subclass)")
    return found
