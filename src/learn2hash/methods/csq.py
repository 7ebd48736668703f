"""CSQ: Central Similarity Quantization (Yuan et al., CVPR 2020).

Every class gets a hash center (:func:`learn2hash.centers.hash_centers`: Hadamard rows, rows of
[H; -H], or Bernoulli bits); every training item gets a target center: its class's center, or for
an item with several labels the bitwise majority vote of its labels' centers
(:func:`learn2hash.centers.centroid_centers`, ties Bernoulli(0.5) with the seed). The network
(backbone + hash head, tanh outputs u in (-1, 1)) is trained with

    L = BCE((u + 1) / 2, c)  +  lam * Q(u)  [+ pairwise_weight * L_P]

averaged over the batch's items and bits, where c in {0, 1}^K is the item's center and

- ``quantization="logcosh"`` (the paper, Eq. 4): Q = mean log cosh(|u| - 1);
- ``quantization="squared"`` (the authors' released code): Q = mean (|u| - 1)^2;
- L_P (the paper's ablation, Tab. 6; off by default): the pairwise likelihood of DHN on the
  batch, mean over pairs i != j of log(1 + exp(theta_ij)) - s_ij theta_ij, theta_ij = <u_i, u_j> / 2,
  s_ij = 1 when i and j share a label.

The BCE is computed from the pre-tanh logits a (u = tanh(a), so (u + 1) / 2 = sigmoid(2a)), which
is exact and numerically stable. ``multilabel="random"`` is the ablation that gives each item the
center of one of its labels drawn at random (seeded) instead of the centroid. The centers are
saved with the hasher (``centers.npy``, packed bits).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from learn2hash.centers import centroid_centers, hash_centers
from learn2hash.codes import Codes
from learn2hash.methods.base import HasCenters
from learn2hash.methods.deep import DeepHasher, TrainingTask
from learn2hash.methods.dhn import dhn_loss
from learn2hash.methods.pairwise import label_similarity, log_cosh, off_diagonal
from learn2hash.methods.registry import register
from learn2hash.methods.validation import Interval, Options
from learn2hash.train import Batch

QUANTIZATIONS = ("logcosh", "squared")
MULTILABEL = ("centroid", "random")

@register
class CSQ(HasCenters, DeepHasher):
    """Central Similarity Quantization; see the module docstring for the loss."""

    name = "csq"
    supervised = True
    _parameter_constraints = {"lam": [Interval("real", 0)], "pairwise_weight": [Interval("real", 0)],
                              "quantization": [Options(QUANTIZATIONS)], "multilabel": [Options(MULTILABEL)]}

    # a standardized start of the hash layer (learn2hash.nn.standardize_head): +1.6 points on
    # Fashion-MNIST validation (0.8730 against 0.8571), 1.0000 against 0.9988 on digits;
    # otherwise the shared recipe's defaults (deep.py)
    shared_defaults = {"head_init": "standardized"}

    def __init__(self, bits: int = 64, lam: float = 1e-2, quantization: str = "logcosh",
                 pairwise_weight: float = 0.0, center_method: str = "auto", multilabel: str = "centroid", **deep: Any):
        super().__init__(bits=bits, **deep)
        self.lam = lam
        self.quantization = quantization
        self.pairwise_weight = pairwise_weight
        self.center_method = center_method
        self.multilabel = multilabel

    # ------------------------------------------------------------------ training
    def item_centers(self, labels: np.ndarray) -> Codes:
        """The target center of each item with multi-hot ``labels`` (needs ``centers_``)."""
        labels = np.asarray(labels, dtype=bool)
        if self.multilabel == "random":
            rng = np.random.default_rng([int(self.seed), 1])
            # one label per item, uniformly among its positive labels
            scores = np.where(labels, rng.random(labels.shape), -1.0)
            labels = np.eye(labels.shape[1], dtype=bool)[np.argmax(scores, axis=1)]
        return centroid_centers(labels, self.centers_, seed=self.seed)

    def _prepare(self, task: TrainingTask) -> None:
        self.centers_ = hash_centers(task.split.n_classes, self.bits, method=self.center_method, seed=self.seed)
        targets = self.item_centers(task.split.labels).to_bits().astype(np.float32)
        task.scratch.targets = torch.from_numpy(targets).to(task.device())

    def on_epoch_start(self, task: TrainingTask, epoch: int) -> None:
        device = task.device()
        if task.scratch.targets.device != device:
            task.scratch.targets = task.scratch.targets.to(device)

    def loss(self, task: TrainingTask, u: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """Central similarity + lam * quantization (+ pairwise_weight * pairwise), batch means;
        ``task.scratch.targets``: the items' centers in {0, 1}, ``[n, K]``."""
        logits = batch.logits if batch.logits is not None else torch.atanh(u.clamp(-1 + 1e-7, 1 - 1e-7))
        targets = task.scratch.targets[batch.index].to(logits.dtype)
        center = F.binary_cross_entropy_with_logits(2.0 * logits, targets)
        dev = u.abs() - 1.0
        quant = log_cosh(dev).mean() if self.quantization == "logcosh" else dev.pow(2).mean()
        loss = center + self.lam * quant
        parts = {"center": center.detach(), "quantization": quant.detach()}
        if self.pairwise_weight > 0:
            pair = pairwise_loss(u, batch.labels)
            loss = loss + self.pairwise_weight * pair
            parts["pairwise"] = pair.detach()
        return loss, parts


def pairwise_loss(u: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """DHN's pairwise likelihood on a batch: mean over i != j of softplus(theta) - s * theta,
    theta = <u_i, u_j> / 2, s = 1 when the items share a label (the pair part of :func:`dhn_loss`)."""
    s = label_similarity(labels, labels).to(u.dtype)
    return dhn_loss(u, u, s, off_diagonal(len(u), u.device), 0.0)[1]
