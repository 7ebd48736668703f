"""The training loop: :func:`train` and the steps it takes (set up, resume, feed, epoch, checkpoint)."""

from __future__ import annotations

import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from learn2hash import _atomic
from learn2hash import images as _images
from learn2hash.errors import Learn2HashError
from learn2hash.nn import augment as _augment
from learn2hash.train import checkpoint as _checkpoint
from learn2hash.train.config import Batch, TrainConfig, TrainTask, batches_per_epoch
from learn2hash.train.data import ItemDataset, default_workers, input_geometry, make_loader, unpack_batch
from learn2hash.train.distributed import DistInfo, destroy_distributed, dist_info, init_distributed, resolve_device
from learn2hash.train.optim import amp_dtype, autocast, lr_factor, make_optimizer

log = logging.getLogger("learn2hash.train")


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
    owns_group = init_distributed(info, device) if info.distributed else False
    try:
        return _train(model, x, labels, task, config, checkpoint_dir, resume, progress, identity, skipped, info,
                      device)
    finally:
        if owns_group:
            destroy_distributed()


@dataclass(eq=False)
class _Training:
    """What one call of :func:`train` works with, from set-up to the last epoch."""

    model: nn.Module
    task: TrainTask
    config: TrainConfig
    info: DistInfo
    device: torch.device
    labels: torch.Tensor
    show: bool
    ckpt_path: Path | None = None
    fp: str = ""
    fp_desc: dict[str, Any] = field(default_factory=dict)
    sampler: Any = None
    local_batch: int = 1
    steps_per_epoch: int = 1
    train_model: nn.Module | None = None
    optimizer: Any = None
    scheduler: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0
    step: int = 0
    loader: Any = None
    batches: Any = None
    device_ops: list = field(default_factory=list)
    dtype: torch.dtype | None = None
    scaler: Any = None
    skipped: dict[int, tuple[int, str, str]] = field(default_factory=dict)


def _train(model: nn.Module, x: Any, labels: np.ndarray, task: TrainTask, config: TrainConfig,
           checkpoint_dir: str | os.PathLike | None, resume: bool, progress: bool | None,
           identity: dict[str, Any] | None, skipped: list | None, info: DistInfo,
           device: torch.device) -> list[dict[str, Any]]:
    """The loop of :func:`train`, inside the process group (when distributed)."""
    run = _Training(model, task, config, info, device, torch.from_numpy(labels), _progress_enabled(progress, info))
    _set_up(run, x, labels, checkpoint_dir, identity)
    if resume and run.ckpt_path is not None and run.ckpt_path.exists():
        _resume(run)
    _feed(run, x)
    run.step = run.start_epoch * run.steps_per_epoch
    for epoch in range(run.start_epoch, config.epochs):
        t0 = time.perf_counter()
        sums, count, n_skipped = _epoch(run, epoch)
        _end_epoch(run, epoch, sums, count, n_skipped, t0)
    if info.distributed:
        import torch.distributed as dist

        # gradients keep parameters equal across processes; buffers (BatchNorm statistics) are
        # only broadcast before each forward, so make the last update of rank 0 everyone's
        for buf in model.buffers():
            dist.broadcast(buf, src=0)
    run.loader = None  # persistent workers end here
    if skipped is not None:
        skipped.extend(run.skipped[k] for k in sorted(run.skipped))
    model.eval()
    return run.history


def _set_up(run: _Training, x: Any, labels: np.ndarray, checkpoint_dir: str | os.PathLike | None,
            identity: dict[str, Any] | None) -> None:
    """The model on its device, the fingerprint, the sampler, the wrapped model, optimizer and schedule."""
    from torch.utils.data import DistributedSampler

    info, config = run.info, run.config
    run.model.to(run.device)
    run.fp, run.fp_desc = _checkpoint.fingerprint(config, identity or {}, x, labels, info.world_size)
    run.ckpt_path = Path(checkpoint_dir) / _checkpoint.CHECKPOINT_NAME if checkpoint_dir is not None else None
    if run.ckpt_path is not None and info.is_main:  # what a training killed while saving left behind
        _atomic.collect_garbage(run.ckpt_path.parent, _atomic.stale_temps(run.ckpt_path.name), ())
    run.sampler = DistributedSampler(range(len(x)), num_replicas=info.world_size, rank=info.rank, shuffle=True,
                                     seed=int(config.seed), drop_last=info.distributed)
    run.local_batch = max(1, config.batch_size // info.world_size)
    run.steps_per_epoch = batches_per_epoch(len(run.sampler), run.local_batch)
    run.train_model = run.model
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [run.device.index] if run.device.type == "cuda" else None
        run.train_model = DistributedDataParallel(run.model, device_ids=device_ids)
    run.optimizer = make_optimizer(run.model, config)
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, lr_factor(config, run.steps_per_epoch))
    torch.manual_seed(int(config.seed))


def _resume(run: _Training) -> None:
    """Continue from the checkpoint (refused when another configuration wrote it)."""
    ck = _checkpoint.load_matching(run.ckpt_path, run.fp, run.fp_desc)
    run.model.load_state_dict(ck["model"])
    run.optimizer.load_state_dict(ck["optimizer"])
    run.scheduler.load_state_dict(ck["scheduler"])
    _checkpoint.set_rng_state(ck["rng"])
    run.task.load_extra_state(ck.get("task", {}))
    run.history = list(ck["history"])
    run.start_epoch = int(ck["epoch"])
    log.info("resumed from %s after epoch %d", run.ckpt_path, run.start_epoch)


