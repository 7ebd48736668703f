"""Shallow baselines on feature vectors: LSH, ITQ and SDH (numpy/scipy only, no torch).

Each takes feature vectors ``[n, d]`` (or images, flattened and scaled to [0, 1] by
:func:`~learn2hash.methods.base.as_features`) and hashes a vector ``x`` to
``sign(f(x))`` with bit 1 for ``f(x) >= 0``. A fitted hasher remembers ``d`` and refuses inputs
with another number of features. ``transform(x)`` gives the real values ``f(x)`` (so a hasher
can end a scikit-learn ``Pipeline``, e.g. after a ``StandardScaler`` or ``PCA``).

- :class:`LSH` — sign of random Gaussian projections of the centred data (Charikar 2002).
- :class:`ITQ` — PCA to K dimensions, then the orthogonal rotation R that minimises the
  quantization loss ``||B - V R||_F^2`` by alternating B = sign(V R) and orthogonal Procrustes
  (Gong & Lazebnik, CVPR 2011).
- :class:`SDH` — supervised discrete hashing (Shen et al., CVPR 2015): RBF features of anchor
  points, codes B in {-1, 1} learned by discrete cyclic coordinate descent so that labels are
  linearly predictable from them, and a ridge projection P with hash function sign(phi(x) P).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import numpy as np

from learn2hash.codes import Codes
from learn2hash.datasets.base import Split
from learn2hash.errors import Learn2HashError
from learn2hash.methods.base import FitContext, Hasher, as_array, as_features
from learn2hash.methods.pca import METHODS as PCA_METHODS
from learn2hash.methods.pca import block_rows, fit_pca, item_dim
from learn2hash.methods.registry import register
from learn2hash.methods.validation import Interval, Options

#: rows per block when encoding, so that large databases are never expanded at once
ENCODE_BLOCK = 8192


def _blocks(x: Any, what: str, dim: int, block: int | None = None, who: str = "this hasher") -> Iterator[np.ndarray]:
    """``x`` as ``float64[<=block, dim]`` feature blocks, in order (``x`` may be lazy); the default
    block keeps each within :data:`learn2hash.methods.pca.BLOCK_BYTES` however wide the items are.
    ``who``: the hasher's class name, for the error about a wrong number of features."""
    x = as_array(x)
    if np.ndim(x) < 2:
        as_features(x, what)  # the error for 1-D input
    n = len(x)
    if n == 0:  # as_features cannot infer the width of an empty array; check it here
        width = int(np.prod(np.shape(x)[1:])) if np.ndim(x) >= 2 else -1
        if width != dim:
            raise Learn2HashError(f"{what} has shape {np.shape(x)}, this hasher was fitted on {dim} features")
        yield np.zeros((0, dim))
        return
    block = block or block_rows(dim, ENCODE_BLOCK)
    for start in range(0, n, block):
        yield as_features(x[start:start + block], what, dim, who)


class _ProjectionHasher(Hasher):
    """A hasher of the form ``sign(g(x))``, ``g`` real ``[n, K]``; records the feature dimension.

    Training items are read a block of rows at a time (:func:`_blocks`): however wide they are
    (57,600 pixels of a 120x160 colour photograph), no float64 copy of all of them is made."""

    def _features_for_fit(self, split: Split) -> Any:
        x = split.x
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        if not hasattr(x, "shape") or not hasattr(x, "__getitem__"):
            x = np.asarray(x)
        n = len(x)
        if n < 2:
            raise Learn2HashError(f"{self.name} needs at least 2 training items, got {n}")
        self.dim_ = item_dim(x)
        if n:
            as_features(x[:1], "training items")  # dtype and shape checked before any long pass
        return x

    def _mean(self, x: Any) -> np.ndarray:
        total = np.zeros(self.dim_)
        for xb in _blocks(x, "training items", self.dim_):
            total += xb.sum(axis=0)
        return total / len(x)

    def _project(self, x: np.ndarray) -> np.ndarray:
        """Real-valued projections ``[n, K]`` of feature vectors ``[n, d]``; their signs are the codes."""
        raise NotImplementedError

    def transform(self, x: Any) -> np.ndarray:
        """The real values whose signs are the codes, ``float64[n, K]``."""
        self._check_fitted()
        return np.concatenate([self._project(b) for b in _blocks(x, "items to encode", self.dim_,
                                                                 who=type(self).__name__)], axis=0)

    def _encode(self, x: Any) -> Codes:
        parts = [Codes.from_signs(self._project(b)) for b in _blocks(x, "items to encode", self.dim_,
                                                                     who=type(self).__name__)]
        return Codes.concatenate(parts)

    def _probe_input(self) -> Any:
        return np.zeros((1, self.dim_)) if isinstance(self.dim_, int) and self.dim_ > 0 else None


