"""Feeding batches: the items of a split as a dataset (arrays indexed, image files decoded in
DataLoader workers), the loader over it, and how a loaded batch reaches the device."""

from __future__ import annotations

import os
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from learn2hash import images as _images
from learn2hash.errors import CorruptFileError, Learn2HashError
from learn2hash.methods.validation import Options, validate_params
from learn2hash.nn.inputs import as_input_tensor
from learn2hash.train.config import BAD_IMAGE_POLICIES


def default_workers(x: Any) -> int:
    """Worker processes when none are asked for: 0 for arrays (indexing is cheaper than a process),
    for image files one per CPU core up to 8."""
    if _images.image_paths(x) is None:
        return 0
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


class ItemDataset(torch.utils.data.Dataset):
    """The items ``x`` of a split as a map-style dataset that a DataLoader fetches a batch at a time.

    Keys are ``(epoch, position)`` pairs. Arrays (numpy, or lazily read array-likes) are indexed;
    image files (:func:`learn2hash.images.image_paths`) are decoded and transformed to ``geometry``:
    with ``train=True`` a random-resized crop (and a flip when ``flip``) drawn from
    :func:`learn2hash.images.item_rng` ``(seed, epoch, position)`` (``crop="resize-crop"``: the
    reference code's resize + random crop, :func:`learn2hash.images.resize_crop_image`), else the
    encode transform. A batch
    is a dict: ``index`` (positions kept), ``x`` (items; images ``uint8[n, C, H, W]`` in channels-last
    memory), ``skipped`` ((position, path, message) of bad images left out under
    ``on_bad_image="skip"``, or kept as a blank (all-zero) image under ``"blank"``, which keeps an
    encoded split aligned with its labels; :data:`~learn2hash.train.config.BAD_IMAGE_POLICIES`, checked
    here) and ``error`` (the message that stops the run, raised by the caller: an exception inside a
    worker would reach the user wrapped in a traceback).
    """

    def __init__(self, x: Any, geometry: "_images.Geometry | None" = None, train: bool = False, seed: int = 0,
                 flip: bool = False, on_bad_image: str = "error", crop: str = "random-resized"):
        validate_params("items", {"on_bad_image": [Options(BAD_IMAGE_POLICIES)]}, {"on_bad_image": on_bad_image})
        self.paths = _images.image_paths(x)
        if self.paths is not None and geometry is None:
            c, h, w = (int(s) for s in np.shape(x)[1:])
            geometry = _images.Geometry((h, w), c)
        self.geometry = geometry
        self.x = x
        # a writable array with non-negative strides is indexed as a tensor (one gather, no copy)
        self.store = (torch.from_numpy(x) if isinstance(x, np.ndarray) and x.flags.writeable
                      and all(st >= 0 for st in x.strides) else None)
        self.train = bool(train)
        self.seed = int(seed)
        self.flip = bool(flip)
        self.on_bad_image = on_bad_image
        #: training crops of image files: "random-resized" or "resize-crop" (the augmentation ``crop``)
        self.crop = crop

    def __len__(self) -> int:
        return len(self.paths) if self.paths is not None else len(self.x)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        return self.__getitems__([key])

    def __getitems__(self, keys: list[tuple[int, int]]) -> dict[str, Any]:
        if self.paths is None:
            return self._array_batch([int(k[1]) for k in keys])
        return self._image_batch(keys)

    def _array_batch(self, positions: list[int]) -> dict[str, Any]:
        index = torch.as_tensor(positions, dtype=torch.int64)
        if self.store is not None:
            xb = self.store[index]
        else:
            pos = np.asarray(positions, dtype=np.int64)
            if len(pos) and np.array_equal(pos, np.arange(pos[0], pos[0] + len(pos))):
                part = self.x[int(pos[0]):int(pos[0]) + len(pos)]  # a slice: a view of an array
            else:
                part = self.x[pos]
            a = np.ascontiguousarray(np.asarray(part))
            xb = torch.from_numpy(a if a.flags.writeable else a.copy())  # torch warns on read-only arrays
        return {"index": index, "x": xb, "skipped": [], "error": None}

    def _decode(self, epoch: int, pos: int) -> np.ndarray:
        """The image at ``pos`` as ``uint8[C, H, W]``, with the training transform of ``epoch`` or the encode transform."""
        path = self.paths[int(pos)]
        if self.train and self.crop == "resize-crop":
            return _images.resize_crop_image(path, self.geometry, _images.item_generator(self.seed, epoch, pos),
                                             self.flip)
        if self.train:
            return _images.train_image(path, self.geometry, _images.item_rng(self.seed, epoch, pos), self.flip)
        return _images.encode_image(path, self.geometry)

    def _image_batch(self, keys: list[tuple[int, int]]) -> dict[str, Any]:
        c, (h, w) = self.geometry.channels, self.geometry.size
        out = np.empty((len(keys), h, w, c), dtype=np.uint8)
        kept: list[int] = []
        skipped: list[tuple[int, str, str]] = []
        for epoch, pos in keys:
            try:
                a = self._decode(epoch, pos)
            except Learn2HashError as exc:
                if self.on_bad_image == "error":
                    index = torch.as_tensor([int(k[1]) for k in keys], dtype=torch.int64)
                    return {"index": index[:0], "x": None, "skipped": skipped, "error": (type(exc).__name__, str(exc))}
                skipped.append((int(pos), str(self.paths[int(pos)]), str(exc)))
                if self.on_bad_image == "skip":
                    continue
                a = np.zeros((c, h, w), dtype=np.uint8)
            out[len(kept)] = a.transpose(1, 2, 0)
            kept.append(int(pos))
        xb = torch.from_numpy(out[:len(kept)]).permute(0, 3, 1, 2)  # [n, C, H, W], channels-last memory
        return {"index": torch.as_tensor(kept, dtype=torch.int64), "x": xb, "skipped": skipped, "error": None}


