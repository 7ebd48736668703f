"""The native search engine: numba linear scans plus multi-index hashing, chosen by a cost model.

The scans run on a bit-sliced copy of the codes (:mod:`learn2hash.index._bitplanes`), kept up to
date by :meth:`NativeEngine.add`; it takes about 1.2 to 1.3 times the memory of the codes.

The engine sees items by position (insertion order, ``0 .. n-1``) and a mask of removed positions;
:class:`~learn2hash.index.HammingIndex` maps positions to user ids.
"""

from __future__ import annotations

import logging
import math
import threading

import numpy as np

from learn2hash.codes import as_words
from learn2hash.errors import Learn2HashError
from learn2hash.index import _bitplanes, _kernels, mih
from learn2hash.index.results import MISSING_DISTANCE, MISSING_ID

log = logging.getLogger("learn2hash.index")

#: ``method=`` values of the native engine.
METHODS = ("auto", "scan", "mih")
#: ``method="auto"`` answers a k-NN batch by multi-index hashing when :func:`mih.knn_cost`
#: estimates it at most this fraction of the scan's cost.
MIH_KNN_MARGIN = 0.5
#: Queries of a k-NN batch that test whether multi-index hashing pays before the batch uses it.
MIH_KNN_PILOT = 8
#: A k-NN scan starts from thresholds found by a k-NN scan of every PILOT_STRIDE-th block of 256
#: codes, for ``kp = ceil(PILOT_SURPLUS * k / PILOT_STRIDE)`` (the start threshold is the distance
#: of each query's kp-th nearest sample item, plus one), when kp is at least PILOT_MIN_KP (a
#: smaller sample rank is too noisy: too many queries would have to be scanned again) and the
#: sample has at least PILOT_MIN_BLOCKS blocks and 8 kp codes.
PILOT_STRIDE = 32
PILOT_SURPLUS = 1.5
PILOT_MIN_KP = 16
PILOT_MIN_BLOCKS = 8


