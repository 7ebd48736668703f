"""The one training loop every deep hashing method uses.

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

import hashlib
import json
import logging
import math
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

import numpy as np
import torch
from torch import nn

from learn2hash import _atomic
from learn2hash import images as _images
from learn2hash.errors import CorruptFileError, Learn2HashError
from learn2hash.nn import augment as _augment
from learn2hash.nn.inputs import as_input_tensor

log = logging.getLogger("learn2hash.train")

CHECKPOINT_FORMAT = "learn2hash-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("none", "cosine", "step")
AMP_MODES = ("auto", "off", "bf16", "fp16")
BAD_IMAGE_POLICIES = ("error", "skip")
#: settings that do not change what is learned: left out of the resume fingerprint
RUNTIME_SETTINGS = ("device", "workers", "amp", "on_bad_image")
#: most image files per encoding batch (a 224 px batch of 128 is 19 MB of uint8)
FILE_ENCODE_BATCH = 128


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps of one epoch over ``n`` items in batches of ``batch_size`` (per process): a
    last batch of fewer than 2 items, too small to train BatchNorm, is dropped unless it is the only one."""
    return max(1, n // batch_size if n % batch_size < 2 else n // batch_size + 1)


@dataclass
class TrainConfig:
    """Hyper-parameters of the training loop (everything here enters the resume fingerprint)."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    #: "none", "cosine" (per step, to 0, after ``warmup_epochs`` of linear warm-up) or "step"
    #: (multiply by ``gamma`` every ``step_epochs`` epochs)
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    step_epochs: int = 10
    gamma: float = 0.1
    #: augmentation spec, see :mod:`learn2hash.nn.augment` ("none", "flip,shift", ...)
    augment: str = "none"
    grad_clip: float | None = None
    #: the backbone's parameters learn at ``lr * backbone_lr_mult`` (0: not updated), the rest at ``lr``
    backbone_lr_mult: float = 1.0
    seed: int = 0
    #: "auto" (cuda when available), "cpu", "cuda", "cuda:1" ...
    device: str = "auto"
    #: DataLoader worker processes (None: 0 for arrays, :func:`default_workers` for image files)
    workers: int | None = None
    #: mixed precision: "auto" (bf16, or fp16 where the GPU lacks bf16, on CUDA; off on CPU), "off",
    #: "bf16" or "fp16"
    amp: str = "auto"
    #: a corrupt or unreadable image file: "error" (stop, naming it) or "skip" (leave it out, count it)
    on_bad_image: str = "error"

    def validate(self) -> "TrainConfig":
        def positive_int(name: str) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise Learn2HashError(f"{name} must be a positive integer, got {v!r}")

        positive_int("epochs")
        positive_int("batch_size")
        positive_int("step_epochs")
        for name in ("lr", "weight_decay", "momentum", "gamma", "warmup_epochs", "backbone_lr_mult"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise Learn2HashError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.lr <= 0:
            raise Learn2HashError(f"lr must be > 0, got {self.lr!r}")
        if self.optimizer not in OPTIMIZERS:
            raise Learn2HashError(f"unknown optimizer {self.optimizer!r}; known: {', '.join(OPTIMIZERS)}")
        if self.schedule not in SCHEDULES:
            raise Learn2HashError(f"unknown schedule {self.schedule!r}; known: {', '.join(SCHEDULES)}")
        if self.grad_clip is not None and not (self.grad_clip > 0):
            raise Learn2HashError(f"grad_clip must be > 0 or None, got {self.grad_clip!r}")
        check_runtime(self.workers, self.amp, self.on_bad_image)
        _augment.parse(self.augment)
        return self


@dataclass
class Batch:
    """One mini-batch as the task's ``loss`` sees it (all tensors on the training device)."""

    x: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    epoch: int
    step: int
    logits: torch.Tensor | None = None


class TrainTask(Protocol):
    """What a method supplies to :func:`train` (see the module docstring)."""

    def loss(self, u: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]: ...

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None: ...

    def on_epoch_end(self, epoch: int, model: nn.Module) -> None: ...

    # optional: ``epoch_record(epoch, model) -> dict``, more entries for the epoch's history record
    # (on the main process only; e.g. an evaluation on the query split)

    def extra_state(self) -> dict[str, Any]: ...

    def load_extra_state(self, state: dict[str, Any]) -> None: ...


# ----------------------------------------------------------------------------- distributed
@dataclass(frozen=True)
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """World size and ranks from the environment ``torchrun`` sets (1 process otherwise)."""
    return DistInfo(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
                    int(os.environ.get("LOCAL_RANK", "0")))


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a ``torchrun`` launch (only rank 0 writes files)."""
    return dist_info().is_main


def resolve_device(device: str, info: DistInfo | None = None) -> torch.device:
    """``"auto"`` -> the process's GPU (``cuda:LOCAL_RANK``) when CUDA is available, else CPU."""
    info = info or dist_info()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise Learn2HashError(f"device {device!r} asked for, but CUDA is not available here")
        if dev.index is None:
            dev = torch.device("cuda", info.local_rank % torch.cuda.device_count())
    return dev


def _init_distributed(info: DistInfo, device: torch.device) -> bool:
    """Join the process group ``torchrun`` describes; True when this call created it (and must destroy it)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def _destroy_distributed() -> None:
    """Leave the process group :func:`_init_distributed` created (also after an error)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    gloo = dist.get_backend() == "gloo"
    dist.destroy_process_group()
    if gloo:
        _wait_for_idle_gloo_workers()


def _wait_for_idle_gloo_workers(timeout: float = 10.0, settle: float = 0.02) -> None:
    """Return once gloo's worker threads have been asleep (idle) for ``settle`` seconds (Linux).

    A gloo worker thread drops its reference to a finished operation (and to the tensors in it)
    a moment after the caller has seen the operation finish. If that happens while the
    interpreter exits, releasing a tensor that Python had held needs the GIL, the thread is
    killed inside a C++ destructor and the process aborts ("terminate called without an active
    exception", SIGABRT: 2 of 10 two-process runs here). ``destroy_process_group`` does not join
    those threads: DistributedDataParallel keeps the process group alive. So wait here, with the
    GIL released (``time.sleep``), until every ``pt_gloo_runloop`` thread sleeps in its queue.
    """
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        busy = False
        for task in tasks.iterdir():
            try:
                if (task / "comm").read_text().strip() != "pt_gloo_runloop":
                    continue
                state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "S":
                busy = True
                break
        now = time.monotonic()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= settle:
            return
        time.sleep(0.002)


# ----------------------------------------------------------------------------- pieces
def fingerprint(config: TrainConfig, identity: dict[str, Any], x: Any, labels: np.ndarray, world_size: int
                ) -> tuple[str, dict[str, Any]]:
    """(sha256 hex, the JSON-able description it hashes) of a training configuration and its data.

    ``identity`` holds what the caller adds (the method and its hyper-parameters). The device and
    progress settings are not part of it: a run may resume on another device.
    """
    cfg = asdict(config)
    for key in RUNTIME_SETTINGS:
        cfg.pop(key)
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(labels).tobytes())
    data: dict[str, Any] = {"n": int(len(x)), "item_shape": list(np.shape(x)[1:]) if hasattr(x, "shape") else None,
                            "labels_sha256": h.hexdigest()}
    if isinstance(x, np.ndarray):
        data["x_sha256"] = hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()
        data["dtype"] = str(x.dtype)
    desc = {"train": cfg, "method": identity, "data": data, "world_size": int(world_size)}
    text = json.dumps(desc, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest(), json.loads(text)


def param_groups(model: nn.Module, config: TrainConfig) -> list[dict[str, Any]]:
    """The optimizer's parameter groups: ``head`` (everything outside ``model.backbone``) at ``lr``
    first, then ``backbone`` at ``lr * backbone_lr_mult`` (left out when the multiplier is 0).
    Frozen parameters (``requires_grad=False``) are in no group."""
    backbone = getattr(model, "backbone", None)
    in_backbone = {id(p) for p in backbone.parameters()} if isinstance(backbone, nn.Module) else set()
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in in_backbone]
    body = [p for p in backbone.parameters() if p.requires_grad] if in_backbone else []
    groups = [{"name": "head", "params": head, "lr": config.lr}]
    if body and config.backbone_lr_mult > 0:
        groups.append({"name": "backbone", "params": body, "lr": config.lr * config.backbone_lr_mult})
    return [g for g in groups if g["params"]]


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer of ``config`` over :func:`param_groups` of ``model``."""
    params = param_groups(model, config)
    if not params:
        raise Learn2HashError("nothing to train: every parameter of the network is frozen")
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay,
                               nesterov=config.momentum > 0)
    return torch.optim.RMSprop(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)


def lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the base learning rate at optimizer step ``s`` (0-based)."""
    total = config.epochs * steps_per_epoch
    warm = int(round(config.warmup_epochs * steps_per_epoch))

    def factor(s: int) -> float:
        if s < warm:
            return (s + 1) / warm
        if config.schedule == "cosine":
            t = (s - warm) / max(1, total - warm)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))
        if config.schedule == "step":
            return config.gamma ** (s // (config.step_epochs * steps_per_epoch))
        return 1.0

    return factor


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu(v) for v in obj)
    return obj