@register
class LSH(_ProjectionHasher):
    """Locality-sensitive hashing: ``sign((x - mean) W)`` with ``W`` i.i.d. standard normal ``[d, K]``."""

    name = "lsh"
    supervised = False

    def __init__(self, bits: int = 64, seed: int = 0):
        super().__init__(bits=bits, seed=seed)

    def _fit(self, split: Split, context: FitContext) -> None:
        x = self._features_for_fit(split)
        self.mean_ = self._mean(x)
        self.projection_ = np.random.default_rng(self.seed).standard_normal((self.dim_, self.bits))

    def _project(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) @ self.projection_

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"dim": self.dim_}, {"mean": self.mean_, "projection": self.projection_}

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray], folder: Path,
                   files: dict[str, Path]) -> None:
        self.dim_ = int(state["dim"])
        self.mean_, self.projection_ = arrays["mean"], arrays["projection"]


def procrustes(v: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The orthogonal ``R`` minimising ``||b - v R||_F``: ``U W^T`` for ``v^T b = U S W^T``."""
    u, _, wt = np.linalg.svd(v.T @ b)
    return u @ wt


def sign_matrix(a: np.ndarray) -> np.ndarray:
    """``+1`` where ``a >= 0``, else ``-1`` (the codes' convention; never 0)."""
    return np.where(a >= 0, 1.0, -1.0)


@register
class ITQ(_ProjectionHasher):
    """Iterative quantization: PCA to K dimensions, then a learned orthogonal rotation.

    ``loss_history_[t]`` is the quantization loss ``||B_t - V R_{t-1}||_F^2`` at iteration ``t``
    (B_t = sign(V R_{t-1})), which alternating minimisation never increases.

    ``pca``: how the principal components are found, at any dimension ``d``
    (:func:`learn2hash.methods.pca.fit_pca`): ``"auto"`` (the exact ``d x d`` scatter matrix up to
    ``d = 4096``, as always; beyond, the exact Gram path for up to 4,096 items, else randomized),
    ``"covariance"``, ``"gram"`` or ``"randomized"``. The items are read in blocks of rows; the
    peak memory beyond the items themselves follows the formula of each path (pca's docstring), and
    an input that cannot fit is refused before any work. ``pca_method_`` records the path taken.
    """

    name = "itq"
    supervised = False
    _parameter_constraints = {"n_iter": [Interval("int", 0)], "pca": [Options(tuple(PCA_METHODS))]}

    def __init__(self, bits: int = 64, seed: int = 0, n_iter: int = 50, pca: str = "auto"):
        super().__init__(bits=bits, seed=seed)
        self.n_iter = n_iter
        self.pca = pca

    def _fit(self, split: Split, context: FitContext) -> None:
        x = self._features_for_fit(split)
        if self.bits > self.dim_:
            raise Learn2HashError(
                f"itq projects onto the top K principal components, so K ({self.bits} bits) must be at most "
                f"the feature dimension (n_features={self.dim_}); use fewer bits or richer features"
            )
        self.mean_, self.pca_, self.pca_method_ = fit_pca(x, self.bits, as_features, method=self.pca, seed=self.seed,
                                                          who="itq")
        v = np.concatenate([(xb - self.mean_) @ self.pca_ for xb in _blocks(x, "training items", self.dim_)])
        rng = np.random.default_rng(self.seed)
        r, _ = np.linalg.qr(rng.standard_normal((self.bits, self.bits)))
        history = []
        for _ in range(self.n_iter):
            b = sign_matrix(v @ r)
            history.append(float(np.sum((b - v @ r) ** 2)))
            r = procrustes(v, b)
        self.rotation_ = r
        self.loss_history_ = history

    def _project(self, x: np.ndarray) -> np.ndarray:
        return (x - self.mean_) @ self.pca_ @ self.rotation_

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return ({"dim": self.dim_, "loss_history": self.loss_history_},
                {"mean": self.mean_, "pca": self.pca_, "rotation": self.rotation_})

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray], folder: Path,
                   files: dict[str, Path]) -> None:
        self.dim_ = int(state["dim"])
        self.loss_history_ = list(state.get("loss_history", []))
        self.mean_, self.pca_, self.rotation_ = arrays["mean"], arrays["pca"], arrays["rotation"]


