"""Multi-modal datasets: several descriptions (views) of each item, for cross-modal retrieval.

A multi-modal split has ``kind == "multiview"``; ``split.views`` maps modality names to
``[n, d_m]`` arrays and ``split.x`` is the first view.

``fashion-mnist-2view``
    The 70,000 Fashion-MNIST images (the 60,000 train images, then the 10,000 test images),
    each described twice: ``pixels``, its 784 intensities (``uint8``, scaled to [0, 1] by the
    hashers), and ``hog``, a 324-d histogram of oriented gradients of the 28x28 image computed
    by scikit-image (9 orientations, 7x7-pixel cells, 2x2-cell blocks, L2-Hys). Neither view
    encodes the label. HOG takes about a minute for all images, so it is cached on disk (see
    :func:`cache_dir`), keyed by a digest of the images and the HOG settings, and checked
    against its sha256 when read.

``mat``
    Your own ``.mat`` file, as the cross-modal benchmarks (MIRFlickr-25K, NUS-WIDE, IAPR TC-12)
    are distributed: MATLAB v5 (read with scipy) or v7.3 (HDF5, read with h5py; HDF5 stores a
    MATLAB ``n x d`` matrix as ``d x n``, which is transposed back). ``keys`` names the variable
    of each modality and of the labels, ``"image=I_tr,text=T_tr,labels=L_tr"``; ``+`` joins the
    rows of several variables (``image=I_tr+I_te``). Items are rows. Labels are an ``n x c`` 0/1
    matrix or a vector of class ids.

Protocols:

- ``stream`` (both): ``queries`` items (default 2,000) drawn at random (seeded) are held out as
  the query split; all other items form the database in a seeded random arrival order, and the
  training split is the database in that same order (a stream feeds it chunk by chunk).
- ``standard`` (``fashion-mnist-2view``): as Fashion-MNIST's: query = 100 test images per class,
  train = 500 train images per class, database = the 60,000 train images.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
from pathlib import Path
from typing import Any

import numpy as np

from learn2hash import _atomic
from learn2hash.datasets import fashion_mnist
from learn2hash.datasets.base import Dataset, as_multihot, split_from_pool
from learn2hash.datasets.protocols import per_class_sample, rng_for
from learn2hash.datasets.registry import DatasetInfo, register
from learn2hash.errors import CorruptFileError, Learn2HashError

#: HOG settings of the ``hog`` view (scikit-image ``skimage.feature.hog`` arguments)
HOG_PARAMS = {"orientations": 9, "pixels_per_cell": (7, 7), "cells_per_block": (2, 2), "block_norm": "L2-Hys"}
DEFAULT_QUERIES = 2000
HOG_CACHE_FORMAT = "learn2hash-hog-cache"


def cache_dir() -> Path:
    """Where derived data is cached: ``$LEARN2HASH_CACHE``, else ``~/.cache/learn2hash``."""
    env = os.environ.get("LEARN2HASH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "learn2hash"


# --------------------------------------------------------------------------- HOG view
def hog_features(images: np.ndarray) -> np.ndarray:
    """HOG descriptors ``float32[n, 324]`` of ``uint8[n, 28, 28]`` (or ``[n, 1, 28, 28]``) images."""
    hog = _skimage().feature.hog
    from tqdm.auto import tqdm

    images = np.asarray(images)
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3:
        raise Learn2HashError(f"HOG needs grayscale images [n, H, W], got shape {images.shape}")
    out = None
    for i, img in enumerate(tqdm(images, desc="HOG descriptors", unit="image", disable=None, leave=False)):
        h = hog(img, feature_vector=True, **HOG_PARAMS)
        if out is None:
            out = np.empty((len(images), h.size), dtype=np.float32)
        out[i] = h
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def _skimage():
    """The scikit-image module (with ``skimage.feature``), or a clear error saying how to install it."""
    try:
        import skimage
        import skimage.feature  # noqa: F401
    except ImportError:  # depends on the installation
        raise Learn2HashError("the 'hog' view of fashion-mnist-2view needs scikit-image: "
                              "pip install 'learn2hash[multiview]' (or pip install scikit-image)") from None
    return skimage


def _hog_key(images: np.ndarray) -> str:
    skimage = _skimage()
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(repr((images.shape, str(images.dtype), sorted(HOG_PARAMS.items()), skimage.__version__)).encode())
    return h.hexdigest()


def cached_hog(images: np.ndarray, name: str) -> np.ndarray:
    """:func:`hog_features` of ``images``, read from the cache when a valid entry exists.

    The entry is ``<cache>/<name>/hog-<key>.npy`` with a JSON sidecar holding the file's sha256;
    ``key`` digests the image bytes, the HOG settings and the scikit-image version. An entry
    that fails its checksum or does not match the images is recomputed and replaced.
    """
    images = np.asarray(images)
    key = _hog_key(images)
    path = cache_dir() / name / f"hog-{key[:24]}.npy"
    meta_path = path.with_name(path.name + ".json")
    if path.exists() and meta_path.exists():
        try:
            meta = _atomic.load_json(meta_path)
            if (meta.get("format") == HOG_CACHE_FORMAT and meta.get("key") == key
                    and meta.get("sha256") == _atomic.sha256_file(path)):
                feats = _atomic.load_npy(path)
                if feats.shape[0] == len(images):
                    return feats
        except (ValueError, OSError):
            pass
    feats = hog_features(images)
    try:
        _atomic.save_npy(path, feats)
        _atomic.save_json(meta_path, {"format": HOG_CACHE_FORMAT, "key": key, "params": HOG_PARAMS,
                                      "shape": list(feats.shape), "sha256": _atomic.sha256_file(path)})
    except OSError:
        pass  # a read-only cache folder only costs the recomputation next time
    return feats


# --------------------------------------------------------------------------- protocols
def queries_param(dataset: str, value: Any, n: int) -> int:
    """The number of held-out queries: an integer in [1, n - 1]."""
    try:
        q = int(str(value).strip()) if not isinstance(value, (int, np.integer)) else int(value)
    except ValueError:
        raise Learn2HashError(f"{dataset}: parameter queries must be an integer, got {value!r}") from None
    if isinstance(value, bool) or not 1 <= q < n:
        raise Learn2HashError(f"{dataset}: parameter queries must be in [1, {n - 1}] for {n} items, got {value!r}")
    return q


def stream_indices(n: int, queries: int, seed: int) -> dict[str, np.ndarray]:
    """The ``stream`` protocol over a pool of ``n`` items: seeded held-out queries, the rest in a seeded arrival order."""
    query = np.sort(rng_for(seed, "query").choice(n, size=queries, replace=False))
    rest = np.setdiff1d(np.arange(n), query)
    arrival = rest[rng_for(seed, "arrival").permutation(len(rest))]
    return {"query": query, "train": arrival, "database": arrival}


def _splits(views: dict[str, np.ndarray], labels: np.ndarray, indices: dict[str, tuple[str, np.ndarray]]
            ) -> dict[str, Any]:
    """The three multi-view splits; a train split with the database's exact items shares its arrays."""
    first = next(iter(views))
    out = {}
    for name in ("database", "query", "train"):
        src, pos = indices[name]
        db_src, db_pos = indices["database"]
        if name == "train" and src == db_src and np.array_equal(pos, db_pos):
            out[name] = dataclasses.replace(out["database"], name="train")
        else:
            out[name] = split_from_pool(views[first], labels, pos, name, src, "multiview", views=views)
    return out


