"""Principal components of ``n`` items of any dimension ``d``, streamed in row blocks (numpy only).

:func:`fit_pca` returns the mean and the top ``k`` principal directions of items ``x`` (feature
vectors, or images flattened and scaled to [0, 1]; ``x`` may be lazy: a memory map, a lazily read
image split), reading ``x`` a block of rows at a time, so that no ``d x d`` matrix is formed when ``d``
is large and the float64 copy of ``x`` never exists. Three ways, ``method``:

``"covariance"`` (exact)
    eigenvectors of the ``d x d`` scatter matrix ``sum_b (x_b - mean)^T (x_b - mean)``.
    Peak extra memory: ``8 (2 d^2 + 3 b d)`` bytes.
``"gram"`` (exact)
    eigenvectors ``U`` of the ``n x n`` Gram matrix ``G = X_c X_c^T``; the principal directions are
    ``X_c^T U / sqrt(lambda)``, the same as the covariance's up to rounding and the sign of each
    direction. Peak extra memory: ``8 (2 n^2 + 5 b d + d k)`` bytes. Costs ``n^2 d`` multiply-adds.
``"randomized"`` (approximate)
    the randomized range finder of Halko, Martinsson & Tropp (2011, Alg. 4.4 and 5.1) with
    ``l = k + oversample`` columns and ``power_iter`` subspace iterations, each a pass over ``x``.
    The error of the rank-``k`` approximation exceeds the optimal ``sigma_(k+1)`` by a factor that
    shrinks like ``(sigma_(l+1) / sigma_k)^(2 q + 1)`` (``q = power_iter``); ITQ's codes built on it
    reach the exact path's mAP to within 0.005 on the test case (tests/test_features.py). The centred
    items are never formed (``X_c m = X m - 1 mean^T m``). Peak extra memory: ``8 (n l + 3 d l + 2 b d)``
    bytes.

``"auto"``: covariance when ``d <= EXACT_MAX_DIM`` (the way ITQ always worked: a single block gives
the very same matrix), else gram when ``n <= GRAM_MAX_ITEMS``, else randomized. ``b`` is the block of
rows, :func:`block_rows` (``b d`` doubles of at most :data:`BLOCK_BYTES`; a block is held as read and
scaled, and by the exact paths centred too). The items themselves are not counted: an array in memory
is already there, a memory map's pages are read as the blocks go. Before any work the peak
is compared with the memory available (``MemAvailable`` in ``/proc/meminfo``): an input that cannot
fit is refused with a one-line :class:`~learn2hash.errors.Learn2HashError` naming the sizes.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterator

import numpy as np

from learn2hash.errors import Learn2HashError

#: bytes of one float64 block of rows
BLOCK_BYTES = 64 << 20
#: largest d for which "auto" forms the d x d scatter matrix (128 MiB of float64)
EXACT_MAX_DIM = 4096
#: largest n for which "auto" uses the exact Gram path when d is larger
GRAM_MAX_ITEMS = 4096
METHODS = ("auto", "covariance", "gram", "randomized")
#: oversampling and subspace iterations of the randomized path
OVERSAMPLE = 10
POWER_ITER = 4


def block_rows(d: int, limit: int = 8192) -> int:
    """Rows per block for items of ``d`` features: ``b d`` float64 values within :data:`BLOCK_BYTES`."""
    return int(max(1, min(limit, BLOCK_BYTES // (8 * max(1, int(d))))))


def item_dim(x: Any) -> int:
    """Features per item of ``x`` (``[n, d]``, or images ``[n, ...]`` flattened)."""
    shape = np.shape(x) if hasattr(x, "shape") else np.shape(np.asarray(x[:1]))
    if len(shape) < 2:
        raise Learn2HashError(f"items must be a 2-D array [n, d] of feature vectors (or images), got shape {shape}")
    return int(np.prod(shape[1:]))


def row_blocks(x: Any, block: int, as_features: Callable[..., np.ndarray], what: str, dim: int
               ) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, float64[<=block, dim])`` blocks of ``x`` in order."""
    for start in range(0, len(x), block):
        yield start, as_features(x[start:start + block], what, dim)


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (``MemAvailable``), or None where unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def choose(n: int, d: int, method: str = "auto") -> str:
    if method not in METHODS:
        raise Learn2HashError(f"pca must be one of {', '.join(METHODS)}, got {method!r}")
    if method != "auto":
        return method
    if d <= EXACT_MAX_DIM:
        return "covariance"
    return "gram" if n <= GRAM_MAX_ITEMS else "randomized"


