"""DCH — Deep Cauchy Hashing for Hamming space retrieval (Cao, Long, Liu & Wang, CVPR 2018).

Distances between continuous codes are the normalised Hamming distance
``d(u_i, u_j) = K/2 * (1 - cos(u_i, u_j))`` (equal to the Hamming distance for +-1 codes). The
Cauchy distribution ``P(s_ij = 1) = gamma / (gamma + d_ij)`` gives the Cauchy cross-entropy

    L = (1/|S|) * sum_ij w_ij * (s_ij * log(1 + d_ij/gamma) + (1 - s_ij) * log(1 + gamma/d_ij))

with the HashNet pair weights (``|S|/|S1|``, ``|S|/|S0|``), and the Cauchy quantization loss
``Q = mean_i log(1 + d(|u_i|, 1)/gamma)``; the loss is ``L + lam * Q``. ``gamma`` = 20 as the
paper. As the authors' code, the cosine is capped at 0.99 in L, so ``d >= 0.005 K`` and
``log(1 + gamma/d)`` stays finite for dissimilar pairs with equal codes.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from learn2hash.methods.deep import DeepHasher, TrainingTask
from learn2hash.methods.pairwise import PAIRWISE_EPOCHS, balanced_weights, label_similarity, off_diagonal
from learn2hash.methods.registry import register
from learn2hash.methods.validation import Interval
from learn2hash.train import Batch

MAX_COS = 0.99
_MIN_NORM = 1e-4


def normalized_hamming(u: torch.Tensor, v: torch.Tensor, max_cos: float = 1.0) -> torch.Tensor:
    """``K/2 * (1 - min(cos(u_i, v_j), max_cos))`` for all pairs, ``[b, m]``."""
    k = u.shape[1]
    norms = u.norm(dim=1, keepdim=True) @ v.norm(dim=1, keepdim=True).T
    cos = (u @ v.T) / norms.clamp(min=_MIN_NORM)
    return 0.5 * k * (1.0 - cos.clamp(max=max_cos))


def dch_loss(u: torch.Tensor, v: torch.Tensor, s: torch.Tensor, mask: torch.Tensor, gamma: float,
             quantization_weight: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, Cauchy cross-entropy, Cauchy quantization) for ``u [b, K]`` against ``v [m, K]``."""
    d = normalized_hamming(u, v, MAX_COS)
    pair_loss = s * torch.log1p(d / gamma) + (1.0 - s) * torch.log1p(gamma / d)
    w = balanced_weights(s, mask)
    pair = (w * pair_loss).sum() / mask.float().sum().clamp(min=1.0)
    a = u.abs()
    k = u.shape[1]
    d_quant = 0.5 * k * (1.0 - a.sum(dim=1) / (a.norm(dim=1).clamp(min=_MIN_NORM) * math.sqrt(k)))
    quant = torch.log1p(d_quant / gamma).mean()
    return pair + quantization_weight * quant, pair, quant


@register
class DCH(DeepHasher):
    """Deep Cauchy Hashing: Cauchy cross-entropy on normalised Hamming distances + Cauchy quantization.

    ``gamma``: the Cauchy scale (20, the paper); ``lam``: weight of the quantization loss (0.1).
    """

    name = "dch"
    supervised = True
    _parameter_constraints = {"gamma": [Interval("real", 0, closed="neither")], "lam": [Interval("real", 0)]}

    shared_defaults = {"epochs": PAIRWISE_EPOCHS}

    def __init__(self, bits: int = 64, gamma: float = 20.0, lam: float = 0.1, **deep: Any):
        super().__init__(bits=bits, **deep)
        self.gamma = gamma
        self.lam = lam

    def loss(self, task: TrainingTask, u: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        s = label_similarity(batch.labels, batch.labels)
        total, pair, quant = dch_loss(u, u, s, off_diagonal(len(u), u.device), float(self.gamma), float(self.lam))
        return total, {"cauchy": float(pair.detach()), "quantization": float(quant.detach())}
