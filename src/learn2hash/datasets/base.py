"""Splits and datasets: what every loader returns.

A :class:`Dataset` has three :class:`Split` objects, ``train``, ``query`` and ``database``. Each
split holds ``x`` (a numpy array, or a lazily loaded array-like with ``len``, ``shape`` and
indexing) and ``labels`` (always multi-hot ``bool[n, c]``, also for single-label data), plus the
positions of its items in the source pool they were drawn from, so that the exact split can be
saved with a run and reloaded.

Item kinds: ``"image"`` (``uint8[n, C, H, W]``, channels first), ``"features"``
(``float32[n, d]``), ``"clip"`` (``[n, T, C, H, W]``) and ``"multiview"`` (several modalities in
``views``; ``x`` is the first view).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from learn2hash import _atomic
from learn2hash.errors import CorruptFileError, Learn2HashError

SPLIT_NAMES = ("train", "query", "database")
SPLITS_FORMAT = "learn2hash-splits"
SPLITS_VERSION = 1


def as_multihot(labels: Any, n_classes: int | None = None, what: str = "labels") -> np.ndarray:
    """Class ids ``int[n]`` or a 0/1 matrix ``[n, c]`` -> multi-hot ``bool[n, c]``."""
    a = np.asarray(labels)
    if a.ndim == 1:
        if a.size and not np.issubdtype(a.dtype, np.integer):
            if np.issubdtype(a.dtype, np.floating) and np.all(np.isfinite(a)) and np.all(a == np.round(a)):
                a = a.astype(np.int64)
            else:
                raise Learn2HashError(f"{what}: class ids must be integers, got dtype {a.dtype}")
        if a.size and a.min() < 0:
            raise Learn2HashError(f"{what}: class ids must be >= 0, found {int(a.min())}")
        c = int(n_classes if n_classes is not None else (a.max() + 1 if a.size else 0))
        if a.size and a.max() >= c:
            raise Learn2HashError(f"{what}: class id {int(a.max())} is out of range for {c} classes")
        out = np.zeros((a.shape[0], c), dtype=bool)
        out[np.arange(a.shape[0]), a.astype(np.int64)] = True
        return out
    if a.ndim == 2:
        if a.dtype == bool:
            return a
        if not np.issubdtype(a.dtype, np.number):
            raise Learn2HashError(f"{what}: a label matrix must be numeric 0/1 or bool, got dtype {a.dtype}")
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            raise Learn2HashError(f"{what}: the label matrix contains NaN or infinite values")
        if not np.isin(a, (0, 1)).all():
            raise Learn2HashError(f"{what}: a label matrix must hold only 0 and 1")
        return a.astype(bool)
    raise Learn2HashError(f"{what} must be class ids int[n] or a multi-hot matrix [n, c], got shape {a.shape}")


def class_labels(y: Any, n: int | None = None, what: str = "y") -> np.ndarray:
    """Labels as scikit-learn users hold them -> multi-hot ``bool[n, c]``, for estimators.

    A 1-D ``y`` holds one class label per item, of any hashable kind with an order (integers,
    floats, strings): its distinct values, sorted by :func:`numpy.unique`, are the classes, so
    ``{0, 1000}`` is two classes and ``{"cat", "dog"}`` works. A 2-D ``y`` is a multi-hot matrix
    (:func:`as_multihot`). Unlike :func:`as_multihot` (a split's labels, whose class ids index
    columns shared with the other splits), columns are only the classes present in ``y``.
    ``n``: the number of items ``y`` must label.
    """
    if is_sparse(y):
        raise Learn2HashError(f"{what} is a scipy sparse matrix; labels must be a dense array (pass {what}.toarray())")
    a = np.asarray(y)
    if a.ndim == 2:
        out = as_multihot(a, what=what)
    elif a.ndim == 1:
        if a.dtype.kind == "c":
            raise Learn2HashError(f"{what} has dtype {a.dtype}: Complex data not supported, class labels must be real")
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise Learn2HashError(f"{what}: class labels contain NaN or infinite values")
        if a.dtype.kind not in "biufUSO":
            raise Learn2HashError(f"{what}: class labels must be numbers or strings, got dtype {a.dtype}")
        try:
            _, ids = np.unique(a, return_inverse=True)
        except TypeError:
            raise Learn2HashError(f"{what}: class labels must be all numbers or all strings (they are sorted); "
                                  f"got a mix of {', '.join(sorted({type(v).__name__ for v in a.tolist()}))}") from None
        out = np.zeros((a.shape[0], int(ids.max()) + 1 if a.size else 0), dtype=bool)
        out[np.arange(a.shape[0]), ids.reshape(-1)] = True
    else:
        raise Learn2HashError(f"{what} must be class labels [n] or a multi-hot matrix [n, c], got shape {a.shape}")
    if n is not None and out.shape[0] != n:
        raise Learn2HashError(f"{what} labels {out.shape[0]} items, expected one label row per item ({n})")
    return out


def is_sparse(x: Any) -> bool:
    """Whether ``x`` is a scipy sparse matrix or array (told without importing scipy)."""
    return type(x).__module__.startswith("scipy.sparse")


@dataclass
class Split:
    """One split: ``x``, multi-hot ``labels``, and where its items came from."""

    x: Any
    labels: np.ndarray
    name: str = ""
    kind: str = "image"
    source: str = ""
    indices: np.ndarray | None = None
    views: dict[str, Any] = field(default_factory=dict)
    #: the registered dataset the split was loaded from (set by ``datasets.load``); "" for arrays of
    #: unknown origin. ``augment="auto"`` reads its registration (see :func:`learn2hash.nn.augment.resolve`)
    dataset: str = ""

    def __post_init__(self) -> None:
        self.labels = as_multihot(self.labels, what=f"{self.name or 'split'} labels")
        n = len(self.x)
        if self.labels.shape[0] != n:
            raise Learn2HashError(
                f"split {self.name!r}: {n} items but {self.labels.shape[0]} label rows"
            )
        for vname, view in self.views.items():
            if len(view) != n:
                raise Learn2HashError(f"split {self.name!r}: view {vname!r} has {len(view)} rows, expected {n}")
        if self.indices is not None:
            self.indices = np.asarray(self.indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.x)

    @property
    def n_classes(self) -> int:
        return self.labels.shape[1]

    @property
    def item_shape(self) -> tuple[int, ...]:
        return tuple(np.shape(self.x)[1:]) if hasattr(self.x, "shape") else tuple(np.asarray(self.x[0]).shape)

    def subset(self, idx: Sequence[int] | np.ndarray, name: str | None = None) -> "Split":
        idx = np.asarray(idx, dtype=np.int64)
        return Split(
            x=self.x[idx],
            labels=self.labels[idx],
            name=name or self.name,
            kind=self.kind,
            source=self.source,
            indices=None if self.indices is None else self.indices[idx],
            views={k: v[idx] for k, v in self.views.items()},
            dataset=self.dataset,
        )

    def __repr__(self) -> str:
        return f"Split({self.name!r}, n={len(self)}, kind={self.kind!r}, item_shape={self.item_shape}, classes={self.n_classes})"


@dataclass
class Dataset:
    """A dataset under a protocol: ``train``, ``query`` and ``database`` splits."""

    name: str
    protocol: str
    seed: int
    train: Split
    query: Split
    database: Split
    class_names: list[str] | None = None
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return self.train.n_classes

    @property
    def splits(self) -> dict[str, Split]:
        return {"train": self.train, "query": self.query, "database": self.database}

    def summary(self) -> str:
        parts = ", ".join(f"{k} {len(s):,}" for k, s in self.splits.items())
        return f"{self.name} [{self.protocol}, seed {self.seed}]: {parts}; {self.n_classes} classes"

    def __repr__(self) -> str:
        return f"Dataset({self.summary()})"

    # ------------------------------------------------------------- saved splits
    def save_splits(self, folder: str | os.PathLike) -> None:
        """Record the exact split (source pool and positions of every item) in ``folder``."""
        folder = Path(folder)
        meta: dict[str, Any] = {
            "format": SPLITS_FORMAT,
            "version": SPLITS_VERSION,
            "dataset": self.name,
            "protocol": self.protocol,
            "seed": self.seed,
            "params": self.params,
            "splits": {},
        }
        for name, split in self.splits.items():
            if split.indices is None:
                raise Learn2HashError(f"split {name!r} of {self.name} does not record its source indices")
            _atomic.save_npy(folder / f"split_{name}.npy", split.indices)
            meta["splits"][name] = {"source": split.source, "n": len(split),
                                    "sha256": _atomic.sha256_file(folder / f"split_{name}.npy")}
        _atomic.save_json(folder / "splits.json", meta)


def read_saved_splits(folder: str | os.PathLike) -> dict[str, Any]:
    """Read what :meth:`Dataset.save_splits` wrote; returns the metadata with ``indices`` arrays added.

    Anything damaged (not JSON, the wrong types, a split missing, a split file missing, unreadable
    or not matching its checksum) raises :class:`CorruptFileError` naming the file."""
    folder = Path(folder)
    path = folder / "splits.json"
    if not path.exists():
        raise Learn2HashError(f"no saved splits in {folder} (expected {path})")
    meta = _atomic.load_json(path, "saved splits", format=SPLITS_FORMAT, versions=(SPLITS_VERSION,),
                             required={"dataset": str, "protocol": str, "seed": int, "splits": dict},
                             optional={"params": dict})
    for name in SPLIT_NAMES:
        info = meta["splits"].get(name)
        if info is None:
            raise CorruptFileError(f"saved splits {path} have no {name!r} split")
        if not isinstance(info, dict):
            raise CorruptFileError(f"saved splits {path}: split {name!r} is {_atomic.json_type(info)}, "
                                   "expected an object")
        _atomic.check_fields(info, f"saved splits {path}: split {name!r}",
                             required={"source": str, "n": int, "sha256": str})
        npy = folder / f"split_{name}.npy"
        try:
            ok = npy.is_file() and _atomic.sha256_file(npy) == info["sha256"]
        except OSError as exc:
            raise CorruptFileError(f"saved split file {npy} cannot be read: {exc.strerror or exc}") from None
        if not ok:
            raise CorruptFileError(f"saved split file {npy} is missing, not a file, or does not match its checksum")
        try:
            indices = _atomic.load_npy(npy)
        except (OSError, ValueError) as exc:
            raise CorruptFileError(f"saved split file {npy} cannot be read as .npy: {exc}") from None
        if indices.ndim != 1 or indices.shape[0] != info["n"] or not np.issubdtype(indices.dtype, np.integer):
            raise CorruptFileError(f"saved split file {npy} holds {indices.dtype} {indices.shape}, expected "
                                   f"{info['n']} integer positions")
        info["indices"] = indices
    return meta


def split_checksum(saved: Mapping[str, Any], name: str) -> str:
    """The identity of split ``name`` as :func:`read_saved_splits` returns it: a sha256 of the
    dataset, protocol, seed and loader parameters and of the split's source and positions file."""
    import hashlib
    import json

    info = saved["splits"][name]
    body = {"dataset": saved["dataset"], "protocol": saved["protocol"], "seed": saved["seed"],
            "params": saved.get("params", {}), "split": name, "source": info["source"], "n": info["n"],
            "positions_sha256": info["sha256"]}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def split_from_pool(
    pool_x: Any, pool_labels: np.ndarray, indices: np.ndarray, name: str, source: str, kind: str,
    views: Mapping[str, Any] | None = None,
) -> Split:
    """Take ``indices`` of a source pool as a split (``x`` stays lazy if the pool is lazy)."""
    indices = np.asarray(indices, dtype=np.int64)
    n_pool = len(pool_x)
    if indices.size and (indices.min() < 0 or indices.max() >= n_pool):
        raise Learn2HashError(f"split {name!r}: indices out of range for the {source!r} pool of {n_pool} items")
    x = pool_x[indices] if isinstance(pool_x, np.ndarray) else LazyRows(pool_x, indices)
    return Split(
        x=x, labels=np.asarray(pool_labels)[indices], name=name, kind=kind, source=source, indices=indices,
        views={k: (v[indices] if isinstance(v, np.ndarray) else LazyRows(v, indices)) for k, v in (views or {}).items()},
    )


