"""Atomic writes: write to a temporary file in the same folder, fsync, rename over the target.

A reader sees either the old file or the new one, never a half-written one, and a failure leaves
the target untouched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry (the rename) to disk; a no-op where the OS does not allow it."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on clean exit fsync it and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` (never pickled), atomically."""
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise TypeError(f"refusing to save an object array to {path}: only plain dtypes are stored")
    with atomic_open(path, "wb") as fh:
        np.save(fh, array, allow_pickle=False)


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Read a ``.npy`` written by :func:`save_npy`; pickled content is refused.

    A damaged file raises ``ValueError`` (numpy's header parser fails with many exception types,
    ``SyntaxError`` and ``tokenize.TokenError`` among them); a missing file raises ``OSError``.
    """
    try:
        return np.load(os.fspath(path), allow_pickle=False, mmap_mode="r" if mmap else None)
    except OSError:
        raise
    except Exception as exc:
        raise ValueError(f"{path} is not a readable .npy file: {type(exc).__name__}: {exc}") from None


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default) + "\n"
    with atomic_open(path, "w") as fh:
        fh.write(text)


def load_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()
