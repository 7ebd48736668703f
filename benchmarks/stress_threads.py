"""Thread-count invariance, repeated: a CSQ fit on digits (2 epochs, defaults otherwise) in fresh
processes at OMP_NUM_THREADS=1 and 2 gives the same code bytes, run after run.

The suite runs one such pair (tests/test_threads.py); this script runs ``--runs`` pairs and reports
how many agreed (and that every run of a thread count gave the same digest). Usage::

    python benchmarks/stress_threads.py --runs 20
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_threads import fit_digest  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    agreed, digests, t0 = 0, {1: set(), 2: set()}, time.perf_counter()
    for i in range(args.runs):
        one, two = fit_digest(1), fit_digest(2)
        digests[1].add(one["codes"])
        digests[2].add(two["codes"])
        agreed += one["codes"] == two["codes"] and one["thread_invariant"] and two["thread_invariant"]
        print(f"run {i + 1}: 1 thread {one['codes'][:16]}, 2 threads {two['codes'][:16]}", flush=True)
    print(json.dumps({"runs": args.runs, "agreed": agreed, "distinct_digests": {k: len(v) for k, v in digests.items()},
                      "seconds": round(time.perf_counter() - t0, 1)}))


if __name__ == "__main__":
    main()
