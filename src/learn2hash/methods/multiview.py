"""What hashers of multi-modal items share: reading views, and encoding one named modality.

A multi-modal hasher learns one hash function per modality, all into the same Hamming space,
so that a query described by one modality retrieves items described by another. Its training
input is a :class:`~learn2hash.datasets.Split` whose ``views`` maps modality names to
``[n, d_m]`` arrays (a split without views counts as one modality named ``"x"``), or such a
mapping directly; ``encode(x, modality=name)`` applies the hash function of one modality.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from learn2hash.codes import Codes
from learn2hash.datasets.base import Split
from learn2hash.errors import Learn2HashError
from learn2hash.methods.base import as_features


def split_views(split: Split) -> dict[str, Any]:
    """The modalities of a split: its ``views``, or ``{"x": split.x}`` for a single-modality split."""
    return dict(split.views) if split.views else {"x": split.x}


def check_views(views: Any, what: str = "views") -> dict[str, np.ndarray]:
    """``{name: [n, d]}`` -> ``{name: float64[n, d]}`` (uint8 scaled to [0, 1]); the same ``n`` for all."""
    if not isinstance(views, Mapping) or not views:
        raise Learn2HashError(f"{what} must be a non-empty mapping of modality name -> [n, d] array, "
                              f"got {type(views).__name__}")
    out = {}
    for name, x in views.items():
        if not isinstance(name, str) or not name:
            raise Learn2HashError(f"{what}: modality names must be non-empty strings, got {name!r}")
        out[name] = as_features(x, what=f"modality {name!r}")
    rows = {name: a.shape[0] for name, a in out.items()}
    if len(set(rows.values())) > 1:
        desc = ", ".join(f"{k} {v}" for k, v in rows.items())
        raise Learn2HashError(f"{what}: the modalities have different row counts ({desc}); each row is one item "
                              "described by every modality")
    return out


class MultiViewEncoder:
    """Mixin for a :class:`~learn2hash.methods.Hasher` with one hash function per modality.

    The fitted hasher has ``modalities_`` (names in training order) and ``dims_`` (features per
    modality) and implements ``_transform_view(features, modality) -> float[n, K]``.
    """

    modalities_: list[str]
    dims_: dict[str, int]

    def encode(self, x: Any, modality: str | None = None) -> Codes:
        """Codes of items ``x`` described by ``modality`` (the first training modality by default)."""
        self._check_fitted()
        name = self.check_modality(modality)
        feats = as_features(x, what=f"modality {name!r}", dim=self.dims_[name], who=type(self).__name__)
        codes = Codes.from_signs(self._transform_view(feats, name))
        assert codes.bits == self.bits
        return codes.with_provenance(self.provenance())

    def transform(self, x: Any, modality: str | None = None) -> np.ndarray:
        """Real values ``float64[n, K]`` of items ``x`` described by ``modality``; their signs are the codes."""
        self._check_fitted()
        name = self.check_modality(modality)
        return self._transform_view(as_features(x, what=f"modality {name!r}", dim=self.dims_[name],
                                                who=type(self).__name__), name)

    def _encode(self, x: Any) -> Codes:
        return self.encode(x)

    def _n_features(self) -> int | None:
        """Features of the first training modality (what ``transform`` takes by default)."""
        dims = getattr(self, "dims_", None)
        return None if not dims else int(dims[self.modalities_[0]])

    def check_modality(self, modality: str | None) -> str:
        """``modality`` if the hasher was trained on it (``None``: the first one); else a clear error."""
        if modality is None:
            return self.modalities_[0]
        if modality not in self.dims_:
            raise Learn2HashError(f"modality {modality!r} was never seen in training; this {self.name} hasher "
                                  f"knows {', '.join(map(repr, self.modalities_))}")
        return modality

    def _transform_view(self, x: np.ndarray, modality: str) -> np.ndarray:
        """Real values ``[n, K]`` of checked features ``x`` of one modality (their signs are the codes);
        each multi-view method defines it."""
        raise NotImplementedError
