"""Multi-head factorised attentive pooling (MHFA; Peng et al., SLT 2022).

Keys and values are two learned softmax-weighted sums of the backbone's hidden states. Both are
compressed; each head computes attention weights over time from the compressed keys and pools the
compressed values; the heads' pooled vectors are concatenated and projected to the embedding.
Parameter names are those of the original checkpoints (``__S__.backend.*``).
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import Tensor, nn


class MHFA(nn.Module):
    def __init__(self, num_layers: int, inputs_dim: int = 768, head_nb: int = 64,
                 compression_dim: int = 128, outputs_dim: int = 256):
        super().__init__()
        self.weights_k = nn.Parameter(torch.ones(num_layers))
        self.weights_v = nn.Parameter(torch.ones(num_layers))
        self.cmp_linear_k = nn.Linear(inputs_dim, compression_dim)
        self.cmp_linear_v = nn.Linear(inputs_dim, compression_dim)
        self.att_head = nn.Linear(compression_dim, head_nb)
        self.pooling_fc = nn.Linear(head_nb * compression_dim, outputs_dim)

    def forward(self, hidden_states: Sequence[Tensor], frame_mask: Optional[Tensor] = None) -> Tensor:
        """Embed (B, outputs_dim) from ``num_layers`` hidden states of shape (B, T, inputs_dim).

        ``frame_mask`` (B, T) bool marks the real frames with True; the other frames get zero
        attention weight, so a padded row pools exactly like its unpadded frames alone.
        """
        if len(hidden_states) != self.weights_k.numel():
            raise ValueError(f"MHFA expects {self.weights_k.numel()} hidden states, got {len(hidden_states)}")
        stacked = torch.stack(tuple(hidden_states), dim=-1)  # (B, T, D, L)
        layer_weights = torch.stack((self.weights_k, self.weights_v), dim=1).softmax(dim=0)  # (L, 2)
        mixed = stacked @ layer_weights.to(stacked.dtype)  # (B, T, D, 2)
        keys = self.cmp_linear_k(mixed[..., 0])
        values = self.cmp_linear_v(mixed[..., 1])  # (B, T, C)
        logits = self.att_head(keys)  # (B, T, H)
        if frame_mask is not None:
            if frame_mask.shape != logits.shape[:2] or frame_mask.dtype != torch.bool:
                raise ValueError(f"frame_mask must be a bool tensor of shape {tuple(logits.shape[:2])}, "
                                 f"got {frame_mask.dtype} {tuple(frame_mask.shape)}")
            logits = logits.masked_fill(~frame_mask.unsqueeze(-1), float("-inf"))
        attention = logits.softmax(dim=1)
        pooled = torch.einsum("bth,btc->bhc", attention, values)  # (B, H, C)
        return self.pooling_fc(pooled.flatten(1))
