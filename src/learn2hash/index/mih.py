"""Multi-index hashing (Norouzi, Punjani & Fleet, CVPR 2012): exact sub-linear Hamming search.

Each code is cut into ``m`` disjoint substrings of consecutive bits (a substring never crosses a
64-bit word). For every substring a table maps each key value to the items with that key: a
counting sort of the positions by key, stored as ``offsets[2**L + 1]`` and ``items[n]`` (positions
ascending inside a bucket). Pigeonhole: if ``d(q, x) <= r`` then some substring has
``d_s(q, x) <= r // m``; so probing every key within ``r // m`` of the query's key in every table,
then verifying candidates with the full distance, finds every item within ``r`` exactly. A
candidate is kept only from the first table in which it lies within the probe radius, so nothing
is reported twice.

k-NN: the probe radius grows shell by shell (``r' = 0, 1, ...``); after shell ``r'`` every item with
``d <= m * (r' + 1) - 1`` has been seen, so once ``k`` items at that distance or less are known the
``k`` nearest (ties by position) are exact. A query whose candidate count exceeds its budget stops
and is answered by the linear scan instead.

Bits are numbered as in :mod:`learn2hash.codes` (bit 0 is the most significant bit of byte 0);
the kernels read them from byte-swapped 64-bit words, whose most significant bit is code bit 0.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from learn2hash.kernels import bswap64, popcount64
from learn2hash.index._kernels import parallel_for

#: Longest substring that gets a directly addressed table (2**24 offsets = 128 MiB at most).
MAX_KEY_BITS = 24

# Cost model, in nanoseconds on one core (ratios matter, not absolute values).
SCAN_NS_PER_WORD = 0.12  # one (query, database code, 64-bit word) in the bit-plane linear scan
PROBE_NS = 15.0  # one bucket look-up
VERIFY_NS = 12.0  # one candidate: random read of its code and the full distance
# One item of one table when building: a counting sort, whose counts and writes land at random
# in tables of 2**L entries (measured 70-270 ns on a 2-core machine under a load average of 14,
# while a sequential copy ran 4-30 times slower than on a quiet core).
BUILD_NS = 30.0
# One k-NN candidate: besides the distance, the check of which table found it first, and a random
# read of its code (measured 60-100 ns per candidate on 10**6 clustered 64-bit codes).
KNN_VERIFY_NS = 80.0


@dataclass(frozen=True)
class Layout:
    """Where each substring lies: word ``word[s]``, ``shift[s]`` bits from the right of the
    byte-swapped word, ``length[s]`` bits long."""

    word: np.ndarray
    shift: np.ndarray
    length: np.ndarray

    @property
    def m(self) -> int:
        return int(self.word.size)


def layout(bits: int, m: int) -> Layout:
    """Cut ``bits`` into about ``m`` substrings of near-equal length, none crossing a 64-bit word
    and none longer than :data:`MAX_KEY_BITS` (so the actual count may exceed ``m``)."""
    words = (bits + 63) // 64
    target = bits / max(1, m)
    word, shift, length = [], [], []
    for w in range(words):
        valid = min(64, bits - 64 * w)
        parts = max(1, round(valid / target), math.ceil(valid / MAX_KEY_BITS))
        parts = min(parts, valid)
        start = 0
        for p in range(parts):
            size = valid * (p + 1) // parts - valid * p // parts
            word.append(w)
            shift.append(64 - start - size)
            length.append(size)
            start += size
    return Layout(np.array(word, np.int64), np.array(shift, np.int64), np.array(length, np.int64))


def _probes(length: int, radius: int) -> int:
    return sum(math.comb(length, j) for j in range(min(radius, length) + 1))


def knn_layout(n: int, bits: int) -> Layout:
    """Norouzi et al.'s choice for k-NN: substrings of about ``log2(n)`` bits."""
    length = max(4, min(MAX_KEY_BITS, round(math.log2(max(2, n)))))
    return layout(bits, max(1, round(bits / length)))


