"""Datasets, protocols and splits.

``load(name, protocol=..., seed=0)`` returns a :class:`Dataset` with ``train``, ``query`` and
``database`` splits; ``registered()`` lists what exists and whether it is on this machine.
"""

from learn2hash.datasets.base import Dataset, LazyArray, LazyRows, Split, as_multihot, read_saved_splits
from learn2hash.datasets.registry import DatasetInfo, info, load, register, registered

__all__ = ["Dataset", "DatasetInfo", "LazyArray", "LazyRows", "Split", "as_multihot", "info", "load", "read_saved_splits",
           "register", "registered"]
