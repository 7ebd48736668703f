"""HashNet — deep learning to hash by continuation (Cao, Long, Wang & Yu, ICCV 2017).

Weighted maximum likelihood over the pairs of a batch: with ``theta_ij = alpha * <u_i, u_j>``,

    L = (1/|S|) * sum_ij w_ij * (log(1 + exp(theta_ij)) - s_ij * theta_ij)

with ``w_ij = |S|/|S1|`` on similar and ``|S|/|S0|`` on dissimilar pairs (so similar and
dissimilar pairs weigh the same in total, however rare either is), ``alpha`` the sigmoid's scale
(10/K by default, the authors' setting), and continuous codes ``u = tanh(beta_t * a)`` where ``a``
are the network's pre-activations and ``beta_t = (1 + gamma * t)^power`` grows with the
optimisation step ``t`` (the continuation; gamma 0.005 and power 0.5 as the authors' code, which
raises beta every 200 steps — here every step). Binary codes are ``sign(a)``, the limit of
``tanh(beta * a)`` for any beta. HashNet has no quantization term: continuation does that work.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from learn2hash.methods.deep import DeepHasher, TrainingTask
from learn2hash.methods.pairwise import PAIRWISE_EPOCHS, balanced_weights, label_similarity, off_diagonal
from learn2hash.methods.registry import register
from learn2hash.methods.validation import Interval
from learn2hash.train import Batch


def hashnet_loss(u: torch.Tensor, v: torch.Tensor, s: torch.Tensor, mask: torch.Tensor, alpha: float) -> torch.Tensor:
    """HashNet's weighted pairwise likelihood for ``u [b, K]`` against ``v [m, K]`` (see the module)."""
    theta = alpha * (u @ v.T)
    w = balanced_weights(s, mask)
    return (w * (F.softplus(theta) - s * theta)).sum() / mask.float().sum().clamp(min=1.0)


def continuation_beta(step: int, gamma: float = 0.005, power: float = 0.5) -> float:
    """``beta_t = (1 + gamma * t)^power``: the tanh sharpness at optimisation step ``t`` (0-based)."""
    return (1.0 + gamma * step) ** power


@register
class HashNet(DeepHasher):
    """HashNet: balanced pairwise likelihood with ``tanh(beta * a)``, beta raised by continuation.

    ``alpha``: sigmoid scale (``None`` = 10/K); ``gamma`` and ``power``: the continuation schedule.
    """

    name = "hashnet"
    recipe_epochs = PAIRWISE_EPOCHS
    supervised = True
    _parameter_constraints = {"alpha": [None, Interval("real", 0, closed="neither")],
                              "gamma": [Interval("real", 0)], "power": [Interval("real", 0)]}

    def __init__(self, bits: int = 64, alpha: float | None = None, gamma: float = 0.005, power: float = 0.5,
                 **deep: Any):
        super().__init__(bits=bits, **deep)
        self.alpha = alpha
        self.gamma = gamma
        self.power = power

    def sigmoid_scale(self) -> float:
        return 10.0 / self.bits if self.alpha is None else float(self.alpha)

    def loss(self, task: TrainingTask, u: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        beta = continuation_beta(batch.step, float(self.gamma), float(self.power))
        # batch.logits = model.scale * a with model.scale left at 1: the continuation lives here
        ub = torch.tanh(beta * batch.logits)
        s = label_similarity(batch.labels, batch.labels)
        loss = hashnet_loss(ub, ub, s, off_diagonal(len(ub), ub.device), self.sigmoid_scale())
        return loss, {"beta": beta}