def _feed(run: _Training, x: Any) -> None:
    """The dataset and loader of the training items, the device's share of the augmentation, the precision."""
    config = run.config
    ops = _augment.parse(config.augment)
    files = _images.image_paths(x) is not None
    # image files: the crop (and the flip when asked) is their augmentation, done while decoding;
    # the other ops (erase) still run on the device. No augmentation asked: the encode transform.
    crop = any(name == "crop" for name, _ in ops)
    if crop and not files:
        raise Learn2HashError(f"augmentation {config.augment!r}: 'crop' is the training crop of image files "
                              "(resize + random crop while decoding); these items are arrays")
    dataset = ItemDataset(x, input_geometry(run.model, x, None), train=bool(ops), seed=int(config.seed),
                          flip=any(name == "flip" for name, _ in ops), on_bad_image=config.on_bad_image,
                          crop="resize-crop" if crop else "random-resized")
    run.device_ops = [op for op in ops if op[0] not in ("flip", "shift", "crop")] if files else ops
    workers = config.workers if config.workers is not None else default_workers(x)
    run.loader, run.batches = make_loader(dataset, workers, run.device, int(config.seed), persistent=True)
    run.dtype = amp_dtype(config.amp, run.device)
    run.scaler = torch.amp.GradScaler(run.device.type) if run.dtype == torch.float16 else None


def _epoch_batches(run: _Training, epoch: int) -> list[list[tuple[int, int]]]:
    """This process's batches of ``epoch``: ``(epoch, position)`` keys, sorted within each batch."""
    run.sampler.set_epoch(epoch)
    order = torch.tensor(list(iter(run.sampler)), dtype=torch.int64)
    size, steps = run.local_batch, run.steps_per_epoch
    return [[(epoch, int(i)) for i in torch.sort(order[b * size:(b + 1) * size if b < steps - 1 else None])[0]]
            for b in range(steps)]


def _epoch(run: _Training, epoch: int) -> tuple[dict[str, float], int, int]:
    """One epoch's gradient steps: ``(sums of the loss and its parts over the items, items, images skipped)``,
    summed over all processes."""
    order = _epoch_batches(run, epoch)
    run.task.on_epoch_start(epoch, run.model)
    run.train_model.train()
    sums: dict[str, float] = {}
    count = n_skipped = 0
    bar = None
    if run.show:
        from tqdm.auto import tqdm

        bar = tqdm(total=run.steps_per_epoch, desc=f"epoch {epoch + 1}/{run.config.epochs}", leave=False,
                   dynamic_ncols=True, file=sys.stderr)
    run.batches.batches = order
    for loaded in run.loader:
        idx, xb, bad = unpack_batch(loaded, run.device, "training items")
        n_skipped += len(bad)
        for item in bad:
            run.skipped.setdefault(item[0], item)
        if xb is None:  # every image of the batch was skipped
            run.scheduler.step()
            run.step += 1
            continue
        loss, parts = _step(run, idx, xb, epoch)
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
    if run.info.distributed:
        sums, count = _all_reduce(sums, count, run.device)
    return sums, count, n_skipped


def _step(run: _Training, idx: torch.Tensor, xb: torch.Tensor, epoch: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """One optimizer step on the items ``idx`` (``xb`` on the device): the loss and its parts."""
    xb = _augment.augment(xb, run.device_ops)
    batch = Batch(x=xb, labels=run.labels[idx].to(run.device), index=idx.to(run.device), epoch=epoch, step=run.step)
    with autocast(run.device, run.dtype):
        u, logits = run.train_model(xb, return_logits=True)
    u, batch.logits = (u, logits) if run.dtype is None else (u.float(), logits.float())
    loss, parts = run.task.loss(u, batch)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch + 1}, step {run.step}; "
                                 "lower the learning rate")
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.unscale_(run.optimizer)
    else:
        loss.backward()
    if run.config.grad_clip is not None:
        nn.utils.clip_grad_norm_(run.model.parameters(), run.config.grad_clip)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    run.step += 1
    return loss, parts


def _all_reduce(sums: dict[str, float], count: int, device: torch.device) -> tuple[dict[str, float], int]:
    """The sums and item count of every process, added up."""
    import torch.distributed as dist

    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return dict(zip(keys, t[:-1].tolist())), int(t[-1].item())


def _end_epoch(run: _Training, epoch: int, sums: dict[str, float], count: int, n_skipped: int, t0: float) -> None:
    """The task's end of epoch, the epoch's history record and the checkpoint."""
    run.task.on_epoch_end(epoch, run.model)
    record = {"epoch": epoch + 1, **{k: v / max(count, 1) for k, v in sums.items()},
              "lr": run.optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - t0}
    if run.info.is_main and hasattr(run.task, "epoch_record"):  # e.g. an evaluation on the query split
        record.update(run.task.epoch_record(epoch, run.model))
    if n_skipped:
        record["skipped_images"] = n_skipped
    run.history.append(record)
    log.info("epoch %d/%d  loss %.5f  (%.1f s)", epoch + 1, run.config.epochs, record.get("loss", math.nan),
             record["seconds"])
    if run.ckpt_path is not None and run.info.is_main:
        _checkpoint.save_checkpoint(run.ckpt_path, {
            "format": _checkpoint.CHECKPOINT_FORMAT, "version": _checkpoint.CHECKPOINT_VERSION,
            "fingerprint": run.fp, "description": run.fp_desc, "epoch": epoch + 1, "model": run.model.state_dict(),
            "optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(),
            "rng": _checkpoint.rng_state(), "history": run.history, "task": run.task.extra_state(),
        })
    if run.info.distributed:
        import torch.distributed as dist

        dist.barrier()


def _progress_enabled(progress: bool | None, info: DistInfo) -> bool:
    if not info.is_main:
        return False
    if progress is None:
        return sys.stderr.isatty()
    return bool(progress)
