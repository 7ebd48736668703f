"""The asymmetric normal distribution (asymmetric generalized normal with shape ζ = 2) and its fit.

Density, with mode ``ι`` (iota) and left/right scales ``σ_l``, ``σ_r``::

    f(x) = 2 / ((σ_l + σ_r) √π) · exp(-((ι - x) / σ_l)²)   for x < ι
    f(x) = 2 / ((σ_l + σ_r) √π) · exp(-((x - ι) / σ_r)²)   for x ≥ ι

(the asymmetric generalized normal ``ζ / ((σ_l + σ_r) Γ(1/ζ)) · exp(-(|x - ι| / σ)^ζ)`` at ζ = 2).
Each half is half a normal of standard deviation ``σ / √2``; the left half holds the mass
``σ_l / (σ_l + σ_r)``. With this parametrisation the mass outside ``[ι - σ_l, ι + σ_r]`` is
``erfc(1) ≈ 15.73 %`` (the 31.73 % of the EDDH slides is the mass outside ±1 standard deviation,
which would be ``[ι - σ_l/√2, ι + σ_r/√2]`` here).

Maximum likelihood. For a fixed ``ι`` let ``L = Σ_{x<ι} (ι - x)²`` and ``R = Σ_{x≥ι} (x - ι)²``.
Setting the derivatives of the log-likelihood in ``σ_l`` and ``σ_r`` to zero gives
``σ_l = a L^{1/3}``, ``σ_r = a R^{1/3}`` with ``a² = 2 (L^{1/3} + R^{1/3}) / m`` (``m`` samples), and
the profile log-likelihood is ``const - (3m/2) log(L^{1/3} + R^{1/3})``: the MLE of ``ι`` minimises
``L^{1/3} + R^{1/3}``. That function is evaluated exactly at every sample (prefix sums of the
sorted samples) and refined between the neighbours of the best one by bounded Brent search.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from learn2hash import _atomic
from learn2hash.errors import Learn2HashError

ZETA = 2.0
#: mass outside [ι - σ_l, ι + σ_r] (the two "strong" regions together)
OUTSIDE_MASS = math.erfc(1.0)


@dataclass
class AsymmetricNormal:
    """An asymmetric normal ``(ι, σ_l, σ_r)``; ``samples`` (and ``similar``) are what it was fitted on."""

    iota: float
    sigma_l: float
    sigma_r: float
    samples: np.ndarray | None = field(default=None, repr=False)
    similar: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        for name in ("iota", "sigma_l", "sigma_r"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not math.isfinite(v):
                raise Learn2HashError(f"asymmetric normal: {name} must be a finite number, got {v!r}")
        if not (self.sigma_l > 0 and self.sigma_r > 0):
            raise Learn2HashError(f"asymmetric normal: scales must be > 0, got {self.sigma_l!r}, {self.sigma_r!r}")

    # ------------------------------------------------------------------ the distribution
    @property
    def zeta(self) -> float:
        return ZETA

    @property
    def thresholds(self) -> tuple[float, float]:
        """``(ι - σ_l, ι + σ_r)``: below the first is the strong-similar region, above the second
        the strong-dissimilar one."""
        return self.iota - self.sigma_l, self.iota + self.sigma_r

    def pdf(self, x: np.ndarray | float) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        scale = np.where(x < self.iota, self.sigma_l, self.sigma_r)
        norm = ZETA / ((self.sigma_l + self.sigma_r) * math.gamma(1.0 / ZETA))
        return norm * np.exp(-np.abs((x - self.iota) / scale) ** ZETA)

    def log_likelihood(self, x: np.ndarray) -> float:
        """``Σ log f(x_i)``."""
        x = np.asarray(x, dtype=np.float64)
        scale = np.where(x < self.iota, self.sigma_l, self.sigma_r)
        norm = math.log(ZETA / ((self.sigma_l + self.sigma_r) * math.gamma(1.0 / ZETA)))
        return float(len(x) * norm - np.sum(np.abs((x - self.iota) / scale) ** ZETA))

    def to_dict(self) -> dict[str, float]:
        return {"iota": float(self.iota), "sigma_l": float(self.sigma_l), "sigma_r": float(self.sigma_r),
                "zeta": ZETA}

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, samples: np.ndarray, similar: np.ndarray | None = None) -> "AsymmetricNormal":
        """Maximum-likelihood ``(ι, σ_l, σ_r)`` of 1-D ``samples`` (see the module docstring).

        ``similar`` (optional, bool per sample) is kept only to colour the histogram of :meth:`plot`.
        """
        x = np.asarray(samples, dtype=np.float64).ravel()
        if x.size < 3 or not np.all(np.isfinite(x)):
            raise Learn2HashError(f"asymmetric normal fit needs at least 3 finite samples, got {x.size}"
                                  + ("" if np.all(np.isfinite(x)) else " (with NaN or infinite values)"))
        if similar is not None:
            similar = np.asarray(similar, dtype=bool).ravel()
            if similar.shape != x.shape:
                raise Learn2HashError(f"similar has {similar.size} entries, the samples {x.size}")
        xs = np.sort(x)
        if xs[-1] - xs[0] <= 1e-12 * max(1.0, abs(xs[0])):
            raise Learn2HashError("asymmetric normal fit: all samples are (nearly) equal; there is no spread to fit")
        m = xs.size
        p1 = np.concatenate([[0.0], np.cumsum(xs)])
        p2 = np.concatenate([[0.0], np.cumsum(xs * xs)])

        def sides(iota: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            k = np.searchsorted(xs, iota, side="left")  # samples strictly below iota
            left = k * iota * iota - 2.0 * iota * p1[k] + p2[k]
            right = (m - k) * iota * iota - 2.0 * iota * (p1[m] - p1[k]) + (p2[m] - p2[k])
            return np.maximum(left, 0.0), np.maximum(right, 0.0)

        def objective(iota):
            left, right = sides(np.asarray(iota, dtype=np.float64))
            return np.cbrt(left) + np.cbrt(right)

        best = int(np.argmin(objective(xs)))
        lo, hi = xs[max(best - 1, 0)], xs[min(best + 1, m - 1)]
        from scipy.optimize import minimize_scalar

        iota = float(xs[best])
        if hi > lo:
            res = minimize_scalar(lambda t: float(objective(t)), bounds=(lo, hi), method="bounded",
                                  options={"xatol": 1e-12 * max(1.0, abs(iota))})
            if res.fun <= float(objective(iota)):
                iota = float(res.x)
        left, right = sides(np.asarray(iota))
        if left <= 0 or right <= 0:
            # The mode landed on the smallest or largest sample, one side empty: the likelihood grows
            # without bound as that side's width goes to 0, which happens when samples tie at an end
            # (pairs drawn with replacement from a few dozen items). Take the best mode that has
            # samples on both sides instead; only an input without one is an error.
            first = int(np.searchsorted(xs, xs[0], side="right"))
            last = int(np.searchsorted(xs, xs[-1], side="left")) - 1
            if first <= last:
                inner = xs[first:last + 1]
                iota = float(inner[int(np.argmin(objective(inner)))])
                left, right = sides(np.asarray(iota))
        cl, cr = float(np.cbrt(left)), float(np.cbrt(right))
        a = math.sqrt(2.0 * (cl + cr) / m)
        if cl <= 0 or cr <= 0:
            raise Learn2HashError("asymmetric normal fit degenerated (all samples on one side of the mode)")
        return cls(iota=iota, sigma_l=a * cl, sigma_r=a * cr, samples=x, similar=similar)

    # ------------------------------------------------------------------ plot
    def plot(self, path: str | os.PathLike, title: str | None = None,
             marks: dict[str, float] | None = None) -> Path:
        """Write a PNG: the histogram of the fitted samples (similar / dissimilar pairs stacked when
        known) with the fitted density and the thresholds ``ι - σ_l``, ``ι + σ_r`` (and any extra
        vertical ``marks``, name -> position). Written atomically; returns the path."""
        import io

        from matplotlib.figure import Figure

        path = Path(path)
        fig = Figure(figsize=(7.0, 4.2), dpi=110)
        ax = fig.add_subplot(1, 1, 1)
        lo_t, hi_t = self.thresholds
        if self.samples is not None and len(self.samples):
            x = self.samples
            bins = np.linspace(float(x.min()), float(x.max()), 61)
            if self.similar is not None:
                weights = np.full(x.shape, 1.0 / (len(x) * (bins[1] - bins[0])))
                ax.hist([x[self.similar], x[~self.similar]], bins=bins, stacked=True,
                        weights=[weights[self.similar], weights[~self.similar]],
                        color=["tab:green", "tab:red"], alpha=0.55,
                        label=[f"semantically similar pairs ({int(self.similar.sum()):,})",
                               f"dissimilar pairs ({int((~self.similar).sum()):,})"])
            else:
                ax.hist(x, bins=bins, density=True, color="tab:blue", alpha=0.55, label=f"samples ({len(x):,})")
            grid = np.linspace(min(float(x.min()), lo_t - self.sigma_l), max(float(x.max()), hi_t + self.sigma_r), 400)
        else:
            grid = np.linspace(lo_t - 2 * self.sigma_l, hi_t + 2 * self.sigma_r, 400)
        ax.plot(grid, self.pdf(grid), color="black", lw=2,
                label=f"fit: ι={self.iota:.4f}, σ_l={self.sigma_l:.4f}, σ_r={self.sigma_r:.4f} (ζ=2)")
        ax.axvline(lo_t, color="tab:green", ls="--", lw=1.2, label=f"ι−σ_l = {lo_t:.4f}")
        ax.axvline(hi_t, color="tab:red", ls="--", lw=1.2, label=f"ι+σ_r = {hi_t:.4f}")
        for name, pos in (marks or {}).items():
            ax.axvline(pos, color="grey", ls=":", lw=1.0, label=f"{name} = {pos:.4f}")
        ax.set_xlabel("cosine distance")
        ax.set_ylabel("density")
        ax.set_title(title or "asymmetric normal fit")
        ax.legend(fontsize=7, loc="upper left")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        with _atomic.atomic_open(path, "wb") as fh:
            fh.write(buf.getvalue())
        return path
