"""EDDH — Enhanced Deep Discrete Hashing with semantic–visual similarity (Yang et al., IP&M 2021).

Notation (rows are items): ``F = F(X; θ)`` the network's continuous codes ``[n, k]`` (tanh outputs),
``Y`` the multi-hot labels ``[n, c]``, ``A`` the label transfer ``[c, k]`` (the slides' ``A``, so
the slides' ``AᵀY`` is ``V = Y A`` here), ``B ∈ {-1, 1}^{n×k}`` the discrete codes, ``Ŝ`` the
semantic–visual similarity ``[n, n]``. The objective (the slides', in this layout) is

    J = ‖F Vᵀ - k Ŝ‖² + λ ‖F - B‖² + γ ‖B - V‖² + ρ ‖V‖²,      V = Y A.

**Ŝ.** ``s_ij = 1`` when items i, j share a label, else -1; ``D_ij`` is the cosine distance of
their visual features ``Z(x)`` (:mod:`learn2hash.features`: pretrained EfficientNet-Lite0 pooled
features for images — the paper uses CNN-F fc7 — or the items themselves for feature vectors);
with ``ℰ(x) = min(1, max(0, x))``, ``α = (ι - σ_l)·e``, ``β = (ι + σ_r)/e`` and smoothing ``1/n``::

    ŝ_ij =  ℰ(log((α + 1/n) / (D_ij + 1/n))) + 1     if s_ij = 1
    ŝ_ij = -ℰ(log((D_ij + 1/n) / (β + 1/n))) - 1     if s_ij = -1

so ŝ = 2 for similar pairs with ``D ≤ ι - σ_l`` (approximately; exactly ``(α + 1/n)/e - 1/n``),
ŝ = 1 for ``D ≥ α``, -2 for dissimilar pairs with ``D ≥ ι + σ_r`` (``e(β + 1/n) - 1/n``), -1 for
``D ≤ β``, and ``1 ≤ |ŝ| ≤ 2`` between. ``ι, σ_l, σ_r`` are the maximum-likelihood asymmetric
normal (ζ = 2, :mod:`learn2hash.asymnormal`) of the distances of 10,000 training pairs (5,000
semantically similar, 5,000 dissimilar; drawn with the seed). What the closed-form steps need of
Ŝ — ``T = Ŝ Y`` ``[n, c]`` and ``‖Ŝ‖²`` — is accumulated once over row blocks. Ŝ itself is kept
only while it is small (n² ≤ :data:`DENSE_ENTRIES`, i.e. n ≤ 5,792: at most 128 MiB); for larger
training sets the rows a batch needs are computed from the (normalised) features at each step,
so no n × n matrix is ever formed.

**Steps** (one outer iteration = one epoch of the shared training loop, then the A and B steps in
``on_epoch_end``):

- θ-step: SGD on the rows of J that involve the batch's items Ω, with A and B fixed:
  ``Σ_{i∈Ω} ‖f_i Vᵀ - k ŝ_i‖² + λ ‖f_i - b_i‖²`` (each item against all n columns of V).
- A-step (exact minimiser; ``G = YᵀY``, ``P = FᵀF + (γ + ρ) I``, F the network's eval-mode
  outputs on the whole training set)::

      G A P = k TᵀF + γ YᵀB   =>   A = G⁺ (k TᵀF + γ YᵀB) P⁻¹

- B-step (exact minimiser; J is linear in B given ``‖b‖² = k``): ``B = sign(λ F + γ V)`` (sign(0) = +1).

The slides' Algorithm 1 also names a P-step and a weight μ without their formulas. In the paper
they belong to an auxiliary relaxed copy of the network outputs; here θ is fitted to J directly
by SGD (as in ADSH-style asymmetric hashing), so no extra variable is needed and there is no μ.

**Weights.** The first term has n² entries of size ~k², the others n·k entries of size ~1, so the
balance of raw weights changes with n and k. The parameters are therefore given per item and
bit: ``λ = lam·n·k``, ``γ = gamma·n·k``, ``ρ = rho·n·k``. The logged objective is ``J / (n²k)``:
the mean over pairs of the squared similarity residual divided by k, plus ``lam``, ``gamma``,
``rho`` times the per-item means of ``‖f_i - b_i‖²``, ``‖b_i - v_i‖²``, ``‖v_i‖²``. Defaults:
``lam = 1`` (at 1 a unit of quantization error per bit costs as much as a unit of relative
similarity residual per item, which keeps F near ±1 without dominating the similarity fit),
``gamma = 1`` (same scale for the label transfer B ≈ AᵀY, so the codes stay tied to the labels),
``rho = 0.01`` (a light ridge on V that keeps the A-step well conditioned and V from growing to
fit k·Ŝ through magnitude instead of sign agreement); see RESULTS.md (EDDH) for the sweep on
Fashion-MNIST that backs them.

**Initialisation.** A has i.i.d. N(0, 1) entries (seeded), B = sign(Y A): every class starts with a
random code, so the first θ-step already fits a label-structured target.

The objective ``J/(n²k)`` is logged (logger ``learn2hash.eddh``) after every outer iteration and
recorded as ``objective`` in the training history; ``objective_log_`` also holds the values
after the θ-, A- and B-steps of each iteration (the A- and B-steps never increase it). The fit of
the distance distribution is plotted to ``similarity_fit.png`` in the run folder.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from learn2hash.asymnormal import AsymmetricNormal
from learn2hash.datasets.protocols import rng_for
from learn2hash.errors import Learn2HashError
from learn2hash.features import make_extractor, visual_features
from learn2hash.methods.base import FitContext
from learn2hash.methods.deep import DeepHasher, TrainingTask, fit_context
from learn2hash.methods.registry import register
from learn2hash.methods.validation import Interval
from learn2hash.train import Batch, encode_batches, is_main_process, resolve_device

log = logging.getLogger("learn2hash.eddh")

#: semantically similar (and dissimilar) pairs drawn for the distance fit
PAIRS_PER_KIND = 5000
#: name of the plot of the distance fit in the run folder
PLOT_NAME = "similarity_fit.png"
#: entries of Ŝ computed at once when accumulating over row blocks
BLOCK_ENTRIES = 1 << 22
#: Ŝ is kept in memory (float32) when it has at most this many entries, else recomputed per batch
DENSE_ENTRIES = 1 << 25

# ----------------------------------------------------------------------------- Ŝ
def semantic_visual_similarity(distance: torch.Tensor, similar: torch.Tensor, alpha: float, beta: float,
                               n: int) -> torch.Tensor:
    """ŝ for cosine distances ``distance`` and semantic similarity ``similar`` (bool, same shape);
    ``n`` gives the smoothing ``1/n`` (see the module docstring)."""
    d = torch.as_tensor(distance)
    if not d.is_floating_point():
        d = d.float()
    d = d.clamp(min=0.0)
    eps = 1.0 / float(n)
    tiny = torch.finfo(d.dtype).tiny
    pos = torch.log(max(alpha + eps, tiny) / (d + eps)).clamp(0.0, 1.0) + 1.0
    neg = -torch.log((d + eps) / max(beta + eps, tiny)).clamp(0.0, 1.0) - 1.0
    return torch.where(torch.as_tensor(similar, dtype=torch.bool, device=d.device), pos, neg)


def normalize_rows(z: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Rows scaled to unit length (all-zero rows stay zero: their distance to anything is 1)."""
    z = torch.as_tensor(z).float()
    return z / z.norm(dim=1, keepdim=True).clamp(min=1e-12)


