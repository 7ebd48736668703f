"""Fashion-MNIST: 60,000 train and 10,000 test grayscale 28x28 images of 10 clothing classes.

Files are the four IDX files (``train-images-idx3-ubyte[.gz]`` ...), read from the folder named by
``LEARN2HASH_DATA`` (or ``LEARN2HASH_DATA/fashion-mnist``), else from the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``).

Protocols:
- ``standard``: query = 1,000 test images (100 per class); train = 5,000 train images (500 per
  class); database = all 60,000 train images.
- ``full``: query = the 10,000 test images; train = database = the 60,000 train images.
"""

from __future__ import annotations

import functools
import gzip
import os
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np

from learn2hash.datasets.base import Dataset, Split, split_from_pool
from learn2hash.datasets.protocols import per_class_sample, rng_for
from learn2hash.datasets.registry import DatasetInfo, int_param, register
from learn2hash.errors import CorruptFileError, DatasetNotFoundError, Learn2HashError

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
HOW_TO_GET = ("Install it with `apt-get update && apt-get install dataset-fashion-mnist` (as root), "
              "or put the four IDX files (train-images-idx3-ubyte.gz, ...) in a folder and set LEARN2HASH_DATA to it.")


def candidate_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("LEARN2HASH_DATA")
    if env:
        dirs += [Path(env) / "fashion-mnist", Path(env)]
    dirs.append(DEBIAN_DIR)
    return dirs


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def data_dir() -> Path | None:
    for d in candidate_dirs():
        if all(_find(d, stem) for stem in FILES.values()):
            return d
    return None


def generated_from() -> dict[str, Any]:
    """The :class:`DatasetInfo` fields of a data set generated from Fashion-MNIST (present, how to get, location)."""
    return {"present": lambda: data_dir() is not None, "how_to_get": HOW_TO_GET,
            "location": lambda: f"generated from {data_dir() or 'fashion-mnist'}"}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array; a malformed file is a clear error."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            data = fh.read()
    except (OSError, EOFError) as exc:
        raise CorruptFileError(f"cannot read IDX file {path}: {exc}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise CorruptFileError(f"{path} is not an IDX file (bad magic number)")
    dtype_code, ndim = data[2], data[3]
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
              0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
    if dtype_code not in dtypes:
        raise CorruptFileError(f"{path}: unknown IDX element type 0x{dtype_code:02x}")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise CorruptFileError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    dtype = np.dtype(dtypes[dtype_code])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header != expected:
        raise CorruptFileError(f"{path}: IDX body has {len(data) - header} bytes, its header says {expected}")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


@functools.lru_cache(maxsize=2)
def _read_pool(folder: str, part: str) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(_find(Path(folder), FILES[(part, "images")]))
    labels = read_idx(_find(Path(folder), FILES[(part, "labels")])).astype(np.int64)
    if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
        raise CorruptFileError(f"Fashion-MNIST {part} files in {folder} have unexpected shapes "
                               f"{images.shape} and {labels.shape}")
    images = images[:, None, :, :]  # [n, 1, 28, 28]
    images.setflags(write=False)
    return images, labels


def pools() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The ``train`` and ``test`` pools: ``uint8[n, 1, 28, 28]`` images and ``int64[n]`` class ids."""
    folder = data_dir()
    if folder is None:
        raise DatasetNotFoundError(f"dataset 'fashion-mnist' is not installed on this machine. {HOW_TO_GET}")
    return {part: _read_pool(str(folder), part) for part in ("train", "test")}


#: the pool each split of a derived dataset draws its items from: test items only in the queries
DERIVED_STREAM_OF = {"query": "test", "train": "train", "database": "train"}


def derived_splits(dataset: str, unit: str, default_sizes: dict[str, int], indices, given: dict[str, Any],
                   make_split: Callable[[str, str, np.ndarray, np.ndarray, np.ndarray], Split]) -> dict[str, Split]:
    """Splits of a dataset whose items are composed from Fashion-MNIST images (canvases, clips).

    Item ``i`` of a split is a pure function of (seed, stream, ``i``), so a split is its stream and its
    item ids: ``indices`` (``{split: (stream, ids)}``, as saved with a run) or, when None, the first
    ``given`` (or ``default_sizes``) ids of each split's stream. ``make_split(name, stream, ids,
    images, class_ids)`` builds one split from the stream's pool.
    """
    sizes = {s: default_sizes[s] if given.get(s) is None else int_param(dataset, f"{s}_size", given[s], minimum=1)
             for s in ("train", "query", "database")}
    if indices is None:
        indices = {s: (DERIVED_STREAM_OF[s], np.arange(sizes[s])) for s in ("train", "query", "database")}
    pool = pools()
    splits = {}
    for name, (stream, ids) in indices.items():
        if stream not in pool:
            raise Learn2HashError(f"{dataset}: split {name!r} names stream {stream!r}; streams are train and test")
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and ids.min() < 0:
            raise Learn2HashError(f"{dataset}: split {name!r} has a negative {unit} id")
        images, class_ids = pool[stream]
        splits[name] = make_split(name, stream, ids, images, class_ids)
    return splits


def protocol_indices(protocol: str, seed: int, train_labels: np.ndarray, test_labels: np.ndarray
                     ) -> dict[str, tuple[str, np.ndarray]]:
    """``{split: (pool, positions)}`` for a protocol."""
    n_train, n_test = len(train_labels), len(test_labels)
    if protocol == "standard":
        return {
            "query": ("test", per_class_sample(test_labels, 100, rng_for(seed, "query"), what="query")),
            "train": ("train", per_class_sample(train_labels, 500, rng_for(seed, "train"), what="train")),
            "database": ("train", np.arange(n_train)),
        }
    if protocol == "full":
        return {"query": ("test", np.arange(n_test)), "train": ("train", np.arange(n_train)),
                "database": ("train", np.arange(n_train))}
    raise Learn2HashError(f"unknown protocol {protocol!r} for fashion-mnist")


def build(protocol: str, seed: int, indices=None) -> Dataset:
    p = pools()
    idx = indices or protocol_indices(protocol, seed, p["train"][1], p["test"][1])
    splits = {}
    for name, (pool, positions) in idx.items():
        images, labels = p[pool]
        splits[name] = split_from_pool(images, np.eye(10, dtype=bool)[labels], positions, name, pool, "image")
    return Dataset("fashion-mnist", protocol, seed, class_names=list(CLASS_NAMES), **splits)


register(DatasetInfo(
    name="fashion-mnist",
    label_preserving=("flip",),  # photographs and clothes stay what they are when mirrored
    description="Fashion-MNIST, 70,000 grayscale 28x28 clothing images in 10 classes",
    protocols=("standard", "full"),
    builder=build,
    topk=1000,
    present=lambda: data_dir() is not None,
    how_to_get=HOW_TO_GET,
    location=lambda: str(data_dir() or ""),
))