# --------------------------------------------------------------------------- fashion-mnist-2view
def fashion_pool() -> tuple[dict[str, np.ndarray], np.ndarray]:
    """All 70,000 Fashion-MNIST images (train, then test) as views ``pixels`` and ``hog``, and class ids."""
    fashion_mnist.pools()  # a clear error when the files are missing
    return _fashion_pool(str(fashion_mnist.data_dir()))


@functools.lru_cache(maxsize=1)
def _fashion_pool(folder: str) -> tuple[dict[str, np.ndarray], np.ndarray]:
    p = fashion_mnist.pools()
    images = np.concatenate([p["train"][0], p["test"][0]])[:, 0]
    labels = np.concatenate([p["train"][1], p["test"][1]])
    views = {"pixels": images.reshape(len(images), -1), "hog": cached_hog(images, "fashion-mnist-2view")}
    for v in views.values():
        v.setflags(write=False)
    return views, labels


def build_fashion_2view(protocol: str, seed: int, indices=None, queries: Any = DEFAULT_QUERIES) -> Dataset:
    views, labels = fashion_pool()
    n = len(labels)
    params: dict[str, Any] = {}
    if indices is None:
        if protocol == "stream":
            q = queries_param("fashion-mnist-2view", queries, n)
            params["queries"] = q
            indices = {k: ("all", v) for k, v in stream_indices(n, q, seed).items()}
        elif protocol == "standard":
            n_train = len(fashion_mnist.pools()["train"][1])  # the train pool comes first
            test = n_train + per_class_sample(labels[n_train:], 100, rng_for(seed, "query"), what="query")
            train = per_class_sample(labels[:n_train], 500, rng_for(seed, "train"), what="train")
            indices = {"query": ("all", test), "train": ("all", train), "database": ("all", np.arange(n_train))}
        else:
            raise Learn2HashError(f"unknown protocol {protocol!r} for fashion-mnist-2view")
    splits = _splits(views, np.eye(10, dtype=bool)[labels], indices)
    return Dataset("fashion-mnist-2view", protocol, seed, class_names=list(fashion_mnist.CLASS_NAMES),
                   params=params, **splits)


