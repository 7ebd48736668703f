"""CCA-ITQ: the offline, unsupervised cross-modal baseline (Gong & Lazebnik; Gong et al. 2014).

Canonical correlation analysis maps every modality into one K-dimensional space where the
descriptions of the same item correlate most; iterative quantization (ITQ) then rotates that
space so that taking signs loses as little as possible.

- **CCA** over ``m >= 2`` modalities, in the multi-view form: with ``Σ`` the covariance of all
  modalities' centred features side by side and ``D`` its block diagonal (each modality's own
  covariance, plus ``reg · trace/d`` on the diagonal), the directions are the top ``K``
  generalized eigenvectors of ``Σ w = λ D w`` (for two modalities: ordinary CCA, ``λ = 1 + ρ``).
  Modality ``m`` is embedded as ``z_m = (x_m − μ_m) W_m · diag(λ)^power``.
- **ITQ**: an orthogonal ``R`` minimising ``‖B − Z R‖²`` over the embeddings of all modalities
  stacked, alternating ``B = sign(Z R)`` and an orthogonal Procrustes step, ``iterations`` times.

``encode(x, modality=...)`` gives ``sign(z_m R)``. Training uses every modality of each item;
the labels are not used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import scipy.linalg

from learn2hash.datasets.base import Split
from learn2hash.errors import Learn2HashError
from learn2hash.methods.base import FitContext, Hasher
from learn2hash.methods.multiview import MultiViewEncoder, check_views, split_views
from learn2hash.methods.registry import register
from learn2hash.methods.validation import Interval
from learn2hash.methods.shallow import procrustes, sign_matrix


def itq_rotation(z: np.ndarray, iterations: int, rng: np.random.Generator) -> np.ndarray:
    """Orthogonal ``R`` (``K x K``) that locally minimises ``‖sign(Z R) − Z R‖²`` (ITQ)."""
    k = z.shape[1]
    r = np.linalg.qr(rng.standard_normal((k, k)))[0]
    for _ in range(iterations):
        r = procrustes(z, sign_matrix(z @ r))
    return r


@register
class CCAITQ(MultiViewEncoder, Hasher):
    """Multi-view CCA to ``bits`` dimensions, then an ITQ rotation shared by all modalities."""

    name = "cca-itq"
    input_kind = "features"
    supervised = False
    _parameter_constraints = {"reg": [Interval("real", 0, closed="neither")], "power": [Interval("real")],
                              "iterations": [Interval("int", 0)]}

    def __init__(self, bits: int = 64, reg: float = 1.0, power: float = 4.0, iterations: int = 50, seed: int = 0):
        super().__init__(bits=bits, seed=seed)
        self.reg = reg
        self.power = power
        self.iterations = iterations

    def __sklearn_tags__(self) -> Any:
        """As every hasher's, except that a plain ``[n, d]`` array is not an input it takes (it learns
        between two or more modalities, a mapping of views or a Split with views), so scikit-learn's
        estimator checks, which feed plain arrays, pass it by."""
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        return tags

    def _fit(self, split: Split, context: FitContext) -> None:
        x = check_views(split_views(split), what="training split")
        if len(x) < 2:
            raise Learn2HashError(f"cca-itq needs at least two modalities (split.views), got {', '.join(x)}")
        names = list(x)
        dims = [x[k].shape[1] for k in names]
        k = self.bits
        if k > sum(dims):
            raise Learn2HashError(f"cca-itq: {k} bits exceed the {sum(dims)} features of all modalities together")
        means = {name: a.mean(axis=0) for name, a in x.items()}
        centred = np.column_stack([x[name] - means[name] for name in names])
        n = centred.shape[0]
        cov = centred.T @ centred / max(n - 1, 1)
        block = np.zeros_like(cov)
        start = 0
        for d in dims:
            sl = slice(start, start + d)
            own = cov[sl, sl]
            ridge = self.reg * max(np.trace(own) / d, np.finfo(np.float64).tiny)
            own = own + ridge * np.eye(d)
            cov[sl, sl] = own
            block[sl, sl] = own
            start += d
        total = cov.shape[0]
        values, vectors = scipy.linalg.eigh(cov, block, subset_by_index=(total - k, total - 1))
        order = np.argsort(values)[::-1]
        values, vectors = values[order], vectors[:, order]
        scale = np.maximum(values, 0.0) ** float(self.power)
        projections, start = {}, 0
        for name, d in zip(names, dims):
            projections[name] = vectors[start:start + d] * scale
            start += d
        stacked = np.concatenate([(x[name] - means[name]) @ projections[name] for name in names])
        rotation = itq_rotation(stacked, int(self.iterations), np.random.default_rng(int(self.seed) & 0xFFFFFFFF))
        self.modalities_, self.dims_ = names, dict(zip(names, dims))
        self.means_ = means
        self.projections_ = {name: projections[name] @ rotation for name in names}
        self.eigenvalues_ = values

    def _transform_view(self, x: np.ndarray, modality: str) -> np.ndarray:
        return (x - self.means_[modality]) @ self.projections_[modality]

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays: dict[str, np.ndarray] = {"eigenvalues": self.eigenvalues_}
        for i, name in enumerate(self.modalities_):
            arrays[f"mean_{i}"] = self.means_[name]
            arrays[f"projection_{i}"] = self.projections_[name]
        return {"modalities": self.modalities_, "dims": self.dims_}, arrays

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray], folder: Path,
                   files: dict[str, Path]) -> None:
        self.modalities_ = list(state["modalities"])
        self.dims_ = {k: int(v) for k, v in state["dims"].items()}
        self.eigenvalues_ = arrays["eigenvalues"]
        self.means_ = {name: arrays[f"mean_{i}"] for i, name in enumerate(self.modalities_)}
        self.projections_ = {name: arrays[f"projection_{i}"] for i, name in enumerate(self.modalities_)}
