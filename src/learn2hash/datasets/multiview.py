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
    Your own ``.mat`` file (or a folder of them), as the cross-modal benchmarks (MIRFlickr-25K,
    NUS-WIDE, IAPR TC-12) are distributed: MATLAB v5 (scipy) or v7.3 (HDF5, h5py; its axes are
    reversed back to MATLAB's view). Variables are features ``[n, d]`` or image arrays of rank 3
    or 4 in any axis order (``[n, C, H, W]`` out; v7.3 images are read lazily), see
    :mod:`learn2hash.datasets.matfile`. ``keys`` names the variable of each modality and of the
    labels, ``"image=I_tr,text=T_tr,labels=L_tr"``; ``+`` joins the rows of several variables
    (``image=I_tr+I_te``). Without ``keys`` a known layout is recognised (:func:`detect_layout`):
    ``I_tr/I_te[/I_db]``, ``T_*``, ``L_*`` (LEMON's and DJSRH's files) or ``IAll, YAll, LAll``
    (DCMH's). Labels are an ``n x c`` 0/1 matrix or a vector of class ids.

``mirflickr-25k-mat``, ``nus-wide-mat``, ``iapr-tc-12-mat``
    The same, from ``--data-path`` or ``$LEARN2HASH_DATA/<name>``, without keys.

Protocols:

- ``stream`` (all): ``queries`` items (default 2,000) drawn at random (seeded) are held out as
  the query split; all other items form the database in a seeded random arrival order, and the
  training split is the database in that same order (a stream feeds it chunk by chunk). A file
  with its own split is pooled as LEMON's code pools it: ``*_tr`` and ``*_te`` (or ``*_te`` and
  ``*_db`` when the file has a retrieval set, so that no item is there twice).
- ``file`` (the .mat sets): the file's own split: query = ``*_te``, database = ``*_db`` (else
  ``*_tr``), train = ``*_tr``.
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
from learn2hash.datasets import fashion_mnist, matfile
from learn2hash.datasets.base import Dataset, as_multihot, split_from_pool
from learn2hash.datasets.protocols import per_class_sample, rng_for
from learn2hash.datasets.registry import DatasetInfo, register
from learn2hash.errors import Learn2HashError

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


def _splits(pools: dict[str, tuple[dict[str, Any], np.ndarray]], indices: dict[str, tuple[str, np.ndarray]]
            ) -> dict[str, Any]:
    """The three multi-view splits from ``pools`` (``{source: (views, labels)}``); a train split with
    the database's exact items shares its arrays."""
    out = {}
    for name in ("database", "query", "train"):
        src, pos = indices[name]
        db_src, db_pos = indices["database"]
        if name == "train" and src == db_src and np.array_equal(pos, db_pos):
            out[name] = dataclasses.replace(out["database"], name="train")
            continue
        if src not in pools:
            raise Learn2HashError(f"split {name!r} comes from pool {src!r}, which this data does not have "
                                  f"(pools: {', '.join(pools)})")
        views, labels = pools[src]
        first = next(iter(views))
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
    splits = _splits({"all": (views, np.eye(10, dtype=bool)[labels])}, indices)
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


@dataclasses.dataclass(frozen=True)
class MatLayout:
    """A recognised variable layout: ``split`` (``I_tr, I_te[, I_db]``, ``T_*``, ``L_*``) or ``all`` (``IAll, YAll, LAll``)."""

    kind: str
    stems: dict[str, str]  # role -> variable stem (split) or variable (all)
    has_db: bool = False

    def pooled_roles(self) -> dict[str, list[str]]:
        """The variables of every item, for the ``stream`` protocol (queries ∪ database, no item twice)."""
        if self.kind == "all":
            return {role: [var] for role, var in self.stems.items()}
        parts = ("te", "db") if self.has_db else ("tr", "te")
        return {role: [f"{stem}_{p}" for p in parts] for role, stem in self.stems.items()}


