"""Exact retrieval metrics for binary codes: mAP@k, P@N, precision-recall per Hamming radius.

Everything here is computed from one pass per query over the database that counts, for every
Hamming distance ``d = 0..K``, how many database items lie at ``d`` (``total[q, d]``) and how
many of those are relevant (``relevant[q, d]``). Two items are relevant when they share at
least one label. Nothing of size queries x database is ever allocated, and no distance list is
sorted.

Ranking is by Hamming distance; items at equal distance form a *tie group*. The order inside
a tie group is a choice that changes mAP (more so with short codes and small cutoffs, where
tie groups are large), so it is explicit:

``ties="expected"`` (default)
    The exact expected value of each metric when every ordering of the items inside each tie
    group is equally likely. Deterministic and unbiased; computed in closed form from the
    per-distance counts (see :func:`evaluate` for the formulas).
``ties="index"``
    Items at equal distance are ranked by database position (what a stable sort does). A
    second pass per query walks the database in index order and places every item at its
    exact rank.

Per-query averages follow the ``zero_hits`` policy: a query with no relevant item in the
whole database counts as 0 (``"zero"``) or is left out of every average (``"exclude"``);
their number is reported either way.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from numba import njit

from learn2hash.codes import Codes, as_codes, as_words
from learn2hash.datasets import as_multihot
from learn2hash.errors import Learn2HashError, check_int
from learn2hash.kernels import popcount64

TIES = ("expected", "index")
ZERO_HITS = ("zero", "exclude")
EMPTY_RADIUS = ("zero", "exclude")
DEFAULT_PRECISION_AT = (1, 10, 100, 1000)

# Queries processed together by the counting kernel: each database word is loaded once for
# this many queries, and their histograms are independent chains of increments.
_QUERY_BLOCK = 8
# Tie groups up to this size have their harmonic sums added term by term; larger ones use
# differences of the harmonic-number table (accurate to ~1e-14 there, see _harmonic_table).
_DIRECT_SUM_MAX = 64
# Hypergeometric weights below this fraction of the running total are dropped.
_TAIL = 1e-18

_POLICIES = {
    "relevance": "two items are relevant when they share at least one label",
    "ranking": "by Hamming distance, ascending",
    "ties": {
        "expected": "exact expected value over all orderings of items at equal Hamming distance",
        "index": "items at equal Hamming distance ranked by database position (stable sort)",
    },
    "zero_hits": {
        "zero": "a query with no relevant item in the database counts as 0 in every average",
        "exclude": "a query with no relevant item in the database is left out of every average",
    },
    "empty_radius": {
        "zero": "a query that retrieves nothing within radius r has precision 0 at r",
        "exclude": "a query that retrieves nothing within radius r is left out of the precision average at r",
    },
    "average_precision": "AP@k = (1 / relevant items in the top k) * sum over relevant ranks r <= k of "
                         "precision@r; 0 when the top k holds no relevant item",
    "radius_metrics": "precision/recall within Hamming radius r ignore topk",
}


# --------------------------------------------------------------------------- native kernels
@njit(cache=True, nogil=True)
def _relevance(ql: np.ndarray, sets: np.ndarray, out: np.ndarray) -> None:
    """``out[u, t] = 1`` when query label words ``ql[t]`` share a bit with label set ``sets[u]``."""
    for t in range(ql.shape[0]):
        for u in range(sets.shape[0]):
            r = np.uint64(0)
            for w in range(sets.shape[1]):
                r |= ql[t, w] & sets[u, w]
            out[u, t] = 1 if r != 0 else 0


@njit(cache=True, nogil=True)
def _count_kernel(qw, dbw, ql, sets, sid, out, start, stop):
    """Fill ``out[i, d] = total | relevant << 32`` for queries ``start <= i < stop``, d = 0..K.

    ``qw``/``dbw``: codes as uint64 words; ``ql``: query labels as uint64 bitsets; ``sets``:
    the distinct database label sets as bitsets, ``sid[j]`` the set of database item ``j``.
    """
    nd = dbw.shape[0]
    n_words = qw.shape[1]
    n_sets = sets.shape[0]
    block = _QUERY_BLOCK
    for i0 in range(start, stop, block):
        nqb = min(block, stop - i0)
        hist = np.zeros((block, out.shape[1]), np.int64)
        q = np.zeros((n_words, block), np.uint64)
        rel = np.zeros((n_sets, block), np.uint8)
        dist = np.zeros(block, np.int64)
        for t in range(nqb):
            for w in range(n_words):
                q[w, t] = qw[i0 + t, w]
        _relevance(ql[i0:i0 + nqb], sets, rel)
        if n_words == 1:
            for j in range(nd):
                x = dbw[j, 0]
                s = sid[j]
                for t in range(block):
                    hist[t, popcount64(q[0, t] ^ x)] += 1 + (np.int64(rel[s, t]) << 32)
        else:
            for j in range(nd):
                s = sid[j]
                x = dbw[j, 0]
                for t in range(block):
                    dist[t] = popcount64(q[0, t] ^ x)
                for w in range(1, n_words):
                    x = dbw[j, w]
                    for t in range(block):
                        dist[t] += popcount64(q[w, t] ^ x)
                for t in range(block):
                    hist[t, dist[t]] += 1 + (np.int64(rel[s, t]) << 32)
        for t in range(nqb):
            for d in range(out.shape[1]):
                out[i0 + t, d] = hist[t, d]


@njit(cache=True, nogil=True)
def _index_kernel(qw, dbw, ql, sets, sid, total, relevant, k, ns, ap, hits, start, stop):
    """Metrics with ties broken by database position: AP@k and relevant hits in the top N.

    Walks the database in index order; an item at distance ``d`` that is the ``s``-th item met
    at that distance has rank ``(items nearer than d) + s``, exactly its rank after a stable
    sort by distance.
    """
    nd = dbw.shape[0]
    n_words = qw.shape[1]
    n_sets = sets.shape[0]
    n_bits1 = total.shape[1]
    for i in range(start, stop):
        rel = np.zeros((n_sets, 1), np.uint8)
        _relevance(ql[i:i + 1], sets, rel)
        before_t = np.zeros(n_bits1, np.int64)   # items strictly nearer than d
        before_r = np.zeros(n_bits1, np.int64)   # relevant items strictly nearer than d
        for d in range(1, n_bits1):
            before_t[d] = before_t[d - 1] + total[i, d - 1]
            before_r[d] = before_r[d - 1] + relevant[i, d - 1]
        seen_t = np.zeros(n_bits1, np.int64)
        seen_r = np.zeros(n_bits1, np.int64)
        s_prec = 0.0
        n_top = 0
        for j in range(nd):
            d = 0
            for w in range(n_words):
                d += popcount64(qw[i, w] ^ dbw[j, w])
            seen_t[d] += 1
            if rel[sid[j], 0] != 0:
                seen_r[d] += 1
                rank = before_t[d] + seen_t[d]
                if rank <= k:
                    s_prec += (before_r[d] + seen_r[d]) / rank
                    n_top += 1
                for p in range(ns.shape[0]):
                    if rank <= ns[p]:
                        hits[i, p] += 1
        if n_top > 0:
            ap[i] = s_prec / n_top


@njit(cache=True, nogil=True)
def _harmonic_sums(harmonic, start, n):
    """``(A, B)`` with ``A = sum_{j=1..n} 1/(start+j)`` and ``B = sum_{j=1..n} (j-1)/(start+j)``."""
    if n <= _DIRECT_SUM_MAX:
        a = 0.0
        b = 0.0
        for j in range(1, n + 1):
            a += 1.0 / (start + j)
            b += (j - 1.0) / (start + j)
        return a, b
    a = harmonic[start + n] - harmonic[start]
    return a, n - (start + 1.0) * a


@njit(cache=True, nogil=True)
def _expected_cut_ap(f_sum, r_before, t_before, n, m, c, harmonic):
    """E[AP@k] when the cutoff takes the first ``c`` of a tie group of ``n`` items, ``m`` relevant.

    ``f_sum``: expected sum of precisions at the relevant ranks of the groups before it;
    ``r_before``/``t_before``: relevant/total items before it. See :func:`evaluate`.
    """
    lo = max(0, c - (n - m))
    hi = min(m, c)
    a, b = _harmonic_sums(harmonic, t_before, c)
    mode = ((c + 1) * (m + 1)) // (n + 2)
    mode = min(max(mode, lo), hi)
    acc = 0.0
    norm = 0.0
    # upwards from the mode, then downwards; weights are hypergeometric up to a constant
    w = 1.0
    x = mode
    while True:
        if r_before + x > 0:
            s_x = 0.0
            if x > 0:
                s_x = (x / c) * ((r_before + 1.0) * a + ((x - 1.0) / (c - 1.0) * b if c > 1 else 0.0))
            acc += w * (f_sum + s_x) / (r_before + x)
        norm += w
        if x >= hi:
            break
        w *= (m - x) * (c - x) / ((x + 1.0) * (n - m - c + x + 1.0))
        x += 1
        if w < _TAIL * norm:
            break
    w = 1.0
    x = mode
    while x > lo:
        w *= x * (n - m - c + x) / ((m - x + 1.0) * (c - x + 1.0))
        x -= 1
        if w < _TAIL * norm:
            break
        if r_before + x > 0:
            s_x = 0.0
            if x > 0:
                s_x = (x / c) * ((r_before + 1.0) * a + ((x - 1.0) / (c - 1.0) * b if c > 1 else 0.0))
            acc += w * (f_sum + s_x) / (r_before + x)
        norm += w
    return acc / norm


@njit(cache=True, nogil=True)
def _expected_kernel(total, relevant, k, ns, harmonic, ap, hits, start, stop):
    """Expected AP@k and expected relevant hits in the top N over orderings within tie groups."""
    n_bits1 = total.shape[1]
    for i in range(start, stop):
        t_before = np.int64(0)
        r_before = np.int64(0)
        f_sum = 0.0
        done = False
        for d in range(n_bits1):
            n = total[i, d]
            m = relevant[i, d]
            if n == 0:
                continue
            for p in range(ns.shape[0]):
                if t_before < ns[p] <= t_before + n:
                    hits[i, p] = r_before + (ns[p] - t_before) * (m / n)
            if not done:
                if t_before + n <= k:
                    if m > 0:
                        a, b = _harmonic_sums(harmonic, t_before, n)
                        f_sum += (m / n) * ((r_before + 1.0) * a + ((m - 1.0) / (n - 1.0) * b if n > 1 else 0.0))
                    if t_before + n == k:
                        done = True
                        if r_before + m > 0:
                            ap[i] = f_sum / (r_before + m)
                else:
                    ap[i] = _expected_cut_ap(f_sum, r_before, t_before, n, m, k - t_before, harmonic)
                    done = True
            t_before += n
            r_before += m


# --------------------------------------------------------------------------- helpers
def _harmonic_table(n: int) -> np.ndarray:
    """``H[i] = sum_{j=1..i} 1/j`` for ``i = 0..n`` (float64).

    Summed directly up to ``_DIRECT_SUM_MAX``, then ``H[i] = digamma(i + 1) + euler_gamma``,
    which is accurate to a few ulp at every ``i`` (a running sum would drift).
    """
    from scipy.special import digamma

    h = np.empty(n + 1, np.float64)
    small = min(n, _DIRECT_SUM_MAX)
    h[: small + 1] = np.concatenate([[0.0], np.cumsum(1.0 / np.arange(1, small + 1))])
    if n > small:
        h[small + 1:] = digamma(np.arange(small + 2, n + 2, dtype=np.float64)) + np.euler_gamma
    return h


def _label_words(labels: np.ndarray) -> np.ndarray:
    """Multi-hot ``bool[n, c]`` -> bitsets ``uint64[n, max(1, ceil(c/64))]``."""
    n, c = labels.shape
    n_words = max(1, (c + 63) // 64)
    padded = np.zeros((n, n_words * 64), dtype=bool)
    padded[:, :c] = labels
    return np.ascontiguousarray(np.packbits(padded, axis=1, bitorder="little")).view(np.uint64)


def _code_words(codes: Codes) -> np.ndarray:
    return np.ascontiguousarray(as_words(np.ascontiguousarray(codes.packed)))


def _labels_pair(query_labels: Any, db_labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both label inputs as multi-hot with the same number of classes."""
    q = np.asarray(query_labels)
    db = np.asarray(db_labels)
    if q.ndim == 2 and db.ndim == 2:
        q = as_multihot(q, what="query labels")
        db = as_multihot(db, what="database labels")
        if q.shape[1] != db.shape[1]:
            raise Learn2HashError(
                f"query labels have {q.shape[1]} classes but database labels have {db.shape[1]}"
            )
        return q, db
    n_classes = None
    for a in (q, db):
        if a.ndim == 2:
            n_classes = a.shape[1]
    if n_classes is None and q.ndim == 1 and db.ndim == 1:
        # class ids on both sides: validated by as_multihot, sized by the larger id
        q1 = as_multihot(q, what="query labels")
        db1 = as_multihot(db, what="database labels")
        n_classes = max(q1.shape[1], db1.shape[1])
    return (as_multihot(q, n_classes, what="query labels"),
            as_multihot(db, n_classes, what="database labels"))