class NativeEngine:
    """Codes as a growable ``uint64[n, W]`` word array (a zero-copy view of a single loaded segment
    when the code length is a multiple of 64) and their bit planes, with multi-index tables built
    on demand. Words are joined and planes built when a search first needs them, under a lock of
    their own: concurrent searches are safe; :meth:`add` must not run at the same time as a
    search (:class:`~learn2hash.index.HammingIndex` holds its write lock for it)."""

    name = "native"

    def __init__(self, bits: int):
        self.bits = bits
        self.W = (bits + 63) // 64
        self._words = np.zeros((0, self.W), np.uint64)
        self._n = 0
        self._owned = True
        self._tables: dict[tuple[int, ...], mih.Tables] = {}
        self._knn_saved = 0.0  # estimated ns the k-NN scans since the last add would have saved with tables
        self._profiles: dict[tuple[int, ...], mih.Profile] = {}  # of the codes, per substring layout
        self.shape = _bitplanes.Shape(bits)
        self._planes = _bitplanes.zeros(0, self.shape.PB)
        self._planes_n = 0  # codes the planes hold
        self._pending: list[np.ndarray] = []  # word arrays added since the last search
        self._sync_lock = threading.RLock()

    # ------------------------------------------------------------------------ data
    def add(self, packed: np.ndarray) -> None:
        """Append codes (packed ``uint8[m, ceil(bits/8)]``, not changed afterwards: the caller
        hands them over) after the current ones. Nothing is copied or read here: the words are
        joined when a search first needs them, and the bit planes built when a scan does, so
        loading a memory-mapped index reads none of its codes."""
        words = as_words(packed)
        if words.shape[0] == 0:
            return
        self._pending.append(words)
        self._n += words.shape[0]
        self._tables.clear()
        self._knn_saved = 0.0
        self._profiles = {}

    def _join(self) -> None:
        """Fold the codes added since the last search into ``_words`` (a single first part, such
        as a memory-mapped segment, is used in place until more is added). Safe to call from
        concurrent searches."""
        if not self._pending:
            return
        with self._sync_lock:
            if not self._pending:
                return
            have = self._n - sum(p.shape[0] for p in self._pending)
            if have == 0 and len(self._pending) == 1:
                self._words, self._owned = self._pending[0], False
            else:
                need = self._n
                if not self._owned or need > self._words.shape[0]:
                    grown = np.zeros((max(need, 2 * self._words.shape[0], 1024), self.W), np.uint64)
                    grown[:have] = self._words[:have]
                    self._words, self._owned = grown, True
                for part in self._pending:
                    self._words[have : have + part.shape[0]] = part
                    have += part.shape[0]
            self._pending = []  # last: a search that sees no pending part sees the joined words

    def _sync_planes(self) -> np.ndarray:
        """The bit planes, brought up to date with every code (built on the first scan after an
        add, only for the codes added since). Safe to call from concurrent searches."""
        if self._planes_n < self._n:
            with self._sync_lock:
                if self._planes_n < self._n:
                    self._extend_planes(self._planes_n)
                    self._planes_n = self._n
        return self._planes

    def _extend_planes(self, before: int) -> None:
        """Bit planes for the codes after the first ``before`` (the block holding code ``before`` is redone)."""
        sh = self.shape
        blocks = -(-self._n // _bitplanes.BLOCK)
        have = self._planes.shape[0]
        if blocks > have:
            grown = _bitplanes.zeros(blocks if have == 0 else max(blocks, 2 * have), sh.PB)
            grown[:have] = self._planes
            self._planes = grown
        _bitplanes.build_planes(self.db, self._n, self.W, sh.P, sh.M, self._planes, before // _bitplanes.BLOCK)

    def remove(self, positions: np.ndarray) -> None:
        """Nothing to do: removed positions are skipped through the mask passed to each search."""

    def close(self) -> None:
        self._tables.clear()

    @property
    def db(self) -> np.ndarray:
        """The flat ``uint64[n * W]`` words of the stored codes."""
        self._join()
        return self._words[: self._n].reshape(-1)

    # ------------------------------------------------------------------------ search
    def search(self, queries: np.ndarray, k: int, alive: np.ndarray, n_alive: int, threads: int,
               method: str = "auto") -> tuple[np.ndarray, np.ndarray]:
        """Exact k nearest positions ``(int32[q, k], int64[q, k])``, ties by position, padded."""
        nq = queries.shape[0]
        out_d = np.full((nq, k), MISSING_DISTANCE, np.int32)
        out_p = np.full((nq, k), MISSING_ID, np.int64)
        kk = min(k, n_alive)
        if nq == 0 or kk == 0:
            return out_d, out_p
        qw = np.ascontiguousarray(as_words(queries))
        todo = np.arange(nq)
        tables = self._tables_for_knn(threads) if method == "mih" else None
        if method == "auto":
            tables = self._knn_choice(nq, kk, threads)
        if tables is not None:
            todo = self._knn_mih(tables, qw, kk, alive, out_d, out_p, threads, pilot=(method == "auto"))
        if todo.size:
            self._knn_scan(qw[todo] if todo.size < nq else qw, kk, alive, threads, out_d, out_p, todo)
        if tables is not None and log.isEnabledFor(logging.DEBUG):
            log.debug("k-NN of %d queries (k=%d): multi-index hashing answered %d, the scan %d", nq, kk,
                      nq - todo.size, todo.size)
        return out_d, out_p

    def _knn_choice(self, nq: int, k: int, threads: int) -> mih.Tables | None:
        """The tables to answer a k-NN batch with (``method="auto"``), or ``None`` for the scan.

        Multi-index hashing is chosen when :func:`mih.knn_cost` (from ``n``, ``k``, the substring
        lengths and the distances between pairs of a sample of the codes: :func:`mih.profile`) is at most :data:`MIH_KNN_MARGIN` of :func:`mih.scan_cost`. Tables
        that do not exist yet are built once the batches answered by the scan since the last
        :meth:`add` would together have saved what building them costs (ski rental: never more
        than about twice the better choice's cost). The choice is logged (``learn2hash.index``, DEBUG)."""
        n = self._n
        tables = self._closest_tables()
        lay = tables.layout if tables is not None else mih.knn_layout(n, self.bits)
        build = 0.0 if tables is not None else mih.build_cost(n, lay)
        key = tuple(int(v) for v in lay.length)
        prof = self._profile_for(lay)
        scan = mih.scan_cost(n, nq, self.bits)
        cost = mih.knn_cost(n, nq, self.bits, k, lay, prof)
        use = cost <= MIH_KNN_MARGIN * scan
        if use and build:
            # Concurrent searches may each add their saving; a lost update only delays the build.
            self._knn_saved += scan - cost
            use = self._knn_saved >= build
        if log.isEnabledFor(logging.DEBUG):
            log.debug("k-NN of %d queries (k=%d, n=%d, %d bits): %s; estimated scan %.3g ms, multi-index hashing "
                      "%.3g ms over substrings %s%s", nq, k, n, self.bits,
                      "multi-index hashing" if use else "scan", scan / 1e6, cost / 1e6, list(key),
                      f", tables to build: {build / 1e6:.3g} ms, saved so far {self._knn_saved / 1e6:.3g} ms"
                      if build else "")
        if not use:
            return None
        return tables if tables is not None else self._build(lay, threads)

    def _knn_scan(self, qw, k, alive, threads, out_d, out_p, rows) -> None:
        self._sync_planes()
        plan = _kernels.Plan.of(qw, self.shape)
        start = self._pilot_thresholds(plan, k, threads)
        sub_d, sub_p, found = self._knn_pass(plan, self._planes, self._n, alive, k, threads, start)
        if start is not None:
            # Exact when at least k items lie below the start threshold; otherwise scan again from scratch.
            again = np.flatnonzero(found < k)
            if again.size:
                sub_d[again], sub_p[again], _ = self._knn_pass(plan.take(again), self._planes, self._n, alive, k,
                                                               threads, None)
        out_d[rows, :k] = sub_d
        out_p[rows, :k] = sub_p

    def _pilot_thresholds(self, plan: _kernels.Plan, k: int, threads: int) -> np.ndarray | None:
        """For a large k, a start threshold per query from a scan of a sample of the blocks.

        A k-NN scan keeps every item below its running threshold, and from the largest one the
        threshold only falls as the items come: k (1 + ln(n / k)) items on random codes. Starting it
        just above the distance of the ``ceil(PILOT_SURPLUS k / PILOT_STRIDE)``-th nearest item of
        the sample keeps a few k of them. ``None`` when k is small or the database too small to sample."""
        blocks = -(-self._n // _bitplanes.BLOCK)
        kp = math.ceil(PILOT_SURPLUS * k / PILOT_STRIDE)
        picked = -(-blocks // PILOT_STRIDE)
        if kp < PILOT_MIN_KP or picked < PILOT_MIN_BLOCKS or picked * _bitplanes.BLOCK < 8 * kp:
            return None
        sample = _bitplanes.sample(self._planes, PILOT_STRIDE, blocks)
        last = (sample.shape[0] - 1) * PILOT_STRIDE  # the only sampled block that may be partial
        ns = (sample.shape[0] - 1) * _bitplanes.BLOCK + min(_bitplanes.BLOCK, self._n - last * _bitplanes.BLOCK)
        d, _, _ = self._knn_pass(plan, sample, ns, np.zeros(0, np.uint8), kp, threads, None)
        return np.minimum(d[:, kp - 1].astype(np.int64) + 1, self.bits + 1)

    def _knn_pass(self, plan: _kernels.Plan, planes: np.ndarray, n: int, alive: np.ndarray, k: int,
                  threads: int, start: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One k-NN scan of the first ``n`` codes of ``planes``, every query's threshold starting at
        ``start`` (default: above the largest distance). Returns the ``(distances, positions)`` and
        how many items each query found below its start threshold (at least ``k`` when the answer
        is exact)."""
        nq = plan.offs.shape[0]
        qblock, nchunks, tile = _kernels.work_split(nq, n, threads, self.shape)
        state = _kernels.knn_state(nchunks, nq, k, self.bits, start)
        _kernels.parallel_for(threads, _kernels.knn_scan, *plan.args, planes, n, alive, k, *self._shape_args(),
                              qblock, nchunks, tile, *state)
        sub_d = np.full((nq, k), MISSING_DISTANCE, np.int32)
        sub_p = np.full((nq, k), MISSING_ID, np.int64)
        _kernels.parallel_for(threads, _kernels.merge_topk, *state[3:], k, self.bits, sub_d, sub_p)
        # A chunk whose threshold never fell from its start kept every item below it (``run`` of
        # them); one whose threshold fell found k.
        thr, run = state[0], state[1]
        found = np.where(thr == (self.bits + 1 if start is None else start), run, k).sum(axis=0)
        return sub_d, sub_p, found

    def _knn_mih(self, tables, qw, k, alive, out_d, out_p, threads, pilot: bool) -> np.ndarray:
        """k-NN by multi-index hashing; returns the rows it did not finish (left to the scan)."""
        nq = qw.shape[0]
        # Automatic use must clearly beat the scan; an explicit request only bounds runaway queries.
        budget = self._budget() // 4 if pilot else 4 * self._budget()
        sub_d = np.full((nq, k), MISSING_DISTANCE, np.int64)
        sub_p = np.full((nq, k), MISSING_ID, np.int64)
        if pilot and nq > MIH_KNN_PILOT:
            head = mih.knn_search(tables, qw[:MIH_KNN_PILOT], self.db, alive, k, self.bits, budget,
                                  sub_d[:MIH_KNN_PILOT], sub_p[:MIH_KNN_PILOT], threads)
            if head.mean() < 0.75:
                return np.arange(nq)
            rest = mih.knn_search(tables, qw[MIH_KNN_PILOT:], self.db, alive, k, self.bits, budget,
                                  sub_d[MIH_KNN_PILOT:], sub_p[MIH_KNN_PILOT:], threads)
            done = np.concatenate([head, rest])
        else:
            done = mih.knn_search(tables, qw, self.db, alive, k, self.bits, budget, sub_d, sub_p, threads)
        out_d[done, :k] = sub_d[done]
        out_p[done, :k] = sub_p[done]
        return np.flatnonzero(~done)

    def _profile_for(self, lay: mih.Layout) -> mih.Profile:
        """:func:`mih.profile` of the codes for substrings ``lay`` (kept until the next add)."""
        key = tuple(int(v) for v in lay.length)
        prof = self._profiles.get(key)
        if prof is None:
            prof = self._profiles[key] = mih.profile(self.db, self.bits, lay)
        return prof

    def _closest_tables(self) -> mih.Tables | None:
        """Of the built tables, those whose substrings are nearest ``log2(n)`` bits long."""
        tables = list(self._tables.values())
        if not tables:
            return None
        target = np.log2(max(2, self._n))
        return min(tables, key=lambda t: abs(float(t.layout.length.mean()) - target))

    def _tables_for_knn(self, threads: int) -> mih.Tables:
        tables = self._closest_tables()
        return tables if tables is not None else self._build(mih.knn_layout(self._n, self.bits), threads)

    def _build(self, lay: mih.Layout, threads: int) -> mih.Tables:
        key = tuple(int(v) for v in lay.length)
        if key not in self._tables:
            self._tables[key] = mih.Tables(self.db, self.bits, lay, threads)
        return self._tables[key]

    def _budget(self) -> int:
        """Candidates one query may verify before the linear scan is cheaper for it."""
        return max(4096, int(self._n * self.W * mih.SCAN_NS_PER_WORD / mih.VERIFY_NS))

    def build_tables(self, m: int | None, threads: int) -> mih.Tables:
        """Build (or return) multi-index tables with about ``m`` substrings (default: Norouzi's
        ``bits / log2(n)``)."""
        lay = mih.knn_layout(self._n, self.bits) if m is None else mih.layout(self.bits, m)
        return self._build(lay, threads)

    def range_search(self, queries: np.ndarray, radius: int, alive: np.ndarray, threads: int,
                     method: str = "auto") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every position within ``radius``: CSR ``(lims, distances, positions)``, each query's hits
        ordered by (distance, position)."""
        nq = queries.shape[0]
        radius = min(radius, self.bits)
        if nq == 0 or self._n == 0:
            return np.zeros(nq + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
        qw = np.ascontiguousarray(as_words(queries))
        parts = []
        todo = np.arange(nq)
        use_mih = method == "mih"
        lay, cost = mih.best_layout(self._n, nq, self.bits, radius, set(self._tables))
        if method == "auto":
            scan = mih.scan_cost(self._n, nq, self.bits)
            use_mih = cost < 0.5 * scan
            real = cost
            key = tuple(int(v) for v in lay.length)
            if use_mih:  # check against the codes' own crowding (clustered codes fill the probed buckets)
                real = mih.range_cost(self._n, nq, self.bits, radius, lay, key in self._tables, self._profile_for(lay))
                use_mih = real < 0.5 * scan
            log.debug("range search of %d queries (radius %d, n=%d, %d bits): %s; estimated scan %.3g ms, "
                          "multi-index hashing %.3g ms over substrings %s", nq, radius, self._n, self.bits,
                          "multi-index hashing" if use_mih else "scan", scan / 1e6, real / 1e6, list(key))
        if use_mih:
            tables = self._build(lay, threads)
            budget = self._budget() if method == "auto" else np.iinfo(np.int64).max
            counts, dd, pp = mih.range_search(tables, qw, self.db, alive, radius, budget, threads)
            done = np.flatnonzero(counts >= 0)
            lims = np.zeros(done.size + 1, np.int64)
            lims[1:] = np.cumsum(counts[done])
            parts.append((done, lims, np.concatenate([dd[i] for i in done] + [np.zeros(0, np.int64)]),
                          np.concatenate([pp[i] for i in done] + [np.zeros(0, np.int64)])))
            todo = np.flatnonzero(counts < 0)
        if todo.size:
            parts.append((todo, *self._range_scan(np.ascontiguousarray(qw[todo]), radius, alive, threads)))
        return csr_from_parts(nq, parts)

    def _range_scan(self, qw: np.ndarray, radius: int, alive: np.ndarray, threads: int):
        """Linear range scan: a first pass keeps up to 64 hits per query and counts the rest;
        queries with more hits are scanned again with room for all of them."""
        nq = qw.shape[0]
        cap = 64
        self._sync_planes()
        plan = _kernels.Plan.of(qw, self.shape)
        cnt, hd, hp = self._range_pass(plan, radius, alive, threads, cap)
        over = cnt.max(axis=0) > cap
        if not over.any():
            return self._finish_range(cnt, hd, hp, radius)
        ok = np.flatnonzero(~over)
        rows = np.flatnonzero(over)
        cnt2, hd2, hp2 = self._range_pass(plan.take(rows), radius, alive, threads, int(cnt[:, rows].max()))
        return csr_from_parts(nq, [(ok, *self._finish_range(cnt[:, ok], hd[:, ok], hp[:, ok], radius)),
                                   (rows, *self._finish_range(cnt2, hd2, hp2, radius))])

    def _range_pass(self, plan: _kernels.Plan, radius, alive, threads, cap):
        nq = plan.offs.shape[0]
        qblock, nchunks, tile = _kernels.work_split(nq, self._n, threads, self.shape)
        cnt = np.zeros((nchunks, nq), np.int64)
        hd = np.empty((nchunks, nq, cap), np.int32)
        hp = np.empty((nchunks, nq, cap), np.int64)
        _kernels.parallel_for(threads, _kernels.range_scan, *plan.args, self._planes, self._n, alive, radius,
                              *self._shape_args(), qblock, nchunks, tile, cap, cnt, hd, hp)
        return cnt, hd, hp

    def _shape_args(self) -> tuple:
        return self.shape.P, self.shape.M, self.shape.tag

    @staticmethod
    def _finish_range(cnt, hd, hp, radius, threads: int = 1):
        cnt = np.ascontiguousarray(cnt)
        totals = cnt.sum(axis=0)
        lims = np.zeros(cnt.shape[1] + 1, np.int64)
        lims[1:] = np.cumsum(totals)
        out_d = np.empty(int(lims[-1]), np.int32)
        out_p = np.empty(int(lims[-1]), np.int64)
        _kernels.parallel_for(threads, _kernels.sort_hits, cnt, lims, np.ascontiguousarray(hd), np.ascontiguousarray(hp),
                              radius, out_d, out_p)
        return lims, out_d, out_p


def csr_from_parts(nq: int, parts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Join CSR results ``(rows, lims, distances, positions)`` of disjoint row sets into one CSR
    result over rows ``0 .. nq-1``."""
    sizes = np.zeros(nq, np.int64)
    for rows, lims, _, _ in parts:
        sizes[rows] = np.diff(lims)
    out_lims = np.zeros(nq + 1, np.int64)
    out_lims[1:] = np.cumsum(sizes)
    out_d = np.empty(int(out_lims[-1]), np.int32)
    out_p = np.empty(int(out_lims[-1]), np.int64)
    for rows, lims, d, p in parts:
        if rows.size == 0:
            continue
        dst = np.repeat(out_lims[rows] - lims[:-1], np.diff(lims)) + np.arange(int(lims[-1]))
        out_d[dst] = d
        out_p[dst] = p
    return out_lims, out_d, out_p


def check_method(method: str) -> str:
    if method not in METHODS:
        raise Learn2HashError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return method
