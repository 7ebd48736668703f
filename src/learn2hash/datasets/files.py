"""Generic loaders for users' own data: feature arrays, image-list files and image folders.

Each is a dataset that takes ``path=`` (``--data-path`` on the command line) and has one
protocol, ``standard``:

``npz``
    A ``.npz`` holding ``x`` (or ``features``) and ``labels`` (or ``y``), or a ``.npy`` of items
    with ``labels=`` naming a ``.npy`` of labels. Query and train are drawn from the pool, seeded
    (:func:`~learn2hash.datasets.protocols.random_protocol`: ``query_size`` items are the query,
    the rest the database, ``train_size`` of the database the training set). A pre-split ``.npz``
    instead holds ``train_x``/``train_labels``, ``query_x``/``query_labels`` (or ``test_*``) and
    optionally ``database_x``/``database_labels`` (default: the train arrays), used as they are.
    Items: ``[n, d]`` numbers are features (``float32``); ``uint8`` ``[n, H, W]``, ``[n, C, H, W]``
    and ``[n, T, C, H, W]`` are images and clips (channels first). Labels: class ids ``int[n]`` or
    a 0/1 matrix ``[n, c]``.

``image-list``
    The list format common in hashing code: one line per item, an image path (no spaces;
    relative to ``root``, default the list's folder) followed by a 0/1 label vector. ``path`` is a
    folder holding ``train.txt``, ``test.txt`` (or ``query.txt``) and ``database.txt``;
    ``train=``, ``query=``, ``database=`` name other list files.

``image-folder``
    ``path`` holds one sub-folder per class with its images. Seeded per-class split:
    ``query_per_class`` images of each class are the query, the rest the database, and
    ``train_per_class`` of the database the training set.

Image splits hold the file paths (:class:`LazyImages`); nothing is decoded until the items are
used. Indexed, they are ``uint8[n, C, H, W]`` made by :func:`learn2hash.images.encode_image`
(EXIF orientation, any mode to RGB or grey, shorter side resized and centre-cropped to ``size``:
``N``, ``HxW`` or ``[H, W]``; default the first image's size) with ``channels`` 1 (grayscale) or
3 (RGB; default from the first image). Training and encoding read the paths instead and decode
in DataLoader workers to the geometry the network declares (:mod:`learn2hash.train`).
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from learn2hash import images
from learn2hash.datasets.base import Dataset, LazyArray, as_multihot, split_from_pool
from learn2hash.datasets.protocols import per_class_sample, random_protocol, rng_for
from learn2hash.datasets.registry import int_param, path_param, register_loader, size_param
from learn2hash.errors import CorruptFileError, Learn2HashError

IMAGE_EXTENSIONS = images.IMAGE_EXTENSIONS


# --------------------------------------------------------------------------- images
def probe_image(path: Path) -> tuple[tuple[int, int], int]:
    """``((height, width), channels)`` of an image file from its header (as displayed, after its EXIF
    orientation; channels: 1 gray, 3 colour)."""
    return images.probe(path)


def read_image(path: Path, size: tuple[int, int] | None, channels: int) -> np.ndarray:
    """``uint8[channels, H, W]`` of an image file through :func:`learn2hash.images.encode_image`: the
    shorter side resized and the centre cropped to ``size = (H, W)`` (default: the image's own size)."""
    if size is None:
        size, _ = images.probe(path)
    return np.ascontiguousarray(images.encode_image(path, images.Geometry(tuple(size), channels)))


def channels_param(dataset: str, value: Any) -> int | None:
    if value is None:
        return None
    c = int_param(dataset, "channels", value)
    if c not in (1, 3):
        raise Learn2HashError(f"{dataset}: parameter channels must be 1 (grayscale) or 3 (RGB), got {c}")
    return c


class LazyImages(LazyArray):
    """Image files as ``uint8[n, C, H, W]``, decoded (and resized) only when indexed.

    ``paths`` is public: the training loop and encoding decode the files themselves, in worker
    processes, to the network's geometry (:func:`learn2hash.images.image_paths`).
    """

    def __init__(self, paths: list[Path], size: tuple[int, int], channels: int, what: str):
        super().__init__(len(paths), (channels,) + tuple(size), np.uint8, what)
        self.paths = list(paths)
        self.size = tuple(size)
        self.channels = channels

    def _load(self, positions: np.ndarray) -> np.ndarray:
        out = np.empty((len(positions),) + self.item_shape, dtype=np.uint8)
        geom = images.Geometry(self.size, self.channels)
        for j, i in enumerate(positions):
            out[j] = images.encode_image(self.paths[i], geom)
        return out


def _image_geometry(dataset: str, first: Path, size: Any, channels: Any) -> tuple[tuple[int, int], int]:
    """The common ``(H, W)`` and channel count: the parameters when given, else the first image's."""
    hw, ch = probe_image(first)
    size = size_param(dataset, size) or hw
    return size, channels_param(dataset, channels) or ch


# --------------------------------------------------------------------------- npz / npy
_X_KEYS = ("x", "features")
_Y_KEYS = ("labels", "y")
_SPLIT_PREFIXES = {"train": ("train",), "query": ("query", "test"), "database": ("database",)}


def _read_arrays(path: Path, labels_path: Path | None) -> dict[str, np.ndarray]:
    if path.suffix == ".npz":
        if labels_path is not None:
            raise Learn2HashError(f"npz: labels= goes with a .npy of items; {path.name} is a .npz with its own labels")
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise CorruptFileError(f"cannot read {path} as .npz (no pickled arrays allowed): {exc}") from None
    if path.suffix == ".npy":
        out = {}
        for key, p in (("x", path), ("labels", labels_path)):
            if p is None:  # a .npy of items without labels: an unlabelled collection
                continue
            try:
                out[key] = np.load(p, allow_pickle=False)
            except (OSError, ValueError, EOFError) as exc:
                raise CorruptFileError(f"cannot read {p} as .npy (no pickled arrays allowed): {exc}") from None
        return out
    raise Learn2HashError(f"npz: path must be a .npz file or a .npy file of items, got {path}")


def _as_items(a: np.ndarray, what: str) -> tuple[np.ndarray, str]:
    """Features ``float32[n, d]``, images ``uint8[n, C, H, W]`` or clips ``uint8[n, T, C, H, W]``, and the kind."""
    if a.ndim == 2:
        if not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise Learn2HashError(f"{what}: features must be numeric, got dtype {a.dtype}")
        x = a.astype(np.float32)
        if not np.isfinite(x).all():
            raise Learn2HashError(f"{what}: features contain NaN or infinite values")
        return x, "features"
    if a.ndim in (3, 4, 5):
        if a.dtype != np.uint8:
            raise Learn2HashError(f"{what}: images and clips must be uint8 [n, C, H, W] / [n, T, C, H, W] "
                                  f"(channels first), got {a.dtype} of shape {a.shape}")
        return (a[:, None] if a.ndim == 3 else a), ("clip" if a.ndim == 5 else "image")
    raise Learn2HashError(f"{what}: expected features [n, d], images [n, (C,) H, W] or clips [n, T, C, H, W], "
                          f"got shape {a.shape}")


def _pick(arrays: dict[str, np.ndarray], names: list[str], what: str, file: Path) -> np.ndarray | None:
    found = [k for k in names if k in arrays]
    if len(found) > 1:
        raise Learn2HashError(f"npz: {file.name} holds both {found[0]!r} and {found[1]!r} for the {what}")
    return arrays[found[0]] if found else None


def _presplit_pools(arrays: dict[str, np.ndarray], file: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    raw = {}
    for split, prefixes in _SPLIT_PREFIXES.items():
        x = _pick(arrays, [f"{p}_{k}" for p in prefixes for k in _X_KEYS], f"{split} items", file)
        y = _pick(arrays, [f"{p}_{k}" for p in prefixes for k in _Y_KEYS], f"{split} labels", file)
        if (x is None) != (y is None):
            raise Learn2HashError(f"npz: {file.name} has {split} {'items' if x is not None else 'labels'} "
                                  f"but no {split} {'labels' if x is not None else 'items'}")
        if x is not None:
            raw[split] = (x, y)
    for split in ("train", "query"):
        if split not in raw:
            raise Learn2HashError(f"npz: pre-split {file.name} has no {split} arrays "
                                  f"(expected {split}_x and {split}_labels)")
    raw.setdefault("database", raw["train"])
    ids = [np.asarray(y) for _, y in raw.values() if np.asarray(y).ndim == 1 and np.asarray(y).size]
    n_classes = int(max(int(y.max()) for y in ids) + 1) if ids else None
    pools = {}
    for split, (x, y) in raw.items():
        items, _ = _as_items(np.asarray(x), f"npz {file.name} {split} items")
        labels = as_multihot(y, n_classes if np.asarray(y).ndim == 1 else None, what=f"npz {file.name} {split} labels")
        if len(labels) != len(items):
            raise Learn2HashError(f"npz: {file.name} has {len(items)} {split} items but {len(labels)} label rows")
        pools[split] = (items, labels)
    widths = {p[1].shape[1] for p in pools.values()}
    if len(widths) > 1:
        raise Learn2HashError(f"npz: {file.name}: the splits' label matrices have different widths {sorted(widths)}")
    return pools


def build_npz(protocol: str, seed: int, indices=None, path: Any = None, labels: Any = None,
              query_size: Any = None, train_size: Any = None) -> Dataset:
    file = path_param("npz", path)
    labels_path = path_param("npz", labels, "labels") if labels is not None else None
    arrays = _read_arrays(file, labels_path)
    params: dict[str, Any] = {"path": str(file)}
    if labels_path is not None:
        params["labels"] = str(labels_path)
    presplit = any(f"{p}_{k}" in arrays for ps in _SPLIT_PREFIXES.values() for p in ps for k in _X_KEYS)
    if presplit:
        if query_size is not None or train_size is not None:
            raise Learn2HashError(f"npz: {file.name} is pre-split; query_size and train_size apply only to a pooled file")
        pools = _presplit_pools(arrays, file)
        idx = indices or {s: (s, np.arange(len(pools[s][0]))) for s in ("train", "query", "database")}
    else:
        x = _pick(arrays, list(_X_KEYS), "items", file)
        y = _pick(arrays, list(_Y_KEYS), "labels", file)
        if x is not None and y is None and file.suffix == ".npy":
            items, _ = _as_items(np.asarray(x), f"npy {file.name} items")
            return _unlabelled("npz", protocol, seed, items, indices, params, query_size, train_size)
        if x is None or y is None:
            raise Learn2HashError(f"npz: {file.name} holds {sorted(arrays)}; expected 'x' (or 'features') and "
                                  "'labels' (or 'y'), or pre-split train_x/train_labels, query_x/query_labels")
        items, _ = _as_items(np.asarray(x), f"npz {file.name} items")
        multihot = as_multihot(y, what=f"npz {file.name} labels")
        if len(multihot) != len(items):
            raise Learn2HashError(f"npz: {file.name} has {len(items)} items but {len(multihot)} label rows")
        pools = {"all": (items, multihot)}
        if indices is None:
            qs = None if query_size is None else int_param("npz", "query_size", query_size, 1)
            ts = None if train_size is None else int_param("npz", "train_size", train_size, 1)
            pos = random_protocol(len(items), seed, qs, ts, what=f"npz {file.name}")
            idx = {s: ("all", pos[s]) for s in ("train", "query", "database")}
        else:
            idx = indices
    return _dataset_from_pools("npz", protocol, seed, pools, idx, params)


def _unlabelled(name: str, protocol: str, seed: int, items: Any, indices: Any, params: dict[str, Any],
                query_size: Any, train_size: Any) -> Dataset:
    """An unlabelled collection (labels ``bool[n, 0]``) under :func:`unlabelled_protocol`."""
    from learn2hash.datasets.protocols import unlabelled_protocol

    if indices is None:
        qs = None if query_size is None else int_param(name, "query_size", query_size, 1)
        ts = None if train_size is None else int_param(name, "train_size", train_size, 1)
        pos = unlabelled_protocol(len(items), seed, qs, ts, what=f"{name} {params.get('path', '')}".strip())
        indices = {s: ("all", pos[s]) for s in ("train", "query", "database")}
    pools = {"all": (items, np.zeros((len(items), 0), dtype=bool))}
    return _dataset_from_pools(name, protocol, seed, pools, indices, params)


def _dataset_from_pools(name: str, protocol: str, seed: int, pools: dict[str, tuple[Any, np.ndarray]],
                        idx: dict[str, tuple[str, np.ndarray]], params: dict[str, Any],
                        class_names: list[str] | None = None) -> Dataset:
    splits = {}
    for split, (source, positions) in idx.items():
        if source not in pools:
            raise Learn2HashError(f"{name}: saved split {split!r} comes from pool {source!r}, which this data "
                                  f"does not have (pools: {', '.join(pools)})")
        x, labels = pools[source]
        kind = "features" if getattr(x, "ndim", 0) == 2 else "clip" if getattr(x, "ndim", 0) == 5 else "image"
        splits[split] = split_from_pool(x, labels, positions, split, source, kind)
    return Dataset(name, protocol, seed, class_names=class_names, params=params, **splits)


# --------------------------------------------------------------------------- image lists
def parse_image_list(path: Path, root: Path, n_labels: int | None = None) -> tuple[list[Path], np.ndarray]:
    """Image paths (under ``root``) and ``bool[n, c]`` labels of a list file; ``n_labels`` checks the width."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise Learn2HashError(f"image-list: cannot read list file {path}: {exc}") from None
    paths, rows = [], []
    first = 0
    for lineno, line in enumerate(lines, 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        labels = parts[1:]
        if n_labels is None:
            n_labels = len(labels)
        elif len(labels) != n_labels:
            if not n_labels or not labels:
                raise Learn2HashError(f"image-list: {path}:{lineno}: {'no' if not labels else 'a'} label vector, but "
                                      f"line {first} has {'one' if n_labels else 'none'}: label every line or none")
            raise Learn2HashError(f"image-list: {path}:{lineno}: a label vector of length {len(labels)}, "
                                  f"expected {n_labels} (the length on the first line)")
        first = first or lineno
        bad = next((t for t in labels if t not in ("0", "1")), None)
        if bad is not None:
            raise Learn2HashError(f"image-list: {path}:{lineno}: labels must be 0 or 1, found {bad!r}")
        paths.append(root / parts[0])
        rows.append(labels)
    if not paths:
        raise Learn2HashError(f"image-list: list file {path} holds no items")
    return paths, (np.array(rows) == "1").reshape(len(paths), n_labels or 0)


def _check_exist(paths: list[Path], what: str) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(str(p) for p in missing[:3])
        raise Learn2HashError(f"{what}: {len(missing)} image(s) listed do not exist: {shown}"
                              + (", ..." if len(missing) > 3 else ""))


def build_image_list(protocol: str, seed: int, indices=None, path: Any = None, train: Any = None,
                     query: Any = None, database: Any = None, root: Any = None, size: Any = None,
                     channels: Any = None, query_size: Any = None, train_size: Any = None) -> Dataset:
    if path is None and None in (train, query, database):
        raise Learn2HashError("image-list reads your own files: give path= (--data-path), a folder holding "
                              "train.txt, test.txt and database.txt, or all of train=, query=, database=")
    folder = path_param("image-list", path) if path is not None else None
    if folder is not None and folder.is_file() and None in (train, query, database):
        # one list of paths: a collection; without label columns an unlabelled one
        base = path_param("image-list", root, "root") if root is not None else folder.parent
        paths, labels = parse_image_list(folder, base)
        _check_exist(paths, f"image-list {folder.name}")
        hw, ch = _image_geometry("image-list", paths[0], size, channels)
        items = LazyImages(paths, hw, ch, f"image-list {folder.name}")
        params = {"path": str(folder), "root": str(base), "size": list(hw), "channels": ch}
        if labels.shape[1] == 0:
            return _unlabelled("image-list", protocol, seed, items, indices, params, query_size, train_size)
        if indices is None:
            qs = None if query_size is None else int_param("image-list", "query_size", query_size, 1)
            ts = None if train_size is None else int_param("image-list", "train_size", train_size, 1)
            pos = random_protocol(len(paths), seed, qs, ts, what=f"image-list {folder.name}")
            indices = {s: ("all", pos[s]) for s in ("train", "query", "database")}
        return _dataset_from_pools("image-list", protocol, seed, {"all": (items, labels)}, indices, params)
    if folder is not None and not folder.is_dir():
        raise Learn2HashError(f"image-list: path must be a folder holding train.txt, test.txt and database.txt, "
                              f"or one list file, got {folder}")
    defaults = {"train": ("train.txt",), "query": ("test.txt", "query.txt"), "database": ("database.txt",)}
    given = {"train": train, "query": query, "database": database}
    files: dict[str, Path] = {}
    for split, names in defaults.items():
        if given[split] is not None:
            files[split] = path_param("image-list", given[split], f"{split} list")
            continue
        found = [folder / n for n in names if (folder / n).is_file()]
        if not found:
            raise Learn2HashError(f"image-list: no {split} list in {folder} (expected {' or '.join(names)})")
        files[split] = found[0]
    base = path_param("image-list", root, "root") if root is not None else (folder or files["train"].parent)
    pools: dict[str, tuple[Any, np.ndarray]] = {}
    n_labels = None
    parsed = {}
    for split, f in files.items():
        paths, labels = parse_image_list(f, base, n_labels)
        if n_labels is not None and labels.shape[1] != n_labels:
            raise Learn2HashError(f"image-list: {f} has {labels.shape[1]} label columns, the train list {n_labels}")
        n_labels = labels.shape[1]
        _check_exist(paths, f"image-list {f.name}")
        parsed[split] = (paths, labels)
    hw, ch = _image_geometry("image-list", parsed["train"][0][0], size, channels)
    for split, (paths, labels) in parsed.items():
        pools[split] = (LazyImages(paths, hw, ch, f"image-list {files[split].name}"), labels)
    idx = indices or {s: (s, np.arange(len(pools[s][0]))) for s in ("train", "query", "database")}
    params = {**{f"{s}": str(f) for s, f in files.items()}, "root": str(base), "size": list(hw), "channels": ch}
    if folder is not None:
        params["path"] = str(folder)
    return _dataset_from_pools("image-list", protocol, seed, pools, idx, params)


# --------------------------------------------------------------------------- image folders
def list_class_folders(root: Path) -> tuple[list[str], list[Path], np.ndarray]:
    """Class names (sorted sub-folder names), image files (sorted within each class) and class ids."""
    if not root.is_dir():
        raise Learn2HashError(f"image-folder: path must be a folder with one sub-folder per class, got {root}")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise Learn2HashError(f"image-folder: {root} holds no class sub-folders (expected ROOT/CLASS/IMAGE files)")
    files, ids = [], []
    for c, name in enumerate(classes):
        found = sorted(p for p in (root / name).rglob("*")
                       if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith("."))
        if not found:
            raise Learn2HashError(f"image-folder: class folder {root / name} holds no images "
                                  f"({', '.join(sorted(IMAGE_EXTENSIONS))})")
        files += found
        ids += [c] * len(found)
    return classes, files, np.asarray(ids, dtype=np.int64)


def build_image_folder(protocol: str, seed: int, indices=None, path: Any = None, size: Any = None,
                       channels: Any = None, query_per_class: Any = None, train_per_class: Any = None,
                       labels: Any = "auto", query_size: Any = None, train_size: Any = None) -> Dataset:
    root = path_param("image-folder", path)
    if labels not in ("auto", "folders", "none"):
        raise Learn2HashError(f"image-folder: labels must be auto, folders or none, got {labels!r}")
    if not root.is_dir():
        raise Learn2HashError(f"image-folder: path must be a folder of images, got the file {root}")
    top = [p for p in root.iterdir() if images.is_image_file(p)]
    has_classes = any(d.is_dir() and not d.name.startswith(".") for d in root.iterdir())
    if labels == "none" or (labels == "auto" and (top or not has_classes)):
        # a flat folder (or labels=none): one unlabelled collection of every image, recursively
        files = images.list_images(root)[1] if labels == "none" else sorted(top)
        if not files:
            raise Learn2HashError(f"image-folder: {root} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
                                  "and no class sub-folders")
        hw, ch = _image_geometry("image-folder", files[0], size, channels)
        items = LazyImages(files, hw, ch, f"image-folder {root.name}")
        return _unlabelled("image-folder", protocol, seed, items, indices,
                           {"path": str(root), "size": list(hw), "channels": ch, "labels": labels},
                           query_size, train_size)
    classes, files, ids = list_class_folders(root)
    hw, ch = _image_geometry("image-folder", files[0], size, channels)
    pools = {"all": (LazyImages(files, hw, ch, f"image-folder {root.name}"), np.eye(len(classes), dtype=bool)[ids])}
    if indices is None:
        counts = np.bincount(ids, minlength=len(classes))
        smallest = int(counts.min())
        if smallest < 2:
            raise Learn2HashError(f"image-folder: class {classes[int(counts.argmin())]!r} has {smallest} image; "
                                  "each class needs at least 2 (a query and a database item)")
        qpc = (min(100, max(1, smallest // 10)) if query_per_class is None
               else int_param("image-folder", "query_per_class", query_per_class, 1))
        tpc = (min(500, smallest - qpc) if train_per_class is None
               else int_param("image-folder", "train_per_class", train_per_class, 1))
        query = per_class_sample(ids, qpc, rng_for(seed, "query"), what="image-folder query")
        database = np.setdiff1d(np.arange(len(ids)), query)
        train = per_class_sample(ids, tpc, rng_for(seed, "train"), exclude=query, what="image-folder train")
        indices = {"train": ("all", train), "query": ("all", query), "database": ("all", database)}
    params = {"path": str(root), "size": list(hw), "channels": ch}
    return _dataset_from_pools("image-folder", protocol, seed, pools, indices, params, class_names=classes)


_IMAGE_PARAMS = {"size": "images are resized to N, HxW or [H,W] (default: the first image's size)",
                 "channels": "1 (grayscale) or 3 (RGB) (default: from the first image)"}

register_loader(
    "npz",
    "your features/images and labels in a .npz (or a .npy with labels=LABELS.npy)",
    build_npz,
    {"path": "the .npz (x, labels; or train_x, query_x, database_x ...) or a .npy of items "
              "(without labels=: an unlabelled collection)",
     "labels": "a .npy of labels, with a .npy of items",
     "query_size": "query items drawn from a pooled file (default min(1000, n/10))",
     "train_size": "training items drawn from the database (default min(5000, rest))"},
)

register_loader(
    "image-list",
    "image-list files: 'relative/path.jpg 0 1 0 ...' per line (labels optional); "
    "train/test/database lists or one list",
    build_image_list,
    {"path": "folder with train.txt, test.txt (or query.txt), database.txt",
     "train": "train list file", "query": "query (test) list file", "database": "database list file",
     "root": "folder the image paths are relative to (default: path, else the train list's folder)",
     "query_size": "with one list file: queries drawn (without labels default min(100, n))",
     "train_size": "with one list file: training items drawn (without labels default min(10000, n))",
     **_IMAGE_PARAMS},
)

register_loader(
    "image-folder",
    "a folder with one sub-folder of images per class; seeded per-class split",
    build_image_folder,
    {"path": "the folder of class sub-folders, or a flat folder of images (no labels)", **_IMAGE_PARAMS,
     "labels": "auto (class sub-folders when there are no images beside them), folders, or none "
                "(every image, recursively, unlabelled)",
     "query_size": "without labels: example queries drawn from the images (default min(100, n))",
     "train_size": "without labels: training images drawn (default min(10000, n))",
     "query_per_class": "query images per class (default min(100, smallest class / 10))",
     "train_per_class": "training images per class, from the database (default min(500, the rest))"},
)
