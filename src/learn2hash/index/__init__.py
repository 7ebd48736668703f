"""Hamming-space indexes: exact k-NN and range search over binary codes.

:class:`HammingIndex` is the entry point (native numba kernels with multi-index hashing, or the
Faiss and Milvus backends behind the same interface); results follow the conventions in
:mod:`learn2hash.index.results`; the on-disk format (manifest last, writer lock) is described in
:mod:`learn2hash.index.storage`; the index of a run folder, and its check against the run's
codes, in :mod:`learn2hash.index.provenance`.
"""

from learn2hash.index.hamming import BACKENDS, HammingIndex
from learn2hash.index.results import MISSING_DISTANCE, MISSING_ID, RangeResult
from learn2hash.index.storage import IndexConflictError

__all__ = ["BACKENDS", "HammingIndex", "IndexConflictError", "MISSING_DISTANCE", "MISSING_ID", "RangeResult"]
