"""A speaker encoder that lives outside ``models/``: proof that an encoder is one module behind the interface.

``model: tests.plugin_encoder`` (a dotted module path) selects it; nothing in the project names it. It
cuts the waveform into 25 ms frames (a strided convolution), pools each row's valid frames into their
mean and standard deviation, and projects them to the embedding: padding never reaches the pooled
statistics, so a padded batch embeds exactly as its rows alone.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from torch import Tensor, nn

from models.encoder import SpeakerEncoder

WINDOW, HOP = 400, 160


class FrameStatistics(SpeakerEncoder):
    padding_is_exact = True

    def __init__(self, hidden: int = 32, nOut: int = 16) -> None:
        super().__init__()
        self.frames = nn.Conv1d(1, hidden, WINDOW, stride=HOP)
        self.embedding = nn.Linear(2 * hidden, nOut)

    @property
    def embedding_size(self) -> int:
        return self.embedding.out_features

    def forward(self, waveforms: Tensor, lengths: Optional[Tensor] = None) -> Tensor:
        frames = torch.relu(self.frames(waveforms.unsqueeze(1)))  # (B, hidden, T)
        if lengths is None:
            valid = torch.ones_like(frames[:, :1])
        else:
            count = (lengths.to(frames.device) - WINDOW) // HOP + 1
            valid = (torch.arange(frames.shape[2], device=frames.device)[None, :] < count[:, None])
            valid = valid.unsqueeze(1).to(frames.dtype)
        count = valid.sum(dim=2)
        mean = (frames * valid).sum(dim=2) / count
        std = ((((frames - mean.unsqueeze(2)) * valid) ** 2).sum(dim=2) / count).clamp_min(1e-8).sqrt()
        return self.embedding(torch.cat([mean, std], dim=1))

    def parameter_groups(self, head_lr: float, backbone_lr: float, layer_decay: float) -> List[Dict[str, Any]]:
        return [{"params": list(self.embedding.parameters()), "lr": head_lr},
                {"params": list(self.frames.parameters()), "lr": backbone_lr}]

    def config(self) -> Dict[str, Any]:
        return {"hidden": self.frames.out_channels, "nOut": self.embedding_size}

    @classmethod
    def config_from_options(cls, nOut: int = 16, **options: Any) -> Dict[str, Any]:
        return {"hidden": 32, "nOut": nOut}


def MainModel(nOut: int = 16, **options: Any) -> FrameStatistics:
    return FrameStatistics(**FrameStatistics.config_from_options(nOut=nOut))


ENCODER = FrameStatistics
