"""Two mAP cut-offs (mAP@all and mAP@K) of one run: one evaluation with ``map_at`` against two evaluations.

What ``Run.evaluate`` used to do (``evaluate(topk=None)`` then ``evaluate(topk=K)``: the database scanned
twice, four times with ``ties="index"``) against what it does now (``evaluate(topk=None, map_at=[K])``:
one counting pass, and one ranking pass with ``ties="index"``). Both in this process, on the same
class-structured random codes, one thread each, fastest of ``--repeats`` after a warm-up; the values
are checked to be equal to the bit.

Usage::

    python benchmarks/bench_evaluate_cutoffs.py --queries 1000 --database 60000 --bits 64 --topk 1000
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from learn2hash.codes import Codes
from learn2hash.metrics import evaluate, map_key


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--database", type=int, default=60000)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--topk", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    centers = rng.random((10, args.bits)) < 0.5
    ql, dl = rng.integers(0, 10, args.queries), rng.integers(0, 10, args.database)
    flip = lambda n: rng.random((n, args.bits)) < 0.2  # noqa: E731
    q, db = Codes.from_bits(centers[ql] ^ flip(args.queries)), Codes.from_bits(centers[dl] ^ flip(args.database))
    evaluate(q[:8], ql[:8], db[:64], dl[:64], ties="index", map_at=[5])  # compile the kernels
    for ties in ("expected", "index"):
        two = one = float("inf")
        for _ in range(args.repeats):
            t = time.perf_counter()
            a = evaluate(q, ql, db, dl, ties=ties, threads=1)
            b = evaluate(q, ql, db, dl, topk=args.topk, ties=ties, threads=1)
            two = min(two, time.perf_counter() - t)
            t = time.perf_counter()
            c = evaluate(q, ql, db, dl, ties=ties, threads=1, map_at=[args.topk])
            one = min(one, time.perf_counter() - t)
        assert c["map@all"] == a["map@all"] and c["map_at"][args.topk] == b[map_key(args.topk)]
        print(f"| {ties} | {args.queries} x {args.database}, {args.bits} bits | {two:.3f} | {one:.3f} | "
              f"{two / one:.2f}x | {c['map@all']:.4f} / {c['map_at'][args.topk]:.4f} |")


if __name__ == "__main__":
    main()
