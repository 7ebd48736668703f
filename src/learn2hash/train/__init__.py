"""The one training loop every deep hashing method uses (a package: one module per concern).

:func:`train` optimises a network (normally a :class:`learn2hash.nn.HashModel`) on a training set
``(x, labels)`` with a loss supplied by a :class:`TrainTask` — in practice the
:class:`learn2hash.methods.deep.TrainingTask` a :class:`~learn2hash.methods.deep.DeepHasher` makes
for each fit, which calls the hasher's hooks. It provides:

- mini-batches drawn by a :class:`torch.utils.data.DistributedSampler` (one replica when not
  distributed) seeded by ``seed`` and the epoch, so the batch order does not depend on anything
  else, and fed by a :class:`torch.utils.data.DataLoader` over :class:`ItemDataset`: array items
  by indexing, image files (the image-list / image-folder readers) decoded and transformed by
  :mod:`learn2hash.images` in ``workers`` processes (random-resized crop and flip for training,
  the random numbers a function of the seed, the epoch and the item only, so any number of
  workers gives the same batches), ``uint8`` in channels-last memory, pinned on CUDA; a bad
  image stops the run naming its path, or with ``on_bad_image="skip"`` is left out and counted;
- optional augmentation of array batches on the device (:mod:`learn2hash.nn.augment`); mixed
  precision (``amp``: bf16/fp16 autocast, :func:`amp_dtype`); optimizer (adam, adamw, sgd,
  rmsprop) over two parameter groups, the head at ``lr`` and the backbone at ``lr *
  backbone_lr_mult`` (frozen parameters in neither; a frozen part of a backbone stays in eval mode,
  see :meth:`learn2hash.nn.Backbone.freeze`), and a per-step learning-rate schedule (none, cosine
  with optional linear warm-up, step);
- a tqdm progress bar with the running loss (shown when stderr is a terminal, or as asked);
- a checkpoint after every epoch (``checkpoint_dir/checkpoint.pt``, written atomically) holding
  the model, optimizer, scheduler, torch RNG states, the epoch, the history, the task's own state
  and a fingerprint of the configuration and data; ``resume=True`` continues from it and refuses a
  checkpoint from a different configuration. A run interrupted after epoch e and resumed ends
  with the same weights, bit for bit, as an uninterrupted run (single process, CPU);
- ``torch.distributed`` data parallelism when launched by ``torchrun`` (``WORLD_SIZE`` > 1):
  gloo on CPU, nccl on GPU, the model wrapped in DistributedDataParallel, each process a shard of
  every epoch (``batch_size`` is the global batch); only rank 0 writes checkpoints and shows
  progress. Every process ends with the same weights.

The modules: :mod:`~learn2hash.train.config` (:class:`TrainConfig`, the one declaration of the
loop's settings and their constraints; :class:`Batch`; :class:`TrainTask`),
:mod:`~learn2hash.train.distributed` (ranks, devices, the process group),
:mod:`~learn2hash.train.checkpoint` (fingerprint, checkpoint files), :mod:`~learn2hash.train.data`
(:class:`ItemDataset`, the loader), :mod:`~learn2hash.train.optim` (optimizer, schedule, mixed
precision), :mod:`~learn2hash.train.loop` (:func:`train`) and :mod:`~learn2hash.train.encode`
(:func:`encode_batches`, :func:`encode_items`). Their public names are importable from here too;
they load on first use, so that importing ``learn2hash.train.distributed`` (the run folders ask
:func:`is_main_process`) does not import torch.

How a method supplies its loss (the :class:`TrainTask` protocol)::

    loss(u, batch) -> (loss_tensor, {"part": float or tensor, ...})
        u: continuous codes [b, K] in (-1, 1) (u = tanh(batch.logits)); batch: a :class:`Batch`
        with x, labels (bool [b, c]), index (positions of the items in the training set, for
        memory banks and per-item targets), epoch, step and logits. The parts are logged.
    on_epoch_start(epoch, model)   before each epoch (0-based), e.g. HashNet's beta schedule
                                   (set ``model.scale``); called again for the epochs after a resume.
    on_epoch_end(epoch, model)     after the epoch's gradient steps, before the checkpoint, e.g.
                                   EDDH's discrete B and A steps (use ``encode_batches`` here).
    extra_state() -> dict          tensors/numbers the task needs after a resume (memory banks,
                                   discrete codes); stored in the checkpoint ...
    load_extra_state(state)        ... and given back on resume.
"""

from __future__ import annotations

import importlib
from typing import Any

#: the module of every name this package exports
_EXPORTS = {
    "config": ("AMP_MODES", "BAD_IMAGE_POLICIES", "Batch", "OPTIMIZERS", "RUNTIME_SETTINGS", "SCHEDULES",
               "TRAINING_BAD_IMAGE_POLICIES", "TrainConfig", "TrainTask", "batches_per_epoch", "constraints",
               "training_parameters"),
    "distributed": ("DistInfo", "destroy_distributed", "dist_info", "init_distributed", "is_main_process",
                    "resolve_device"),
    "checkpoint": ("CHECKPOINT_FORMAT", "CHECKPOINT_NAME", "CHECKPOINT_VERSION", "fingerprint", "load_checkpoint",
                   "save_checkpoint"),
    "data": ("ItemDataset", "default_workers", "make_loader", "read_items", "unpack_batch"),
    "optim": ("amp_dtype", "lr_factor", "make_optimizer", "param_groups"),
    "loop": ("train",),
    "encode": ("FILE_ENCODE_BATCH", "encode_batches", "encode_items"),
}
_WHERE = {name: (module, name) for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(n for n in _WHERE if not n.startswith("_"))


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attr = _WHERE[name]
    value = getattr(importlib.import_module(f"{__name__}.{module}"), attr)
    globals()[name] = value  # found here from now on (and replaceable, as by a test's monkeypatch)
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