def similarity_rows(z_rows: torch.Tensor, y_rows: torch.Tensor, z: torch.Tensor, y: torch.Tensor, alpha: float,
                    beta: float, n: int) -> torch.Tensor:
    """Rows of Ŝ: items (``z_rows`` unit features, ``y_rows`` labels) against all items ``(z, y)``."""
    distance = 1.0 - z_rows @ z.T
    similar = (y_rows.float() @ y.float().T) > 0
    return semantic_visual_similarity(distance, similar, alpha, beta, n)


def similarity_blocks(z: torch.Tensor, y: torch.Tensor, alpha: float, beta: float,
                      block_rows: int | None = None) -> Iterator[tuple[int, torch.Tensor]]:
    """``(start, Ŝ[start:start + b])`` over row blocks of Ŝ (never the whole matrix at once)."""
    n = len(z)
    b = block_rows or max(1, BLOCK_ENTRIES // max(n, 1))
    for s in range(0, n, b):
        yield s, similarity_rows(z[s:s + b], y[s:s + b], z, y, alpha, beta, n)


def similarity_statistics(z: torch.Tensor, y: torch.Tensor, alpha: float, beta: float,
                          block_rows: int | None = None, keep: bool = False
                          ) -> tuple[np.ndarray, float, torch.Tensor | None]:
    """``(T = Ŝ Y  float64[n, c], ‖Ŝ‖², Ŝ if keep else None)``, accumulated over row blocks of Ŝ."""
    yd = y.double()
    n = len(z)
    t = torch.empty((n, y.shape[1]), dtype=torch.float64, device=z.device)
    dense = torch.empty((n, n), dtype=torch.float32, device=z.device) if keep else None
    s2 = 0.0
    for s, block in similarity_blocks(z, y, alpha, beta, block_rows):
        bd = block.double()
        t[s:s + len(block)] = bd @ yd
        s2 += float((bd * bd).sum())
        if dense is not None:
            dense[s:s + len(block)] = block
    return t.cpu().numpy(), s2, dense


def sample_pairs(labels: np.ndarray, per_kind: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``per_kind`` semantically similar and ``per_kind`` dissimilar pairs ``(i, j, similar)``, i != j.

    Similar pairs: i uniform over the items that share a label with another item, one of its labels
    at random, j uniform over the other items with that label. Dissimilar pairs: uniform pairs,
    rejecting similar ones.
    """
    labels = np.asarray(labels, dtype=bool)
    n, c = labels.shape
    members = [np.flatnonzero(labels[:, l]) for l in range(c)]
    shared = [l for l in range(c) if len(members[l]) >= 2]
    if not shared:
        raise Learn2HashError("eddh: no two training items share a label, so there are no similar pairs to fit on")
    usable = np.flatnonzero(labels[:, shared].any(axis=1))
    i_sim = rng.choice(usable, size=per_kind)
    j_sim = np.empty(per_kind, dtype=np.int64)
    for t, i in enumerate(i_sim):
        own = [l for l in np.flatnonzero(labels[i]) if len(members[l]) >= 2]
        group = members[own[int(rng.integers(len(own)))]]
        j = group[int(rng.integers(len(group) - 1))]
        j_sim[t] = j if j != i else group[-1]
    found_i: list[np.ndarray] = []
    found_j: list[np.ndarray] = []
    count = 0
    for _ in range(100):
        i = rng.integers(n, size=4 * per_kind)
        j = rng.integers(n - 1, size=4 * per_kind)
        j = j + (j >= i)
        keep = ~(labels[i] & labels[j]).any(axis=1)
        found_i.append(i[keep])
        found_j.append(j[keep])
        count += int(keep.sum())
        if count >= per_kind:
            break
    if count < per_kind:
        raise Learn2HashError(f"eddh: the training labels give too few dissimilar pairs ({count} found in "
                              f"{100 * 4 * per_kind:,} draws, {per_kind:,} needed)")
    i_dis = np.concatenate(found_i)[:per_kind]
    j_dis = np.concatenate(found_j)[:per_kind]
    similar = np.concatenate([np.ones(per_kind, bool), np.zeros(per_kind, bool)])
    return np.concatenate([i_sim, i_dis]).astype(np.int64), np.concatenate([j_sim, j_dis]).astype(np.int64), similar


# ----------------------------------------------------------------------------- the discrete steps
def objective(f: np.ndarray, a: np.ndarray, b: np.ndarray, y: np.ndarray, t: np.ndarray, s2: float, k: int,
              lam: float, gamma: float, rho: float) -> dict[str, float]:
    """The terms of J (raw weights λ, γ, ρ) without forming Ŝ: ``‖F Vᵀ - kŜ‖² =
    ⟨FᵀF, VᵀV⟩ - 2k ⟨F, T A⟩ + k²‖Ŝ‖²`` with ``T = Ŝ Y``, ``s2 = ‖Ŝ‖²``."""
    v = y @ a
    sim = float(np.sum((f.T @ f) * (v.T @ v)) - 2.0 * k * np.sum(f * (t @ a)) + k * k * s2)
    quant = lam * float(np.sum((f - b) ** 2))
    transfer = gamma * float(np.sum((b - v) ** 2))
    reg = rho * float(np.sum(v * v))
    return {"similarity": sim, "quantization": quant, "transfer": transfer, "regularization": reg,
            "total": sim + quant + transfer + reg}


def a_step(f: np.ndarray, b: np.ndarray, y: np.ndarray, t: np.ndarray, k: int, gamma: float, rho: float) -> np.ndarray:
    """The A minimising J for fixed F and B: ``A = G⁺ (k TᵀF + γ YᵀB) P⁺``, ``G = YᵀY``,
    ``P = FᵀF + (γ + ρ) I`` (pseudo-inverses: a minimiser also when G or P is singular)."""
    g = y.T @ y
    p = f.T @ f + (gamma + rho) * np.eye(f.shape[1])
    r = k * (t.T @ f) + gamma * (y.T @ b)
    return np.linalg.pinv(g, hermitian=True) @ r @ np.linalg.pinv(p, hermitian=True)


def b_step(f: np.ndarray, a: np.ndarray, y: np.ndarray, lam: float, gamma: float) -> np.ndarray:
    """The B minimising J for fixed F and A: ``sign(λ F + γ Y A)``, with sign(0) = +1."""
    return np.where(lam * f + gamma * (y @ a) >= 0, 1.0, -1.0)


# ----------------------------------------------------------------------------- the method

#: default epochs: twice the shared recipe's 30, chosen on validation data carved from train
#: (64 bits: +0.7 points on Fashion-MNIST, 0.8656 against 0.8582; +1.6 on digits, 0.9982 against
#: 0.9827; benchmarks/RESULTS.md, "Default recipes")
EDDH_EPOCHS = 60


@register
class EDDH(DeepHasher):
    """Enhanced Deep Discrete Hashing; see the module docstring for Ŝ, the objective and the steps.

    ``lam``, ``gamma``, ``rho``: weights of quantization, label transfer and the ridge on AᵀY, per
    item and bit (the raw weights are these times n·k). ``visual``: the visual features Z(x)
    (``"auto"``: EfficientNet-Lite0 for images, the items themselves for feature vectors;
    ``"efficientnet-lite0"``, ``"flatten"``). ``visual_image_size``: input side for the pretrained
    network (default 224, or 96 for images under 112 pixels). Other parameters: :class:`DeepHasher`
    (the shared recipe: AdamW, lr 2e-3, cosine schedule, ``augment="auto"``: flips and shifts on
    clothes and photographs, nothing on 8x8 digits), with 60 epochs (:data:`EDDH_EPOCHS`).
    """

    name = "eddh"
    supervised = True
    _parameter_constraints = {"lam": [Interval("real", 0)], "gamma": [Interval("real", 0)], "rho": [Interval("real", 0)],
                              "visual_image_size": [None, Interval("int", 1)]}
    shared_defaults = {"epochs": EDDH_EPOCHS, "head_init": "standardized"}  # both chosen on validation (RESULTS.md)

    def __init__(self, bits: int = 64, lam: float = 1.0, gamma: float = 1.0, rho: float = 0.01, visual: str = "auto",
                 visual_image_size: int | None = None, **deep: Any):
        super().__init__(bits=bits, **deep)  # otherwise the shared recipe's defaults (deep.py)
        self.lam = lam
        self.gamma = gamma
        self.rho = rho
        self.visual = visual
        self.visual_image_size = visual_image_size

    # ------------------------------------------------------------------ fit
    def fit(self, X: Any, y: Any = None, *, context: FitContext | None = None,
            checkpoint_dir: str | os.PathLike | None = None, resume: bool = False, progress: bool | None = None,
            report_dir: str | os.PathLike | None = None) -> "EDDH":
        """As :meth:`DeepHasher.fit`; the plot of the distance fit goes to ``report_dir`` (default:
        :meth:`FitContext.reports() <learn2hash.methods.base.FitContext.reports>`: the run folder under
        ``learn2hash train``, else the folder holding the checkpoints; no plot when none is given)."""
        context = fit_context(context, checkpoint_dir, resume, progress)
        if report_dir is not None:
            context = dataclasses.replace(context or FitContext(), report_dir=Path(report_dir))
        return super().fit(X, y, context=context)

    def _weights(self, n: int) -> tuple[float, float, float]:
        """The raw (λ, γ, ρ) of the objective for n training items."""
        scale = float(n) * float(self.bits)
        return self.lam * scale, self.gamma * scale, self.rho * scale

    def _prepare(self, task: TrainingTask) -> None:
        """Fit the distance distribution, accumulate what the steps need of Ŝ and draw A and B.

        Per-fit state in ``task.scratch``: ``z`` (unit visual features), ``y`` (labels, bool tensor),
        ``y64`` (labels, float64), ``t`` and ``s2`` (``Ŝ Y`` and ``‖Ŝ‖²``), ``s_dense`` (Ŝ when kept,
        else None), ``a`` and ``b`` (the label transfer and the discrete codes), ``v_t`` and ``b_t``
        (V and B on the training device) and ``objective_log``."""
        split, st = task.split, task.scratch
        n, k = len(split), int(self.bits)
        device = resolve_device(self.device)
        task.model.to(device)
        extractor = make_extractor(self.visual, split.item_shape, self.visual_image_size, device)
        z = normalize_rows(visual_features(split.x, extractor, cache=extractor.cacheable, progress=task.context.progress,
                                           description=f"eddh visual features ({self.visual})"))
        y = split.labels.astype(np.float64)
        if z.shape[1] < 2:
            raise Learn2HashError(f"eddh: the visual features ({self.visual}) have {z.shape[1]} feature(s); the cosine "
                                  "distances of unit vectors of one feature are all 0 or 2, with no spread to fit: "
                                  "give items of more features or another visual network")

        i, j, similar = sample_pairs(split.labels, PAIRS_PER_KIND, rng_for(self.seed, "pairs"))
        distances = (1.0 - (z[torch.from_numpy(i)] * z[torch.from_numpy(j)]).sum(1)).clamp(min=0.0).double().numpy()
        self.distance_fit_ = AsymmetricNormal.fit(distances, similar)
        lo, hi = self.distance_fit_.thresholds
        self.alpha_, self.beta_ = lo * math.e, hi / math.e
        log.info("eddh: cosine distances fitted by an asymmetric normal: iota %.4f, sigma_l %.4f, sigma_r %.4f "
                 "(alpha %.4f, beta %.4f)", self.distance_fit_.iota, self.distance_fit_.sigma_l,
                 self.distance_fit_.sigma_r, self.alpha_, self.beta_)
        report_dir = task.context.reports()
        if report_dir is not None and is_main_process():
            self.distance_fit_.plot(report_dir / PLOT_NAME, title=f"EDDH: cosine distances of {len(distances):,} "
                                    f"training pairs ({self.visual} features)",
                                    marks={"α = (ι−σ_l)e": self.alpha_, "β = (ι+σ_r)/e": self.beta_})

        st.z = z.to(device)
        st.y = torch.from_numpy(split.labels).to(device)
        st.t, st.s2, st.s_dense = similarity_statistics(st.z, st.y, self.alpha_, self.beta_,
                                                        keep=n * n <= DENSE_ENTRIES)
        st.y64 = y
        rng = np.random.default_rng(np.random.SeedSequence([int(self.seed) & 0xFFFFFFFF, 0xEDD4]))
        st.a = rng.standard_normal((split.n_classes, k))
        st.b = np.where(y @ st.a >= 0, 1.0, -1.0)
        self._sync_targets(task)
        f = self._outputs(task, task.train_split.x)
        st.objective_log = [{"epoch": 0, "objective": self._objective(task, f)}]

    def _sync_targets(self, task: TrainingTask) -> None:
        """Copy V = Y A and B to the training device for the θ-step."""
        st = task.scratch
        device = st.z.device
        st.v_t = torch.from_numpy(st.y64 @ st.a).float().to(device)
        st.b_t = torch.from_numpy(st.b).float().to(device)

    def _outputs(self, task: TrainingTask, x: Any) -> np.ndarray:
        """F: eval-mode outputs of the network being trained on the training items, float64 ``[n, k]``."""
        return encode_batches(task.model, x, int(self.encode_batch_size), task.device()).double().numpy()

    def _objective(self, task: TrainingTask, f: np.ndarray) -> float:
        """``J / (n²k)`` at F = ``f`` and the task's current A, B."""
        st = task.scratch
        n, k = len(f), int(self.bits)
        lam, gamma, rho = self._weights(n)
        return objective(f, st.a, st.b, st.y64, st.t, st.s2, k, lam, gamma, rho)["total"] / (n * n * k)

    # ------------------------------------------------------------------ θ-step
    def loss(self, task: TrainingTask, u: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        st = task.scratch
        n, k = len(st.z), int(self.bits)
        if st.s_dense is not None:
            s = st.s_dense[batch.index]
        else:
            s = similarity_rows(st.z[batch.index], batch.labels, st.z, st.y, self.alpha_, self.beta_, n)
        sim = ((u @ st.v_t.T - k * s) ** 2).sum(1) / (n * k)
        quant = float(self.lam) * ((u - st.b_t[batch.index]) ** 2).sum(1)
        total = (sim + quant).mean()
        return total, {"similarity": float(sim.detach().mean()), "quantization": float(quant.detach().mean())}

    # ------------------------------------------------------------------ A- and B-steps
    def on_epoch_end(self, task: TrainingTask, epoch: int) -> None:
        st = task.scratch
        n, k = len(st.z), int(self.bits)
        lam, gamma, rho = self._weights(n)
        f = self._outputs(task, task.train_split.x)
        after_theta = self._objective(task, f)
        st.a = a_step(f, st.b, st.y64, st.t, k, gamma, rho)
        after_a = self._objective(task, f)
        st.b = b_step(f, st.a, st.y64, lam, gamma)
        after_b = self._objective(task, f)
        self._sync_targets(task)
        st.objective_log.append({"epoch": epoch + 1, "objective": after_b, "after_theta": after_theta,
                                 "after_a": after_a, "after_b": after_b})
        log.info("eddh outer iteration %d: objective J/(n²k) %.6g (after theta %.6g, after A %.6g)",
                 epoch + 1, after_b, after_theta, after_a)

    def extra_state(self, task: TrainingTask) -> dict[str, Any]:
        st = task.scratch
        return {"a": torch.from_numpy(st.a), "b": torch.from_numpy(st.b).to(torch.int8),
                "objective_log": [dict(r) for r in st.objective_log]}

    def load_extra_state(self, task: TrainingTask, state: dict[str, Any]) -> None:
        if "a" not in state:
            return
        st = task.scratch
        a, b = state["a"].double().numpy(), state["b"].double().numpy()
        if a.shape != st.a.shape or b.shape != st.b.shape:
            raise Learn2HashError(f"eddh checkpoint holds A {a.shape} and B {b.shape}, expected {st.a.shape} "
                                  f"and {st.b.shape}")
        st.a, st.b = a, b
        st.objective_log = [dict(r) for r in state["objective_log"]]
        self._sync_targets(task)

    def _finish(self, task: TrainingTask) -> None:
        """Keep the learned label transfer A and the objective of every outer iteration (also in ``history_``)."""
        self.a_ = task.scratch.a
        self.objective_log_ = task.scratch.objective_log
        by_epoch = {r["epoch"]: r["objective"] for r in self.objective_log_}
        for record in self.history_:
            if record["epoch"] in by_epoch:
                record["objective"] = by_epoch[record["epoch"]]

    # ------------------------------------------------------------------ persistence
    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        state, arrays = super()._get_state()
        state.update({"distance_fit": self.distance_fit_.to_dict(), "alpha": self.alpha_, "beta": self.beta_,
                      "objective_log": self.objective_log_})
        arrays["label_transfer"] = np.asarray(self.a_, dtype=np.float64)
        return state, arrays

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray], folder: Path,
                   files: dict[str, Path]) -> None:
        super()._set_state(state, arrays, folder, files)
        fit = state["distance_fit"]
        self.distance_fit_ = AsymmetricNormal(fit["iota"], fit["sigma_l"], fit["sigma_r"])
        self.alpha_, self.beta_ = float(state["alpha"]), float(state["beta"])
        self.objective_log_ = list(state.get("objective_log", []))
        self.a_ = arrays["label_transfer"]
