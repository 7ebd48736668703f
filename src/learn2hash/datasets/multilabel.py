"""``fashion-mnist-multilabel``: canvases of 2x2 Fashion-MNIST cells with multi-hot labels.

A canvas is ``uint8[1, 56, 56]``: four 28x28 cells, of which 1 to 3 (uniformly) hold a
Fashion-MNIST image and the others stay black; its labels are the set of the classes shown.
A canvas is a pure function of (seed, stream, canvas id) (:func:`canvas_layout`), drawn with
:func:`~learn2hash.datasets.protocols.counter_uniform`: the ``test`` stream takes its items from
the 10,000 test images only, the ``train`` stream from the 60,000 train images only. A split
records its stream as ``source`` and its canvas ids as ``indices``, so saved splits rebuild the
very same canvases.

Protocol ``standard`` (sizes are parameters):
- query: canvases ``0 .. query_size-1`` (default 1,000) of the test stream;
- database: canvases ``0 .. database_size-1`` (default 20,000) of the train stream;
- train: canvases ``0 .. train_size-1`` (default 5,000) of the train stream, so, as in the
  ``standard`` protocol of ``fashion-mnist``, the training items are part of the database.

Retrieval on it is evaluated with mAP@:data:`DEFAULT_TOPK`, as the multi-label papers do.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from learn2hash.datasets import fashion_mnist
from learn2hash.datasets.base import Dataset, Split
from learn2hash.datasets.protocols import counter_integers, counter_uniform
from learn2hash.datasets.registry import DatasetInfo, register

NAME = "fashion-mnist-multilabel"
DEFAULT_TOPK = 5000
DEFAULT_SIZES = {"query": 1000, "train": 5000, "database": 20000}
CELL = 28
GRID = 2
MAX_ITEMS = 3


def canvas_layout(seed: int, stream: str, ids: np.ndarray, pool_size: int) -> np.ndarray:
    """``int64[n, 4]``: the pool position of the item in each cell (row-major), ``-1`` for an empty cell.

    Canvas ``id`` holds ``k ~ U{1..3}`` items in the ``k`` cells of smallest random key, each item
    drawn uniformly from the pool; every draw depends only on (seed, stream, id).
    """
    ids = np.asarray(ids, dtype=np.int64)
    cells = GRID * GRID
    k = 1 + counter_integers(seed, ids, MAX_ITEMS, "mlcanvas", stream, "count")
    keys = np.stack([counter_uniform(seed, ids, "mlcanvas", stream, f"cell{j}") for j in range(cells)], axis=1)
    rank = np.argsort(np.argsort(keys, axis=1), axis=1)
    items = np.stack([counter_integers(seed, ids, pool_size, "mlcanvas", stream, f"item{j}") for j in range(cells)],
                     axis=1)
    return np.where(rank < k[:, None], items, -1)


def render_canvases(layout: np.ndarray, images: np.ndarray) -> np.ndarray:
    """``uint8[n, 1, 56, 56]`` canvases of a layout; ``images`` is the ``uint8[m, 1, 28, 28]`` pool."""
    out = np.zeros((len(layout), 1, GRID * CELL, GRID * CELL), dtype=np.uint8)
    for j in range(GRID * GRID):
        r, c = divmod(j, GRID)
        filled = layout[:, j] >= 0
        out[filled, :, r * CELL:(r + 1) * CELL, c * CELL:(c + 1) * CELL] = images[layout[filled, j]]
    return out


def canvas_labels(layout: np.ndarray, class_ids: np.ndarray, n_classes: int = 10) -> np.ndarray:
    """``bool[n, n_classes]``: the set of the classes of the items on each canvas."""
    out = np.zeros((len(layout), n_classes), dtype=bool)
    rows, cells = np.nonzero(layout >= 0)
    out[rows, class_ids[layout[rows, cells]]] = True
    return out


def build(protocol: str, seed: int, indices=None, query_size: Any = None, train_size: Any = None,
          database_size: Any = None) -> Dataset:
    def make_split(name, stream, ids, images, class_ids):
        layout = canvas_layout(seed, stream, ids, len(images))
        return Split(x=render_canvases(layout, images), labels=canvas_labels(layout, class_ids),
                     name=name, kind="image", source=stream, indices=ids)

    given = {"query": query_size, "train": train_size, "database": database_size}
    splits = fashion_mnist.derived_splits(NAME, "canvas", DEFAULT_SIZES, indices, given, make_split)
    params = {f"{s}_size": len(splits[s]) for s in ("train", "query", "database")}
    return Dataset(NAME, protocol, seed, class_names=list(fashion_mnist.CLASS_NAMES), params=params, **splits)


register(DatasetInfo(
    name=NAME,
    # clothes stay what they are when mirrored; the canvas's items are 28-pixel Fashion-MNIST images,
    # so they shift as Fashion-MNIST does (2 pixels), not by 1/14 of the 56-pixel canvas
    label_preserving=("flip", "shift:2"),
    description="56x56 canvases of 2x2 cells holding 1-3 Fashion-MNIST items; multi-hot labels (mAP@5000)",
    protocols=("standard",),
    builder=build,
    topk=DEFAULT_TOPK,
    **fashion_mnist.generated_from(),
    params={f"{s}_size": f"number of {s} canvases (default {n:,})" for s, n in DEFAULT_SIZES.items()},
))
