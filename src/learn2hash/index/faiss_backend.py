"""The Faiss backend: ``faiss.IndexBinaryFlat`` / ``IndexBinaryHash`` / ``IndexBinaryMultiHash``.

Items are stored under their positions as Faiss ids (through ``IndexBinaryIDMap``), so results
come back as positions like the native engine's. Faiss binary indexes take codes of a multiple of
8 bits. ``"flat"`` is exact for k-NN and range search. ``"hash"`` (one table on the first
``hash_bits`` bits) and ``"multihash"`` (``nhash`` tables of ``hash_bits`` bits) are exact for range
search, because the engine raises their ``nflip`` to what the pigeonhole principle needs for the
radius asked, but only approximate for k-NN (they probe ``nflip`` bit flips, default 1).
Faiss picks its own items among ties at the k-th distance.
"""

from __future__ import annotations

import numpy as np

from learn2hash.errors import Learn2HashError
from learn2hash.index.results import MISSING_DISTANCE, MISSING_ID

FAISS_INDEXES = ("flat", "hash", "multihash")


def _faiss():
    try:
        import faiss
    except ImportError:
        raise Learn2HashError("the faiss backend needs faiss: pip install 'learn2hash[faiss]' (faiss-cpu)") from None
    return faiss


class FaissEngine:
    name = "faiss"

    def __init__(self, bits: int, faiss_index: str = "flat", hash_bits: int | None = None, nhash: int = 4,
                 nflip: int = 1):
        if bits % 8:
            raise Learn2HashError(
                f"the faiss backend needs a code length that is a multiple of 8 (Faiss binary indexes "
                f"store whole bytes), got {bits} bits; use backend='native'"
            )
        if faiss_index not in FAISS_INDEXES:
            raise Learn2HashError(f"faiss_index must be one of {', '.join(FAISS_INDEXES)}, got {faiss_index!r}")
        self.faiss = _faiss()
        self.bits = bits
        self.kind = faiss_index
        self.nhash = int(nhash)
        self.nflip = int(nflip)
        default_b = min(bits, 24) if faiss_index == "hash" else max(1, min(24, bits // max(1, self.nhash)))
        self.hash_bits = int(hash_bits or default_b)
        if faiss_index == "multihash" and self.nhash * self.hash_bits > bits:
            raise Learn2HashError(f"nhash * hash_bits = {self.nhash * self.hash_bits} exceeds the {bits} code bits")
        self._parts: list[np.ndarray] = []
        self._n = 0
        self._removed: set[int] = set()
        self._index = self._new_index()

    def _new_index(self):
        f = self.faiss
        if self.kind == "flat":
            base = f.IndexBinaryFlat(self.bits)
        elif self.kind == "hash":
            base = f.IndexBinaryHash(self.bits, self.hash_bits)
        else:
            base = f.IndexBinaryMultiHash(self.bits, self.nhash, self.hash_bits)
        index = f.IndexBinaryIDMap(base)
        self._base = base  # the wrapper does not own it: keep it alive as long as the wrapper
        return index

    def add(self, packed: np.ndarray) -> None:
        packed = np.ascontiguousarray(packed, np.uint8)
        positions = np.arange(self._n, self._n + packed.shape[0], dtype=np.int64)
        self._index.add_with_ids(packed, positions)
        self._parts.append(packed)
        self._n += packed.shape[0]

    def remove(self, positions: np.ndarray) -> None:
        positions = np.asarray(positions, np.int64)
        self._removed.update(int(p) for p in positions)
        if self.kind == "flat":
            self._index.remove_ids(positions)
            return
        # Hash indexes cannot remove: rebuild from the codes still present.
        codes = np.concatenate(self._parts) if self._parts else np.zeros((0, self.bits // 8), np.uint8)
        keep = np.ones(self._n, bool)
        keep[list(self._removed)] = False
        self._index = self._new_index()
        self._index.add_with_ids(np.ascontiguousarray(codes[keep]), np.flatnonzero(keep).astype(np.int64))

    def close(self) -> None:
        self._index = None

    def _with_threads(self, threads: int, fn):
        f = self.faiss
        previous = f.omp_get_max_threads()
        f.omp_set_num_threads(threads)
        try:
            return fn()
        finally:
            f.omp_set_num_threads(previous)

    def search(self, queries, k, alive, n_alive, threads, method="auto"):
        nq = queries.shape[0]
        if nq == 0 or n_alive == 0:
            return (np.full((nq, k), MISSING_DISTANCE, np.int32), np.full((nq, k), MISSING_ID, np.int64))
        if self.kind != "flat":
            self._base.nflip = self.nflip
        d, p = self._with_threads(threads, lambda: self._index.search(np.ascontiguousarray(queries), k))
        d = np.where(p < 0, MISSING_DISTANCE, d).astype(np.int32)
        return d, p.astype(np.int64)

    def range_search(self, queries, radius, alive, threads, method="auto"):
        nq = queries.shape[0]
        if nq == 0 or self._n == 0:
            return np.zeros(nq + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.int64)
        if self.kind == "hash":
            self._base.nflip = max(self.nflip, radius)
        elif self.kind == "multihash":
            self._base.nflip = max(self.nflip, radius // self.nhash)
        # Faiss keeps distances strictly below its radius argument.
        lims, d, p = self._with_threads(
            threads, lambda: self._index.range_search(np.ascontiguousarray(queries), radius + 1))
        return lims.astype(np.int64), d.astype(np.int32), p.astype(np.int64)
