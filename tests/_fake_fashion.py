"""Tiny Fashion-MNIST look-alikes in IDX format, for tests that must not need the real files.

Every image is random and nonzero, with all pixels EVEN in the train pool and ODD in the test
pool, so the pool an image came from can be read off its pixels (also after max-blending
several images of one pool together).
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray, gz: bool = True) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(data)
    else:
        Path(path).write_bytes(data)


def fake_pools(n_train: int, n_test: int, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{"train"|"test": (uint8[n, 28, 28], int64[n])}``; classes cycle 0..9."""
    rng = np.random.default_rng(seed)
    out = {}
    for part, n, parity in (("train", n_train, 0), ("test", n_test, 1)):
        images = (rng.integers(1, 128, size=(n, 28, 28)) * 2 - parity).astype(np.uint8)
        out[part] = (images, np.arange(n) % 10)
    return out


def write_fake_fashion(folder: Path, n_train: int = 60, n_test: int = 30, gz: bool = True
                       ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    pools = fake_pools(n_train, n_test)
    for part, prefix in (("train", "train"), ("test", "t10k")):
        images, labels = pools[part]
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images, gz)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels.astype(np.uint8), gz)
    return pools
