"""HashNet — deep learning to hash by continuation (Cao, Long, Wang & Yu, ICCV 2017).

Weighted maximum likelihood over the pairs of a batch: with ``theta_ij = alpha * <u_i, u_j>``,

    L = (1/|S|) * sum_ij w_ij * (log(1 + exp(theta_ij)) - s_ij * theta_ij)

with ``w_ij = |S|/|S1|`` on similar and ``|S|/|S0|`` on dissimilar pairs (so similar and
dissimilar pairs weigh the same in total, however rare either is), ``alpha`` the sigmoid's scale
(10/K by default, the authors' setting), and continuous codes ``u = tanh(beta_t * a)`` where ``a``
are the network's pre-activations and ``beta_t = (1 + gamma * t)^power`` grows with the
optimisation step ``t`` (the continuation; power 0.5 as the authors' code, which raises beta every
200 steps — here every step). Binary codes are ``sign(a)``, the limit of ``tanh(beta * a)`` for
any beta. HashNet has no quantization term: continuation does that work.

``gamma="auto"`` (the default) is the authors' 0.005 per step where the recipe was chosen: 60
epochs of 79 batches on 5,000 items, 4,740 steps, over which beta rises from 1 to 4.97. Where a
fit takes another number of steps, gamma is scaled so beta still ends at 4.97
(:meth:`HashNet.resolved_gamma`): a per-step gamma would leave a short fit with soft codes, as on
500 digits, whose 480 steps raise beta only to 1.8 (validation mAP@100 0.969 against 0.989 with the
scaled gamma: benchmarks/RESULTS.md, "Default recipes"). A number is used per step as given.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.nn import functional as F

from learn2hash.methods.deep import DeepHasher, TrainingTask
from learn2hash.methods.pairwise import PAIRWISE_EPOCHS, balanced_weights, label_similarity, off_diagonal
from learn2hash.methods.registry import register
from learn2hash.methods.validation import Interval, Options
from learn2hash.train import Batch, batches_per_epoch

#: the continuation of the default recipe: the authors' gamma per step over the recipe's steps (60
#: epochs over 5,000 items in batches of 64), beta from 1 to (1 + 0.005 * 4740) ** 0.5 = 4.97
RECIPE_GAMMA = 0.005
RECIPE_STEPS = PAIRWISE_EPOCHS * batches_per_epoch(5000, 64)


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

    ``alpha``: sigmoid scale (``None`` = 10/K); ``gamma`` and ``power``: the continuation schedule
    (``gamma="auto"``: beta ends where the recipe's does, whatever the fit's length; see the module).
    """

    name = "hashnet"
    supervised = True
    _parameter_constraints = {"alpha": [None, Interval("real", 0, closed="neither")],
                              "gamma": [Interval("real", 0), Options(("auto",))], "power": [Interval("real", 0)]}

    # a standardized start of the hash layer (learn2hash.nn.standardize_head): +3.1 points on
    # Fashion-MNIST validation (0.8991 against 0.8686), 0.9935 against 0.9885 on digits
    shared_defaults = {"epochs": PAIRWISE_EPOCHS, "head_init": "standardized"}

    def __init__(self, bits: int = 64, alpha: float | None = None, gamma: float | str = "auto", power: float = 0.5,
                 **deep: Any):
        super().__init__(bits=bits, **deep)
        self.alpha = alpha
        self.gamma = gamma
        self.power = power

    def sigmoid_scale(self) -> float:
        return 10.0 / self.bits if self.alpha is None else float(self.alpha)

    def resolved_gamma(self, split: Any = None) -> float:
        """The per-step gamma of a fit on ``split``: ``gamma`` itself when it is a number; for ``"auto"``,
        ``0.005 * 4740 / steps`` where ``steps`` is the fit's (epochs times batches of one epoch on
        one process), so that beta ends where the recipe's does (0.005 exactly for the recipe)."""
        if self.gamma != "auto":
            return float(self.gamma)
        if split is None:
            return RECIPE_GAMMA
        steps = int(self.epochs) * batches_per_epoch(len(split), int(self.batch_size))
        return RECIPE_GAMMA * (RECIPE_STEPS / steps)

    def resolved_params(self, split: Any = None) -> dict[str, Any]:
        resolved = super().resolved_params(split)
        if self.gamma == "auto":
            resolved["gamma"] = self.resolved_gamma(split)
        return resolved

    def loss(self, task: TrainingTask, u: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        beta = continuation_beta(batch.step, self.resolved_gamma(task.split), float(self.power))
        # batch.logits = model.scale * a with model.scale left at 1: the continuation lives here
        ub = torch.tanh(beta * batch.logits)
        s = label_similarity(batch.labels, batch.labels)
        loss = hashnet_loss(ub, ub, s, off_diagonal(len(ub), ub.device), self.sigmoid_scale())
        return loss, {"beta": beta}
