"""Datasets, protocols and splits.

``load(name, protocol=..., seed=0)`` returns a :class:`Dataset` with ``train``, ``query`` and
``database`` splits; ``available()`` lists what exists and whether it is on this machine;
``register(DatasetInfo(...))`` adds one (the words of every registry, see :mod:`learn2hash.methods.registry`).
``registered()`` is a deprecated alias of ``available()``, kept for one release.
"""

from learn2hash.datasets.base import Dataset, LazyArray, LazyRows, Split, as_multihot, read_saved_splits
from learn2hash.datasets.registry import DatasetInfo, available, info, load, register, register_loader, registered

__all__ = ["Dataset", "DatasetInfo", "LazyArray", "LazyRows", "Split", "as_multihot", "info", "load", "read_saved_splits",
           "register", "register_loader", "registered", "available"]
