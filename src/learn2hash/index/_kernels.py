"""numba kernels of the native Hamming index: exact k-NN by counting selection and exact range scans.

Data layout. A database of ``n`` codes of ``K`` bits is a flat ``uint64`` array of ``n * W`` words
(``W = ceil(K / 64)``): each code is its packed bytes padded with zero bytes to ``8 * W`` bytes and
read as little-endian words, so the padding contributes nothing to a distance. Queries are a
``uint64[q, W]`` array laid out the same way. Item "positions" are row numbers in the database.

Work split. The queries are cut into blocks of ``qblock`` queries and the database into ``nchunks``
contiguous chunks; each (block, chunk) pair is one work unit, and :func:`parallel_for` deals the
units to threads (the kernels release the GIL). Inside a unit the database is walked tile by tile
(a tile fits in L1/L2), and every query of the block scans the whole tile before the next tile is
loaded, so one pass over memory serves the whole block; groups of ``QUERY_GROUP`` queries are
compared with each loaded code while their words sit in registers.

k-NN selection (exact, ties broken by position). For every (chunk, query) the kernel keeps a
threshold ``t``: an item is a candidate only if its distance is ``< t``. ``hist[d]`` counts the
candidates kept at distance ``d``, ``run`` the candidates at distances ``< t``; when ``run`` reaches
``k`` the threshold drops (``t -= 1; run -= hist[t]``), so ``t`` is always the smallest distance
``T`` with at least ``k`` candidates at ``<= T``. An item at distance ``>= t`` comes after ``k``
earlier items at ``<= t`` and can never enter the top-k, so rejecting it is exact. Candidates go to
a buffer of ``2k`` slots that is compacted (drop ``d > t`` and surplus ties at ``t``) when full. The
hot loop does one xor, one popcount and one compare per word pair; nothing is sorted: the final
per-query merge is a stable counting sort by distance.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

#: Bytes of database held in cache while a block of queries scans it.
TILE_BYTES = 16 << 10
#: Queries that share one pass over a tile.
QUERY_BLOCK = 32


@intrinsic
def popcount64(typingctx, x):
    """Population count of a ``uint64`` as ``int64`` (the ``popcnt`` instruction)."""
    sig = types.int64(types.uint64)

    def codegen(context, builder, signature, args):
        fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def unlikely(typingctx, cond):
    """``cond``, marked as rarely true (``llvm.expect``): the compiler then keeps the common path of
    a scan free of taken branches and moves the rare one out of the loop."""
    sig = types.boolean(types.boolean)

    def codegen(context, builder, signature, args):
        i1 = ir.IntType(1)
        fn = builder.module.declare_intrinsic("llvm.expect", [i1], ir.FunctionType(i1, [i1, i1]))
        return builder.call(fn, [args[0], ir.Constant(i1, 0)])

    return sig, codegen


def as_words(packed: np.ndarray) -> np.ndarray:
    """``uint64[n, W]`` words of packed ``uint8[n, nbytes]`` codes (a view when ``nbytes % 8 == 0``)."""
    n, nbytes = packed.shape
    words = (nbytes + 7) // 8
    if nbytes == 8 * words and packed.flags.c_contiguous and packed.ctypes.data % 8 == 0:
        return packed.view(np.uint64)
    out = np.zeros((n, 8 * words), dtype=np.uint8)
    out[:, :nbytes] = packed
    return out.view(np.uint64)


def work_split(n_queries: int, n_items: int, threads: int, words: int) -> tuple[int, int, int]:
    """Choose ``(qblock, nchunks, tile)`` so that every thread has work and tiles stay in cache."""
    tile = max(64, TILE_BYTES // (8 * words))
    qblock = max(1, min(QUERY_BLOCK, -(-n_queries // max(1, threads))))
    nblocks = -(-n_queries // qblock) if n_queries else 1
    nchunks = 1
    if nblocks < 2 * threads:
        nchunks = max(1, min(-(-2 * threads // nblocks), n_items // (4 * tile)))
    return qblock, nchunks, tile


# ---------------------------------------------------------------------------------------- tiles
#: Queries compared with each loaded database code (their words stay in registers).
QUERY_GROUP = 4


_ONE = np.uint64(1)

# Each scanner computes the distances of QUERY_GROUP queries (words ``qa[g * W:(g + 1) * W]``,
# thresholds ``tq[g]``) to every code of the flat ``tile``; each pair with distance ``< tq[g]`` is
# appended to ``pd`` (distance), ``pj`` (row in the tile), ``pq`` (``g``), in row order, and the
# count is returned. A threshold of 0 disables a query slot. The append counter is unsigned so
# that the rare append path needs no negative-index handling and leaves registers to the hot loop.


@njit(fastmath=True, cache=True)
def _scan_w1(tile, qa, tq, pd, pj, pq):
    """Scanner for codes of one 64-bit word (K <= 64)."""
    a0, a1, a2, a3 = qa[0], qa[1], qa[2], qa[3]
    t0, t1, t2, t3 = tq[0], tq[1], tq[2], tq[3]
    c = np.uint64(0)
    for j in range(tile.size):
        x = tile[j]
        d0 = popcount64(x ^ a0)
        d1 = popcount64(x ^ a1)
        d2 = popcount64(x ^ a2)
        d3 = popcount64(x ^ a3)
        if unlikely(d0 < t0):
            pd[c] = d0
            pj[c] = j
            pq[c] = 0
            c += _ONE
        if unlikely(d1 < t1):
            pd[c] = d1
            pj[c] = j
            pq[c] = 1
            c += _ONE
        if unlikely(d2 < t2):
            pd[c] = d2
            pj[c] = j
            pq[c] = 2
            c += _ONE
        if unlikely(d3 < t3):
            pd[c] = d3
            pj[c] = j
            pq[c] = 3
            c += _ONE
    return np.int64(c)


@njit(fastmath=True, cache=True)
def _scan_w2(tile, qa, tq, pd, pj, pq):
    """Scanner for codes of two words (64 < K <= 128)."""
    a0, a1, a2, a3, a4, a5, a6, a7 = qa[0], qa[1], qa[2], qa[3], qa[4], qa[5], qa[6], qa[7]
    t0, t1, t2, t3 = tq[0], tq[1], tq[2], tq[3]
    c = np.uint64(0)
    for j in range(tile.size // 2):
        x = tile[2 * j]
        y = tile[2 * j + 1]
        d0 = popcount64(x ^ a0) + popcount64(y ^ a1)
        d1 = popcount64(x ^ a2) + popcount64(y ^ a3)
        d2 = popcount64(x ^ a4) + popcount64(y ^ a5)
        d3 = popcount64(x ^ a6) + popcount64(y ^ a7)
        if unlikely(d0 < t0):
            pd[c] = d0
            pj[c] = j
            pq[c] = 0
            c += _ONE
        if unlikely(d1 < t1):
            pd[c] = d1
            pj[c] = j
            pq[c] = 1
            c += _ONE
        if unlikely(d2 < t2):
            pd[c] = d2
            pj[c] = j
            pq[c] = 2
            c += _ONE
        if unlikely(d3 < t3):
            pd[c] = d3
            pj[c] = j
            pq[c] = 3
            c += _ONE
    return np.int64(c)


@njit(fastmath=True, cache=True)
def _scan_any(tile, qa, tq, pd, pj, pq):
    """Scanner for any number of words."""
    W = qa.size // QUERY_GROUP
    c = np.uint64(0)
    for j in range(tile.size // W):
        for g in range(QUERY_GROUP):
            d = 0
            for w in range(W):
                d += popcount64(tile[W * j + w] ^ qa[W * g + w])
            if unlikely(d < tq[g]):
                pd[c] = d
                pj[c] = j
                pq[c] = g
                c += _ONE
    return np.int64(c)


@njit(cache=True)
def _scan(W, tile, qa, tq, pd, pj, pq):
    if W == 1:
        return _scan_w1(tile, qa, tq, pd, pj, pq)
    if W == 2:
        return _scan_w2(tile, qa, tq, pd, pj, pq)
    return _scan_any(tile, qa, tq, pd, pj, pq)


@njit(cache=True)
def _load_group(qw, g, nq, thr_row, qa, tq):
    """Copy the words and thresholds of queries ``g .. g + QUERY_GROUP`` (missing ones disabled)."""
    W = qw.shape[1]
    for s in range(QUERY_GROUP):
        i = g + s
        if i < nq:
            for w in range(W):
                qa[s * W + w] = qw[i, w]
            tq[s] = thr_row[i]
        else:
            for w in range(W):
                qa[s * W + w] = 0
            tq[s] = 0


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


@njit(nogil=True, cache=True)
def merge_topk(bd, bp, bn, k, max_d, out_d, out_p, first, step):
    """Per query: the ``k`` smallest ``(distance, position)`` of all chunks' buffers, by counting sort.

    Buffers hold candidates in position order and chunks are in position order, so a stable
    counting sort by distance yields ties in position order. Missing slots keep their fill value.
    """
    nchunks, nq = bn.shape[0], bn.shape[1]
    for i in range(first, nq, step):
        cnt = np.zeros(max_d + 2, np.int64)
        for c in range(nchunks):
            for r in range(bn[c, i]):
                cnt[bd[c, i, r] + 1] += 1
        for d in range(max_d + 1):
            cnt[d + 1] += cnt[d]
        for c in range(nchunks):
            for r in range(bn[c, i]):
                d = bd[c, i, r]
                o = cnt[d]
                if o < k:
                    out_d[i, o] = d
                    out_p[i, o] = bp[c, i, r]
                cnt[d] = o + 1


def knn_state(nchunks: int, nq: int, k: int, max_d: int):
    """Fresh per-(chunk, query) state of :func:`knn_scan`: ``(thr, run, hist, bd, bp, bn)``."""
    return (np.full((nchunks, nq), max_d + 1, np.int64), np.zeros((nchunks, nq), np.int64),
            np.zeros((nchunks, nq, max_d + 2), np.int64), np.empty((nchunks, nq, 2 * k), np.int32),
            np.empty((nchunks, nq, 2 * k), np.int64), np.zeros((nchunks, nq), np.int64))


@njit(nogil=True, cache=True)
def knn_scan(qw, db, alive, k, qblock, nchunks, tile, thr, run, hist, bd, bp, bn, first, step):
    """Exact k-NN scan of work units ``first, first + step, ...``: fills the candidate buffers
    ``(bd, bp, bn)`` per (chunk, query) that :func:`merge_topk` finishes.

    ``alive`` is ``uint8[n]`` (0 = removed) or empty (nothing removed).
    """
    W = qw.shape[1]
    nq = qw.shape[0]
    n = db.size // W
    nblocks = (nq + qblock - 1) // qblock
    has_mask = alive.size > 0
    for u in range(first, nblocks * nchunks, step):
        b = u // nchunks
        c = u % nchunks
        q0 = b * qblock
        q1 = min(nq, q0 + qblock)
        lo = (n * c) // nchunks
        hi = (n * (c + 1)) // nchunks
        pd = np.empty(QUERY_GROUP * tile, np.int64)
        pj = np.empty(QUERY_GROUP * tile, np.int64)
        pq = np.empty(QUERY_GROUP * tile, np.int64)
        qa = np.empty(QUERY_GROUP * W, np.uint64)
        tq = np.empty(QUERY_GROUP, np.int64)
        for s in range(lo, hi, tile):
            e = min(hi, s + tile)
            part = db[s * W:e * W]
            for g in range(q0, q1, QUERY_GROUP):
                _load_group(qw, g, q1, thr[c], qa, tq)
                cnt = _scan(W, part, qa, tq, pd, pj, pq)
                for r in range(cnt):
                    i = g + pq[r]
                    d = pd[r]
                    pos = s + pj[r]
                    t = thr[c, i]
                    if d < t and (not has_mask or alive[pos]):
                        thr[c, i] = _accept(c, i, d, pos, t, k, hist, run, bd, bp, bn)


@njit(nogil=True, cache=True)
def range_scan(qw, db, alive, radius, qblock, nchunks, tile, cap, cnt, hd, hp, first, step):
    """Exact range scan: fill ``hd/hp[c, i, :cap]`` with the hits (distance ``<= radius``) of
    chunk ``c`` for query ``i`` in position order; ``cnt[c, i]`` counts all of them (more than
    ``cap`` means the caller must rerun that query with a larger ``cap``). Work units
    ``first, first + step, ...`` only."""
    W = qw.shape[1]
    nq = qw.shape[0]
    n = db.size // W
    nblocks = (nq + qblock - 1) // qblock
    has_mask = alive.size > 0
    limit = np.full(nq, radius + 1, np.int64)
    for u in range(first, nblocks * nchunks, step):
        b = u // nchunks
        c = u % nchunks
        q0 = b * qblock
        q1 = min(nq, q0 + qblock)
        lo = (n * c) // nchunks
        hi = (n * (c + 1)) // nchunks
        pd = np.empty(QUERY_GROUP * tile, np.int64)
        pj = np.empty(QUERY_GROUP * tile, np.int64)
        pq = np.empty(QUERY_GROUP * tile, np.int64)
        qa = np.empty(QUERY_GROUP * W, np.uint64)
        tq = np.empty(QUERY_GROUP, np.int64)
        for s in range(lo, hi, tile):
            e = min(hi, s + tile)
            part = db[s * W:e * W]
            for g in range(q0, q1, QUERY_GROUP):
                _load_group(qw, g, q1, limit, qa, tq)
                m = _scan(W, part, qa, tq, pd, pj, pq)
                for r in range(m):
                    i = g + pq[r]
                    pos = s + pj[r]
                    if not has_mask or alive[pos]:
                        h = cnt[c, i]
                        if h < cap:
                            hd[c, i, h] = pd[r]
                            hp[c, i, h] = pos
                        cnt[c, i] = h + 1


@njit(nogil=True, cache=True)
def sort_hits(counts, lims, hd, hp, radius, out_d, out_p, first, step):
    """Stable counting sort of each query's hits (in position order) by distance, into CSR arrays.

    ``hd/hp[c, i, :counts[c, i]]`` hold the hits of chunk ``c`` for query ``i``; query ``i``'s
    sorted hits go to ``out_d/out_p[lims[i]:lims[i + 1]]``.
    """
    nchunks, nq = hd.shape[0], hd.shape[1]
    for i in range(first, nq, step):
        cnt = np.zeros(radius + 2, np.int64)
        for c in range(nchunks):
            for r in range(counts[c, i]):
                cnt[hd[c, i, r] + 1] += 1
        for d in range(radius + 1):
            cnt[d + 1] += cnt[d]
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
