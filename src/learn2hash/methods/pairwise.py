"""What the pairwise deep hashers (DHN, HashNet, DCH) share: pair similarity, pair masks, weights.

A *pair set* is given by continuous codes ``u [b, K]`` of a batch, codes ``v [m, K]`` they are
compared with (the batch itself, or a memory bank), the similarity ``s [b, m]`` (1 where the two
items share a label, else 0) and a boolean ``mask [b, m]`` of the pairs that count (never an item
with itself). Losses are means over the masked pairs.
"""

from __future__ import annotations

import math

import torch

#: default epochs of the pairwise methods: twice the shared recipe's 30, because a batch of 64 from
#: 10 classes holds about 400 similar pairs of its 4,032, and these methods learn mostly from those
#: (chosen on validation data carved from train: benchmarks/RESULTS.md, "Default recipes")
PAIRWISE_EPOCHS = 60


def label_similarity(labels_a: torch.Tensor, labels_b: torch.Tensor) -> torch.Tensor:
    """``s[i, j] = 1.0`` if multi-hot rows ``labels_a[i]`` and ``labels_b[j]`` share a label, else 0."""
    return ((labels_a.float() @ labels_b.float().T) > 0).float()


def off_diagonal(n: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Mask of the ``n * (n - 1)`` ordered pairs ``(i, j)``, ``i != j``, of a batch of ``n``."""
    return ~torch.eye(n, dtype=torch.bool, device=device)


def balanced_weights(s: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """HashNet/DCH pair weights: ``|S|/|S1|`` on similar and ``|S|/|S0|`` on dissimilar pairs.

    ``S`` is the set of masked pairs, ``S1``/``S0`` its similar/dissimilar parts; so the weighted
    mean over ``S`` is the mean over ``S1`` plus the mean over ``S0``. When either part is empty
    every weight is 1 (nothing to balance). Unmasked pairs get weight 0.
    """
    m = mask.float()
    n_all = m.sum()
    n_sim = (s * m).sum()
    n_dis = n_all - n_sim
    if n_sim == 0 or n_dis == 0:
        return m
    return m * (s * (n_all / n_sim) + (1.0 - s) * (n_all / n_dis))


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over the ``True`` entries of ``mask`` (0 when there are none)."""
    m = mask.to(values.dtype)
    return (values * m).sum() / m.sum().clamp(min=1.0)


def log_cosh(x: torch.Tensor) -> torch.Tensor:
    """``log(cosh(x))`` without overflow: ``|x| + softplus(-2|x|) - log 2``."""
    a = x.abs()
    return a + torch.nn.functional.softplus(-2.0 * a) - math.log(2.0)
