"""mAP@all of 10,000 queries x 60,000 database codes: learn2hash.metrics against sort-based reference code.

The peer is the evaluation most hashing code ships (``CalcTopMap``): per query, Hamming
distances as ``0.5 * (K - B q^T)`` in floating point, ``np.argsort``, then cumulative precision
at the relevant ranks. Both run in this process, side by side, on one core (BLAS limited to
one thread, ``threads=1``), on the same codes:

- data: Fashion-MNIST, protocol ``full`` (queries: the 10,000 test images; database: the 60,000
  train images), codes = signs of a seeded Gaussian random projection of the centered pixels
  (LSH), 64 bits by default; ``--data synthetic`` uses class-structured random codes instead
  (each code is its class's random center with every bit flipped with probability 0.2).
- learn2hash: ``evaluate(..., topk=None, ties="expected", threads=1)``, fastest of ``--repeats``
  after one warm-up call (numba compilation is not timed); also ``ties="index"`` and all cores.
- reference: ``CalcTopMap`` over all queries (``--ref-queries`` times a prefix and scales it
  linearly, and says so).
- agreement: the reference with a stable argsort equals ``ties="index"`` per query (max abs
  difference printed, over ``--check-queries`` queries); the reference's own unstable argsort
  ranks ties arbitrarily, the mAP gap to ``ties="expected"`` is printed.
- ties: at ``--tie-bits`` (16) bits, mAP@100 and mAP@all of 2,000 queries with
  ``ties="expected"`` and with ``ties="index"`` on the database in its order and in a shuffled order.
- ``--big``: 10,000 x 1,000,000 synthetic codes, to show that memory stays bounded (resident
  memory before the call and its peak during it, read from /proc/self/status after resetting
  the peak counter, against the 40 GB a dense float32 query x database matrix would take).

Wall-clock and CPU seconds are both printed: the machine may be shared, CPU seconds of a
single-threaded run are the less noisy figure. ``--results`` rewrites the ``## Metrics``
section of ``benchmarks/RESULTS.md`` (only that section).

Usage::

    python benchmarks/bench_metrics.py
    python benchmarks/bench_metrics.py --ref-queries 1000 --big --results
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from learn2hash import _atomic
from learn2hash.codes import Codes
from learn2hash.metrics import evaluate, map_key

HERE = Path(__file__).resolve().parent
SECTION = "## Metrics"


# --------------------------------------------------------------------------- the peer
def calc_hamming_dist(b1: np.ndarray, b2: np.ndarray) -> np.ndarray:
    """Reference code's Hamming distance of one +-1 code to many: ``0.5 * (K - B2 b1)``."""
    return 0.5 * (b2.shape[1] - np.dot(b1, b2.transpose()))


def calc_top_map(r_b: np.ndarray, q_b: np.ndarray, r_l: np.ndarray, q_l: np.ndarray, topk: int,
                 kind: str = "quicksort", per_query: bool = False):
    """``CalcTopMap`` as hashing repositories ship it (+-1 float codes, float multi-hot labels)."""
    num_query = q_l.shape[0]
    aps = np.zeros(num_query)
    for it in range(num_query):
        gnd = (np.dot(q_l[it, :], r_l.transpose()) > 0).astype(np.float32)
        hamm = calc_hamming_dist(q_b[it, :], r_b)
        ind = np.argsort(hamm, kind=kind)
        gnd = gnd[ind]
        tgnd = gnd[0:topk]
        tsum = int(np.sum(tgnd))
        if tsum == 0:
            continue
        count = np.linspace(1, tsum, tsum)
        tindex = np.asarray(np.where(tgnd == 1)) + 1.0
        aps[it] = np.mean(count / tindex)
    return aps if per_query else float(aps.mean())


# --------------------------------------------------------------------------- data
def fashion_mnist_codes(bits: int, seed: int):
    from learn2hash import datasets

    ds = datasets.load("fashion-mnist", protocol="full", seed=seed)
    xq = np.asarray(ds.query.x, dtype=np.float32).reshape(len(ds.query), -1) / 255
    xd = np.asarray(ds.database.x, dtype=np.float32).reshape(len(ds.database), -1) / 255
    mean = xd.mean(axis=0)
    w = np.random.default_rng(seed).standard_normal((xd.shape[1], bits)).astype(np.float32)
    return (Codes.from_signs((xq - mean) @ w), ds.query.labels, Codes.from_signs((xd - mean) @ w),
            ds.database.labels, "Fashion-MNIST, protocol full, LSH codes (seeded Gaussian projection of centered pixels)")


def synthetic_codes(n_query: int, n_db: int, bits: int, n_classes: int, seed: int, flip: float = 0.2):
    rng = np.random.default_rng(seed)
    centers = rng.random((n_classes, bits)) < 0.5
    eye = np.eye(n_classes, dtype=bool)

    def make(n: int):
        labels = rng.integers(0, n_classes, n)
        parts = [Codes.from_bits(centers[labels[a:a + 100_000]] ^ (rng.random((min(100_000, n - a), bits)) < flip))
                 for a in range(0, n, 100_000)]  # in chunks: the generator's temporaries stay small
        return Codes.concatenate(parts), eye[labels]

    q, ql = make(n_query)
    db, dl = make(n_db)
    return q, ql, db, dl, (f"synthetic: {n_classes} classes, each code its class center with bits flipped "
                           f"with probability {flip}")


