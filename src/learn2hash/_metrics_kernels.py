"""The native kernels of :mod:`learn2hash.metrics` (numba, GIL released): the counting pass over the
database, the walk that ranks ties by database position, and the closed-form expected AP of tie
groups. :func:`learn2hash.metrics.evaluate` documents the formulas; nothing here checks its input."""

from __future__ import annotations

import numpy as np
from numba import njit

from learn2hash.kernels import popcount64

# Queries processed together by the counting kernel: each database word is loaded once for
# this many queries, and their histograms are independent chains of increments.
QUERY_BLOCK = 8
# Tie groups up to this size have their harmonic sums added term by term; larger ones use
# differences of the harmonic-number table (accurate to ~1e-14 there, see harmonic_table).
_DIRECT_SUM_MAX = 64
# Hypergeometric weights below this fraction of the running total are dropped.
_TAIL = 1e-18


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
def count_kernel(qw, dbw, ql, sets, sid, out, start, stop):
    """Fill ``out[i, d] = total | relevant << 32`` for queries ``start <= i < stop``, d = 0..K.

    ``qw``/``dbw``: codes as uint64 words; ``ql``: query labels as uint64 bitsets; ``sets``:
    the distinct database label sets as bitsets, ``sid[j]`` the set of database item ``j``.
    """
    nd = dbw.shape[0]
    n_words = qw.shape[1]
    n_sets = sets.shape[0]
    block = QUERY_BLOCK
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
def index_kernel(qw, dbw, ql, sets, sid, total, relevant, ks, ns, ap, hits, start, stop):
    """Metrics with ties broken by database position: AP@k for every cutoff ``ks[c]`` (``ap[c, i]``) and
    relevant hits in the top N, in one walk over the database.

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
        s_prec = np.zeros(ks.shape[0])
        n_top = np.zeros(ks.shape[0], np.int64)
        for j in range(nd):
            d = 0
            for w in range(n_words):
                d += popcount64(qw[i, w] ^ dbw[j, w])
            seen_t[d] += 1
            if rel[sid[j], 0] != 0:
                seen_r[d] += 1
                rank = before_t[d] + seen_t[d]
                precision = (before_r[d] + seen_r[d]) / rank
                for c in range(ks.shape[0]):
                    if rank <= ks[c]:
                        s_prec[c] += precision
                        n_top[c] += 1
                for p in range(ns.shape[0]):
                    if rank <= ns[p]:
                        hits[i, p] += 1
        for c in range(ks.shape[0]):
            if n_top[c] > 0:
                ap[c, i] = s_prec[c] / n_top[c]


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
def _cut_sum(f_sum, r_before, x, c, a, b):
    """``F + S_x``: expected sum of precisions when ``x`` of the ``c`` items that make the cut are relevant."""
    s_x = 0.0
    if x > 0:
        s_x = (x / c) * ((r_before + 1.0) * a + ((x - 1.0) / (c - 1.0) * b if c > 1 else 0.0))
    return f_sum + s_x


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
            acc += w * _cut_sum(f_sum, r_before, x, c, a, b) / (r_before + x)
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
            acc += w * _cut_sum(f_sum, r_before, x, c, a, b) / (r_before + x)
        norm += w
    return acc / norm


@njit(cache=True, nogil=True)
def expected_kernel(total, relevant, k, ns, harmonic, ap, hits, start, stop):
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


def harmonic_table(n: int) -> np.ndarray:
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