def save_checkpoint(path: Path, payload: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temporary file, fsync, rename).

    Then delete the temporary files that a training killed during an earlier save left beside it
    (only one process trains in a checkpoint folder at a time: rank 0 of one run).
    """
    path = Path(path)
    with _atomic.atomic_open(path, "wb") as fh:
        torch.save(_cpu(payload), fh)
    _atomic.collect_garbage(path.parent, _atomic.stale_temps(path.name), ())


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``: nothing is unpickled)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated or foreign file
        raise CorruptFileError(f"checkpoint {path} cannot be read: {type(exc).__name__}: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CorruptFileError(f"{path} is not a learn2hash training checkpoint")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CorruptFileError(f"checkpoint {path} has version {payload.get('version')!r}, expected {CHECKPOINT_VERSION}")
    return payload


def _diff(a: Any, b: Any, prefix: str = "") -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += _diff(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]} ({a!r} there, {b!r} now)"]


def _progress_enabled(progress: bool | None, info: DistInfo) -> bool:
    if not info.is_main:
        return False
    if progress is None:
        return sys.stderr.isatty()
    return bool(progress)


# ----------------------------------------------------------------------------- feeding batches
def check_runtime(workers: Any, amp: Any, on_bad_image: Any) -> None:
    """Raise a clear error unless ``workers``, ``amp`` and ``on_bad_image`` are valid settings."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer))
                                or workers < 0):
        raise Learn2HashError(f"workers must be an integer >= 0 (or None for the default), got {workers!r}")
    if amp not in AMP_MODES:
        raise Learn2HashError(f"unknown amp {amp!r}; known: {', '.join(AMP_MODES)}")
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise Learn2HashError(f"on_bad_image must be one of {', '.join(BAD_IMAGE_POLICIES)}, got {on_bad_image!r}")


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` on ``device`` (``None``: full precision).

    ``"auto"``: bf16 on a CUDA device that supports it, else fp16 (with loss scaling); off on the
    CPU, where bf16 autocast was no faster for the networks measured (benchmarks/RESULTS.md) and
    changes the numbers a run gives.
    """
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return None


def _autocast(device: torch.device, dtype: torch.dtype | None):
    import contextlib

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


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
    encoded split aligned with its labels) and ``error`` (the message that stops the run, raised by
    the caller: an exception inside a worker would reach the user wrapped in a traceback).
    """

    def __init__(self, x: Any, geometry: "_images.Geometry | None" = None, train: bool = False, seed: int = 0,
                 flip: bool = False, on_bad_image: str = "error", crop: str = "random-resized"):
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
        positions = [int(k[1]) for k in keys]
        index = torch.as_tensor(positions, dtype=torch.int64)
        if self.paths is None:
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
        c, (h, w) = self.geometry.channels, self.geometry.size
        out = np.empty((len(keys), h, w, c), dtype=np.uint8)
        kept: list[int] = []
        skipped: list[tuple[int, str, str]] = []
        for epoch, pos in keys:
            path = self.paths[int(pos)]
            try:
                if self.train and self.crop == "resize-crop":
                    a = _images.resize_crop_image(path, self.geometry, _images.item_generator(self.seed, epoch, pos),
                                                  self.flip)
                elif self.train:
                    a = _images.train_image(path, self.geometry, _images.item_rng(self.seed, epoch, pos), self.flip)
                else:
                    a = _images.encode_image(path, self.geometry)
            except Learn2HashError as exc:
                if self.on_bad_image in ("skip", "blank"):
                    skipped.append((int(pos), str(path), str(exc)))
                    if self.on_bad_image == "skip":
                        continue
                    a = np.zeros((c, h, w), dtype=np.uint8)
                else:
                    return {"index": index[:0], "x": None, "skipped": skipped, "error": (type(exc).__name__, str(exc))}
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


def _as_batch(batch: dict[str, Any]) -> dict[str, Any]:
    return batch


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
    loader = DataLoader(dataset, batch_sampler=batches, num_workers=workers, collate_fn=_as_batch,
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


def _input_geometry(model: nn.Module, x: Any, item_shape: tuple[int, ...] | None) -> "_images.Geometry | None":
    """The geometry image files are decoded to for ``model`` (None for arrays)."""
    if _images.image_paths(x) is None:
        return None
    spec = getattr(getattr(model, "backbone", model), "input_spec", None)
    return _images.geometry(spec, tuple(item_shape or np.shape(x)[1:]))


def read_items(model: nn.Module, x: Any, positions: Sequence[int], device: torch.device) -> torch.Tensor | None:
    """The items of ``x`` at ``positions`` as one input batch on ``device`` (image files decoded to
    ``model``'s geometry with the encode transform, unreadable ones left out); None if none is readable."""
    items = ItemDataset(x, _input_geometry(model, x, None), on_bad_image="skip")
    return unpack_batch(items.__getitems__([(0, int(p)) for p in positions]), device, "input")[1]


# ----------------------------------------------------------------------------- the loop
def train(model: nn.Module, x: Any, labels: np.ndarray, task: TrainTask, config: TrainConfig,
          checkpoint_dir: str | os.PathLike | None = None, resume: bool = False, progress: bool | None = None,
          identity: dict[str, Any] | None = None, skipped: list | None = None) -> list[dict[str, Any]]:
    """Train ``model`` in place on items ``x`` (array ``[n, ...]`` or image files) with multi-hot ``labels``.

    Returns the history: one dict per epoch with ``epoch`` (1-based), ``loss`` and the task's
    loss parts (means over the epoch's items, over all processes), ``lr`` (at the epoch's end)
    and ``seconds`` (and ``skipped_images`` when bad images were skipped). ``identity`` (JSON-able,
    e.g. the method's hyper-parameters) enters the resume fingerprint. ``skipped``: a list that
    receives ``(position, path, message)`` of every image skipped under ``on_bad_image="skip"``
    (once each). The model ends on the training device, in eval mode.
    """
    config.validate()
    labels = np.asarray(labels, dtype=bool)
    n = len(x)
    if labels.shape[0] != n:
        raise Learn2HashError(f"training set has {n} items but {labels.shape[0]} label rows")
    if n == 0:
        raise Learn2HashError("training set is empty")
    info = dist_info()
    device = resolve_device(config.device, info)
    owns_group = _init_distributed(info, device) if info.distributed else False
    try:
        return _train(model, x, labels, task, config, checkpoint_dir, resume, progress, identity, skipped, info,
                      device)
    finally:
        if owns_group:
            _destroy_distributed()


def _train(model: nn.Module, x: Any, labels: np.ndarray, task: TrainTask, config: TrainConfig,
           checkpoint_dir: str | os.PathLike | None, resume: bool, progress: bool | None,
           identity: dict[str, Any] | None, skipped: list | None, info: DistInfo,
           device: torch.device) -> list[dict[str, Any]]:
    """The loop of :func:`train`, inside the process group (when distributed)."""
    n = len(x)
    ops = _augment.parse(config.augment)
    model.to(device)

    fp, fp_desc = fingerprint(config, identity or {}, x, labels, info.world_size)
    ckpt_path = Path(checkpoint_dir) / CHECKPOINT_NAME if checkpoint_dir is not None else None
    if ckpt_path is not None and info.is_main:  # what a training killed while saving left behind
        _atomic.collect_garbage(ckpt_path.parent, _atomic.stale_temps(ckpt_path.name), ())

    from torch.utils.data import DistributedSampler

    sampler = DistributedSampler(range(n), num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                 seed=int(config.seed), drop_last=info.distributed)
    local_batch = max(1, config.batch_size // info.world_size)
    steps_per_epoch = batches_per_epoch(len(sampler), local_batch)

    train_model: nn.Module = model
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel

        train_model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = make_optimizer(model, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(config, steps_per_epoch))

    history: list[dict[str, Any]] = []
    start_epoch = 0
    torch.manual_seed(int(config.seed))
    if resume and ckpt_path is not None and ckpt_path.exists():
        ck = load_checkpoint(ckpt_path)
        if ck["fingerprint"] != fp:
            diffs = _diff(ck.get("description", {}), fp_desc)
            raise Learn2HashError(
                f"cannot resume from {ckpt_path}: it was written by a different training configuration"
                + (f" ({'; '.join(diffs[:5])})" if diffs else "")
            )
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        _set_rng_state(ck["rng"])
        task.load_extra_state(ck.get("task", {}))
        history = list(ck["history"])
        start_epoch = int(ck["epoch"])
        log.info("resumed from %s after epoch %d", ckpt_path, start_epoch)

    labels_t = torch.from_numpy(labels)
    files = _images.image_paths(x) is not None
    # image files: the crop (and the flip when asked) is their augmentation, done while decoding;
    # the other ops (erase) still run on the device. No augmentation asked: the encode transform.
    if any(name == "crop" for name, _ in ops) and not files:
        raise Learn2HashError(f"augmentation {config.augment!r}: 'crop' is the training crop of image files "
                              "(resize + random crop while decoding); these items are arrays")
    dataset = ItemDataset(x, _input_geometry(model, x, None), train=bool(ops), seed=int(config.seed),
                          flip=any(name == "flip" for name, _ in ops), on_bad_image=config.on_bad_image,
                          crop="resize-crop" if any(name == "crop" for name, _ in ops) else "random-resized")
    device_ops = [op for op in ops if op[0] not in ("flip", "shift", "crop")] if files else ops
    workers = config.workers if config.workers is not None else default_workers(x)
    loader, batches = make_loader(dataset, workers, device, int(config.seed), persistent=True)
    dtype = amp_dtype(config.amp, device)
    scaler = torch.amp.GradScaler(device.type) if dtype == torch.float16 else None
    skipped_seen: dict[int, tuple[int, str, str]] = {}
    show = _progress_enabled(progress, info)
    step = start_epoch * steps_per_epoch
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        sampler.set_epoch(epoch)
        order = torch.tensor(list(iter(sampler)), dtype=torch.int64)
        task.on_epoch_start(epoch, model)
        train_model.train()
        sums: dict[str, float] = {}
        count = 0
        bar = None
        if show:
            from tqdm.auto import tqdm

            bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch + 1}/{config.epochs}", leave=False,
                       dynamic_ncols=True, file=sys.stderr)
        batches.batches = [
            [(epoch, int(i)) for i in torch.sort(order[b * local_batch:(b + 1) * local_batch
                                                       if b < steps_per_epoch - 1 else None])[0]]
            for b in range(steps_per_epoch)]
        epoch_skipped = 0
        for loaded in loader:
            idx, xb, bad = unpack_batch(loaded, device, "training items")
            epoch_skipped += len(bad)
            for item in bad:
                skipped_seen.setdefault(item[0], item)
            if xb is None:  # every image of the batch was skipped
                scheduler.step()
                step += 1
                continue
            xb = _augment.augment(xb, device_ops)
            batch = Batch(x=xb, labels=labels_t[idx].to(device), index=idx.to(device), epoch=epoch, step=step)
            with _autocast(device, dtype):
                u, logits = train_model(xb, return_logits=True)
            u, batch.logits = (u, logits) if dtype is None else (u.float(), logits.float())
            loss, parts = task.loss(u, batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch + 1}, step {step}; "
                                         "lower the learning rate")
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            step += 1
            bs = len(idx)
            count += bs
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach()) * bs
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach() if isinstance(v, torch.Tensor) else v) * bs
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{sums['loss'] / count:.4f}")
        if bar is not None:
            bar.close()
        if info.distributed:
            import torch.distributed as dist

            keys = sorted(sums)
            t = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64, device=device)
            dist.all_reduce(t)
            sums, count = dict(zip(keys, t[:-1].tolist())), int(t[-1].item())
        task.on_epoch_end(epoch, model)
        record = {"epoch": epoch + 1, **{k: v / max(count, 1) for k, v in sums.items()},
                  "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
        if info.is_main and hasattr(task, "epoch_record"):  # e.g. an evaluation on the query split
            record.update(task.epoch_record(epoch, model))
        if epoch_skipped:
            record["skipped_images"] = epoch_skipped
        history.append(record)
        log.info("epoch %d/%d  loss %.5f  (%.1f s)", epoch + 1, config.epochs, record.get("loss", math.nan),
                 record["seconds"])
        if ckpt_path is not None and info.is_main:
            save_checkpoint(ckpt_path, {
                "format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "fingerprint": fp,
                "description": fp_desc, "epoch": epoch + 1, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "rng": _rng_state(),
                "history": history, "task": task.extra_state(),
            })
        if info.distributed:
            import torch.distributed as dist

            dist.barrier()
    if info.distributed:
        import torch.distributed as dist

        # gradients keep parameters equal across processes; buffers (BatchNorm statistics) are
        # only broadcast before each forward, so make the last update of rank 0 everyone's
        for buf in model.buffers():
            dist.broadcast(buf, src=0)
    del loader  # persistent workers end here
    if skipped is not None:
        skipped.extend(skipped_seen[k] for k in sorted(skipped_seen))
    model.eval()
    return history


@torch.no_grad()
def encode_batches(model: nn.Module, x: Any, batch_size: int = 1024, device: torch.device | str | None = None,
                   output: str = "u", *, workers: int | None = None, amp: str = "off",
                   item_shape: tuple[int, ...] | None = None, progress: bool = False) -> torch.Tensor:
    """Run ``model`` in eval mode over ``x`` in batches; returns ``[n, K]`` float32 on the CPU.

    ``output``: ``"u"`` (tanh outputs), ``"logits"``, or ``"features"`` (the backbone's output).
    ``x``: an array, a lazily read array-like, or image files (decoded in ``workers`` processes to
    the backbone's geometry for items of ``item_shape``, default ``x``'s). ``amp``: see
    :func:`amp_dtype`. The model's train/eval mode is restored afterwards. A bad image is an error
    naming it (:func:`encode_items` can skip them instead).
    """
    return encode_items(model, x, batch_size, device, output, workers=workers, amp=amp, item_shape=item_shape,
                        progress=progress)[0]


@torch.no_grad()
def encode_items(model: nn.Module, x: Any, batch_size: int = 1024, device: torch.device | str | None = None,
                 output: str = "u", *, workers: int | None = None, amp: str = "off", on_bad_image: str = "error",
                 item_shape: tuple[int, ...] | None = None, progress: bool = False
                 ) -> tuple[torch.Tensor, np.ndarray, list[tuple[int, str, str]]]:
    """:func:`encode_batches` that may skip bad images: ``(outputs of the kept items, their positions in
    x, skipped (position, path, message))``. ``on_bad_image``: "error", "skip" (left out) or "blank"
    (encoded as an all-zero image, so the outputs stay aligned with ``x``; still listed as skipped)."""
    check_runtime(workers, amp, "skip" if on_bad_image == "blank" else on_bad_image)
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    dtype = amp_dtype(amp, device)
    n = len(x)
    dataset = ItemDataset(x, _input_geometry(model, x, item_shape), on_bad_image=on_bad_image)
    workers = default_workers(x) if workers is None else int(workers)
    # image files: batches small enough that the batches in flight (2 per worker) stay in the MBs
    step = int(batch_size) if dataset.paths is None else min(int(batch_size), FILE_ENCODE_BATCH)
    loader, batches = make_loader(dataset, min(workers, max(1, -(-n // step))) if n else 0, device, 0)
    batches.batches = [[(0, i) for i in range(s, min(n, s + step))] for s in range(0, n, step)]
    was_training = model.training
    model.eval()
    outs, kept, skipped = [], [], []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="encoding", unit="item", dynamic_ncols=True, file=sys.stderr)
    try:
        with torch.inference_mode():
            for loaded in loader:
                idx, xb, bad = unpack_batch(loaded, device, "input")
                skipped += bad
                if bar is not None:
                    bar.update(len(idx) + len(bad))
                if xb is None:
                    continue
                with _autocast(device, dtype):
                    if output == "features":
                        out = model.backbone(xb)
                    else:
                        u, logits = model(xb, return_logits=True)
                        out = u if output == "u" else logits
                outs.append(out.float().cpu())
                kept.append(idx.numpy())
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    positions = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    if not outs:
        width = model.bits if output != "features" else getattr(getattr(model, "backbone", None), "out_dim", 0)
        return torch.zeros((0, width), dtype=torch.float32), positions, skipped
    return torch.cat(outs), positions, skipped