class LazyRows:
    """Rows ``indices`` of a lazily loaded array-like (items are materialised when indexed)."""

    def __init__(self, base: Any, indices: np.ndarray):
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.indices),) + tuple(self.base.shape[1:])

    @property
    def dtype(self):
        return self.base.dtype

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            return self.base[int(self.indices[key])]
        sub = self.indices[key]
        return self.base[sub]

    def __array__(self, dtype=None, copy=None):
        arr = np.asarray(self.base[self.indices])
        return arr.astype(dtype) if dtype is not None else arr


class LazyArray:
    """An array-like of ``n`` items of one shape and dtype, each materialised only when indexed.

    Subclasses implement ``_load(positions) -> ndarray[m, *item_shape]`` for ``int64`` positions.
    Indexing the first axis follows numpy: an integer gives one item; a slice, an integer array
    or a boolean mask gives the stacked items (further axes of a tuple key apply to the result).
    ``np.asarray(lazy)`` materialises everything in chunks, with a progress bar on a terminal.
    """

    chunk = 256

    def __init__(self, n: int, item_shape: tuple[int, ...], dtype: Any, what: str):
        self._n = int(n)
        self.item_shape = tuple(int(s) for s in item_shape)
        self._dtype = np.dtype(dtype)
        self.what = what

    def _load(self, positions: np.ndarray) -> np.ndarray:
        """The items at ``positions`` as one array; each lazy array type defines it."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self._n

    @property
    def shape(self) -> tuple[int, ...]:
        return (self._n,) + self.item_shape

    @property
    def dtype(self) -> np.dtype:
        return self._dtype

    @property
    def ndim(self) -> int:
        return 1 + len(self.item_shape)

    def _positions(self, key: Any) -> np.ndarray:
        if isinstance(key, slice):
            return np.arange(self._n)[key]
        idx = np.asarray(key)
        if idx.dtype == bool:
            if idx.shape != (self._n,):
                raise IndexError(f"{self.what}: boolean index of shape {idx.shape} for {self._n} items")
            return np.flatnonzero(idx)
        if idx.size == 0:
            return np.zeros(0, dtype=np.int64)
        if not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"{self.what}: index must be integers, a slice or a boolean mask, got dtype {idx.dtype}")
        idx = idx.astype(np.int64).ravel()
        if idx.min() < -self._n or idx.max() >= self._n:
            raise IndexError(f"{self.what}: index out of range for {self._n} items")
        return np.where(idx < 0, idx + self._n, idx)

    def __getitem__(self, key: Any) -> np.ndarray:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            out = self._load(self._positions(np.array([key])))[0]
            return out[rest] if rest else out
        pos = self._positions(key)
        out = self._load(pos) if len(pos) else np.zeros((0,) + self.item_shape, dtype=self._dtype)
        lead = 1
        if not isinstance(key, slice):
            k = np.asarray(key)
            if k.dtype != bool and k.ndim != 1:
                out = out.reshape(k.shape + self.item_shape)
                lead = k.ndim
        return out[(slice(None),) * lead + rest] if rest else out

    def __iter__(self):
        for start in range(0, self._n, self.chunk):
            yield from self._load(np.arange(start, min(start + self.chunk, self._n)))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        from tqdm.auto import tqdm

        out = np.empty(self.shape, dtype=self._dtype)
        with tqdm(total=self._n, desc=f"loading {self.what}", unit="item", disable=None, leave=False) as bar:
            for start in range(0, self._n, self.chunk):
                stop = min(start + self.chunk, self._n)
                out[start:stop] = self._load(np.arange(start, stop))
                bar.update(stop - start)
        return out.astype(dtype, copy=False) if dtype is not None else out

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.what!r}, shape={self.shape}, dtype={self._dtype})"
