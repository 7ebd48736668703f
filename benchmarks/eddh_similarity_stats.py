"""What EDDH's θ- and A-steps see of its semantic–visual similarity Ŝ on a training set.

EDDH fits every item against V = YA (one row per class), so Ŝ enters only through ``T = Ŝ Y``:
per item, the sum of ŝ over each class. This prints the distance fit, how often |ŝ| sits at 1 or
2, the per-item class means ``T / n_c``, and how much of their variance the label-only similarity
(+1 own class, -1 others) leaves unexplained (benchmarks/RESULTS.md, "EDDH against DHN").

Usage::

    python benchmarks/eddh_similarity_stats.py --dataset fashion-mnist --protocol standard
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from learn2hash import datasets
from learn2hash.asymnormal import AsymmetricNormal
from learn2hash.datasets.protocols import rng_for
from learn2hash.features import make_extractor, visual_features
from learn2hash.methods import eddh


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--protocol", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--visual", default="auto")
    ap.add_argument("--visual-image-size", type=int, default=None)
    args = ap.parse_args()
    train = datasets.load(args.dataset, protocol=args.protocol, seed=args.seed).train
    extractor = make_extractor(args.visual, train.item_shape, args.visual_image_size, "cpu")
    z = eddh.normalize_rows(visual_features(train.x, extractor, cache=extractor.cacheable, progress=False,
                                            description="visual features"))
    i, j, similar = eddh.sample_pairs(train.labels, eddh.PAIRS_PER_KIND, rng_for(args.seed, "pairs"))
    d = (1.0 - (z[torch.from_numpy(i)] * z[torch.from_numpy(j)]).sum(1)).clamp(min=0.0).double().numpy()
    fit = AsymmetricNormal.fit(d, similar)
    lo, hi = fit.thresholds
    alpha, beta = lo * math.e, hi / math.e
    print(f"distance fit: iota {fit.iota:.4f}, sigma_l {fit.sigma_l:.4f}, sigma_r {fit.sigma_r:.4f} "
          f"(alpha {alpha:.4f}, beta {beta:.4f}); mean distance of similar pairs {d[similar].mean():.3f}, "
          f"dissimilar {d[~similar].mean():.3f}")
    labels = np.asarray(train.labels, dtype=bool)
    t, _, s = eddh.similarity_statistics(z, torch.from_numpy(labels), alpha, beta, keep=True)
    s = s.numpy()
    same = (labels.astype(np.float32) @ labels.T.astype(np.float32)) > 0
    for name, mask in (("similar", same), ("dissimilar", ~same)):
        v = np.abs(s[mask])
        print(f"{name} pairs: |s| = 1 for {(v <= 1 + 1e-4).mean():.3f}, = 2 for {(v >= 2 - 1e-4).mean():.3f}, "
              f"mean |s| {v.mean():.3f}")
    means = t / labels.sum(0)[None, :]  # per item, the mean ŝ over each class
    label_only = np.where(labels, 1.0, -1.0)
    slope, intercept = np.polyfit(label_only.ravel(), means.ravel(), 1)
    rest = means.ravel() - (slope * label_only.ravel() + intercept)
    print(f"own-class means {means[labels].mean():.3f} +- {means[labels].std():.3f}, other classes "
          f"{means[~labels].mean():.3f} +- {means[~labels].std():.3f}")
    print(f"T / n_c = {slope:.3f} x label-only + {intercept:.3f}; variance beyond the labels "
          f"{rest.var() / means.ravel().var():.4f}")


if __name__ == "__main__":
    main()