register(DatasetInfo(
    name="fashion-mnist-2view",
    description="Fashion-MNIST, 70,000 images described twice: 784 pixel intensities and a 324-d HOG descriptor",
    protocols=("stream", "standard"),
    builder=build_fashion_2view,
    present=lambda: fashion_mnist.data_dir() is not None,
    how_to_get=fashion_mnist.HOW_TO_GET,
    location=lambda: str(fashion_mnist.data_dir() or ""),
    params={"queries": f"held-out queries of the stream protocol (default {DEFAULT_QUERIES})"},
))


# --------------------------------------------------------------------------- .mat files
def parse_mat_keys(keys: Any) -> dict[str, list[str]]:
    """``"image=I_tr+I_te,text=T_tr,labels=L_tr"`` (or a mapping) -> ``{role: [variable, ...]}``.

    ``labels`` is required, and at least one modality besides it.
    """
    if isinstance(keys, dict):
        pairs = [(str(k), str(v)) for k, v in keys.items()]
    elif isinstance(keys, str):
        pairs = []
        for part in keys.split(","):
            part = part.strip()
            if not part:
                continue
            if "=" not in part:
                raise Learn2HashError(f"mat keys: {part!r} is not ROLE=VARIABLE (expected e.g. image=I_tr,text=T_tr,labels=L_tr)")
            role, var = part.split("=", 1)
            pairs.append((role.strip(), var.strip()))
    else:
        raise Learn2HashError("mat keys must be a string like 'image=I_tr,text=T_tr,labels=L_tr'")
    out: dict[str, list[str]] = {}
    for role, var in pairs:
        if not role or not var or any(not v.strip() for v in var.split("+")):
            raise Learn2HashError(f"mat keys: empty role or variable name in {role}={var!r}")
        if role in out:
            raise Learn2HashError(f"mat keys: {role!r} is given twice")
        out[role] = [v.strip() for v in var.split("+")]
    if "labels" not in out:
        raise Learn2HashError("mat keys must name the labels variable (labels=...)")
    if len(out) < 2:
        raise Learn2HashError("mat keys must name at least one modality besides the labels (e.g. image=I_tr)")
    return out


