"""Training checkpoints: the fingerprint of a configuration and its data, and the checkpoint file
(written atomically, read with ``weights_only=True``) that a resumed training continues from."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learn2hash import _atomic
from learn2hash.errors import CorruptFileError, Learn2HashError
from learn2hash.train.config import RUNTIME_SETTINGS, TrainConfig

CHECKPOINT_FORMAT = "learn2hash-checkpoint"
CHECKPOINT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


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


def rng_state() -> dict[str, Any]:
    """torch's random number generator states (CPU, and every GPU's)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned (the GPUs' only on as many GPUs)."""
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


def load_matching(path: Path, fp: str, description: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint at ``path``, refused (naming the differences) unless it was written by a training
    of fingerprint ``fp`` (``description``: what :func:`fingerprint` hashed for it)."""
    ck = load_checkpoint(path)
    if ck["fingerprint"] != fp:
        diffs = differences(ck.get("description", {}), description)
        raise Learn2HashError(
            f"cannot resume from {path}: it was written by a different training configuration"
            + (f" ({'; '.join(diffs[:5])})" if diffs else "")
        )
    return ck


def differences(a: Any, b: Any, prefix: str = "") -> list[str]:
    """``"key.path (a there, b now)"`` for every leaf where the nested dicts ``a`` and ``b`` differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            out += differences(a.get(k), b.get(k), f"{prefix}{k}.")
        return out
    return [] if a == b else [f"{prefix[:-1]} ({a!r} there, {b!r} now)"]