#: the split layouts' suffixes: the file's own train, query and database (retrieval) items
SPLIT_SUFFIXES = {"train": "tr", "query": "te", "database": "db"}
LAYOUTS_TEXT = ("I_tr/I_te[/I_db] (images or image features), T_tr/T_te[/T_db] (text), L_tr/L_te[/L_db] "
                "(labels), as LEMON's and DJSRH's files; or IAll, YAll (or TAll) and LAll, as DCMH's files "
                "(in one .mat or several)")


def detect_layout(names: set[str] | dict, where: str) -> MatLayout:
    """The layout of a file's (or folder's) variables; a clear error when it is none of the known ones."""
    names = set(names)
    stems = {"image": "I", "text": "T", "labels": "L"}
    if all(f"{s}_{x}" in names for s in stems.values() for x in ("tr", "te")):
        return MatLayout("split", stems, has_db=all(f"{s}_db" in names for s in stems.values()))
    text = "YAll" if "YAll" in names else "TAll" if "TAll" in names else None
    if {"IAll", "LAll"} <= names and text:
        return MatLayout("all", {"image": "IAll", "text": text, "labels": "LAll"})
    raise Learn2HashError(f"{where}: its variables ({', '.join(sorted(names)) or 'none'}) match no known cross-modal "
                          f"layout; expected {LAYOUTS_TEXT}; or give keys=ROLE=VARIABLE,...")


def _stems_from_keys(keys: Any) -> dict[str, str]:
    """``keys`` for the ``file`` protocol: one variable stem per role (a ``_tr``/``_te``/``_db`` suffix is dropped)."""
    out = {}
    for role, vs in parse_mat_keys(keys).items():
        if len(vs) != 1:
            raise Learn2HashError(f"mat keys: under the file protocol each role names one variable stem "
                                  f"(e.g. image=I for I_tr, I_te, I_db), got {role}={'+'.join(vs)}")
        v = vs[0]
        out[role] = v[:-3] if v.endswith(tuple(f"_{x}" for x in SPLIT_SUFFIXES.values())) else v
    return out


def _read_roles(where: dict[str, Path], roles: dict[str, list[str]], what: str,
                image_axes: Any = None) -> tuple[dict[str, Any], np.ndarray]:
    """``({modality: items}, multi-hot labels)`` of the variables ``roles`` names (``+`` joins rows)."""
    missing = sorted({v for vs in roles.values() for v in vs} - set(where))
    if missing:
        raise Learn2HashError(f"{what}: no variable {missing[0]!r}; it holds {', '.join(sorted(where))}")
    by_file: dict[Path, set[str]] = {}
    for vs in roles.values():
        for v in vs:
            by_file.setdefault(where[v], set()).add(v)
    raw: dict[str, Any] = {}
    for f, names in by_file.items():
        raw.update(matfile.read_variables(f, names))
    label_parts = []
    for v in roles["labels"]:
        a = raw[v].read() if isinstance(raw[v], matfile.H5Variable) else raw[v]
        if a.ndim == 2 and 1 in a.shape and a.shape != (1, 1):
            a = a.reshape(-1)  # a vector of class ids, stored as a row or a column
        label_parts.append(a)
    if len({p.ndim for p in label_parts}) > 1 or len({p.shape[1:] for p in label_parts}) > 1:
        raise Learn2HashError(f"{what}: the variables {'+'.join(roles['labels'])} of 'labels' have incompatible "
                              f"shapes {[p.shape for p in label_parts]}")
    label_raw = np.concatenate(label_parts) if len(label_parts) > 1 else label_parts[0]
    n = len(label_raw)
    part_ns = [len(p) for p in label_parts]
    views: dict[str, Any] = {}
    for role, vs in roles.items():
        if role == "labels":
            continue
        ns = part_ns if len(part_ns) == len(vs) else [n] if len(vs) == 1 else [None] * len(vs)
        parts = [matfile.as_items(raw[v], k, role, f"{what}: variable {v!r}", image_axes) for v, k in zip(vs, ns)]
        if len({p.shape[1:] for p in parts}) > 1:
            raise Learn2HashError(f"{what}: the variables {'+'.join(vs)} of {role!r} have incompatible shapes "
                                  f"{[p.shape for p in parts]}")
        a = (parts[0] if len(parts) == 1 else np.concatenate(parts) if all(isinstance(p, np.ndarray) for p in parts)
             else matfile.ConcatRows(parts, f"{what} {role}"))
        if len(a) != n:
            raise Learn2HashError(f"{what}: modality {role!r} ({'+'.join(vs)}) has {len(a)} rows "
                                  f"but the labels ({'+'.join(roles['labels'])}) have {n}")
        views[role] = a
    return views, as_multihot(label_raw, what=f"{what} labels")


