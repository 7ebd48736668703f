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

from learn2hash.nn.fixed_order import channel_sums
from learn2hash.nn.registry import Backbone


class HashHead(nn.Module):
    """``in_dim`` features -> K pre-activations, through ``hidden`` fc + ReLU layers; with
    ``batch_norm`` the K outputs pass through a ``BatchNorm1d(K)`` (OrthoHash's hash layer)."""

    def __init__(self, in_dim: int, bits: int, hidden: Sequence[int] = (), dropout: float = 0.0,
                 batch_norm: bool = False):
        super().__init__()
        layers: list[nn.Module] = []
        dim = int(in_dim)
        for h in hidden:
            layers += [nn.Linear(dim, int(h)), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(float(dropout)))
            dim = int(h)
        layers.append(nn.Linear(dim, int(bits)))
        if batch_norm:
            layers.append(nn.BatchNorm1d(int(bits)))
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


@torch.no_grad()
def standardize_head(model: "HashModel", xb: torch.Tensor, target: float = 1.0) -> None:
    """Rescale the head's output layer so that its pre-activations on the batch ``xb`` have mean 0
    and standard deviation ``target`` in every bit, as a training step sees them (BatchNorm on batch
    statistics). Nothing else changes: BatchNorm running statistics and the random generators are
    as they were. At PyTorch's default initialisation the pre-activations vary between items by
    about 0.07 around biases of about 0.2, so every item starts with nearly the same code; after
    this, each bit starts balanced over the items and the codes of different items differ.
    """
    out = [m for m in model.head.net if isinstance(m, nn.Linear)][-1]
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    was_training = model.training
    devices = [xb.device.index or 0] if xb.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        model.train()
        a = model.head(model.backbone(xb)).float()
    for name, b in model.named_buffers():
        b.copy_(buffers[name])
    model.train(was_training)
    # float64 sums over the items, one bit at a time: the same bits at any thread count
    a = a.double()
    mean = channel_sums(a) / len(a)
    std = (channel_sums((a - mean) ** 2) / max(len(a) - 1, 1)).sqrt().clamp_min(1e-6)
    scale = (float(target) / std).to(out.weight.dtype)
    mean = mean.to(out.weight.dtype)
    out.weight.mul_(scale[:, None])
    if out.bias is not None:
        out.bias.sub_(mean.to(out.bias.dtype)).mul_(scale)