def _is_hdf5(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(520)
    return head[512:520] == b"\x89HDF\r\n\x1a\n" or head[:8] == b"\x89HDF\r\n\x1a\n"


def _read_v73(path: Path, names: set[str]) -> dict[str, np.ndarray]:
    import h5py
    import scipy.sparse as sp

    out = {}
    with h5py.File(path, "r") as f:
        for name in names:
            if name not in f:
                raise Learn2HashError(f"{path}: no variable {name!r}; it holds {', '.join(sorted(k for k in f if not k.startswith('#')))}")
            obj = f[name]
            if isinstance(obj, h5py.Group):
                if "MATLAB_sparse" not in obj.attrs or not {"data", "ir", "jc"} <= set(obj):
                    raise Learn2HashError(f"{path}: variable {name!r} is a MATLAB struct or cell, not a numeric matrix")
                jc = obj["jc"][()]
                rows = int(obj.attrs["MATLAB_sparse"])
                mat = sp.csc_matrix((obj["data"][()], obj["ir"][()], jc), shape=(rows, len(jc) - 1))
                out[name] = mat.toarray()
            else:
                a = obj[()]
                if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
                    raise Learn2HashError(f"{path}: variable {name!r} is not numeric (dtype {a.dtype})")
                out[name] = a.T  # HDF5 holds MATLAB's column-major n x d as d x n
    return out


def _read_v5(path: Path, names: set[str]) -> dict[str, np.ndarray]:
    import scipy.io
    import scipy.sparse as sp

    try:
        data = scipy.io.loadmat(path, variable_names=sorted(names))
    except (ValueError, NotImplementedError, OSError) as exc:
        raise CorruptFileError(f"{path} cannot be read as a MATLAB .mat file: {exc}") from None
    out = {}
    for name in names:
        if name not in data:
            holds = sorted(w[0] for w in scipy.io.whosmat(path))
            raise Learn2HashError(f"{path}: no variable {name!r}; it holds {', '.join(holds)}")
        a = data[name]
        if sp.issparse(a):
            a = a.toarray()
        a = np.asarray(a)
        if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
            raise Learn2HashError(f"{path}: variable {name!r} is not numeric (dtype {a.dtype})")
        out[name] = a
    return out


def read_mat(path: str | os.PathLike, keys: Any) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Read a ``.mat`` file (v5 or v7.3): ``({modality: float32[n, d]}, multi-hot bool[n, c])``."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise Learn2HashError(f"mat file {str(path)!r} does not exist")
    roles = parse_mat_keys(keys)
    names = {v for vs in roles.values() for v in vs}
    try:
        raw = _read_v73(path, names) if _is_hdf5(path) else _read_v5(path, names)
    except OSError as exc:
        raise CorruptFileError(f"{path} cannot be read: {exc}") from None
    arrays: dict[str, np.ndarray] = {}
    for role, vs in roles.items():
        parts = []
        for v in vs:
            a = raw[v]
            if role == "labels" and a.ndim == 2 and 1 in a.shape and a.shape != (1, 1):
                a = a.reshape(-1)  # a vector of class ids, stored as a row or a column
            if a.ndim == 1 and role != "labels":
                raise Learn2HashError(f"{path}: variable {v!r} ({role}) is a vector; expected a matrix [items, features]")
            if a.ndim > 2:
                raise Learn2HashError(f"{path}: variable {v!r} ({role}) has shape {a.shape}; expected a 2-D matrix")
            parts.append(a)
        if len({p.ndim for p in parts}) > 1 or len({p.shape[1:] for p in parts}) > 1:
            raise Learn2HashError(f"{path}: the variables {'+'.join(vs)} of {role!r} have incompatible shapes "
                                  f"{[p.shape for p in parts]}")
        arrays[role] = np.concatenate(parts) if len(parts) > 1 else parts[0]
    label_raw = arrays.pop("labels")
    n = len(label_raw)
    for role, a in arrays.items():
        if len(a) != n:
            raise Learn2HashError(f"{path}: modality {role!r} ({'+'.join(roles[role])}) has {len(a)} rows "
                                  f"but the labels ({'+'.join(roles['labels'])}) have {n}")
    labels = as_multihot(label_raw, what=f"{path.name} labels")
    views = {}
    for role, a in arrays.items():
        a = np.asarray(a, dtype=np.float32)
        if not np.all(np.isfinite(a)):
            raise Learn2HashError(f"{path}: modality {role!r} contains NaN or infinite values")
        views[role] = a
    return views, labels


def build_mat(protocol: str, seed: int, indices=None, path: Any = None, keys: Any = None,
              queries: Any = DEFAULT_QUERIES) -> Dataset:
    if path is None or keys is None:
        raise Learn2HashError("dataset 'mat' reads your own .mat file: give path= and keys= "
                              "(--mat FILE --mat-keys image=...,text=...,labels=... on the command line)")
    path = Path(path).expanduser().resolve()
    views, labels = read_mat(path, keys)
    n = len(labels)
    params: dict[str, Any] = {"path": str(path), "keys": keys if isinstance(keys, str) else
                              ",".join(f"{k}={v}" for k, v in keys.items())}
    if indices is None:
        q = queries_param("mat", queries, n)
        params["queries"] = q
        indices = {k: ("all", v) for k, v in stream_indices(n, q, seed).items()}
    splits = _splits(views, labels, indices)
    return Dataset("mat", protocol, seed, params=params, **splits)


register(DatasetInfo(
    name="mat",
    description="your own .mat file (MATLAB v5 or v7.3) with one matrix per modality and a label matrix",
    protocols=("stream",),
    builder=build_mat,
    generic=True,
    params={"path": "the .mat file", "keys": "ROLE=VARIABLE pairs, e.g. image=I_tr,text=T_tr,labels=L_tr",
            "queries": f"held-out queries (default {DEFAULT_QUERIES})"},
))
