"""Hamming-space indexes: exact k-NN and range search over binary codes.

:class:`HammingIndex` is the entry point (native numba kernels with multi-index hashing, or the
Faiss and Milvus backends behind the same interface); results follow the conventions in
:mod:`learn2hash.index.results`; the on-disk format is described in :mod:`learn2hash.index.storage`.
"""

from learn2hash.index.hamming import BACKENDS, HammingIndex
from learn2hash.index.results import MISSING_DISTANCE, MISSING_ID, RangeResult

__all__ = ["BACKENDS", "HammingIndex", "MISSING_DISTANCE", "MISSING_ID", "RangeResult"]
