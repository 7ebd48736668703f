"""numba kernels of the native Hamming index: exact k-NN by counting selection and exact range scans.

Data layout. A database of ``n`` codes of ``K`` bits is kept twice: as a flat ``uint64`` array of
``n * W`` words (``W = ceil(K / 64)``; each code is its packed bytes padded with zero bytes to
``8 * W`` bytes and read as little-endian words, so the padding contributes nothing to a distance),
which multi-index hashing and storage use, and bit-sliced in blocks of 512 codes (256 without AVX-512)
(:mod:`learn2hash.index._bitplanes`), which the scans use: the bit planes decide for a whole block at
once whether each can enter the answer, and the exact distance of the few that can is read from the
low bits of the kernel's sum, without touching the words. Queries are a
``uint64[q, W]`` array laid out like the words. Item "positions" are row numbers in the database.

Work split. The queries are cut into groups of ``qblock`` queries and the database into ``nchunks``
contiguous runs of blocks; each (query group, chunk) pair is one work unit, and
:func:`parallel_for` deals the units to threads (the kernels release the GIL). Inside a unit the
database is walked tile by tile (a tile of blocks fits in L1), and every query of the group scans
the whole tile before the next tile is loaded, so one pass over memory serves the whole group.

k-NN selection (exact, ties broken by position). For every (chunk, query) the kernel keeps a
threshold ``t``: an item is a candidate only if its distance is ``< t``. ``hist[d]`` counts the
candidates kept at distance ``d``, ``run`` the candidates at distances ``< t``; when ``run`` reaches
``k`` the threshold drops (``t -= 1; run -= hist[t]``), so ``t`` is always the smallest distance
``T`` with at least ``k`` candidates at ``<= T``. An item at distance ``>= t`` comes after ``k``
earlier items at ``<= t`` and can never enter the top-k, so rejecting it is exact. Candidates go to
a buffer of ``2k`` slots that is compacted (drop ``d > t`` and surplus ties at ``t``) when full.
The block test uses the current ``t``, and candidates of a block are taken in position order, each
checked again against ``t`` as it drops. Nothing is sorted: the final per-query merge is a stable
counting sort by distance.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from learn2hash.index._bitplanes import (BLOCK, COMPLEMENTED, LANES, PLAIN, Shape, any_lane, below, distance_at,
                                         query_plan, threshold_args)
from learn2hash.kernels import popcount64, trailing_zeros64, unlikely

#: Bytes of bit planes held in cache while a group of queries scans them.
TILE_BYTES = 36 << 10
#: Queries that share one pass over a tile.
QUERY_BLOCK = 512
#: A batch of fewer queries than this per thread is one group, the database split among the threads.
MIN_SHARED = 64
#: Codes of up to this many kernel steps (8 planes a step: 64 bits) test blocks without the sums
#: first (see :func:`_next_hit_fixed`).
RETEST_STEPS = 4


def work_split(n_queries: int, n_items: int, threads: int, shape: Shape) -> tuple[int, int, int]:
    """Choose ``(qblock, nchunks, tile)`` (``tile`` in blocks) so that every thread has
    work and tiles stay in cache.

    A batch of fewer than :data:`MIN_SHARED` queries per thread is one group, and the database is
    cut into one chunk per thread: every block is then read from memory once per batch (with a
    group per thread, once per group), which is what bounds the scan of a database larger than the
    caches (10^8 64-bit codes, 20 queries, 2 threads: 6.7 -> 4.3 ms per query). Every chunk keeps
    a top k of its own, a selection cost that a split by queries does not have, so larger batches
    are cut into query groups of equal size instead, as many as a multiple of ``threads`` (work
    units are dealt round robin), at most :data:`QUERY_BLOCK` queries each."""
    tile = max(1, TILE_BYTES // (8 * LANES * shape.PB))
    blocks = -(-n_items // BLOCK)
    threads = max(1, threads)
    if n_queries < threads * MIN_SHARED:
        return max(1, n_queries), max(1, min(threads, blocks // (2 * tile))), tile
    ngroups = threads * max(1, -(-n_queries // (threads * QUERY_BLOCK)))
    return -(-n_queries // ngroups), 1, tile


class Plan:
    """A query batch prepared for the bit-plane scan: per query, the plane offsets its kernel reads,
    its popcount and whether it is complemented (see :func:`~learn2hash.index._bitplanes.query_plan`)."""

    def __init__(self, offs: np.ndarray, pop: np.ndarray, comp: np.ndarray):
        self.offs, self.pop, self.comp = offs, pop, comp

    @classmethod
    def of(cls, qw: np.ndarray, shape: Shape) -> "Plan":
        """The plan of query words ``uint64[q, W]``."""
        return cls(*query_plan(np.ascontiguousarray(qw), shape.P, shape.S))

    def take(self, rows: np.ndarray) -> "Plan":
        """The plan of queries ``rows`` only."""
        return Plan(self.offs[rows], self.pop[rows], self.comp[rows])

    @property
    def args(self) -> tuple:
        return self.offs, self.pop, self.comp


@njit(cache=True, inline="always")
def _accept(c, i, d, pos, t, k, hist, run, bd, bp, bn):
    """Add candidate ``(d, pos)`` to the buffer of (chunk ``c``, query ``i``); return the new threshold."""
    n = bn[c, i]
    if n == bd.shape[2]:
        # Compact: keep every candidate below t and the first (k - run) at t, in position order.
        need = k - run[c, i]
        w = 0
        for r in range(n):
            dr = bd[c, i, r]
            if dr < t or (dr == t and need > 0):
                if dr == t:
                    need -= 1
                bd[c, i, w] = dr
                bp[c, i, w] = bp[c, i, r]
                w += 1
        hist[c, i, t] = k - run[c, i]
        n = w
    bd[c, i, n] = d
    bp[c, i, n] = pos
    bn[c, i] = n + 1
    hist[c, i, d] += 1
    r = run[c, i] + 1
    while r >= k:
        t -= 1
        r -= hist[c, i, t]
    run[c, i] = r
    return t


@njit(cache=True, inline="always")
def _first_ranks(dist, count, i, max_d):
    """Counting sort of query ``i``'s entries ``dist[c, i, :count[c, i]]`` (values ``0 .. max_d``),
    first step: ``out[d]`` is the rank of the first entry at distance ``d`` in distance order."""
    out = np.zeros(max_d + 2, np.int64)
    for c in range(dist.shape[0]):
        for r in range(count[c, i]):
            out[dist[c, i, r] + 1] += 1
    for d in range(max_d + 1):
        out[d + 1] += out[d]
    return out


@njit(nogil=True, cache=True)
def merge_topk(bd, bp, bn, k, max_d, out_d, out_p, first, step):
    """Per query: the ``k`` smallest ``(distance, position)`` of all chunks' buffers, by counting sort.

    Buffers hold candidates in position order and chunks are in position order, so a stable
    counting sort by distance yields ties in position order. Missing slots keep their fill value.
    """
    nchunks, nq = bn.shape[0], bn.shape[1]
    for i in range(first, nq, step):
        cnt = _first_ranks(bd, bn, i, max_d)
        for c in range(nchunks):
            for r in range(bn[c, i]):
                d = bd[c, i, r]
                o = cnt[d]
                if o < k:
                    out_d[i, o] = d
                    out_p[i, o] = bp[c, i, r]
                cnt[d] = o + 1


def knn_state(nchunks: int, nq: int, k: int, max_d: int, start: np.ndarray | None = None):
    """Fresh per-(chunk, query) state of :func:`knn_scan`: ``(thr, run, hist, bd, bp, bn)``; the
    thresholds start at ``start[i]`` (``1 .. max_d + 1``; default ``max_d + 1``, above every
    distance)."""
    thr = np.full((nchunks, nq), max_d + 1, np.int64)
    if start is not None:
        thr[:] = start
    return (thr, np.zeros((nchunks, nq), np.int64),
            np.zeros((nchunks, nq, max_d + 2), np.int64), np.empty((nchunks, nq, 2 * k), np.int32),
            np.empty((nchunks, nq, 2 * k), np.int64), np.zeros((nchunks, nq), np.int64))


@njit(cache=True, inline="always")
def _unit(u, nchunks, qblock, nq, nb):
    """Work unit ``u``: its chunk, its queries ``q0 .. q1-1`` and its blocks ``blo .. bhi-1``."""
    c = u % nchunks
    q0 = (u // nchunks) * qblock
    return c, q0, min(nq, q0 + qblock), (nb * c) // nchunks, (nb * (c + 1)) // nchunks


@njit(cache=True, inline="always")
def _own_lines(n):
    """``uint64[n]`` starting on a cache line, with no other data on its cache lines: the kernel
    stores to it for every block, and another thread's data on one of those lines would bounce
    the line between the cores (allocations of threads can sit side by side)."""
    buf = np.empty(n + 24, np.uint64)
    first = 8 + (-np.int64(buf.ctypes.data) % 64) // 8
    return buf[first:first + n]


@njit(cache=True, inline="always")
def _scratch(M):
    """Per-thread buffers of a scan: the kernel's sums, one block's passing positions and distances,
    and its mask."""
    return _own_lines(M * LANES), np.empty(BLOCK, np.int64), np.empty(BLOCK, np.int64), _own_lines(LANES)


@njit(cache=True, inline="always")
def _next_hit(flat, stride, of, at, b, end, h, cm, cin, zoff, tag, sums, mask):
    """The first of blocks ``b .. end-1`` where a code passes the kernel's test (its mask goes to
    ``mask``), or ``end``. The test's arguments are fixed for the whole loop, so the compiler
    prepares them once, outside it; a loop is compiled for each sign of ``cm``."""
    if cm != 0:
        return _next_hit_fixed(flat, stride, of, at, b, end, h, COMPLEMENTED, cin, zoff, tag, sums, mask)
    return _next_hit_fixed(flat, stride, of, at, b, end, h, PLAIN, cin, zoff, tag, sums, mask)


@njit(cache=True, inline="always")
def _next_hit_fixed(flat, stride, of, at, b, end, h, cm, cin, zoff, tag, sums, mask):
    """:func:`_next_hit` with ``cm`` fixed when compiled (:data:`~learn2hash.index._bitplanes.PLAIN`
    or :data:`~learn2hash.index._bitplanes.COMPLEMENTED`).

    For codes of up to :data:`RETEST_STEPS` steps the blocks are tested without the sums (their
    stores and last step are about a quarter of a short code's kernel), and a block that passes is
    tested again with them; for longer codes, whose blocks pass more often relative to what the
    sums cost, every test keeps them."""
    while b < end:
        if len(tag) <= RETEST_STEPS:
            m = below(flat, b * stride, of, at, h, cm, cin, zoff, tag, None)
            if unlikely(any_lane(m)):
                m = below(flat, b * stride, of, at, h, cm, cin, zoff, tag, sums)
        else:
            m = below(flat, b * stride, of, at, h, cm, cin, zoff, tag, sums)
        if unlikely(any_lane(m)):
            for lane in range(LANES):
                mask[lane] = m[lane]
            return b
        b += 1
    return end


@njit(cache=True, inline="always")
def _passing(m, b, n, alive, sums, t, M, hit_pos, hit_d):
    """The codes of block ``b`` that passed the test with threshold ``t`` (mask ``m``), stored and
    not removed, into ``hit_pos`` / ``hit_d`` in position order; returns how many."""
    count = 0
    for lane in range(LANES):
        x = m[lane]
        while x != 0:
            j = trailing_zeros64(x)
            x &= x - np.uint64(1)
            pos = b * BLOCK + lane * 64 + j
            if pos < n and (alive.size == 0 or alive[pos]):
                hit_pos[count] = pos
                hit_d[count] = distance_at(sums, lane, j, t, M)
                count += 1
    return count


@njit(cache=True, inline="always")
def _count_passing(m, b, n, alive):
    """How many codes of block ``b`` with mask ``m`` are stored (``< n``) and not removed."""
    count = 0
    for lane in range(LANES):
        x = m[lane]
        if alive.size == 0 and (b + 1) * BLOCK <= n:
            count += popcount64(x)
            continue
        while x != 0:
            pos = b * BLOCK + lane * 64 + trailing_zeros64(x)
            x &= x - np.uint64(1)
            if pos < n and (alive.size == 0 or alive[pos]):
                count += 1
    return count


@njit(cache=True)
def _seed(flat, stride, of, at, b, n, alive, k, top, pop, comp, P, M, tag, sums):
    """The smallest threshold ``t <= top`` with at least ``k`` items of block ``b`` at distance
    ``< t`` (``top`` when the block holds fewer), by bisection with the block test. Those ``k``
    items come first in the chunk, so no item at distance ``>= t`` can enter its top k: the
    scan may start there instead of at ``top`` and skip the selection work of a first block in
    which every item passes."""
    h, cm, cin, zoff = threshold_args(top, pop, comp, P, M)
    if _count_passing(below(flat, b * stride, of, at, h, cm, cin, zoff, tag, sums), b, n, alive) < k:
        return top
    lo, hi = 1, top
    while lo < hi:
        mid = (lo + hi) // 2
        h, cm, cin, zoff = threshold_args(mid, pop, comp, P, M)
        if _count_passing(below(flat, b * stride, of, at, h, cm, cin, zoff, tag, sums), b, n, alive) >= k:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(nogil=True, cache=True)
def knn_scan(offs, pop, comp, planes, n, alive, k, P, M, tag, qblock, nchunks, tile,
             thr, run, hist, bd, bp, bn, first, step):
    """Exact k-NN scan of work units ``first, first + step, ...``: fills the candidate buffers
    ``(bd, bp, bn)`` per (chunk, query) that :func:`merge_topk` finishes.

    ``(offs, pop, comp)``: a :class:`Plan`; ``planes``: the bit planes of the first ``n`` codes;
    ``alive`` is ``uint8[n]`` (0 = removed) or empty (nothing removed); ``P``, ``M``,
    ``tag``: the :class:`~learn2hash.index._bitplanes.Shape`.
    """
    nq, ow = offs.shape
    flat, of, stride = planes.reshape(-1), offs.reshape(-1), planes.shape[1] * LANES
    nb = (n + BLOCK - 1) // BLOCK
    sums, hit_pos, hit_d, mask = _scratch(M)
    top = hist.shape[2] - 1  # the threshold above every distance
    for u in range(first, ((nq + qblock - 1) // qblock) * nchunks, step):
        c, q0, q1, blo, bhi = _unit(u, nchunks, qblock, nq, nb)
        for i in range(q0, q1):
            if thr[c, i] == top and blo < bhi:
                thr[c, i] = _seed(flat, stride, of, i * ow, blo, n, alive, k, top, pop[i], comp[i], P, M, tag, sums)
        for s in range(blo, bhi, tile):
            for i in range(q0, q1):
                t = thr[c, i]
                if t <= 0:
                    continue
                b, end = s, min(bhi, s + tile)
                while b < end and t > 0:
                    h, cm, cin, zoff = threshold_args(t, pop[i], comp[i], P, M)
                    b = _next_hit(flat, stride, of, i * ow, b, end, h, cm, cin, zoff, tag, sums, mask)
                    if b < end:
                        # Taken in position order; t may fall on the way, so each is checked again.
                        for r in range(_passing(mask, b, n, alive, sums, t, M, hit_pos, hit_d)):
                            if hit_d[r] < t:
                                t = _accept(c, i, hit_d[r], hit_pos[r], t, k, hist, run, bd, bp, bn)
                        b += 1
                thr[c, i] = t


@njit(nogil=True, cache=True)
def range_scan(offs, pop, comp, planes, n, alive, radius, P, M, tag, qblock, nchunks, tile,
               cap, cnt, hd, hp, first, step):
    """Exact range scan: fill ``hd/hp[c, i, :cap]`` with the hits (distance ``<= radius``) of
    chunk ``c`` for query ``i`` in position order; ``cnt[c, i]`` counts all of them (more than
    ``cap`` means the caller must rerun that query with a larger ``cap``). Work units
    ``first, first + step, ...`` only; the arguments are those of :func:`knn_scan`."""
    nq, ow = offs.shape
    flat, of, stride = planes.reshape(-1), offs.reshape(-1), planes.shape[1] * LANES
    nb = (n + BLOCK - 1) // BLOCK
    sums, hit_pos, hit_d, mask = _scratch(M)
    t = radius + 1
    for u in range(first, ((nq + qblock - 1) // qblock) * nchunks, step):
        c, q0, q1, blo, bhi = _unit(u, nchunks, qblock, nq, nb)
        for s in range(blo, bhi, tile):
            for i in range(q0, q1):
                h, cm, cin, zoff = threshold_args(t, pop[i], comp[i], P, M)
                b, end = s, min(bhi, s + tile)
                while b < end:
                    b = _next_hit(flat, stride, of, i * ow, b, end, h, cm, cin, zoff, tag, sums, mask)
                    if b < end:
                        for r in range(_passing(mask, b, n, alive, sums, t, M, hit_pos, hit_d)):
                            slot = cnt[c, i]
                            if slot < cap:
                                hd[c, i, slot] = hit_d[r]
                                hp[c, i, slot] = hit_pos[r]
                            cnt[c, i] = slot + 1
                        b += 1


@njit(nogil=True, cache=True)
def sort_hits(counts, lims, hd, hp, radius, out_d, out_p, first, step):
    """Stable counting sort of each query's hits (in position order) by distance, into CSR arrays.

    ``hd/hp[c, i, :counts[c, i]]`` hold the hits of chunk ``c`` for query ``i``; query ``i``'s
    sorted hits go to ``out_d/out_p[lims[i]:lims[i + 1]]``.
    """
    nchunks, nq = hd.shape[0], hd.shape[1]
    for i in range(first, nq, step):
        cnt = _first_ranks(hd, counts, i, radius)
        base = lims[i]
        for c in range(nchunks):
            for r in range(counts[c, i]):
                d = hd[c, i, r]
                o = base + cnt[d]
                out_d[o] = d
                out_p[o] = hp[c, i, r]
                cnt[d] += 1


_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()


def parallel_for(threads: int, kernel, *args) -> None:
    """Run ``kernel(*args, first, threads)`` for ``first = 0 .. threads-1`` on ``threads`` threads.

    Kernels are compiled with ``nogil=True`` and loop over their share of the work
    (``range(first, total, threads)``), so the threads run truly in parallel.
    """
    if threads <= 1:
        kernel(*args, 0, 1)
        return
    with _pools_lock:
        pool = _pools.get(threads)
        if pool is None:
            pool = _pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="learn2hash-index")
    futures = [pool.submit(kernel, *args, first, threads) for first in range(threads)]
    for f in futures:
        f.result()