def range_cost(n: int, n_queries: int, bits: int, radius: int, lay: Layout, built: bool,
               prof: "Profile | None" = None) -> float:
    """Estimated nanoseconds of a multi-index range search: uniformly spread keys assumed, or,
    with a :class:`Profile` of the codes, the share of them within the sub-radius of a query's
    key (queries like the stored codes; at least the uniform share), each read at random."""
    r = radius // lay.m
    per_query = 0.0
    for t, L in enumerate(lay.length):
        p = _probes(int(L), r)
        if prof is None:
            per_query += p * (PROBE_NS + VERIFY_NS * n / 2.0 ** int(L))
        else:
            seen = max(float(prof.sub[t, min(r, int(L))]), p / 2.0 ** int(L))
            per_query += p * PROBE_NS + KNN_VERIFY_NS * min(1.0, seen) * n
    build = 0.0 if built else BUILD_NS * n * lay.m
    return n_queries * per_query + build


def scan_cost(n: int, n_queries: int, bits: int) -> float:
    """Estimated nanoseconds of the linear scan."""
    return n_queries * n * ((bits + 63) // 64) * SCAN_NS_PER_WORD


def build_cost(n: int, lay: Layout) -> float:
    """Estimated nanoseconds of building the tables of ``lay`` over ``n`` codes."""
    return BUILD_NS * n * lay.m


@functools.lru_cache(maxsize=256)
def knn_distance(n: int, bits: int, k: int) -> int:
    """Distance of the k-th nearest of ``n`` uniformly random ``bits``-bit codes (the smallest
    ``d`` with ``n * P(Binomial(bits, 1/2) <= d) >= k``), in exact integer arithmetic."""
    total = 0
    for d in range(bits + 1):
        total += math.comb(bits, d)
        if n * total >= k << bits:
            return d
    return bits


@dataclass(frozen=True)
class Profile:
    """How the stored codes crowd, from the distances between pairs of a sample of them.

    ``full[d]``: the fraction of pairs at Hamming distance ``<= d`` (``d = 0 .. bits``);
    ``sub[s, r]``: the fraction of pairs within ``r`` of each other on substring ``s``."""

    full: np.ndarray
    sub: np.ndarray
    pairs: int


def profile(db: np.ndarray, bits: int, lay: Layout, sample: int = 1024) -> Profile:
    """:class:`Profile` of the codes ``db`` (flat ``uint64`` words) for substrings ``lay``, from
    every pair of an evenly spaced sample of at most ``sample`` codes."""
    W = (bits + 63) // 64
    n = db.size // W
    rows = np.asarray(db.reshape(n, W)[:: max(1, n // sample)][:sample]).byteswap()  # code bit 0 = word's top bit
    s = rows.shape[0]
    full = np.zeros(bits + 1, np.int64)
    max_len = int(lay.length.max())
    sub = np.zeros((lay.m, max_len + 1), np.int64)
    keys = np.stack([(rows[:, lay.word[t]] >> np.uint64(lay.shift[t])) & np.uint64((1 << int(lay.length[t])) - 1)
                     for t in range(lay.m)], axis=1)
    for lo in range(0, s, 256):  # pairs (i, j), i in a block of rows, any j: bounded memory
        x = rows[lo:lo + 256, None, :] ^ rows[None, :, :]
        full += np.bincount(np.bitwise_count(x).sum(axis=2, dtype=np.int64).ravel(), minlength=bits + 1)
        kx = np.bitwise_count(keys[lo:lo + 256, None, :] ^ keys[None, :, :]).astype(np.int64)
        for t in range(lay.m):
            sub[t] += np.bincount(kx[:, :, t].ravel(), minlength=max_len + 1)
    full[0] -= s  # a code and itself is no pair
    sub[:, 0] -= s
    pairs = max(1, s * (s - 1))
    return Profile(np.cumsum(full) / pairs, np.cumsum(sub, axis=1) / pairs, pairs)


def knn_cost(n: int, n_queries: int, bits: int, k: int, lay: Layout, prof: Profile) -> float:
    """Estimated nanoseconds of a multi-index k-NN search of queries like the stored codes
    (without building the tables).

    A query's search is complete after sub-radius ``r`` once ``m (r + 1) - 1 >= d_k``, ``d_k``
    the distance of its k-th nearest item: the smallest ``d`` with ``n * prof.full[d] >= k``.
    It then has probed, in each table ``s``, the keys within ``r`` of its own (``sum_j C(L, j)``
    look-ups) and verified the items there: ``n * prof.sub[s, r]``, and at least what uniformly
    spread keys would put there (``n * probes / 2**L``: the sample cannot resolve rarer pairs)."""
    reach = np.flatnonzero(n * prof.full >= k)
    d_k = int(reach[0]) if reach.size else bits
    r = max(0, -(-(d_k + 1) // lay.m) - 1)
    per_query = 0.0
    for t, L in enumerate(lay.length):
        L = int(L)
        p = _probes(L, r)
        seen = max(float(prof.sub[t, min(r, L)]), p / 2.0**L)
        per_query += p * PROBE_NS + KNN_VERIFY_NS * min(1.0, seen) * n
    return n_queries * per_query


def best_layout(n: int, n_queries: int, bits: int, radius: int, built: set) -> tuple[Layout, float]:
    """The substring layout with the lowest estimated range-search cost, and that cost; ``built``
    holds the :attr:`Tables.key` of tables that exist already (they cost nothing to build)."""
    best: tuple[Layout, float] | None = None
    for m in range(1, max(2, bits // 4) + 1):
        lay = layout(bits, m)
        key = tuple(int(v) for v in lay.length)
        cost = range_cost(n, n_queries, bits, radius, lay, key in built)
        if best is None or cost < best[1]:
            best = (lay, cost)
    assert best is not None
    return best


# ---------------------------------------------------------------------------------------- tables
@njit(cache=True)
def _keys(db, W, word, shift, mask):
    n = db.size // W
    out = np.empty(n, np.int64)
    for j in range(n):
        out[j] = np.int64((bswap64(db[j * W + word]) >> np.uint64(shift)) & np.uint64(mask))
    return out


@njit(nogil=True, cache=True)
def _build(db, W, word, shift, length, offsets, items, first, step):
    """Counting sort of positions by key, per table (``offsets`` must be zero on entry)."""
    m = word.size
    n = items.shape[1]
    for s in range(first, m, step):
        mask = (1 << length[s]) - 1
        keys = _keys(db, W, word[s], shift[s], mask)
        off = offsets[s]
        for j in range(n):
            off[keys[j] + 1] += 1
        for v in range(1 << length[s]):
            off[v + 1] += off[v]
        fill = off.copy()
        for j in range(n):
            items[s, fill[keys[j]]] = j
            fill[keys[j]] += 1
    return offsets, items


class Tables:
    """The ``m`` multi-index tables of a database (positions ``0 .. n-1``)."""

    def __init__(self, db: np.ndarray, bits: int, lay: Layout, threads: int = 1):
        self.bits = bits
        self.W = (bits + 63) // 64
        self.layout = lay
        self.n = db.size // self.W
        index_type = np.int32 if self.n < 2**31 - 1 else np.int64
        self.offsets = np.zeros((lay.m, (1 << int(lay.length.max())) + 1), index_type)
        self.items = np.empty((lay.m, self.n), index_type)
        parallel_for(min(threads, lay.m), _build, db, self.W, lay.word, lay.shift, lay.length, self.offsets,
                     self.items)

    @property
    def key(self) -> tuple[int, ...]:
        return tuple(int(v) for v in self.layout.length)

    @property
    def m(self) -> int:
        return self.layout.m


# ---------------------------------------------------------------------------------------- probing
@njit(cache=True)
def _next_comb(v):
    """Gosper's hack: the next larger integer with the same number of set bits."""
    c = v & -v
    r = v + c
    return (((r ^ v) >> 2) // c) | r


@njit(cache=True)
def _first_table(qw, db, W, i, pos, word, shift, length, r_sub, upto):
    """Index of the first table ``s < upto`` where item ``pos`` is within ``r_sub`` of query ``i``."""
    for s in range(upto):
        x = bswap64(db[pos * W + word[s]] ^ qw[i, word[s]])
        d = popcount64((x >> np.uint64(shift[s])) & np.uint64((1 << length[s]) - 1))
        if d <= r_sub:
            return s
    return upto


@njit(cache=True)
def _distance(qw, db, W, i, pos):
    d = 0
    for w in range(W):
        d += popcount64(db[pos * W + w] ^ qw[i, w])
    return d


@njit(cache=True)
def _shell(qw, db, W, alive, i, offsets, items, word, shift, length, r_sub, exact_ring,
           keep_upto, hd, hp, count, budget):
    """Probe every table at sub-radius ``r_sub`` (only the ring ``== r_sub`` if ``exact_ring``,
    else the ball ``<= r_sub``) and append new items with full distance ``<= keep_upto`` to
    ``hd/hp`` (grown as needed). Returns ``(hd, hp, count, work)``; ``work`` counts candidates."""
    m = word.size
    has_mask = alive.size > 0
    work = 0
    for s in range(m):
        L = length[s]
        key = np.int64((bswap64(qw[i, word[s]]) >> np.uint64(shift[s])) & np.uint64((1 << L) - 1))
        lo_j = r_sub if exact_ring else 0
        for j in range(lo_j, min(r_sub, L) + 1):
            if j == 0:
                flip = 0
            else:
                flip = (1 << j) - 1
            while flip < (1 << L):
                b = key ^ flip
                start = np.int64(offsets[s, b])
                stop = np.int64(offsets[s, b + 1])
                work += stop - start + 1
                if work > budget:
                    return hd, hp, count, work
                for t in range(start, stop):
                    pos = np.int64(items[s, t])
                    if has_mask and not alive[pos]:
                        continue
                    # Report an item only from the first table where it is within r_sub
                    # (within r_sub - 1 for tables before s when probing a ring: those found it earlier).
                    if _first_table(qw, db, W, i, pos, word, shift, length, r_sub, s) < s:
                        continue
                    if exact_ring and r_sub > 0 and _first_table(qw, db, W, i, pos, word, shift, length,
                                                                 r_sub - 1, m) < m:
                        continue
                    d = _distance(qw, db, W, i, pos)
                    if d <= keep_upto:
                        if count == hd.size:
                            hd2 = np.empty(2 * hd.size, np.int64)
                            hp2 = np.empty(2 * hp.size, np.int64)
                            hd2[:count] = hd[:count]
                            hp2[:count] = hp[:count]
                            hd, hp = hd2, hp2
                        hd[count] = d
                        hp[count] = pos
                        count += 1
                if j == 0:
                    break
                flip = _next_comb(flip)
    return hd, hp, count, work


@njit(cache=True)
def _sift_down(a, root, n):
    while True:
        child = 2 * root + 1
        if child >= n:
            return
        if child + 1 < n and a[child] < a[child + 1]:
            child += 1
        if a[root] >= a[child]:
            return
        a[root], a[child] = a[child], a[root]
        root = child


@njit(cache=True)
def _heapsort(a):
    """Sort ``a`` in place (a heap sort: small to compile, unlike numba's generic sort)."""
    n = a.size
    for start in range(n // 2 - 1, -1, -1):
        _sift_down(a, start, n)
    for end in range(n - 1, 0, -1):
        a[0], a[end] = a[end], a[0]
        _sift_down(a, 0, end)


@njit(cache=True)
def _sort_by_distance_then_position(hd, hp, count, n):
    """Order ``count`` hits by (distance, position) with one sort of ``distance * n + position``."""
    key = hd[:count] * n + hp[:count]
    _heapsort(key)
    return key // n, key % n


@njit(nogil=True, cache=True)
def _range_all(qw, db, W, alive, offsets, items, word, shift, length, radius, budget, cap, counts, hd_out, hp_out,
               first, step):
    """Range search of every query; hits of query ``i`` (sorted) go to ``hd_out/hp_out[i, :cap]``,
    ``counts[i]`` is the number of hits, or -1 if the query ran over its budget."""
    nq = qw.shape[0]
    m = word.size
    r_sub = radius // m
    for i in range(first, nq, step):
        hd = np.empty(16, np.int64)
        hp = np.empty(16, np.int64)
        hd, hp, count, work = _shell(qw, db, W, alive, i, offsets, items, word, shift, length, r_sub,
                                     False, radius, hd, hp, 0, budget)
        if work > budget:
            counts[i] = -1
            continue
        counts[i] = count
        if count <= cap:
            sd, sp = _sort_by_distance_then_position(hd, hp, count, db.size // W)
            hd_out[i, :count] = sd
            hp_out[i, :count] = sp


@njit(nogil=True, cache=True)
def _knn_all(qw, db, W, alive, offsets, items, word, shift, length, k, max_d, budget, out_d, out_p, done,
             first, step):
    """k-NN of every query by growing shells; ``done[i]`` is False where the budget ran out."""
    nq = qw.shape[0]
    m = word.size
    max_len = 0
    for s in range(m):
        max_len = max(max_len, length[s])
    for i in range(first, nq, step):
        hd = np.empty(64, np.int64)
        hp = np.empty(64, np.int64)
        count = 0
        work = 0
        ok = False
        for r_sub in range(max_len + 1):
            hd, hp, count, w = _shell(qw, db, W, alive, i, offsets, items, word, shift, length, r_sub,
                                      True, max_d, hd, hp, count, budget - work)
            work += w
            if work > budget:
                break
            complete = m * (r_sub + 1) - 1  # every item at or below this distance has been seen
            within = 0
            for r in range(count):
                if hd[r] <= complete:
                    within += 1
            if within >= k or r_sub == max_len:
                ok = True
                break
        done[i] = ok
        if ok:
            sd, sp = _sort_by_distance_then_position(hd, hp, count, db.size // W)
            take = min(k, count)
            out_d[i, :take] = sd[:take]
            out_p[i, :take] = sp[:take]


def range_search(tables: Tables, qw: np.ndarray, db: np.ndarray, alive: np.ndarray, radius: int,
                 budget: int, threads: int = 1) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Per-query hits ``(counts, distances, positions)`` sorted by (distance, position); a count
    of -1 marks a query that exceeded ``budget`` candidates (its lists are empty)."""
    nq = qw.shape[0]
    lay = tables.layout
    cap = 64
    counts = np.zeros(nq, np.int64)
    hd = np.empty((nq, cap), np.int64)
    hp = np.empty((nq, cap), np.int64)
    parallel_for(threads, _range_all, qw, db, tables.W, alive, tables.offsets, tables.items, lay.word, lay.shift,
                 lay.length, radius, budget, cap, counts, hd, hp)
    dists = [hd[i, :max(0, counts[i])] for i in range(nq)]
    poss = [hp[i, :max(0, counts[i])] for i in range(nq)]
    big = np.flatnonzero(counts > cap)
    if big.size:
        cap2 = int(counts[big].max())
        c2 = np.zeros(big.size, np.int64)
        hd2 = np.empty((big.size, cap2), np.int64)
        hp2 = np.empty((big.size, cap2), np.int64)
        parallel_for(threads, _range_all, np.ascontiguousarray(qw[big]), db, tables.W, alive, tables.offsets,
                     tables.items, lay.word, lay.shift, lay.length, radius, budget, cap2, c2, hd2, hp2)
        for r, i in enumerate(big):
            dists[i] = hd2[r, :c2[r]]
            poss[i] = hp2[r, :c2[r]]
    return counts, dists, poss


def knn_search(tables: Tables, qw: np.ndarray, db: np.ndarray, alive: np.ndarray, k: int, max_d: int,
               budget: int, out_d: np.ndarray, out_p: np.ndarray, threads: int = 1) -> np.ndarray:
    """Fill rows of ``out_d/out_p`` with the exact k nearest; returns the bool mask of finished queries."""
    lay = tables.layout
    done = np.zeros(qw.shape[0], np.bool_)
    parallel_for(threads, _knn_all, np.ascontiguousarray(qw), db, tables.W, alive, tables.offsets, tables.items,
                 lay.word, lay.shift, lay.length, k, max_d, budget, out_d, out_p, done)
    return done
