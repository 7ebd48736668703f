"""Hash centers at scale: ``hash_centers(100_000, 64)`` against the published centre generator's loop.

The reference code of CSQ draws Bernoulli centers and then checks them with a Python double loop
over all pairs of classes (``for i ... for j > i: sum(h[i] != h[j])``), O(C^2) interpreted steps,
which is what makes it unusable for 100,000 classes. This script times, in one run:

- ``learn2hash.centers.hash_centers(C, K)`` for C = 100,000 and K = 64 (Bernoulli branch with the
  default bound, exact minimum and mean distance), cold (first call, includes JIT compilation) and
  warm;
- the reference loop on a smaller C (it cannot finish at 100,000), and its time extrapolated to
  C = 100,000 by the number of pairs (the loop is exactly quadratic).

It checks the returned centers against the stated bound with a brute-force pass over a sample.

    python benchmarks/bench_centers.py                 # C = 100,000, K = 64, reference on 400 classes
    python benchmarks/bench_centers.py --classes 20000 --bits 32 --reference-classes 300
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def reference_check(signs: np.ndarray) -> tuple[int, float]:
    """The published check, as written there: a Python loop over every pair of classes."""
    c = []
    n = len(signs)
    for i in range(n):
        for j in range(n):
            if i < j:
                c.append(int(np.sum(signs[i] != signs[j])))
    c = np.array(c)
    return int(c.min()), float(c.mean())


def main() -> None:
    from learn2hash.centers import distance_stats, hash_centers

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--classes", type=int, default=100_000)
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--reference-classes", type=int, default=400)
    args = p.parse_args()

    t0 = time.perf_counter()
    centers = hash_centers(args.classes, args.bits, seed=0)
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    again = hash_centers(args.classes, args.bits, seed=1)
    warm = time.perf_counter() - t0
    print(centers)
    print(again)

    # brute-force check of the bound on the first 2,000 centers against all
    bits = centers.codes.to_bits()
    sample = bits[:2000]
    worst = args.bits
    for start in range(0, len(sample)):
        d = (bits[start + 1:] != sample[start]).sum(axis=1)
        if len(d):
            worst = min(worst, int(d.min()))
    assert worst >= centers.min_distance >= (centers.bound or 0), (worst, centers.min_distance, centers.bound)

    m = args.reference_classes
    ref_signs = centers.signs()[:m]
    t0 = time.perf_counter()
    ref_min, ref_mean = reference_check(ref_signs)
    ref = time.perf_counter() - t0
    pairs_ratio = (args.classes * (args.classes - 1)) / (m * (m - 1))
    ref_full = ref * pairs_ratio
    ours_min, ours_mean = distance_stats(centers.codes[:m])
    assert (ours_min, round(ours_mean, 9)) == (ref_min, round(ref_mean, 9)), ((ours_min, ours_mean), (ref_min, ref_mean))
    print()
    print("| what | C | K | seconds |")
    print("|---|---:|---:|---:|")
    print(f"| learn2hash hash_centers, first call (with JIT compile) | {args.classes:,} | {args.bits} | {cold:.2f} |")
    print(f"| learn2hash hash_centers, second call (other seed) | {args.classes:,} | {args.bits} | {warm:.2f} |")
    print(f"| reference pairwise loop (check only) | {m:,} | {args.bits} | {ref:.2f} |")
    print(f"| reference pairwise loop, extrapolated by pairs | {args.classes:,} | {args.bits} | {ref_full:,.0f} "
          f"(~{ref_full / 3600:.1f} h) |")
    print()
    print(f"speed-up at C = {args.classes:,} (warm): {ref_full / warm:,.0f}x. On the first {m} centers the reference "
          f"loop and learn2hash's distance_stats agree (min {ref_min}, mean {ref_mean:.3f}); over all centers: "
          f"stated min {centers.min_distance}, bound {centers.bound}, brute-force min of the first 2,000 "
          f"against all {worst}")
    assert warm < 10.0 and cold < 10.0, "100,000 x 64-bit centers must take under 10 s"


if __name__ == "__main__":
    main()
