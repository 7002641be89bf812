"""The networks of DINO (Caron et al., ICCV 2021) as sslsv trains them for speakers: a backbone and a projection head.

:class:`DINOHead` maps an embedding to logits over K prototypes: an MLP (hidden, hidden, bottleneck;
GELU; batch norm after each hidden layer as in sslsv, optional), L2 normalisation of the bottleneck,
then a weight-normalised linear layer without bias whose gain is fixed to 1, i.e. cosine
similarities with K learnt prototype directions. :class:`MultiCropNetwork` runs the backbone and
the head on views of several lengths; the student and the teacher are two of them, held with the loss
by :class:`DINOModel`.
"""
from __future__ import annotations

import copy
from typing import List

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PrototypeLayer(nn.Module):
    """``x @ normalize(weight).T``: the weight-normalised last layer with its gain fixed to 1.

    Equal to ``nn.utils.weight_norm(nn.Linear(dim, K, bias=False))`` with ``weight_g`` set to 1 and
    frozen, as DINO and sslsv use it, without the deprecated hook and with one tensor in the state dict.
    """

    def __init__(self, in_dim: int, n_prototypes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(n_prototypes, in_dim))
        nn.init.trunc_normal_(self.weight, std=0.02)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, F.normalize(self.weight, dim=1))


class DINOHead(nn.Module):
    """Embedding (N, in_dim) -> logits (N, n_prototypes)."""

    def __init__(self, in_dim: int, hidden_dim: int = 2048, bottleneck_dim: int = 256, n_prototypes: int = 65536,
                 batch_norm: bool = True) -> None:
        super().__init__()
        layers: List[nn.Module] = []
        for width_in in (in_dim, hidden_dim):
            layers.append(nn.Linear(width_in, hidden_dim))
            if batch_norm:
                layers.append(nn.BatchNorm1d(hidden_dim))
            layers.append(nn.GELU())
        layers.append(nn.Linear(hidden_dim, bottleneck_dim))
        self.mlp = nn.Sequential(*layers)
        for module in self.mlp:
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        self.last_layer = PrototypeLayer(bottleneck_dim, n_prototypes)

    def forward(self, x: Tensor) -> Tensor:
        return self.last_layer(F.normalize(self.mlp(x), dim=-1))


class MultiCropNetwork(nn.Module):
    """Backbone + head over groups of views: ``forward(*groups)`` with each group (N_g, S_g) of one length.

    Each group goes through the backbone and the head as one batch (its batch-norm statistics are
    the group's, as in sslsv, which runs global and local views separately); the logits of all
    groups are concatenated in the order given.
    """

    def __init__(self, backbone: nn.Module, head: DINOHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, *groups: Tensor) -> Tensor:
        return torch.cat([self.head(self.backbone(group)) for group in groups if group.shape[0] > 0])


class DINOModel(nn.Module):
    """Student and teacher (each a backbone and a DINO head) and the loss with its centre (``loss.center``).

    The teacher starts as a copy of the student and never requires gradients. This module's state dict
    (``student.*``, ``teacher.*``, ``loss.*``) is what a trainDINO.py checkpoint's model file holds; the
    loss module is given (loss/dino.py's ``DINOLoss``: its centre is part of the training state).
    """

    def __init__(self, backbone: nn.Module, head: DINOHead, loss: nn.Module) -> None:
        super().__init__()
        self.student = MultiCropNetwork(backbone, head)
        self.teacher = copy.deepcopy(self.student)
        self.teacher.requires_grad_(False)
        self.loss = loss

    def reset_teacher(self) -> None:
        """Make the teacher a copy of the student (weights and batch-norm statistics)."""
        self.teacher.load_state_dict(self.student.state_dict())
