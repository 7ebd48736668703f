"""learn2hash: learning to hash, Hamming indexes and exact retrieval metrics.

The top-level names are imported lazily so that ``import learn2hash`` stays fast and does not
pull in torch or numba until they are used.
"""

from __future__ import annotations

__version__ = "0.1.0"

_LAZY = {
    "Codes": ("learn2hash.codes", "Codes"),
    "evaluate": ("learn2hash.metrics", "evaluate"),
    "HammingIndex": ("learn2hash.index", "HammingIndex"),
    "Learn2HashError": ("learn2hash.errors", "Learn2HashError"),
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
