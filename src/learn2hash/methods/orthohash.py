"""OrthoHash: one cosine-similarity objective (Hoe et al., NeurIPS 2021).

J. T. Hoe, K. W. Ng, T. Zhang, C. S. Chan, Y.-Z. Song and T. Xiang, "One Loss for All: Deep
Hashing with a Single Cosine Similarity based Learning Objective", NeurIPS 2021
(arXiv:2109.14449; reference code https://github.com/kamwoh/orthohash).

Every class c has a fixed binary code b_c in {-1, +1}^K, the codebook (here the hash centers of
:func:`learn2hash.centers.hash_centers`: ``center_method="bernoulli"`` is the reference code's
default "B", ``"hadamard"`` / ``"auto"`` the orthogonal rows of a Hadamard matrix). The hash layer
ends in a BatchNorm1d over the K outputs, which keeps every bit balanced over a batch; its output v
is the continuous code and sign(v) the binary code. With cos_c = <v, b_c> / (|v| |b_c|) the loss is
the cross-entropy of the margin logits

    z_c = scale * (cos_c - margin * y_c),      L = - sum_c p_c log softmax(z)_c  [+ quan * Q]

averaged over the batch, where y is the item's multi-hot label row and p = y / sum(y): for one
label that is the plain cross-entropy with the margin on the true class; for several labels the
reference code's default ``label_smoothing`` spreads the target evenly over the positive classes
(``multilabel="bce"`` is its alternative: a binary cross-entropy of sigmoid(z_c) against y_c for
every class, mean over classes and items). An item without any label adds nothing. The optional
quantization term (reference default weight 0) pulls v towards its own signs:
``quan_type="cs"`` Q = mean (1 - cos(v, sign(v))), ``"l1"`` mean |v - sign(v)|, ``"l2"`` mean
(v - sign(v))^2, the sign taken as a constant.

Maximising cos(v, b_y) is at once the classification objective and the quantization objective: the
best v points along a binary code. The codebook is saved with the hasher (``centers.npy``, packed
bits) as CSQ's centers are.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from learn2hash.centers import METHODS as CENTER_METHODS
from learn2hash.centers import hash_centers
from learn2hash.methods.base import HasCenters
from learn2hash.methods.deep import DeepHasher, TrainingTask
from learn2hash.methods.registry import register
from learn2hash.methods.validation import Interval, Options
from learn2hash.train import Batch

MULTILABEL = ("label_smoothing", "bce")
QUAN_TYPES = ("cs", "l1", "l2")


def orthohash_loss(v: torch.Tensor, codebook: torch.Tensor, labels: torch.Tensor, scale: float, margin: float,
                   multilabel: str = "label_smoothing", quan: float = 0.0, quan_type: str = "cs"
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of the module docstring for continuous codes ``v`` ``[n, K]``, the codebook ``[c, K]``
    (+-1) and multi-hot ``labels`` ``[n, c]``; returns ``(loss, {"ce": ..., "quantization": ...})``."""
    y = labels.to(v.dtype)
    cos = F.normalize(v, dim=1) @ F.normalize(codebook.to(v.dtype), dim=1).T
    z = scale * (cos - margin * y)
    if multilabel == "bce":
        ce = F.binary_cross_entropy_with_logits(z, y)
    else:
        target = y / y.sum(1, keepdim=True).clamp_min(1.0)
        ce = -(target * F.log_softmax(z, dim=1)).sum(1).mean()
    loss = ce
    parts = {"ce": ce.detach()}
    if quan > 0:
        signs = v.detach().sign()
        if quan_type == "cs":
            q = (1.0 - F.cosine_similarity(v, signs, dim=1)).mean()
        elif quan_type == "l1":
            q = (v - signs).abs().mean()
        else:
            q = (v - signs).pow(2).mean()
        loss = loss + quan * q
        parts["quantization"] = q.detach()
    return loss, parts


@register
class OrthoHash(HasCenters, DeepHasher):
    """OrthoHash: cross-entropy on scaled cosine similarities to a fixed +-1 codebook, with a margin."""

    name = "orthohash"
    supervised = True
    head_batch_norm = True
    _parameter_constraints = {"scale": [Interval("real", 0, closed="neither")], "margin": [Interval("real", 0, 2)],
                              "quan": [Interval("real", 0)], "quan_type": [Options(QUAN_TYPES)],
                              "multilabel": [Options(MULTILABEL)], "center_method": [Options(CENTER_METHODS)]}

    def __init__(self, bits: int = 64, scale: float = 8.0, margin: float = 0.2, quan: float = 0.0,
                 quan_type: str = "cs", multilabel: str = "label_smoothing", center_method: str = "bernoulli",
                 **deep: Any):
        super().__init__(bits=bits, **deep)  # the shared recipe's defaults (deep.py)
        self.scale = scale
        self.margin = margin
        self.quan = quan
        self.quan_type = quan_type
        self.multilabel = multilabel
        self.center_method = center_method

    # ------------------------------------------------------------------ training
    def _prepare(self, task: TrainingTask) -> None:
        self.centers_ = hash_centers(task.split.n_classes, self.bits, method=self.center_method, seed=self.seed)
        task.scratch.codebook = torch.from_numpy(self.centers_.signs(np.float32)).to(task.device())

    def on_epoch_start(self, task: TrainingTask, epoch: int) -> None:
        device = task.device()
        if task.scratch.codebook.device != device:
            task.scratch.codebook = task.scratch.codebook.to(device)

    def loss(self, task: TrainingTask, u: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """:func:`orthohash_loss` of the hash layer's output v (``batch.logits``; u = tanh(v))."""
        v = batch.logits if batch.logits is not None else torch.atanh(u.clamp(-1 + 1e-7, 1 - 1e-7))
        return orthohash_loss(v, task.scratch.codebook, batch.labels, float(self.scale), float(self.margin),
                              self.multilabel, float(self.quan), self.quan_type)