# --------------------------------------------------------------------------- timing
def timed(fn, repeats: int = 1):
    """(result, wall seconds, CPU seconds) of the fastest of ``repeats`` calls."""
    best = None
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        w, c = time.perf_counter() - w0, time.process_time() - c0
        if best is None or w < best[1]:
            best = (out, w, c)
    return best


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak resident-set counter of this process (Linux); False where not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def write_section(text: str, path: Path) -> None:
    """Replace the ``## Metrics`` section of ``path`` (or append it), leaving the rest as it is."""
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    start = old.find(SECTION + "\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        nxt = old.find("\n## ", start + len(SECTION))
        new = old[:start] + text + ("\n" + old[nxt + 1:] if nxt >= 0 else "")
    with _atomic.atomic_open(path, "w") as fh:
        fh.write(new if new.endswith("\n") else new + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=["fashion-mnist", "synthetic"], default="fashion-mnist")
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tie-bits", type=int, default=16, help="code length of the tie-sensitivity figures")
    p.add_argument("--repeats", type=int, default=3, help="timed calls of learn2hash (fastest kept)")
    p.add_argument("--ref-queries", type=int, default=None, help="time the reference on this many queries and scale")
    p.add_argument("--check-queries", type=int, default=1000, help="queries for the stable-sort agreement check")
    p.add_argument("--big", action="store_true", help="also 10,000 x 1,000,000 synthetic codes (memory check)")
    p.add_argument("--results", action="store_true", help="rewrite the Metrics section of benchmarks/RESULTS.md")
    args = p.parse_args(argv)

    if args.data == "fashion-mnist":
        q, ql, db, dl, what = fashion_mnist_codes(args.bits, args.seed)
    else:
        q, ql, db, dl, what = synthetic_codes(10_000, 60_000, args.bits, 10, args.seed)
    nq, nd = len(q), len(db)
    print(f"{what}: {nq:,} queries x {nd:,} database codes, {args.bits} bits", flush=True)

    evaluate(q[:16], ql[:16], db, dl, ties="expected", threads=1)  # compile (or load the numba cache)
    evaluate(q[:16], ql[:16], db, dl, ties="index", threads=1)
    ours, ours_wall, ours_cpu = timed(lambda: evaluate(q, ql, db, dl, topk=None, ties="expected", threads=1),
                                      args.repeats)
    print(f"learn2hash ties=expected, 1 thread: mAP {ours['map@all']:.6f}  {ours_wall:.3f} s wall, {ours_cpu:.3f} s CPU",
          flush=True)
    idx, idx_wall, idx_cpu = timed(lambda: evaluate(q, ql, db, dl, topk=None, ties="index", threads=1))
    print(f"learn2hash ties=index, 1 thread: mAP {idx['map@all']:.6f}  {idx_wall:.3f} s wall, {idx_cpu:.3f} s CPU",
          flush=True)
    allc, all_wall, _ = timed(lambda: evaluate(q, ql, db, dl, topk=None, ties="expected"), args.repeats)
    print(f"learn2hash ties=expected, {allc['settings']['threads']} threads: {all_wall:.3f} s wall", flush=True)

    q_pm, db_pm = q.to_signs(), db.to_signs()
    ql_f, dl_f = ql.astype(np.float32), dl.astype(np.float32)
    n_ref = nq if args.ref_queries is None else min(args.ref_queries, nq)
    with threadpool_limits(1):
        ref_map, ref_wall, ref_cpu = timed(lambda: calc_top_map(db_pm, q_pm[:n_ref], dl_f, ql_f[:n_ref], nd))
        scale = nq / n_ref
        ref_wall, ref_cpu = ref_wall * scale, ref_cpu * scale
        scaled = "" if n_ref == nq else f" (timed on {n_ref:,} queries, scaled x{scale:g})"
        print(f"reference CalcTopMap (np.argsort), 1 thread: mAP {ref_map:.6f} over {n_ref:,} queries  "
              f"{ref_wall:.2f} s wall, {ref_cpu:.2f} s CPU{scaled}", flush=True)
        n_chk = min(args.check_queries, nq)
        stable = calc_top_map(db_pm, q_pm[:n_chk], dl_f, ql_f[:n_chk], nd, kind="stable", per_query=True)
    diff = float(np.abs(stable - idx["per_query"]["ap"][:n_chk]).max())
    gap = ref_map - float(ours["per_query"]["ap"][:n_ref].mean())
    print(f"agreement: max |AP(ref, stable argsort) - AP(ties=index)| over {n_chk:,} queries = {diff:.2e}; "
          f"mAP(ref, quicksort) - mAP(ties=expected) over {n_ref:,} queries = {gap:+.5f}")
    ratio_wall, ratio_cpu = ref_wall / ours_wall, ref_cpu / ours_cpu
    print(f"speed-up, 1 thread: {ratio_wall:.1f}x wall, {ratio_cpu:.1f}x CPU", flush=True)

    # tie sensitivity: with fewer bits most items share their distance with many others
    tq, tql, tdb, tdl, _ = (fashion_mnist_codes(args.tie_bits, args.seed) if args.data == "fashion-mnist"
                            else synthetic_codes(10_000, 60_000, args.tie_bits, 10, args.seed))
    tq, tql = tq[:2000], tql[:2000]
    shuffle = np.random.default_rng(args.seed).permutation(len(tdb))
    tie_maps = {k: (evaluate(tq, tql, tdb, tdl, topk=k, ties="expected")[map_key(k)],
                    evaluate(tq, tql, tdb, tdl, topk=k, ties="index")[map_key(k)],
                    evaluate(tq, tql, tdb[shuffle], tdl[shuffle], topk=k, ties="index")[map_key(k)]) for k in (100, None)}
    tie_text = "; ".join(f"mAP@{k or 'all'}: {e:.4f} with ties=expected, {i:.4f} with ties=index in database order, "
                         f"{sh:.4f} with ties=index after a seeded shuffle of the database"
                         for k, (e, i, sh) in tie_maps.items())
    print(f"ties at {args.tie_bits} bits, 2,000 queries: {tie_text}", flush=True)

    big = None
    if args.big:
        bq, bql, bdb, bdl, _ = synthetic_codes(10_000, 1_000_000, args.bits, 10, args.seed + 1)
        rss0 = _status_mib("VmRSS")
        if not reset_peak_rss():
            print("big: cannot reset the peak RSS counter here; the peak below includes earlier work")
        res, b_wall, _ = timed(lambda: evaluate(bq, bql, bdb, bdl, topk=1000, ties="expected"))
        rss1 = _status_mib("VmHWM")
        dense_gb = 10_000 * 1_000_000 * 4 / 1e9
        big = (res["settings"]["threads"], b_wall, rss0, rss1, dense_gb, res["map@1000"])
        print(f"big: 10,000 x 1,000,000, {args.bits} bits, topk=1000, {big[0]} threads: {b_wall:.1f} s wall; "
              f"resident {rss0:.0f} MiB before, peak {rss1:.0f} MiB during evaluate "
              f"(a dense float32 matrix: {dense_gb:.0f} GB)")

    load = os.getloadavg()[0]
    cmd = "python benchmarks/bench_metrics.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [SECTION, "", f"Command: `{cmd.strip()}`", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
             f"numpy {np.__version__}; load average at the end {load:.1f} (the machine is shared: wall times "
             "are noisy, CPU seconds of the single-threaded runs less so).", "",
             f"{what}; {nq:,} queries x {nd:,} database codes, {args.bits} bits; mAP over the whole database "
             "(topk=None). learn2hash figures are the fastest of "
             f"{args.repeats} calls after a warm-up; the reference is `CalcTopMap` (float Hamming distance "
             "0.5*(K - B q^T), np.argsort, cumulative precision), BLAS limited to one thread.", "",
             "| evaluation | threads | mAP | wall s | CPU s | reference / this (wall) |",
             "|---|---|---|---|---|---|",
             f"| learn2hash, ties=expected | 1 | {ours['map@all']:.4f} | {ours_wall:.3f} | {ours_cpu:.3f} | "
             f"{ratio_wall:.1f}x |",
             f"| learn2hash, ties=index | 1 | {idx['map@all']:.4f} | {idx_wall:.3f} | {idx_cpu:.3f} | "
             f"{ref_wall / idx_wall:.1f}x |",
             f"| learn2hash, ties=expected | {allc['settings']['threads']} | {allc['map@all']:.4f} | {all_wall:.3f} | | "
             f"{ref_wall / all_wall:.1f}x |",
             f"| reference CalcTopMap{scaled} | 1 | {ref_map:.4f} | {ref_wall:.2f} | {ref_cpu:.2f} | 1.0x |", "",
             f"Speed-up of learn2hash (ties=expected, 1 thread) over the reference: {ratio_wall:.1f}x wall, "
             f"{ratio_cpu:.1f}x CPU. Agreement: the reference with a stable argsort equals ties=index per query "
             f"(max abs AP difference {diff:.1e} over {n_chk:,} queries); the reference's unstable argsort "
             f"differs from the exact expected mAP by {gap:+.4f}."]
    lines += ["", f"Ties: the same data at {args.tie_bits} bits, first 2,000 queries: {tie_text}."]
    if big:
        lines += ["", f"Memory: 10,000 queries x 1,000,000 synthetic {args.bits}-bit codes, topk=1000, {big[0]} "
                      f"threads: {big[1]:.1f} s wall; resident memory of the process {big[2]:.0f} MiB before the call, "
                      f"peak {big[3]:.0f} MiB during it (a dense float32 query x database matrix would be "
                      f"{big[4]:.0f} GB)."]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if args.results:
        write_section(text, HERE / "RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
