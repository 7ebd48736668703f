"""Result conventions shared by every backend of :class:`~learn2hash.index.HammingIndex`."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: Distance in the slots of a k-NN result row that has fewer than k items (as Faiss does): larger
#: than any Hamming distance, so every row stays sorted.
MISSING_DISTANCE = int(np.iinfo(np.int32).max)
#: Id in those slots.
MISSING_ID = -1


class RangeResult(NamedTuple):
    """Every item within a radius, for ``q`` queries, in CSR form.

    The hits of query ``i`` are ``distances[lims[i]:lims[i + 1]]`` / ``ids[lims[i]:lims[i + 1]]``,
    ordered by distance, then by insertion order (native backend). ``lims`` is ``int64[q + 1]``,
    ``distances`` ``int32[m]``, ``ids`` ``int64[m]``.
    """

    lims: np.ndarray
    distances: np.ndarray
    ids: np.ndarray

    @property
    def n_queries(self) -> int:
        return self.lims.size - 1

    def query(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """``(distances, ids)`` of query ``i``."""
        lo, hi = int(self.lims[i]), int(self.lims[i + 1])
        return self.distances[lo:hi], self.ids[lo:hi]