def read_mat(path: str | os.PathLike, keys: Any = None, image_axes: Any = None) -> tuple[dict[str, Any], np.ndarray]:
    """Read a ``.mat`` file (v5 or v7.3), or the .mat files of a folder, pooled:
    ``({modality: items}, multi-hot bool[n, c])``.

    Items are features ``float32[n, d]`` or images ``[n, C, H, W]`` (see :mod:`~learn2hash.datasets.matfile`).
    ``keys`` (``"image=I_tr+I_te,text=T_tr+T_te,labels=L_tr+L_te"``) names the variables; without
    it a known layout is recognised (:func:`detect_layout`) and all its items are read.
    """
    files = matfile.mat_files(path)
    if not files:
        raise Learn2HashError(f"{path}: no .mat files in this folder")
    where = matfile.variable_files(files)
    roles = parse_mat_keys(keys) if keys is not None else detect_layout(where, str(path)).pooled_roles()
    return _read_roles(where, roles, str(path), image_axes)


def mat_dataset(name: str, protocol: str, seed: int, indices, path: Path, keys: Any, queries: Any,
                image_axes: Any) -> Dataset:
    """A cross-modal dataset from ``path`` (a .mat file or a folder of them) under ``stream`` or ``file``."""
    files = matfile.mat_files(path)
    if not files:
        raise Learn2HashError(f"{name}: no .mat files in {path}")
    where = matfile.variable_files(files)
    params: dict[str, Any] = {"path": str(path)}
    if keys is not None:
        params["keys"] = keys if isinstance(keys, str) else ",".join(f"{k}={v}" for k, v in keys.items())
    if image_axes is not None:
        params["image_axes"] = str(image_axes)
    if protocol == "stream":
        roles = parse_mat_keys(keys) if keys is not None else detect_layout(where, str(path)).pooled_roles()
        views, labels = _read_roles(where, roles, str(path), image_axes)
        pools = {"all": (views, labels)}
        if indices is None:
            q = queries_param(name, queries, len(labels))
            params["queries"] = q
            indices = {k: ("all", v) for k, v in stream_indices(len(labels), q, seed).items()}
    elif protocol == "file":
        if keys is not None:
            stems = _stems_from_keys(keys)
        else:
            layout = detect_layout(where, str(path))
            if layout.kind != "split":
                raise Learn2HashError(f"{name}: {path} holds no split of its own (no I_tr/I_te, T_tr/T_te, "
                                      "L_tr/L_te variables); use the stream protocol")
            stems = layout.stems
        present = [x for x in SPLIT_SUFFIXES.values() if all(f"{s}_{x}" in where for s in stems.values())]
        for x in ("tr", "te"):
            if x not in present:
                raise Learn2HashError(f"{name}: {path} lacks the {x} variables of its split "
                                      f"({', '.join(f'{s}_{x}' for s in stems.values())})")
        pools = {x: _read_roles(where, {role: [f"{stem}_{x}"] for role, stem in stems.items()}, str(path), image_axes)
                 for x in present}
        if indices is None:
            db = "db" if "db" in present else "tr"
            indices = {split: (x if split != "database" else db, np.arange(len(pools[x if split != "database" else db][1])))
                       for split, x in SPLIT_SUFFIXES.items()}
    else:
        raise Learn2HashError(f"unknown protocol {protocol!r} for {name}")
    widths = {p[1].shape[1] for p in pools.values()}
    if len(widths) > 1:
        raise Learn2HashError(f"{name}: the splits' label matrices have different widths {sorted(widths)}")
    return Dataset(name, protocol, seed, params=params, **_splits(pools, indices))