def _check_choice(value: Any, what: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise Learn2HashError(f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # platforms without CPU affinity
        return max(1, os.cpu_count() or 1)


def _check_threads(threads: Any) -> int:
    return _default_threads() if threads is None else check_int(threads, "threads", 1)


def _over_queries(kernel: Callable[[int, int], None], n_queries: int, threads: int) -> None:
    """Run ``kernel(start, stop)`` over ``[0, n_queries)`` in chunks on ``threads`` threads.

    The kernels release the GIL and write disjoint rows of their outputs, so chunks run
    concurrently; chunk starts are multiples of the counting kernel's query block.
    """
    if threads == 1 or n_queries <= _QUERY_BLOCK:
        kernel(0, n_queries)
        return
    n_chunks = min(4 * threads, -(-n_queries // _QUERY_BLOCK))
    step = -(-n_queries // n_chunks)
    step = -(-step // _QUERY_BLOCK) * _QUERY_BLOCK
    bounds = [(start, min(start + step, n_queries)) for start in range(0, n_queries, step)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(kernel, a, b) for a, b in bounds]:
            future.result()


def _mean(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else float("nan")


# --------------------------------------------------------------------------- public API
def evaluate(
    query_codes: Codes,
    query_labels: Any,
    db_codes: Codes,
    db_labels: Any,
    *,
    topk: int | None = None,
    ties: str = "expected",
    radius: int = 2,
    precision_at: Sequence[int] | None = None,
    zero_hits: str = "zero",
    empty_radius: str = "zero",
    threads: int | None = None,
) -> dict[str, Any]:
    """Retrieval quality of ``query_codes`` against ``db_codes``, ranked by Hamming distance.

    Parameters
    ----------
    query_codes, db_codes : Codes
        Codes of the same bit length ``K``.
    query_labels, db_labels :
        Class ids ``int[n]`` or multi-hot ``[n, c]`` (0/1 or bool), one row per code. Items are
        relevant when they share a label. Class ids on both sides use ``max id + 1`` classes.
    topk : int or None
        Cutoff of mAP@k; ``None`` (or any value >= the database size) ranks the whole database.
    ties : {"expected", "index"}
        Tie policy (module docstring).
    radius : int
        Radius ``r`` of ``precision_at_radius`` / ``recall_at_radius`` (items with distance ``<= r``).
    precision_at : sequence of int or None
        The ``N`` of P@N; each must be at most the database size. ``None`` means
        (1, 10, 100, 1000) without the values larger than the database.
    zero_hits : {"zero", "exclude"}
        Queries with no relevant item in the database count as 0, or are left out of every
        average (mAP, P@N, precision/recall at radius, PR curve).
    empty_radius : {"zero", "exclude"}
        Precision at radius ``r`` of a query that retrieves nothing within ``r``: 0, or left out
        of that radius's average.
    threads : int or None
        Threads for the passes over the database (``None``: one per available core).

    Returns
    -------
    dict with ``map``, ``precision_at_n`` ({N: value}), ``precision_at_radius``,
    ``recall_at_radius``, ``pr_curve`` ({"radius", "precision", "recall"} arrays over
    r = 0..K), ``n_queries``, ``n_database``, ``bits``, ``n_queries_without_relevant``,
    ``n_queries_evaluated``, ``per_query`` ({"ap", "n_relevant"}) and ``settings`` (every
    option used and the policies in words).

    Expected AP under ``ties="expected"``
    ---------------------------------------
    Walk the tie groups in order of distance. Before a group, ``T`` items (``R`` relevant)
    rank ahead of it; the group holds ``n`` items, ``m`` relevant. Write
    ``A(T, c) = sum_{j=1..c} 1/(T+j)`` and ``B(T, c) = sum_{j=1..c} (j-1)/(T+j) = c - (T+1) A``.

    *Whole group inside the top k.* The item at rank ``T+j`` is relevant with probability
    ``m/n``; given that, the ``j-1`` items before it in the group are a uniform draw from the
    other ``n-1``, of which ``m-1`` are relevant. So the expected sum of precisions over the
    group's relevant ranks is ``F_g = (m/n) * [(R+1) A(T, n) + (m-1)/(n-1) B(T, n)]``, and the
    number of relevant items in the top k is not random, so ``E[AP@k] = sum_g F_g / R_k``.

    *Cutoff inside a group* (``c = k - T`` with ``0 < c < n``). The number ``x`` of relevant
    items among the ``c`` that make the cut is hypergeometric,
    ``P(x) = C(m, x) C(n-m, c-x) / C(n, c)``; given ``x``, they sit at a uniform ``x``-subset of
    the ``c`` ranks, so their expected sum of precisions is
    ``S_x = (x/c) [(R+1) A(T, c) + (x-1)/(c-1) B(T, c)]``. The groups before it contribute
    ``F = sum F_g`` independently of ``x``, hence
    ``E[AP@k] = sum_x P(x) (F + S_x) / (R + x)`` (terms with ``R + x = 0`` are 0). ``P(x)`` is
    evaluated by the ratio recursion from its mode, so no factorial is formed.

    Expected P@N: ``(R + c m / n) / N`` for the group cut by ``N``. Radius metrics and the PR
    curve do not depend on the order within a group.
    """
    query_codes = as_codes(query_codes, "query codes")
    db_codes = as_codes(db_codes, "database codes")
    if query_codes.bits != db_codes.bits:
        raise Learn2HashError(
            f"query codes have {query_codes.bits} bits but database codes have {db_codes.bits} bits"
        )
    if len(query_codes) == 0:
        raise Learn2HashError("query codes are empty: there is nothing to evaluate")
    if len(db_codes) == 0:
        raise Learn2HashError("database codes are empty: there is nothing to retrieve")
    if len(db_codes) >= 2**31:
        raise Learn2HashError(f"the database holds {len(db_codes)} codes; at most 2**31 - 1 are supported")
    ql, dbl = _labels_pair(query_labels, db_labels)
    for what, labels, codes in (("query", ql, query_codes), ("database", dbl, db_codes)):
        if labels.shape[0] != len(codes):
            raise Learn2HashError(f"{what} labels have {labels.shape[0]} rows but there are {len(codes)} {what} codes")
    ties = _check_choice(ties, "ties", TIES)
    zero_hits = _check_choice(zero_hits, "zero_hits", ZERO_HITS)
    empty_radius = _check_choice(empty_radius, "empty_radius", EMPTY_RADIUS)
    radius = check_int(radius, "radius", 0)
    n_db = len(db_codes)
    bits = db_codes.bits
    if topk is not None:
        topk = check_int(topk, "topk", 1)
    k = n_db if topk is None else min(topk, n_db)
    if precision_at is None:
        ns_list = [n for n in DEFAULT_PRECISION_AT if n <= n_db]
    else:
        if isinstance(precision_at, (int, np.integer)):
            precision_at = [precision_at]
        ns_list = [check_int(n, "each precision_at value", 1) for n in precision_at]
        too_big = [n for n in ns_list if n > n_db]
        if too_big:
            raise Learn2HashError(f"precision_at value {too_big[0]} exceeds the database size {n_db}")
    ns = np.array(sorted(set(ns_list)), dtype=np.int64)

    q_words = _code_words(query_codes)
    db_words = _code_words(db_codes)
    q_lab = _label_words(ql)
    sets, sid = np.unique(_label_words(dbl), axis=0, return_inverse=True)
    sets = np.ascontiguousarray(sets)
    sid = np.ascontiguousarray(sid.reshape(-1), dtype=np.int32)

    n_threads = _check_threads(threads)
    nq = len(query_codes)
    packed = np.zeros((nq, bits + 1), np.int64)
    _over_queries(lambda a, b: _count_kernel(q_words, db_words, q_lab, sets, sid, packed, a, b), nq, n_threads)
    total = packed & np.int64(0xFFFFFFFF)
    relevant = packed >> np.int64(32)
    del packed
    ap = np.zeros(nq, np.float64)
    if ties == "index":
        hits = np.zeros((nq, len(ns)), np.int64)
        _over_queries(lambda a, b: _index_kernel(q_words, db_words, q_lab, sets, sid, total, relevant, k, ns,
                                                 ap, hits, a, b), nq, n_threads)
    else:
        hits = np.zeros((nq, len(ns)), np.float64)
        harmonic = _harmonic_table(n_db)
        _expected_kernel(total, relevant, k, ns, harmonic, ap, hits, 0, nq)

    n_relevant = relevant.sum(axis=1)
    has_relevant = n_relevant > 0
    counted = has_relevant if zero_hits == "exclude" else np.ones(len(ap), dtype=bool)

    cum_t = np.cumsum(total, axis=1)
    cum_r = np.cumsum(relevant, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec_r = np.where(cum_t > 0, cum_r / np.maximum(cum_t, 1), 0.0 if empty_radius == "zero" else np.nan)
        rec_r = np.where(has_relevant[:, None], cum_r / np.maximum(n_relevant, 1)[:, None], 0.0)
    prec_r = prec_r[counted]
    rec_r = rec_r[counted]
    valid = np.isfinite(prec_r)
    n_valid = valid.sum(axis=0)
    pr_precision = np.where(n_valid > 0, np.where(valid, prec_r, 0.0).sum(axis=0) / np.maximum(n_valid, 1), np.nan)
    pr_recall = rec_r.mean(axis=0) if rec_r.shape[0] else np.full(bits + 1, np.nan)
    r_eff = min(radius, bits)

    return {
        "map": _mean(ap, counted),
        "precision_at_n": {int(n): _mean(hits[:, p] / n, counted) for p, n in enumerate(ns)},
        "precision_at_radius": float(pr_precision[r_eff]),
        "recall_at_radius": float(pr_recall[r_eff]),
        "pr_curve": {"radius": np.arange(bits + 1), "precision": pr_precision, "recall": pr_recall},
        "n_queries": len(query_codes),
        "n_database": n_db,
        "bits": bits,
        "n_queries_without_relevant": int((~has_relevant).sum()),
        "n_queries_evaluated": int(counted.sum()),
        "per_query": {"ap": ap, "n_relevant": n_relevant},
        "settings": {
            "topk": topk,
            "topk_effective": k,
            "ties": ties,
            "radius": radius,
            "precision_at": [int(n) for n in ns],
            "zero_hits": zero_hits,
            "empty_radius": empty_radius,
            "threads": n_threads,
            "policies": {
                "relevance": _POLICIES["relevance"],
                "ranking": _POLICIES["ranking"],
                "ties": _POLICIES["ties"][ties],
                "zero_hits": _POLICIES["zero_hits"][zero_hits],
                "empty_radius": _POLICIES["empty_radius"][empty_radius],
                "average_precision": _POLICIES["average_precision"],
                "radius_metrics": _POLICIES["radius_metrics"],
            },
        },
    }


#: display names of the scalar results, keyed by the names that results, ``metrics.json`` and
#: :func:`summary` use (those keys never change: stored runs stay readable); one spelling for every
#: table, report and plot. Keys with a parameter (``map@k``, ``precision@N``, a radius) are
#: spelled by :func:`metric_name`.
METRIC_NAMES: dict[str, str] = {
    "map": "mAP@all", "map@all": "mAP@all",
    "n_query": "queries", "n_queries": "queries", "n_database": "database items",
    "n_queries_without_relevant": "queries without a relevant item", "n_queries_evaluated": "queries evaluated",
    "ties": "tie policy", "epochs": "epochs", "train_seconds": "train seconds", "encode_seconds": "encode seconds",
    "evaluate_seconds": "evaluate seconds", "seconds_per_epoch": "seconds per epoch",
}
_PARAMETRISED_NAMES = [
    (re.compile(r"^map@(\w+)$"), "mAP@{}"),
    (re.compile(r"^(?:precision_at_radius|precision@H<=)(\d+)$"), "P@H<={}"),
    (re.compile(r"^(?:recall_at_radius|recall@H<=)(\d+)$"), "R@H<={}"),
    (re.compile(r"^precision@(\d+)$"), "P@{}"),
]


def metric_name(key: str) -> str:
    """The display name of result key ``key`` (``"precision_at_radius2"`` -> ``"P@H<=2"``,
    ``"map@1000"`` -> ``"mAP@1000"``); a key without one is shown as it is."""
    if key in METRIC_NAMES:
        return METRIC_NAMES[key]
    for pattern, name in _PARAMETRISED_NAMES:
        m = pattern.match(key)
        if m:
            return name.format(m.group(1))
    return key


def summary(result: Mapping[str, Any]) -> dict[str, float | int]:
    """The scalar metrics of an :func:`evaluate` result, in display order.

    Keys: ``map`` (or ``map@k``), ``precision@N`` for each N, ``precision@H<=r``,
    ``recall@H<=r``, ``n_queries``, ``n_queries_without_relevant``, ``n_queries_evaluated``.
    """
    settings = result["settings"]
    map_key = "map" if settings["topk"] is None else f"map@{settings['topk']}"
    out: dict[str, float | int] = {map_key: result["map"]}
    for n, value in result["precision_at_n"].items():
        out[f"precision@{n}"] = value
    out[f"precision@H<={settings['radius']}"] = result["precision_at_radius"]
    out[f"recall@H<={settings['radius']}"] = result["recall_at_radius"]
    for key in ("n_queries", "n_queries_without_relevant", "n_queries_evaluated"):
        out[key] = result[key]
    return out


class MapScorer:
    """A scikit-learn scorer (``scorer(estimator, X, y) -> float``): the mAP of a fitted hasher (or
    a ``Pipeline`` ending in one) on held-out items ``X`` with labels ``y``.

    The first ``query_fraction`` of the items (at least one) are the queries, the rest the
    database; codes come from ``estimator.encode(X)``, or the signs of ``estimator.transform(X)``
    for a ``Pipeline``; mAP@``topk`` (``None``: over the whole database) with the default tie
    and zero-hit policies of :func:`evaluate`. ``y``: class labels of any kind (their distinct
    values are the classes, :func:`learn2hash.datasets.base.class_labels`) or a multi-hot matrix.
    Made by :func:`map_scorer`.
    """

    def __init__(self, topk: int | None = None, query_fraction: float = 0.2):
        if topk is not None:
            check_int(topk, "map_scorer topk", 1)
        if isinstance(query_fraction, bool) or not isinstance(query_fraction, (int, float)) \
                or not 0 < query_fraction < 1:
            raise Learn2HashError(f"map_scorer query_fraction must be a number in (0, 1), got {query_fraction!r}")
        self.topk, self.query_fraction = topk, float(query_fraction)

    def __call__(self, estimator: Any, X: Any, y: Any) -> float:
        from learn2hash.datasets.base import class_labels

        if y is None:
            raise Learn2HashError("map_scorer needs labels y: items are relevant to a query when they share a label")
        encode = getattr(estimator, "encode", None)
        codes = encode(X) if callable(encode) else Codes.from_signs(np.asarray(estimator.transform(X)))
        labels = class_labels(y, len(codes), what="y")
        if len(codes) < 2:
            raise Learn2HashError(f"map_scorer needs at least 2 items (queries and a database), got {len(codes)}")
        q = min(len(codes) - 1, max(1, int(len(codes) * self.query_fraction)))
        return float(evaluate(codes[:q], labels[:q], codes[q:], labels[q:], topk=self.topk)["map"])

    def __repr__(self) -> str:
        return f"map_scorer(topk={self.topk!r}, query_fraction={self.query_fraction!r})"


def map_scorer(topk: int | None = None, query_fraction: float = 0.2) -> MapScorer:
    """A scorer for ``GridSearchCV(..., scoring=map_scorer(topk=1000))``: the mAP@``topk`` of the
    first ``query_fraction`` of the held-out items against the rest (:class:`MapScorer`); a
    hasher's ``score(X, y)`` is ``map_scorer()``'s value."""
    return MapScorer(topk, query_fraction)