def peak_bytes(n: int, d: int, k: int, method: str) -> int:
    """The peak extra memory of :func:`fit_pca` (the formulas of the module docstring)."""
    b = block_rows(d)
    if method == "covariance":
        return 8 * (2 * d * d + 3 * b * d)
    if method == "gram":
        return 8 * (2 * n * n + 5 * b * d + d * k)
    lcols = min(k + OVERSAMPLE, n, d)
    return 8 * (n * lcols + 3 * d * lcols + 2 * b * d)


def check_fits(n: int, d: int, k: int, method: str, who: str) -> None:
    """Refuse, in one line and before any work, an input whose PCA cannot fit in the available memory."""
    need = peak_bytes(n, d, k, method)
    have = available_memory()
    if have is not None and need > have:
        raise Learn2HashError(
            f"{who}: the {method} PCA of {n:,} x {d:,} inputs needs about {need / 2**30:.1f} GiB, only "
            f"{have / 2**30:.1f} GiB are available; use pca='randomized' (memory linear in n and d), fewer "
            "items or smaller features (e.g. --features efficientnet-lite0)")


def fit_pca(x: Any, k: int, as_features: Callable[..., np.ndarray], method: str = "auto", seed: int = 0,
            what: str = "training items", who: str = "pca") -> tuple[np.ndarray, np.ndarray, str]:
    """``(mean float64[d], components float64[d, k], method used)`` of items ``x`` (see the module
    docstring). ``as_features(block, what, dim)`` turns a block of rows into ``float64[b, d]``."""
    n, d = len(x), item_dim(x)
    if k > min(n, d):
        raise Learn2HashError(f"{who}: {k} principal components of {n} items of {d} features cannot be had "
                              f"(at most min(n, d) = {min(n, d)})")
    method = choose(n, d, method)
    check_fits(n, d, k, method, who)
    b = block_rows(d)
    total = np.zeros(d)
    for _, xb in row_blocks(x, b, as_features, what, d):
        total += xb.sum(axis=0)
    mean = total / n
    blocks = lambda: ((s, xb - mean) for s, xb in row_blocks(x, b, as_features, what, d))  # noqa: E731
    if method == "covariance":
        scatter = np.zeros((d, d))
        for _, xc in blocks():
            scatter += xc.T @ xc
        evals, evecs = np.linalg.eigh(scatter)
        return mean, evecs[:, np.argsort(evals)[::-1][:k]], method
    if method == "gram":
        gram = np.zeros((n, n))
        starts = list(range(0, n, b))
        for i, si in enumerate(starts):
            xi = as_features(x[si:si + b], what, d) - mean
            for sj in starts[i:]:
                xj = xi if sj == si else as_features(x[sj:sj + b], what, d) - mean
                g = xi @ xj.T
                gram[si:si + len(xi), sj:sj + len(xj)] = g
                gram[sj:sj + len(xj), si:si + len(xi)] = g.T
        evals, evecs = np.linalg.eigh(gram)
        del gram
        order = np.argsort(evals)[::-1][:k]
        lam = np.maximum(evals[order], 0.0)
        if np.any(lam <= lam.max() * 1e-12):
            raise Learn2HashError(f"{who}: the {n} centred training items span fewer than {k} dimensions")
        u = evecs[:, order] / np.sqrt(lam)
        comps = np.zeros((d, k))
        for s, xc in blocks():
            comps += xc.T @ u[s:s + len(xc)]
        return mean, comps, method
    # randomized range finder with subspace iterations (Halko et al. 2011, Alg. 4.4 / 5.1)
    lcols = min(k + OVERSAMPLE, n, d)
    rng = np.random.default_rng(seed)

    # the centred items are never formed: X_c m = X m - 1 (mean m) and X_c^T m = X^T m - mean (1^T m),
    # which saves a copy of every block on every pass
    def times(m: np.ndarray) -> np.ndarray:  # X_c m, [n, l]
        out = np.empty((n, m.shape[1]))
        for s, xb in row_blocks(x, b, as_features, what, d):
            out[s:s + len(xb)] = xb @ m
        return out - mean @ m

    def t_times(m: np.ndarray) -> np.ndarray:  # X_c^T m, [d, l]
        out = np.zeros((d, m.shape[1]))
        for s, xb in row_blocks(x, b, as_features, what, d):
            out += xb.T @ m[s:s + len(xb)]
        return out - np.outer(mean, m.sum(axis=0))

    q, _ = np.linalg.qr(times(rng.standard_normal((d, lcols))))
    for _ in range(POWER_ITER):
        z, _ = np.linalg.qr(t_times(q))
        q, _ = np.linalg.qr(times(z))
    bt = t_times(q)  # B^T = X_c^T Q, [d, l]
    # B = Q^T X_c = W S V^T  <=>  B^T = V S W^T: the right singular vectors of B are the left ones of B^T
    v, svals, _ = np.linalg.svd(bt, full_matrices=False)
    return mean, v[:, np.argsort(svals)[::-1][:k]], method
