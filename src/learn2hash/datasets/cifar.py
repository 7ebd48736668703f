"""CIFAR-10: 60,000 colour 32x32 images in 10 classes, read from the files as they are published.

Published at https://www.cs.toronto.edu/~kriz/cifar.html in two forms, both read here from the
dataset's folder (``--data-path``, else ``$LEARN2HASH_DATA/cifar10``), directly or in the
archive's own sub-folder:

- binary (``cifar-10-batches-bin/``): ``data_batch_1.bin`` ... ``data_batch_5.bin`` and
  ``test_batch.bin``, 10,000 records each of one label byte and 3,072 pixel bytes (the 1,024
  red, then green, then blue values of the 32x32 image, row by row);
- python (``cifar-10-batches-py/``): ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``,
  each a pickled dict ``{data: uint8[10000, 3072], labels: [int] * 10000, ...}``. A pickle can
  run any code when it is loaded, so these are read by :class:`SafeUnpickler`, which builds
  only plain containers, strings, numbers and numpy arrays and refuses everything else.

The pool is the 50,000 training images followed by the 10,000 test images (as the field's
reference code, DeepHash-pytorch, concatenates them). Protocols, per class (seeded; the pool
positions of every split are saved with a run):

- ``cifar10``: query 100, train 500, database the remaining 5,400 (1,000 / 5,000 / 54,000);
- ``cifar10-1``: query 100; database the other 5,900; train 500 of the database (1,000 / 59,000
  / 5,000);
- ``cifar10-2``: query 1,000; train = database = the other 5,000 (10,000 / 50,000 / 50,000).

Retrieval on CIFAR-10 is evaluated with mAP over the whole database (mAP@54,000 under ``cifar10``).
``query_per_class`` and ``train_per_class`` override the counts (for scaled-down copies).
"""

from __future__ import annotations

import functools
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

from learn2hash.datasets.base import Dataset, split_from_pool
from learn2hash.datasets.protocols import rng_for
from learn2hash.datasets.registry import DatasetInfo, dataset_folder, int_param, not_found, register
from learn2hash.errors import CorruptFileError, Learn2HashError

NAME = "cifar10"
CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PUBLISHED = "https://www.cs.toronto.edu/~kriz/cifar.html"
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
LAYOUT = ("data_batch_1.bin ... data_batch_5.bin and test_batch.bin (binary version), or data_batch_1 ... "
          "data_batch_5 and test_batch (python version), in the folder or its cifar-10-batches-bin/ or "
          "cifar-10-batches-py/ sub-folder")
RECORD = 1 + 3 * 32 * 32
#: per-class (query, train) counts of each protocol, as DeepHash-pytorch's utils/tools.py draws them
PROTOCOLS = {"cifar10": (100, 500), "cifar10-1": (100, 500), "cifar10-2": (1000, 5000)}


# --------------------------------------------------------------------------- python batches
class SafeUnpickler(pickle.Unpickler):
    """An unpickler that builds only builtin containers and values and numpy arrays.

    Any other global a pickle names (``os.system``, ``builtins.eval``, ...) is refused before
    it is looked up, so nothing from the file runs.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
    }

    def __init__(self, file, what: str):
        super().__init__(file, encoding="bytes")
        self.what = what

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise CorruptFileError(f"{self.what}: the pickle asks for {module}.{name}; a CIFAR python batch may "
                                   "hold only dicts, lists, strings, numbers and numpy arrays, so it was not loaded")
        if name == "_reconstruct":
            return _reconstruct()
        if module == "_codecs":
            import _codecs

            return _codecs.encode
        return getattr(np, name)

    def persistent_load(self, pid):
        raise CorruptFileError(f"{self.what}: the pickle refers to a persistent object; not loaded")


def _reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct as f  # numpy >= 2
    except ImportError:  # numpy 1.x
        from numpy.core.multiarray import _reconstruct as f
    return f


def safe_unpickle(data: bytes, what: str) -> Any:
    """Unpickle ``data`` with :class:`SafeUnpickler`; any malformed or refused pickle is a CorruptFileError."""
    try:
        return SafeUnpickler(io.BytesIO(data), what).load()
    except CorruptFileError:
        raise
    except Exception as exc:  # a malformed pickle can raise almost anything
        raise CorruptFileError(f"{what}: not a readable pickle ({type(exc).__name__}: {exc})") from None


def _key(d: dict, name: str) -> Any:
    for k in (name, name.encode()):
        if k in d:
            return d[k]
    return None


def read_python_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``uint8[n, 3, 32, 32]`` images and ``int64[n]`` labels of a python-version batch file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CorruptFileError(f"cannot read CIFAR batch {path}: {exc}") from None
    obj = safe_unpickle(data, f"CIFAR batch {path}")
    if not isinstance(obj, dict):
        raise CorruptFileError(f"CIFAR batch {path} holds a {type(obj).__name__}, expected a dict with data and labels")
    x, y = _key(obj, "data"), _key(obj, "labels")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise CorruptFileError(f"CIFAR batch {path}: 'data' must be a uint8 array [n, 3072], got "
                               f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}")
    if not isinstance(y, (list, np.ndarray)) or len(y) != len(x) or \
            not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in y):
        raise CorruptFileError(f"CIFAR batch {path}: 'labels' must be a list of {len(x)} integers")
    return x.reshape(-1, 3, 32, 32), _check_labels(np.asarray(y, dtype=np.int64), path)


def read_binary_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``uint8[n, 3, 32, 32]`` images and ``int64[n]`` labels of a binary-version batch file."""
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise CorruptFileError(f"cannot read CIFAR batch {path}: {exc}") from None
    if raw.size == 0 or raw.size % RECORD:
        raise CorruptFileError(f"CIFAR batch {path} has {raw.size} bytes, not a multiple of the {RECORD}-byte record")
    rec = raw.reshape(-1, RECORD)
    return rec[:, 1:].reshape(-1, 3, 32, 32).copy(), _check_labels(rec[:, 0].astype(np.int64), path)