def _sq_distances(x: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances ``[n, m]`` (clipped at 0 against rounding)."""
    d = (x * x).sum(1)[:, None] + (anchors * anchors).sum(1)[None, :] - 2.0 * (x @ anchors.T)
    return np.maximum(d, 0.0)


def _ridge(a: np.ndarray, b: np.ndarray, lam: float) -> np.ndarray:
    """``argmin_X ||b - a X||^2 + lam ||X||^2 = (a^T a + lam I)^-1 a^T b``."""
    g = a.T @ a
    g[np.diag_indices_from(g)] += lam
    return np.linalg.solve(g, a.T @ b)


@register
class SDH(_ProjectionHasher):
    """Supervised discrete hashing (Shen, Shen, Liu & Shen, CVPR 2015).

    Features: ``phi(x) = [exp(-||x - a_j||^2 / (2 sigma^2))]_j`` for ``n_anchors`` anchors
    ``a_j`` drawn from the training items (all of them when there are fewer), ``sigma`` the mean
    distance from the training items to the anchors, plus a constant 1 (the bias).

    Objective, over codes ``B in {-1,1}^[n,K]``, classifier ``W [K, c]`` and projection ``P``::

        J = ||Y - B W||^2 + lam ||W||^2 + nu (||B - phi(X) P||^2 + delta ||P||^2)

    Each outer iteration: W-step (ridge), P-step (ridge), B-step by discrete cyclic coordinate
    descent: bit k of every item is set to ``sign(q_k - B' W' w_k)`` with
    ``Q = Y W^T + nu phi(X) P`` and ``B', W'`` the other bits (a tie keeps the current bit),
    which minimises J exactly in that bit column; sweeps repeat until no bit changes or
    ``dcc_sweeps`` is reached. A final P-step fits the hash function ``sign(phi(x) P)`` to the
    last B. ``objective_history_`` holds ``(step, J)`` after every step and every DCC sweep; J
    never increases.
    """

    name = "sdh"
    supervised = True
    _parameter_constraints = {
        **{k: [Interval("int", 1)] for k in ("n_anchors", "n_iter", "dcc_sweeps")},
        **{k: [Interval("real", 0, closed="neither")] for k in ("lam", "nu", "delta")},
    }

    def __init__(self, bits: int = 64, seed: int = 0, n_anchors: int = 1000, lam: float = 1.0,
                 nu: float = 1e-5, delta: float = 1e-2, n_iter: int = 5, dcc_sweeps: int = 10):
        super().__init__(bits=bits, seed=seed)
        self.n_anchors, self.n_iter, self.dcc_sweeps = n_anchors, n_iter, dcc_sweeps
        self.lam, self.nu, self.delta = lam, nu, delta

    def _phi(self, x: np.ndarray) -> np.ndarray:
        k = np.exp(-_sq_distances(x, self.anchors_) / (2.0 * self.sigma_ ** 2))
        return np.concatenate([k, np.ones((x.shape[0], 1))], axis=1)

    def _phi_all(self, x: Any) -> np.ndarray:
        """``phi`` of every training item, ``[n, m + 1]``, a block of rows at a time."""
        return np.concatenate([self._phi(xb) for xb in _blocks(x, "training items", self.dim_)])

    def objective(self, y: np.ndarray, b: np.ndarray, w: np.ndarray, phi: np.ndarray, p: np.ndarray) -> float:
        """The SDH objective J (see the class docstring) at the given variables."""
        return float(np.sum((y - b @ w) ** 2) + self.lam * np.sum(w * w)
                     + self.nu * (np.sum((b - phi @ p) ** 2) + self.delta * np.sum(p * p)))

    def dcc_sweep(self, b: np.ndarray, w: np.ndarray, q: np.ndarray) -> int:
        """One discrete cyclic coordinate descent sweep over the bits of ``b`` (in place); returns
        how many entries changed."""
        changed = 0
        bw = b @ w  # [n, c], kept current as bits change
        for k in range(b.shape[1]):
            wk = w[k]
            rest = bw - np.outer(b[:, k], wk)  # B' W' with bit k removed
            target = q[:, k] - rest @ wk
            new = np.where(target > 0, 1.0, np.where(target < 0, -1.0, b[:, k]))
            diff = new != b[:, k]
            if diff.any():
                changed += int(diff.sum())
                b[:, k] = new
                bw = rest + np.outer(new, wk)
        return changed

    def _fit(self, split: Split, context: FitContext) -> None:
        x = self._features_for_fit(split)
        y = split.labels.astype(np.float64)
        n = len(x)
        rng = np.random.default_rng(self.seed)
        m = min(int(self.n_anchors), n)
        self.anchors_ = as_features(x[np.sort(rng.choice(n, size=m, replace=False))], "training items", self.dim_)
        self.sigma_ = float(sum(np.sqrt(_sq_distances(xb, self.anchors_)).sum()
                                for xb in _blocks(x, "training items", self.dim_)) / (n * m))
        if not self.sigma_ > 0:
            raise Learn2HashError("sdh: all training items are identical; the RBF width would be 0")
        phi = self._phi_all(x)
        b = sign_matrix(rng.standard_normal((n, self.bits)))
        p = np.zeros((phi.shape[1], self.bits))
        history: list[tuple[str, float]] = []
        for _ in range(int(self.n_iter)):
            w = _ridge(b, y, self.lam)
            history.append(("W", self.objective(y, b, w, phi, p)))
            p = _ridge(phi, b, self.delta)
            history.append(("P", self.objective(y, b, w, phi, p)))
            q = y @ w.T + self.nu * (phi @ p)
            for _ in range(int(self.dcc_sweeps)):
                changed = self.dcc_sweep(b, w, q)
                history.append(("B", self.objective(y, b, w, phi, p)))
                if changed == 0:
                    break
        self.projection_ = _ridge(phi, b, self.delta)
        history.append(("P", self.objective(y, b, w, phi, self.projection_)))
        self.classifier_ = w
        self.train_codes_ = b
        self.objective_history_ = history

    def _project(self, x: np.ndarray) -> np.ndarray:
        return self._phi(x) @ self.projection_

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return ({"dim": self.dim_, "sigma": self.sigma_},
                {"anchors": self.anchors_, "projection": self.projection_})

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray], folder: Path,
                   files: dict[str, Path]) -> None:
        self.dim_ = int(state["dim"])
        self.sigma_ = float(state["sigma"])
        self.anchors_, self.projection_ = arrays["anchors"], arrays["projection"]
