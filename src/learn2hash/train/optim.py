"""The optimizer over the network's parameter groups, the learning-rate schedule and mixed precision."""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import torch
from torch import nn

from learn2hash.errors import Learn2HashError
from learn2hash.train.config import TrainConfig


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


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """torch's autocast to ``dtype`` on ``device``; nothing when ``dtype`` is None (full precision)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
