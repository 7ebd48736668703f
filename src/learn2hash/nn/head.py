"""The hash head and the full hashing network (backbone + head).

``HashHead`` is ``len(hidden)`` fully connected layers with ReLU (and optional dropout) followed
by a linear layer of K units; ``HashModel`` applies ``tanh(scale * a)`` to those K pre-activations
``a``, giving continuous codes ``u`` in (-1, 1) whose signs are the bits (u >= 0 -> bit 1).
``scale`` is 1 unless a method changes it (HashNet's continuation raises it each epoch); it is
not part of the weights.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from learn2hash.nn.registry import Backbone


class HashHead(nn.Module):
    """``in_dim`` features -> K pre-activations, through ``hidden`` fc + ReLU layers."""

    def __init__(self, in_dim: int, bits: int, hidden: Sequence[int] = (), dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        dim = int(in_dim)
        for h in hidden:
            layers += [nn.Linear(dim, int(h)), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(float(dropout)))
            dim = int(h)
        layers.append(nn.Linear(dim, int(bits)))
        self.net = nn.Sequential(*layers)
        self.bits = int(bits)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features)


class HashModel(nn.Module):
    """Backbone + hash head. ``forward(x)`` gives ``u = tanh(scale * a)``, ``[n, K]``.

    ``forward(x, return_logits=True)`` gives ``(u, logits)`` with ``logits = scale * a``, so that
    ``u = tanh(logits)`` and ``(u + 1) / 2 = sigmoid(2 * logits)`` (numerically stable losses).
    """

    def __init__(self, backbone: Backbone, head: HashHead):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.scale = 1.0

    @property
    def bits(self) -> int:
        return self.head.bits

    def forward(self, x: torch.Tensor, return_logits: bool = False):
        logits = self.scale * self.head(self.backbone(x))
        u = torch.tanh(logits)
        return (u, logits) if return_logits else u