def _check_labels(y: np.ndarray, path: Path) -> np.ndarray:
    if y.size and (y.min() < 0 or y.max() > 9):
        raise CorruptFileError(f"CIFAR batch {path}: labels must be 0..9, found {int(y.min())}..{int(y.max())}")
    return y


def find_batches(folder: Path | None) -> tuple[str, list[Path]] | None:
    """``("binary" | "python", [the six batch files])`` in ``folder`` or its archive sub-folder; None if absent."""
    if folder is None:
        return None
    for kind, sub, suffix in (("binary", "cifar-10-batches-bin", ".bin"), ("python", "cifar-10-batches-py", "")):
        for d in (folder, folder / sub):
            files = [d / (b + suffix) for b in BATCHES]
            if all(f.is_file() for f in files):
                return kind, files
    return None


@functools.lru_cache(maxsize=2)
def _read_pool(kind: str, files: tuple[Path, ...], stamps: tuple) -> tuple[np.ndarray, np.ndarray]:
    """The pool of ``files``; ``stamps`` (size and modification time of each) keys the cache."""
    read = read_binary_batch if kind == "binary" else read_python_batch
    parts = [read(f) for f in files]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def pool(path: Any = None) -> tuple[np.ndarray, np.ndarray, Path]:
    """The 60,000 images ``uint8[n, 3, 32, 32]`` (train batches, then the test batch), class ids, and the folder."""
    folder = dataset_folder(NAME, path)
    found = find_batches(folder)
    if found is None:
        problem = "the folder does not exist" if folder is not None and not folder.exists() else ""
        raise not_found(NAME, folder, LAYOUT, PUBLISHED, problem)
    kind, files = found
    stamps = tuple((f.stat().st_size, f.stat().st_mtime_ns) for f in files)
    images, labels = _read_pool(kind, tuple(files), stamps)
    return images, labels, files[0].parent


def protocol_indices(protocol: str, labels: np.ndarray, seed: int, query_per_class: int, train_per_class: int
                     ) -> dict[str, np.ndarray]:
    """Pool positions of the query, train and database splits (each sorted).

    Each class's positions are shuffled (seeded); the first ``query_per_class`` are queries, the
    next ``train_per_class`` training items, the rest database items, and the protocol then
    decides what the database is (see the module docstring).
    """
    rng = rng_for(seed, NAME, "split")
    query, train, rest = [], [], []
    for c in range(10):
        members = np.flatnonzero(labels == c)
        need = query_per_class + train_per_class
        if len(members) < need + (1 if protocol == "cifar10" else 0):
            raise Learn2HashError(f"{NAME} [{protocol}]: class {c} ({CLASS_NAMES[c]}) has {len(members)} images; "
                                  f"{query_per_class} query + {train_per_class} train"
                                  f"{' + at least 1 database' if protocol == 'cifar10' else ''} are needed")
        members = members[rng.permutation(len(members))]
        query.append(members[:query_per_class])
        train.append(members[query_per_class:need])
        rest.append(members[need:])
    q, t, r = (np.sort(np.concatenate(a)) for a in (query, train, rest))
    database = {"cifar10": r, "cifar10-1": np.union1d(t, r), "cifar10-2": t}[protocol]
    return {"query": q, "train": t, "database": database}


def build(protocol: str, seed: int, indices=None, path: Any = None, query_per_class: Any = None,
          train_per_class: Any = None) -> Dataset:
    images, labels, folder = pool(path)
    params: dict[str, Any] = {"path": str(folder)}
    if indices is None:
        q0, t0 = PROTOCOLS[protocol]
        qpc = q0 if query_per_class is None else int_param(NAME, "query_per_class", query_per_class, 1)
        tpc = t0 if train_per_class is None else int_param(NAME, "train_per_class", train_per_class, 1)
        params.update(query_per_class=qpc, train_per_class=tpc)
        indices = {s: ("all", p) for s, p in protocol_indices(protocol, labels, seed, qpc, tpc).items()}
    onehot = np.eye(10, dtype=bool)[labels]
    splits = {}
    for name, (source, positions) in indices.items():
        if source != "all":
            raise Learn2HashError(f"{NAME}: saved split {name!r} comes from pool {source!r}; expected 'all'")
        splits[name] = split_from_pool(images, onehot, positions, name, source, "image")
    return Dataset(NAME, protocol, seed, class_names=list(CLASS_NAMES), params=params, **splits)


register(DatasetInfo(
    name=NAME,
    label_preserving=("flip",),  # photographs and clothes stay what they are when mirrored
    description="CIFAR-10, 60,000 colour 32x32 images in 10 classes (binary or python batches)",
    protocols=tuple(PROTOCOLS),
    builder=build,
    present=lambda: find_batches(dataset_folder(NAME)) is not None,
    how_to_get=f"download the binary or python version from {PUBLISHED} and unpack it into $LEARN2HASH_DATA/{NAME}",
    location=lambda: str(dataset_folder(NAME) or ""),
    topk=None,
    published=PUBLISHED,
    layout=LAYOUT,
    params={"path": f"the folder holding the batches (default $LEARN2HASH_DATA/{NAME})",
            "query_per_class": "query images per class (default: 100, or 1,000 under cifar10-2)",
            "train_per_class": "training images per class (default: 500, or 5,000 under cifar10-2)"},
))
