"""The dataset registry: names, presence on this machine, how to get them, and ``load``."""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from learn2hash.datasets.base import SPLIT_NAMES, Dataset, read_saved_splits
from learn2hash.errors import DatasetNotFoundError, Learn2HashError


@dataclass
class DatasetInfo:
    name: str
    description: str
    protocols: tuple[str, ...]
    builder: Callable[..., Dataset]
    present: Callable[[], bool] = lambda: True
    how_to_get: str = ""
    location: Callable[[], str] = lambda: ""
    generic: bool = False  # a loader for users' own files (needs a path), not a named dataset
    params: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, DatasetInfo] = {}


def register(info: DatasetInfo) -> DatasetInfo:
    if info.name in _REGISTRY:
        raise RuntimeError(f"dataset {info.name!r} registered twice")
    _REGISTRY[info.name] = info
    return info


def registered() -> dict[str, DatasetInfo]:
    _ensure_loaded()
    return dict(_REGISTRY)


def info(name: str) -> DatasetInfo:
    _ensure_loaded()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise Learn2HashError(
            f"unknown dataset {name!r}{hint}; known datasets: {', '.join(sorted(_REGISTRY))}"
        )
    return _REGISTRY[name]


def load(name: str, protocol: str | None = None, seed: int = 0, splits: str | os.PathLike | None = None,
         **params: Any) -> Dataset:
    """Load dataset ``name`` under ``protocol`` (its first protocol by default), seeded.

    ``splits``: a folder written by :meth:`Dataset.save_splits`; the exact same items are then
    taken again (the protocol and seed are read from there). Extra keyword arguments go to the
    dataset's loader (for example ``path=`` for the generic loaders).
    """
    d = info(name)
    saved = None
    if splits is not None:
        saved = read_saved_splits(splits)
        if saved["dataset"] != name:
            raise Learn2HashError(f"saved splits in {splits} are for dataset {saved['dataset']!r}, not {name!r}")
        protocol, seed = saved["protocol"], saved["seed"]
        params = {**saved.get("params", {}), **params}
    protocol = protocol or d.protocols[0]
    if protocol not in d.protocols:
        raise Learn2HashError(
            f"dataset {name!r} has no protocol {protocol!r}; its protocols: {', '.join(d.protocols)}"
        )
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise Learn2HashError(f"seed must be an integer, got {seed!r}")
    if not d.generic and not d.present():
        raise DatasetNotFoundError(f"dataset {name!r} is not installed on this machine. {d.how_to_get}")
    indices = None
    if saved is not None:
        indices = {k: (saved["splits"][k]["source"], saved["splits"][k]["indices"]) for k in SPLIT_NAMES}
    ds = d.builder(protocol=protocol, seed=int(seed), indices=indices, **params)
    ds.params = {**ds.params, **{k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()}}
    return ds


def _ensure_loaded() -> None:
    # Importing the loader modules registers them.
    from learn2hash.datasets import digits, fashion_mnist  # noqa: F401
    for optional in ("files", "multilabel", "multiview", "clips"):
        try:
            __import__(f"learn2hash.datasets.{optional}")
        except ModuleNotFoundError as exc:
            if exc.name != f"learn2hash.datasets.{optional}":
                raise
