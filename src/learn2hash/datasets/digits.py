"""scikit-learn's bundled handwritten digits: 1,797 images of 8x8 in 10 classes.

Always present (it ships with scikit-learn), small and quick: the dataset of the unit tests.

Protocol ``standard`` (seeded): query = 100 images (10 per class); database = the other 1,697;
train = 500 of the database (50 per class).
"""

from __future__ import annotations

import functools

import numpy as np

from learn2hash.datasets.base import Dataset, split_from_pool
from learn2hash.datasets.protocols import per_class_sample, rng_for
from learn2hash.datasets.registry import DatasetInfo, register


@functools.lru_cache(maxsize=1)
def pool() -> tuple[np.ndarray, np.ndarray]:
    """``uint8[1797, 1, 8, 8]`` images (0..255) and ``int64`` class ids."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.clip(np.round(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)[:, None]
    images.setflags(write=False)
    return images, d.target.astype(np.int64)


def build(protocol: str, seed: int, indices=None) -> Dataset:
    images, labels = pool()
    if indices is None:
        query = per_class_sample(labels, 10, rng_for(seed, "query"), what="query")
        database = np.setdiff1d(np.arange(len(labels)), query)
        train = per_class_sample(labels, 50, rng_for(seed, "train"), exclude=query, what="train")
        indices = {"train": ("all", train), "query": ("all", query), "database": ("all", database)}
    onehot = np.eye(10, dtype=bool)[labels]
    splits = {name: split_from_pool(images, onehot, pos, name, src, "image") for name, (src, pos) in indices.items()}
    return Dataset("digits", protocol, seed, class_names=[str(i) for i in range(10)], **splits)


register(DatasetInfo(
    name="digits",
    description="scikit-learn's bundled 8x8 handwritten digits, 1,797 images in 10 classes",
    protocols=("standard",),
    builder=build,
    topk=100,
    location=lambda: "bundled with scikit-learn",
))
