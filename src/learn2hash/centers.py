"""Hash centers (CSQ, Alg. 1) and multi-label centroid centers.

A set of m hash centers is m K-bit codes far apart in Hamming space. :func:`hash_centers` builds
them as the paper's Alg. 1 does:

- ``"hadamard"`` (m <= K, K a power of two): the first m rows of the Sylvester Hadamard matrix
  H_K (H_1 = [1], H_2n = [[H_n, H_n], [H_n, -H_n]]); any two rows are at distance exactly K/2;
- ``"hadamard2"`` (K < m <= 2K, K a power of two): the first m rows of [H_K; -H_K]; two rows are
  at distance K/2, or K for a row and its negation;
- ``"bernoulli"`` (otherwise): every bit Bernoulli(0.5), then centers closer than a stated bound
  to an earlier center are redrawn until no two centers are closer than the bound. The default
  bound is the largest d <= K/2 for which independent centers would have at most one pair closer
  than d in expectation: C(m, 2) * P[Binomial(K, 1/2) < d] <= 1. A bound that cannot be met is
  a clear error.

Balanced Hadamard centers (``balance=True``, the default). The first m Sylvester rows agree on some
bit positions: with 10 rows of H_64, on 4 of them (columns 0, 16, 32, 48), bits that then say
nothing about the class. Negating bit positions across all centers cannot help (a constant column
stays constant), but negating whole centers can: when every pairwise distance is K/2 (the
``"hadamard"`` branch), center -c_i is at distance K - K/2 = K/2 from every other center, so any
seeded choice of centers to negate keeps every pairwise distance exactly. A column whose pattern over
the centers is p becomes constant after negating by signs s exactly when p = +-s, so the seeded
draw of s avoids the +-patterns of all columns; this is possible unless m is 2 or 3 (two centers
K/2 apart agree on K/2 bits, three on K/4, whatever their signs), where the rows stay as they are.
The ``"hadamard2"`` rows hold a row and its negation, so no bit is constant there; they and the
Bernoulli centers are left as drawn. ``HashCenters.bit_balance`` (the fraction of ones per bit) and
``constant_bits`` report the result.

Centers are returned as :class:`HashCenters`: the codes as :class:`~learn2hash.codes.Codes`
(bit 1 <=> +1, the paper's {0, 1} centers map the same way), ``signs()`` as +-1, and the exact
minimum and mean pairwise Hamming distance. The minimum is found without an m x m matrix:
pairs closer than r + 1 must agree exactly on one of r + 1 disjoint bit chunks (pigeonhole), so
only items sharing a chunk value are compared (multi-index search), or, when that would not save
work, all pairs are compared in a compiled loop; the mean is exact from per-bit counts.
100,000 centers of 64 bits take a few seconds.

:func:`centroid_centers` gives multi-label items their center: the bitwise majority vote of the
centers of the item's labels, ties drawn from Bernoulli(0.5) with a seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

from learn2hash.codes import Codes
from learn2hash.datasets.base import as_multihot
from learn2hash.errors import Learn2HashError, check_int

METHODS = ("auto", "hadamard", "hadamard2", "bernoulli")
_MAX_ROUNDS = 200
_BIG = 1 << 30


@dataclass(frozen=True)
class HashCenters:
    """m hash centers of K bits and the exact statistics of their pairwise Hamming distances.

    ``min_distance`` is ``None`` for a single center; ``bound`` is the guaranteed minimum
    distance of the Bernoulli branch (``None`` for the Hadamard branches, where it is exact).
    """

    codes: Codes
    method: str
    min_distance: int | None
    mean_distance: float | None
    bound: int | None = None
    #: the centers negated (as whole codes) after Alg. 1 to leave no bit constant (see the module docstring)
    negated: tuple[int, ...] = ()

    @property
    def n(self) -> int:
        return len(self.codes)

    @property
    def bit_balance(self) -> np.ndarray:
        """``float64[K]``: the fraction of the centers whose bit k is 1."""
        return self.codes.to_bits().mean(axis=0, dtype=np.float64)

    @property
    def constant_bits(self) -> int:
        """How many bit positions have the same value in every center (0 or 1 of the balance);
        such a bit does not tell classes apart."""
        b = self.bit_balance
        return int(np.count_nonzero((b == 0.0) | (b == 1.0))) if self.n > 1 else self.bits

    @property
    def bits(self) -> int:
        return self.codes.bits

    def signs(self, dtype: Any = np.float32) -> np.ndarray:
        """``[m, K]`` array of +-1."""
        return self.codes.to_signs(dtype)

    def to_state(self) -> tuple[dict[str, Any], np.ndarray]:
        """``(JSON metadata, packed codes)``: how a hasher saves its centers (:meth:`from_state` reads them)."""
        meta = {"method": self.method, "bits": self.bits, "min_distance": self.min_distance,
                "mean_distance": self.mean_distance, "bound": self.bound, "negated": list(self.negated)}
        return meta, self.codes.packed

    @classmethod
    def from_state(cls, meta: dict[str, Any] | None, packed: np.ndarray | None, bits: int, where: str) -> "HashCenters":
        """The centers saved by :meth:`to_state`; ``where`` names the saved hasher in errors."""
        if meta is None or packed is None:
            raise Learn2HashError(f"{where} has no hash centers")
        if int(meta["bits"]) != int(bits):
            raise Learn2HashError(f"{where}: centers have {meta['bits']} bits, the hasher {bits}")
        return cls(Codes.from_packed(packed, int(meta["bits"])), meta["method"], meta["min_distance"],
                   meta["mean_distance"], meta["bound"], tuple(int(i) for i in meta.get("negated", ())))

    def __str__(self) -> str:
        bound = f", bound {self.bound}" if self.bound is not None else ""
        mean = "n/a" if self.mean_distance is None else f"{self.mean_distance:.3f}"
        return (f"{self.n} hash centers of {self.bits} bits ({self.method}{bound}): "
                f"min pairwise distance {self.min_distance}, mean {mean}; {self.constant_bits} constant bits")


def sylvester_hadamard(k: int) -> np.ndarray:
    """The ``k x k`` Sylvester Hadamard matrix (``int8`` +-1, :func:`scipy.linalg.hadamard`); ``k`` must be a power of two."""
    if k < 1 or k & (k - 1):
        raise Learn2HashError(f"a Sylvester Hadamard matrix needs a power-of-two size, got {k}")
    from scipy.linalg import hadamard

    return hadamard(k, dtype=np.int8)


def default_bound(m: int, bits: int) -> int:
    """Largest ``d <= bits // 2`` with ``C(m, 2) * P[Binomial(bits, 1/2) < d] <= 1`` (0 if none)."""
    from scipy.stats import binom

    pairs = m * (m - 1) / 2
    best = 0
    for d in range(1, bits // 2 + 1):
        if pairs * binom.cdf(d - 1, bits, 0.5) <= 1.0:
            best = d
        else:
            break
    return best


def hash_centers(n_classes: int, bits: int, method: str = "auto", seed: int = 0,
                 min_distance: int | None = None, balance: bool = True) -> HashCenters:
    """``n_classes`` hash centers of ``bits`` bits by Alg. 1 (see the module docstring).

    ``method``: ``"auto"`` (Alg. 1's choice), ``"hadamard"``, ``"hadamard2"`` or ``"bernoulli"``.
    ``min_distance``: the Bernoulli branch's bound (default :func:`default_bound`).
    ``balance``: negate a seeded choice of the ``"hadamard"`` centers so that no bit is constant
    across them (every pairwise distance unchanged); ``False`` gives Alg. 1's rows as they are.
    """
    m, k = _check_count(n_classes, "n_classes"), _check_count(bits, "bits")
    if method not in METHODS:
        raise Learn2HashError(f"unknown hash-center method {method!r}; known: {', '.join(METHODS)}")
    pow2 = k & (k - 1) == 0
    if method == "auto":
        method = "hadamard" if pow2 and m <= k else "hadamard2" if pow2 and m <= 2 * k else "bernoulli"
    if method in ("hadamard", "hadamard2"):
        cap = k if method == "hadamard" else 2 * k
        if not pow2 or m > cap:
            raise Learn2HashError(
                f"method {method!r} needs bits a power of two and at most {'K' if method == 'hadamard' else '2K'} "
                f"centers; got {m} centers of {k} bits (use 'bernoulli' or 'auto')")
        if min_distance is not None:
            raise Learn2HashError("min_distance applies to the 'bernoulli' method only")
        h = sylvester_hadamard(k)
        rows = (h if method == "hadamard" else np.concatenate([h, -h]))[:m]
        negated: tuple[int, ...] = ()
        if balance and method == "hadamard":
            rows, negated = _balance_rows(rows, np.random.default_rng([int(seed), 2]))
        codes = Codes.from_signs(rows)
        bound = None
    else:
        bound = default_bound(m, k) if min_distance is None else _check_bound(min_distance, k)
        codes = _bernoulli_centers(m, k, bound, np.random.default_rng(seed))
        negated = ()
    mn, mean = distance_stats(codes, known_min=bound)
    return HashCenters(codes, method, mn, mean, bound, negated)


def _balance_rows(rows: np.ndarray, rng: np.random.Generator, tries: int = 256) -> tuple[np.ndarray, tuple[int, ...]]:
    """Negate a seeded choice of the +-1 ``rows`` (all pairwise K/2 apart) so that no column is
    constant: signs ``s`` drawn at random until no column pattern equals ``+-s``. Returns the rows
    unchanged when no draw of ``tries`` succeeds (2 or 3 rows: impossible, see the module docstring)."""
    m = rows.shape[0]
    if m < 4:
        return rows, ()
    # column j's pattern over the rows, up to sign (its first entry made +1)
    cols = rows.T.astype(np.int64) * rows[0].astype(np.int64)[:, None]
    for _ in range(tries):
        s = rng.choice(np.array([-1, 1], dtype=np.int64), size=m)
        if not (cols == (s * s[0])[None, :]).all(axis=1).any():
            return rows * s[:, None].astype(rows.dtype), tuple(int(i) for i in np.flatnonzero(s < 0))
    return rows, ()


def centroid_centers(labels: Any, centers: HashCenters | Codes, seed: int = 0) -> Codes:
    """The center of each item: bitwise majority vote over the centers of its labels.

    ``labels``: multi-hot ``[n, c]`` (or class ids ``[n]``); ``centers``: ``c`` centers. Bit k of
    item i is 1 when more of its labels' centers have bit 1 than bit 0, 0 when fewer, and a
    Bernoulli(0.5) draw (``numpy.random.default_rng(seed)``, in row-major order of the tied
    positions) when equal. A single-label item gets its class center exactly.
    """
    codes = centers.codes if isinstance(centers, HashCenters) else centers
    if not isinstance(codes, Codes):
        raise Learn2HashError(f"centers must be HashCenters or Codes, got {type(centers).__name__}")
    y = as_multihot(labels, n_classes=len(codes) if np.ndim(labels) == 1 else None)
    if y.shape[1] != len(codes):
        raise Learn2HashError(f"labels have {y.shape[1]} classes but there are {len(codes)} centers")
    empty = ~y.any(axis=1)
    if empty.any():
        raise Learn2HashError(f"{int(empty.sum())} items have no positive label (first at row {int(np.argmax(empty))}); "
                              "each item needs at least one class to have a center")
    votes = y.astype(np.int32) @ codes.to_signs(np.int32)  # [n, K], in -c..c
    bits01 = votes > 0
    ties = votes == 0
    n_ties = int(ties.sum())
    if n_ties:
        bits01[ties] = np.random.default_rng(seed).integers(0, 2, size=n_ties).astype(bool)
    return Codes.from_bits(bits01)


# --------------------------------------------------------------------------- distances
def distance_stats(codes: Codes, known_min: int | None = None) -> tuple[int | None, float | None]:
    """Exact (minimum, mean) pairwise Hamming distance over distinct pairs of ``codes``.

    ``known_min``: a lower bound on the minimum already established (speeds up the search).
    """
    m = len(codes)
    if m < 2:
        return None, None
    ones = codes.to_bits().sum(axis=0, dtype=np.int64)
    mean = float((ones * (m - ones)).sum()) / (m * (m - 1) / 2)
    return min_distance(codes, start=known_min or 0), mean


def min_distance(codes: Codes, start: int = 0) -> int:
    """Exact minimum Hamming distance between two distinct rows of ``codes`` (>= 2 rows).

    ``start`` must be a known lower bound of the answer (0 if none).
    """
    words = _words(codes)
    r = max(int(start), 0)
    while True:
        found, gmin = _search(codes, words, r, flags=None)
        if found is None:  # brute force was cheaper: it gives the exact minimum directly
            return gmin
        if gmin <= r:
            return gmin
        r += 1


def close_rows(codes: Codes, below: int) -> np.ndarray:
    """``bool[m]``: row j is flagged when some row i < j is at distance < ``below`` from it."""
    flags = np.zeros(len(codes), dtype=np.bool_)
    if below >= 1 and len(codes) >= 2:
        _search(codes, _words(codes), below - 1, flags=flags)
    return flags


def _bernoulli_centers(m: int, k: int, bound: int, rng: np.random.Generator) -> Codes:
    """Bernoulli(0.5) centers; a center closer than ``bound`` to an earlier one is redrawn. After
    the first full check only the redrawn centers are compared with all others."""
    bits01 = rng.integers(0, 2, size=(m, k), dtype=np.uint8).astype(bool)
    bad = close_rows(Codes.from_bits(bits01), bound)
    for _ in range(_MAX_ROUNDS):
        if not bad.any():
            return Codes.from_bits(bits01)
        rows = np.flatnonzero(bad).astype(np.int64)
        bits01[rows] = rng.integers(0, 2, size=(len(rows), k), dtype=np.uint8).astype(bool)
        bad = np.zeros(m, dtype=np.bool_)
        _rows_close(_words(Codes.from_bits(bits01)), rows, bound - 1, bad)
    raise Learn2HashError(
        f"could not place {m} centers of {k} bits at pairwise distance >= {bound} in {_MAX_ROUNDS} rounds of "
        f"redrawing; ask for a smaller min_distance (the default for this size is {default_bound(m, k)})")


def _words(codes: Codes) -> np.ndarray:
    w = (codes.n_bytes + 7) // 8
    out = np.zeros((len(codes), w * 8), dtype=np.uint8)
    out[:, :codes.n_bytes] = codes.packed
    return np.ascontiguousarray(out.view(np.uint64))


def _search(codes: Codes, words: np.ndarray, r: int, flags: np.ndarray | None) -> tuple[bool | None, int]:
    """Compare the pairs that could be within distance ``r``.

    Returns ``(True, m)`` after a multi-index search, where ``m`` is the minimum over the compared
    pairs (exact when ``m <= r``), or ``(None, m)`` after a brute-force pass (``m`` exact). Rows
    with an earlier row within ``r`` are flagged in ``flags`` when given.
    """
    n, k = len(codes), codes.bits
    brute_cost = n * (n - 1) / 2
    plan = _chunk_plan(codes, r) if r + 1 <= k else None
    dummy = np.zeros(1, dtype=np.bool_)
    if plan is None or plan[1] > 0.5 * brute_cost:
        gmin = _brute_min(words, r, flags if flags is not None else dummy, flags is not None)
        return None, int(gmin)
    gmin = _BIG
    for order, starts in plan[0]:
        gmin = min(gmin, int(_group_min(words, order, starts, r, flags if flags is not None else dummy,
                                        flags is not None)))
    return True, gmin


def _chunk_plan(codes: Codes, r: int) -> tuple[list[tuple[np.ndarray, np.ndarray]], float]:
    """Split the bits into ``r + 1`` chunks; per chunk, the rows sorted by chunk value and the group
    boundaries (groups of one row dropped); and the number of pairs the search will compare."""
    bits01 = codes.to_bits()
    k = codes.bits
    edges = np.linspace(0, k, r + 2).round().astype(int)
    plan, cost = [], 0.0
    for a, b in zip(edges[:-1], edges[1:]):
        chunk = bits01[:, a:b]
        if b - a <= 62:
            keys = chunk.astype(np.int64) @ (np.int64(1) << np.arange(b - a, dtype=np.int64))
        else:
            packed = np.ascontiguousarray(np.packbits(chunk, axis=1))
            keys = np.unique(packed.view(np.dtype((np.void, packed.shape[1]))).ravel(), return_inverse=True)[1]
        order = np.argsort(keys, kind="stable")
        sk = keys[order]
        cuts = np.flatnonzero(sk[1:] != sk[:-1]) + 1
        starts = np.concatenate([[0], cuts, [len(sk)]]).astype(np.int64)
        sizes = np.diff(starts)
        keep = np.flatnonzero(sizes >= 2)
        cost += float((sizes[keep] * (sizes[keep] - 1) / 2).sum())
        # encode kept groups as (start, stop) pairs
        plan.append((order.astype(np.int64), np.stack([starts[keep], starts[keep + 1]], axis=1)))
    return plan, cost


@intrinsic
def _popcount64(typingctx, x):
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@numba.njit(cache=True, nogil=True)
def _row_against(swt, a, lo, hi, tmp):
    """Distances of row ``a`` to rows ``lo..hi-1`` of the word-major array ``swt`` into ``tmp``; returns their minimum."""
    n_b = hi - lo
    for b in range(n_b):
        tmp[b] = 0
    for w in range(swt.shape[0]):
        x = swt[w, a]
        row = swt[w]
        for b in range(n_b):  # contiguous: vectorised popcount
            tmp[b] += _popcount64(x ^ row[lo + b])
    return _least(tmp[:n_b])


@numba.njit(cache=True, nogil=True)
def _least(values):
    """The smallest of ``values`` (``_BIG`` when there are none)."""
    best = _BIG
    for v in values:
        if v < best:
            best = v
    return best


@numba.njit(parallel=True, cache=True)
def _group_min(words, order, groups, r, flags, use_flags):
    """Minimum distance over pairs inside each group of rows ``order[s:e]``; flags the later row of
    pairs within ``r``. The rows are gathered in group order, word-major, so inner loops are contiguous."""
    nw = words.shape[1]
    swt = np.empty((nw, order.shape[0]), dtype=np.uint64)
    for a in range(order.shape[0]):
        for w in range(nw):
            swt[w, a] = words[order[a], w]
    g_n = groups.shape[0]
    gmin = np.full(g_n, _BIG, dtype=np.int64)
    for g in numba.prange(g_n):
        s, e = groups[g, 0], groups[g, 1]
        tmp = np.empty(e - s, dtype=np.int64)
        best = _BIG
        for a in range(s, e - 1):
            m = _row_against(swt, a, a + 1, e, tmp)
            best = min(best, m)
            if use_flags and m <= r:
                for b in range(e - a - 1):
                    if tmp[b] <= r:
                        flags[max(order[a], order[a + 1 + b])] = True
        gmin[g] = best
    return _least(gmin)


@numba.njit(parallel=True, cache=True)
def _brute_min(words, r, flags, use_flags):
    """Minimum distance over all pairs; flags row i when some row j < i is within ``r``."""
    n, nw = words.shape
    swt = np.ascontiguousarray(words.T)
    lanes = 256
    lmin = np.full(lanes, _BIG, dtype=np.int64)
    for lane in numba.prange(lanes):
        tmp = np.empty(n, dtype=np.int64)
        best = _BIG
        for i in range(lane, n, lanes):  # interleaved rows balance the triangular work
            m = _row_against(swt, i, 0, i, tmp)
            best = min(best, m)
            if use_flags and m <= r:
                flags[i] = True
        lmin[lane] = best
    return _least(lmin)


@numba.njit(parallel=True, cache=True)
def _rows_close(words, rows, r, flags):
    """Flag each row ``a`` of ``rows`` (sorted) within ``r`` of a row outside ``rows`` or of an earlier one in it."""
    n, nw = words.shape
    in_rows = np.zeros(n, dtype=np.bool_)
    for a in rows:
        in_rows[a] = True
    for t in numba.prange(rows.shape[0]):
        a = rows[t]
        for j in range(n):
            if j == a or (in_rows[j] and j > a):
                continue
            d = 0
            for w in range(nw):
                d += _popcount64(words[a, w] ^ words[j, w])
            if d <= r:
                flags[a] = True
                break


def _check_count(v: Any, what: str) -> int:
    return check_int(v, what, 1, expected="a positive integer")


def _check_bound(v: Any, bits: int) -> int:
    return check_int(v, "min_distance", 0, bits)


__all__ = ["HashCenters", "centroid_centers", "close_rows", "default_bound", "distance_stats", "hash_centers",
           "min_distance", "sylvester_hadamard"]
