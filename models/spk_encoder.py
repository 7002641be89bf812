"""The speaker encoder of the published system: a WavLM backbone and an MHFA head.

State-dict keys are ``model.*`` (WavLM, Microsoft names) and ``backend.*`` (MHFA), i.e. the
original checkpoints' ``__S__.model.*`` and ``__S__.backend.*`` without the ``__S__.`` prefix.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from models.mhfa import MHFA
from models.wavlm import WavLM
from models.wavlm_checkpoint import load_pretrained_wavlm
from utils.errors import InputError


class SpeakerEncoder(nn.Module):
    """Waveforms (B, S) to speaker embeddings (B, nOut).

    ``reference_state`` holds the pre-trained WavLM weights (Microsoft key names) for the
    L2-to-pre-trained regulariser; it is a plain attribute, so it is not in ``state_dict()`` and
    does not follow ``.to(device)``.
    """

    def __init__(self, backbone: WavLM, reference_state: Dict[str, Tensor], nOut: int = 256,
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


def MainModel(pretrained_model_path: Optional[str] = None, nOut: int = 256, head_nb: int = 64,
              compression_dim: int = 128, trust_checkpoint: bool = False, **kwargs: Any) -> SpeakerEncoder:
    """Factory called with the whole options namespace; options it does not use are ignored."""
    if not pretrained_model_path:
        raise InputError("the speaker encoder needs --pretrained_model_path (a WavLM checkpoint, "
                         "e.g. WavLM-Base+.pt, or a Hugging Face WavLMModel folder)")
    backbone, reference_state = load_pretrained_wavlm(pretrained_model_path, trust_checkpoint)
    return SpeakerEncoder(backbone, reference_state, nOut=nOut, head_nb=head_nb,
                          compression_dim=compression_dim)