class _Batches:
    """A DataLoader's batch sampler holding the batches of the current pass (set before each pass)."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, int]]] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _collate(batch: dict[str, Any]) -> dict[str, Any]:
    return batch  # ItemDataset.__getitems__ gives the whole batch


def _worker_init(worker_id: int) -> None:
    # decoding is the work here; one thread per worker keeps the cores for the workers and the model
    torch.set_num_threads(1)
    seed = torch.utils.data.get_worker_info().seed % 2 ** 32  # from the loader's seeded generator
    np.random.seed(seed)
    import random

    random.seed(seed)


def make_loader(dataset: ItemDataset, workers: int, device: torch.device, seed: int, persistent: bool = False
                ) -> tuple[torch.utils.data.DataLoader, _Batches]:
    """A DataLoader over ``dataset`` fed by the returned batch holder (set ``.batches`` before each pass)."""
    from torch.utils.data import DataLoader

    batches = _Batches()
    workers = int(workers)
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=_collate,
                        pin_memory=device.type == "cuda", persistent_workers=persistent and workers > 0,
                        worker_init_fn=_worker_init if workers else None, prefetch_factor=2 if workers else None,
                        # the loader's own generator: creating an iterator leaves the global RNG alone
                        generator=torch.Generator().manual_seed(int(seed)))
    return loader, batches


def unpack_batch(batch: dict[str, Any], device: torch.device, what: str
                 ) -> tuple[torch.Tensor, torch.Tensor | None, list[tuple[int, str, str]]]:
    """``(positions, items as float on device or None when all were skipped, skipped)`` of a loader batch;
    raises the error a worker reported."""
    if batch["error"] is not None:
        kind, message = batch["error"]
        raise (CorruptFileError if kind == "CorruptFileError" else Learn2HashError)(message)
    if len(batch["index"]) == 0:
        return batch["index"], None, batch["skipped"]
    xb = as_input_tensor(batch["x"], device, what)
    if xb.ndim == 4:
        xb = xb.contiguous(memory_format=torch.channels_last)
    return batch["index"], xb, batch["skipped"]


def input_geometry(model: nn.Module, x: Any, item_shape: tuple[int, ...] | None) -> "_images.Geometry | None":
    """The geometry image files are decoded to for ``model`` (None for arrays)."""
    if _images.image_paths(x) is None:
        return None
    spec = getattr(getattr(model, "backbone", model), "input_spec", None)
    return _images.geometry(spec, tuple(item_shape or np.shape(x)[1:]))


def read_items(model: nn.Module, x: Any, positions: Sequence[int], device: torch.device) -> torch.Tensor | None:
    """The items of ``x`` at ``positions`` as one input batch on ``device`` (image files decoded to
    ``model``'s geometry with the encode transform, unreadable ones left out); None if none is readable."""
    items = ItemDataset(x, input_geometry(model, x, None), on_bad_image="skip")
    return unpack_batch(items.__getitems__([(0, int(p)) for p in positions]), device, "input")[1]
