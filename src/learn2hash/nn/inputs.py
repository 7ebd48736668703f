"""Turning stored items into float tensors for a network.

Images and clips are stored as ``uint8`` (0..255) and become float32 in [0, 1]; other numeric
arrays (feature vectors, or images already stored as floats) become float32 unchanged.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from learn2hash.errors import Learn2HashError


def as_input_tensor(x: Any, device: torch.device | str = "cpu", what: str = "input") -> torch.Tensor:
    """A float32 tensor on ``device`` from a numpy array or tensor (uint8 scaled by 1/255)."""
    if isinstance(x, torch.Tensor):
        t = x
    else:
        a = np.ascontiguousarray(np.asarray(x))
        t = torch.from_numpy(a if a.flags.writeable else a.copy())  # torch warns on read-only arrays
    if t.dtype == torch.bool or not (t.is_floating_point() or t.dtype in (torch.uint8, torch.int8, torch.int16,
                                                                          torch.int32, torch.int64)):
        raise Learn2HashError(f"{what} must be a numeric array, got dtype {t.dtype}")
    t = t.to(device, non_blocking=True)
    if t.dtype == torch.uint8:
        return t.float().mul_(1.0 / 255.0)
    t = t.float()
    if not torch.isfinite(t).all():
        raise Learn2HashError(f"{what} contains NaN or infinite values")
    return t