def build_mat(protocol: str, seed: int, indices=None, path: Any = None, keys: Any = None,
              queries: Any = DEFAULT_QUERIES, image_axes: Any = None) -> Dataset:
    if path is None:
        raise Learn2HashError("dataset 'mat' reads your own .mat file: give path= (and keys= unless the file has a "
                              "known layout) (--mat FILE --mat-keys image=...,text=...,labels=... on the command line)")
    path = Path(path).expanduser().resolve()
    return mat_dataset("mat", protocol, seed, indices, path, keys, queries, image_axes)


_MAT_PARAMS = {"keys": "ROLE=VARIABLE pairs, e.g. image=I_tr+I_te,text=T_tr+T_te,labels=L_tr+L_te (stream) or "
                       "image=I,text=T,labels=L (file: the stems of I_tr, I_te, I_db); default: a known layout",
               "queries": f"held-out queries of the stream protocol (default {DEFAULT_QUERIES})",
               "image_axes": "axis order of a rank-3/4 image variable in MATLAB's view, e.g. HWCN (default: guessed)"}

register(DatasetInfo(
    name="mat",
    description="your own .mat file (MATLAB v5 or v7.3): one array per modality (features or images) and labels",
    protocols=("stream", "file"),
    builder=build_mat,
    generic=True,
    params={"path": "the .mat file (or a folder of .mat files)", **_MAT_PARAMS},
))


# --------------------------------------------------------------------------- named cross-modal sets
_CM_SOURCES = ("LEMON's files (https://github.com/yxinwang/LEMON-MM2020, datasets/readMe.txt: MIRFLICKR.mat, "
               "NUSWIDE10.mat, IAPRTC-12.mat) or DCMH's (https://github.com/jiangqy/DCMH-CVPR2017)")
CROSS_MODAL = {
    "mirflickr-25k-mat": "MIRFlickr-25K image-text pairs (24 labels) as a cross-modal .mat release",
    "nus-wide-mat": "NUS-WIDE image-text pairs (10 or 21 concepts) as a cross-modal .mat release",
    "iapr-tc-12-mat": "IAPR TC-12 image-text pairs (255 labels) as a cross-modal .mat release",
}


def _cm_present(name: str) -> bool:
    from learn2hash.datasets.registry import dataset_folder

    folder = dataset_folder(name)
    if folder is None or not folder.is_dir():
        return False
    try:
        detect_layout(matfile.variable_files(matfile.mat_files(folder)), str(folder))
    except Learn2HashError:
        return False
    return True


def _cm_builder(name: str):
    def build(protocol: str, seed: int, indices=None, path: Any = None, keys: Any = None,
              queries: Any = DEFAULT_QUERIES, image_axes: Any = None) -> Dataset:
        from learn2hash.datasets.registry import dataset_folder, not_found

        folder = dataset_folder(name, path)
        if folder is None or not folder.exists() or (folder.is_dir() and not matfile.mat_files(folder)):
            problem = "" if folder is None else ("the folder does not exist" if not folder.exists() else "no .mat files")
            raise not_found(name, folder, f"one or more .mat files with {LAYOUTS_TEXT}", _CM_SOURCES, problem)
        return mat_dataset(name, protocol, seed, indices, folder, keys, queries, image_axes)
    return build


for _name, _description in CROSS_MODAL.items():
    register(DatasetInfo(
        name=_name,
        description=_description,
        protocols=("stream", "file"),
        builder=_cm_builder(_name),
        present=(lambda n=_name: _cm_present(n)),
        how_to_get=f"put the .mat file(s) in $LEARN2HASH_DATA/{_name} (or give --data-path); from {_CM_SOURCES}",
        location=(lambda n=_name: str(__import__("learn2hash.datasets.registry", fromlist=["x"]).dataset_folder(n) or "")),
        topk=None,
        published=_CM_SOURCES,
        layout=f"one or more .mat files with {LAYOUTS_TEXT}",
        params={"path": f"the .mat file or the folder of .mat files (default $LEARN2HASH_DATA/{_name})", **_MAT_PARAMS},
    ))
