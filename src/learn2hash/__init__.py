"""learn2hash: learning to hash, Hamming indexes and exact retrieval metrics.

The top-level names are imported lazily so that ``import learn2hash`` stays fast and does not
pull in torch or numba until they are used.
"""

from __future__ import annotations

import os as _os
import sys as _sys

__version__ = "0.1.0"


def _follow_omp_num_threads() -> None:
    """Let numba's parallel kernels follow ``OMP_NUM_THREADS`` when it is set and numba is not loaded.

    numba's OpenMP thread pool, started by the first parallel kernel (an index search, a metric,
    hash centers), sets the calling thread's OpenMP thread count to ``NUMBA_NUM_THREADS`` (every
    core by default), and torch reads the same setting: a process started with
    ``OMP_NUM_THREADS=1`` trained with every core after its first such kernel.
    """
    omp = _os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0 and "NUMBA_NUM_THREADS" not in _os.environ and "numba" not in _sys.modules:
        _os.environ["NUMBA_NUM_THREADS"] = str(min(int(omp), _os.cpu_count() or int(omp)))


_follow_omp_num_threads()

_LAZY = {
    "Codes": ("learn2hash.codes", "Codes"),
    "evaluate": ("learn2hash.metrics", "evaluate"),
    "HammingIndex": ("learn2hash.index", "HammingIndex"),
    "ImageFeatures": ("learn2hash.features", "ImageFeatures"),
    "FeatureHasher": ("learn2hash.features", "FeatureHasher"),
    "Learn2HashError": ("learn2hash.errors", "Learn2HashError"),
    "NotFittedError": ("learn2hash.errors", "NotFittedError"),
    "map_scorer": ("learn2hash.metrics", "map_scorer"),
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'learn2hash' has no attribute {name!r}")
