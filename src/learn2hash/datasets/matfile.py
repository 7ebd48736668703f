"""MATLAB ``.mat`` files as the cross-modal benchmarks are distributed: variables of any rank.

Two formats: v5 (read with scipy) and v7.3 (HDF5, read with h5py). HDF5 stores a MATLAB array
with its axes reversed (MATLAB is column-major): a MATLAB ``n x d`` matrix is an HDF5 ``d x n``
dataset, and the MATLAB image stack ``224 x 224 x 3 x 20015`` (height, width, channel, item) is
an HDF5 ``20015 x 3 x 224 x 224`` dataset. Everything here speaks of the MATLAB view (the
axes as MATLAB shows them); v7.3 arrays are reversed back when read.

Items of a variable lie along the axis whose length is the number of items (the labels' rows):

- a matrix (rank 2) holds one item per row: features ``float32[n, d]`` (images as vectors,
  tags or bag-of-words, CNN features);
- rank 3 or 4 is an image array: the item axis is the first axis of length ``n`` if there is
  one, else the last; of the other axes, the channel axis is the last one if its length is 1 or
  3 (MATLAB's ``H x W x C``), else the first one if so (``C x H x W``); rank 3 is grayscale.
  Images come out ``[n, C, H, W]`` (``uint8`` stays ``uint8``). ``image_axes`` overrides the
  guess: the letters N, C, H, W (N, H, W for rank 3) in the order of the MATLAB view, e.g.
  ``"HWCN"`` or ``"NCHW"``.

Large v7.3 image arrays are not read into memory: :class:`MatImages` reads the items it is
indexed with.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from learn2hash.datasets.base import LazyArray
from learn2hash.errors import CorruptFileError, Learn2HashError

HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def is_hdf5(path: Path) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(520)
    return head[512:520] == HDF5_MAGIC or head[:8] == HDF5_MAGIC


def list_variables(path: Path) -> list[str]:
    """The variable names a .mat file holds."""
    try:
        if is_hdf5(path):
            import h5py

            with h5py.File(path, "r") as f:
                return sorted(k for k in f if not k.startswith("#"))
        import scipy.io

        return sorted(w[0] for w in scipy.io.whosmat(path))
    except Exception as exc:  # a damaged file fails in the parsers with many exception types
        raise _unreadable(path, exc) from None


def _unreadable(path: Path, exc: BaseException) -> CorruptFileError:
    detail = " ".join(str(exc).split())[:200] or type(exc).__name__
    return CorruptFileError(f"{path} cannot be read as a MATLAB .mat file (truncated or damaged?): "
                            f"{type(exc).__name__}: {detail}")


class H5Variable:
    """A numeric v7.3 variable not yet read: its MATLAB-view shape and dtype."""

    def __init__(self, path: Path, name: str, h5_shape: tuple[int, ...], dtype: np.dtype):
        self.path, self.name = path, name
        self.shape = tuple(reversed(h5_shape))
        self.dtype = np.dtype(dtype)
        self.ndim = len(self.shape)

    def read(self) -> np.ndarray:
        import h5py

        with h5py.File(self.path, "r") as f:
            return f[self.name][()].T

    def take(self, axis: int, positions: np.ndarray) -> np.ndarray:
        """Items ``positions`` (any order, repeats allowed) along MATLAB axis ``axis``, in the MATLAB view."""
        import h5py

        uniq, inverse = np.unique(positions, return_inverse=True)
        h5_axis = self.ndim - 1 - axis
        with h5py.File(self.path, "r") as f:
            d = f[self.name]
            key = (slice(None),) * h5_axis + (uniq,)
            block = d[key] if len(uniq) else np.zeros(tuple(0 if i == h5_axis else s for i, s in enumerate(d.shape)),
                                                        dtype=d.dtype)
        return np.take(block.T, inverse, axis=axis)


def read_variables(path: Path, names: set[str], lazy: bool = True) -> dict[str, Any]:
    """``{name: array}`` in the MATLAB view; with ``lazy``, v7.3 arrays of rank >= 3 stay :class:`H5Variable`."""
    try:
        return _read_v73(path, names, lazy) if is_hdf5(path) else _read_v5(path, names)
    except Learn2HashError:
        raise
    except Exception as exc:  # a damaged file fails in the parsers with many exception types
        raise _unreadable(path, exc) from None


def _read_v73(path: Path, names: set[str], lazy: bool) -> dict[str, Any]:
    import h5py
    import scipy.sparse as sp

    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        for name in names:
            if name not in f:
                raise Learn2HashError(f"{path}: no variable {name!r}; it holds "
                                      f"{', '.join(sorted(k for k in f if not k.startswith('#')))}")
            obj = f[name]
            if isinstance(obj, h5py.Group):
                if "MATLAB_sparse" not in obj.attrs or not {"data", "ir", "jc"} <= set(obj):
                    raise Learn2HashError(f"{path}: variable {name!r} is a MATLAB struct or cell, not a numeric array")
                jc = obj["jc"][()]
                rows = int(obj.attrs["MATLAB_sparse"])
                out[name] = sp.csc_matrix((obj["data"][()], obj["ir"][()], jc), shape=(rows, len(jc) - 1)).toarray()
                continue
            if not np.issubdtype(obj.dtype, np.number) and obj.dtype != bool:
                raise Learn2HashError(f"{path}: variable {name!r} is not numeric (dtype {obj.dtype})")
            if lazy and obj.ndim >= 3:
                out[name] = H5Variable(path, name, obj.shape, obj.dtype)
            else:
                out[name] = obj[()].T  # HDF5 holds MATLAB's column-major arrays with the axes reversed
    return out


def _read_v5(path: Path, names: set[str]) -> dict[str, np.ndarray]:
    import scipy.io
    import scipy.sparse as sp

    try:
        data = scipy.io.loadmat(path, variable_names=sorted(names))
    except Exception as exc:  # a damaged file fails in the parsers with many exception types
        raise _unreadable(path, exc) from None
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


# --------------------------------------------------------------------------- image arrays
def image_axes_order(shape: tuple[int, ...], n: int, image_axes: str | None, what: str) -> list[int]:
    """MATLAB-view axes in the order (item, channel, height, width) (rank 3: item, height, width)."""
    r = len(shape)
    if image_axes:
        letters = str(image_axes).upper()
        want = "NCHW" if r == 4 else "NHW"
        if sorted(letters) != sorted(want):
            raise Learn2HashError(f"{what}: image_axes must order the letters {want} for a rank-{r} array, "
                                  f"got {image_axes!r}")
        order = [letters.index(c) for c in want]
        if n is not None and shape[order[0]] != n:
            raise Learn2HashError(f"{what}: image_axes {image_axes!r} puts the items on an axis of length "
                                  f"{shape[order[0]]}; the labels have {n} rows")
        return order
    candidates = [k for k in range(r) if shape[k] == n]
    if not candidates:
        raise Learn2HashError(f"{what} has shape {list(shape)} (MATLAB view); none of its axes has the {n} items "
                              "of the labels")
    item = 0 if 0 in candidates else (r - 1 if r - 1 in candidates else candidates[0])
    rest = [k for k in range(r) if k != item]
    if r == 3:
        return [item] + rest
    if shape[rest[-1]] in (1, 3):
        channel = rest[-1]
    elif shape[rest[0]] in (1, 3):
        channel = rest[0]
    else:
        raise Learn2HashError(f"{what} has shape {list(shape)} (MATLAB view) and no channel axis of length 1 or 3; "
                              "give image_axes (e.g. HWCN)")
    return [item, channel] + [k for k in rest if k != channel]


def _to_items(block: np.ndarray, order: list[int]) -> np.ndarray:
    out = np.transpose(block, order)
    if out.ndim == 3:
        out = out[:, None]
    return np.ascontiguousarray(out if out.dtype == np.uint8 else out.astype(np.float32))


class MatImages(LazyArray):
    """A v7.3 image array as ``[n, C, H, W]``, read from the file when indexed."""

    chunk = 64

    def __init__(self, var: H5Variable, order: list[int], what: str):
        shape = [var.shape[k] for k in order]
        item_shape = tuple(shape[1:]) if len(order) == 4 else (1,) + tuple(shape[1:])
        super().__init__(shape[0], item_shape, np.uint8 if var.dtype == np.uint8 else np.float32, what)
        self.var, self.order = var, order

    def _load(self, positions: np.ndarray) -> np.ndarray:
        # the block keeps the MATLAB view's axes; its item axis holds the chosen items in order
        return _to_items(self.var.take(self.order[0], positions), self.order)


class ConcatRows(LazyArray):
    """Items of several array-likes of one item shape, one after another."""

    def __init__(self, parts: list[Any], what: str):
        shapes = {tuple(p.shape[1:]) for p in parts}
        if len(shapes) != 1:
            raise Learn2HashError(f"{what}: parts of different item shapes {sorted(shapes)}")
        super().__init__(sum(len(p) for p in parts), shapes.pop(), parts[0].dtype, what)
        self.parts = parts
        self.offsets = np.cumsum([0] + [len(p) for p in parts])

    def _load(self, positions: np.ndarray) -> np.ndarray:
        out = np.empty((len(positions),) + self.item_shape, dtype=self.dtype)
        part = np.searchsorted(self.offsets, positions, side="right") - 1
        for j, p in enumerate(self.parts):
            mask = part == j
            if mask.any():
                out[mask] = np.asarray(p[positions[mask] - self.offsets[j]])
        return out


def as_items(a: Any, n: int, role: str, what: str, image_axes: str | None = None) -> Any:
    """A variable as items: features ``float32[n, d]``, or images ``[n, C, H, W]`` (lazy for v7.3)."""
    shape = tuple(a.shape)
    if len(shape) == 1:
        raise Learn2HashError(f"{what} ({role}) is a vector; expected a matrix [items, features] or images")
    if len(shape) == 2:  # the caller checks the number of rows against the labels
        x = np.asarray(a, dtype=np.float32)
        if not np.all(np.isfinite(x)):
            raise Learn2HashError(f"{what} ({role}) contains NaN or infinite values")
        return x
    if len(shape) > 4:
        raise Learn2HashError(f"{what} ({role}) has shape {list(shape)}; expected a matrix [items, features] "
                              "or an image array of rank 3 or 4")
    if n is None and not image_axes:
        raise Learn2HashError(f"{what} ({role}) is an image array joined with others by '+': join the labels the "
                              "same way (labels=L_a+L_b) or give image_axes, so that its item axis is known")
    order = image_axes_order(shape, n, image_axes, f"{what} ({role})")
    if isinstance(a, H5Variable):
        return MatImages(a, order, what)
    return _to_items(np.asarray(a), order)


def mat_files(path: str | os.PathLike) -> list[Path]:
    """``path`` itself when it is a file, else the .mat files in the folder ``path`` (sorted)."""
    p = Path(path).expanduser()
    if p.is_file():
        return [p.resolve()]
    if p.is_dir():
        return sorted(f.resolve() for f in p.glob("*.mat") if f.is_file())
    raise Learn2HashError(f"mat file {str(p)!r} does not exist")


def variable_files(files: list[Path]) -> dict[str, Path]:
    """Which file holds each variable; a name held by two files is ambiguous and refused."""
    where: dict[str, Path] = {}
    for f in files:
        for name in list_variables(f):
            if name in where:
                raise Learn2HashError(f"variable {name!r} is in both {where[name]} and {f}; give path= one file")
            where[name] = f
    return where
