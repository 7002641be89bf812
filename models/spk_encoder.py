"""The speaker encoder of the published system: a WavLM backbone and an MHFA head.

State-dict keys are ``model.*`` (WavLM, Microsoft names) and ``backend.*`` (MHFA), i.e. the
original checkpoints' ``__S__.model.*`` and ``__S__.backend.*`` without the ``__S__.`` prefix.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

import torch
from torch import Tensor, nn

from models.mhfa import MHFA
from models.pretrained import resolve_pretrained
from models.wavlm import WavLM, WavLMConfig
from models.wavlm_checkpoint import load_pretrained_wavlm
from utils.errors import InputError


class SpeakerEncoder(nn.Module):
    """Waveforms (B, S) to speaker embeddings (B, nOut).

    ``reference_state`` holds the pre-trained WavLM weights (Microsoft key names) for the
    L2-to-pre-trained regulariser; it is a plain attribute, so it is not in ``state_dict()`` and
    does not follow ``.to(device)``. An encoder that is not trained (:func:`encoder_from_config`)
    has none.
    """

    def __init__(self, backbone: WavLM, reference_state: Optional[Dict[str, Tensor]] = None, nOut: int = 256,
                 head_nb: int = 64, compression_dim: int = 128):
        super().__init__()
        self.model = backbone
        self.backend = MHFA(num_layers=backbone.num_hidden_states, inputs_dim=backbone.embed_dim,
                            head_nb=head_nb, compression_dim=compression_dim, outputs_dim=nOut)
        self.reference_state = reference_state

    def forward(self, waveforms: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        """``lengths`` (B,) gives each row's valid samples; see :meth:`WavLM.forward` for padding."""
        hidden_states = self.model(waveforms, lengths)
        frame_mask = None
        if lengths is not None:
            frames = torch.arange(hidden_states[0].shape[1], device=waveforms.device)
            frame_mask = frames[None, :] < self.model.frame_lengths(lengths).to(waveforms.device)[:, None]
        return self.backend(hidden_states, frame_mask)


def encoder_from_config(cfg: WavLMConfig, nOut: int, head_nb: int, compression_dim: int,
                        state: Optional[Mapping[str, Tensor]] = None) -> SpeakerEncoder:
    """An encoder of these shapes, its tensors ``state``'s own (keys ``model.*``, ``backend.*``).

    It is built on the meta device, so no weights are initialised, read or copied: ``state``'s tensors
    become the parameters (``load_state_dict(assign=True)``, every key required). Without ``state``
    the parameters stay meta tensors (shapes only) until something is assigned to them.
    """
    with torch.device("meta"):
        encoder = SpeakerEncoder(WavLM(cfg), nOut=nOut, head_nb=head_nb, compression_dim=compression_dim)
    if state is not None:
        encoder.load_state_dict(state, strict=True, assign=True)
    return encoder


def MainModel(pretrained_model_path: Optional[str] = None, nOut: int = 256, head_nb: int = 64,
              compression_dim: int = 128, trust_checkpoint: bool = False, model_cache: Optional[str] = None,
              **kwargs: Any) -> SpeakerEncoder:
    """Factory called with the whole options namespace; options it does not use are ignored."""
    if not pretrained_model_path:
        raise InputError("the speaker encoder needs --pretrained_model_path (a WavLM checkpoint, "
                         "e.g. WavLM-Base+.pt, a Hugging Face WavLMModel folder, or a known name such as "
                         "wavlm-base-plus)")
    path = resolve_pretrained(pretrained_model_path, model_cache)
    backbone, reference_state = load_pretrained_wavlm(path, trust_checkpoint)
    return SpeakerEncoder(backbone, reference_state, nOut=nOut, head_nb=head_nb,
                          compression_dim=compression_dim)
