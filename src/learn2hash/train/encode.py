"""Running a trained network over items: continuous codes, logits or backbone features, in batches."""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch
from torch import nn

from learn2hash.methods.validation import validate_params
from learn2hash.train.config import constraints
from learn2hash.train.data import ItemDataset, default_workers, input_geometry, make_loader, unpack_batch
from learn2hash.train.optim import amp_dtype, autocast

#: most image files per encoding batch (a 224 px batch of 128 is 19 MB of uint8)
FILE_ENCODE_BATCH = 128


@torch.no_grad()
def encode_batches(model: nn.Module, x: Any, batch_size: int = 1024, device: torch.device | str | None = None,
                   output: str = "u", *, workers: int | None = None, amp: str = "off",
                   item_shape: tuple[int, ...] | None = None, progress: bool = False) -> torch.Tensor:
    """Run ``model`` in eval mode over ``x`` in batches; returns ``[n, K]`` float32 on the CPU.

    ``output``: ``"u"`` (tanh outputs), ``"logits"``, or ``"features"`` (the backbone's output).
    ``x``: an array, a lazily read array-like, or image files (decoded in ``workers`` processes to
    the backbone's geometry for items of ``item_shape``, default ``x``'s). ``amp``: see
    :func:`~learn2hash.train.optim.amp_dtype`. The model's train/eval mode is restored afterwards. A
    bad image is an error naming it (:func:`encode_items` can skip them instead).
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
    validate_params("encoding", constraints(("workers", "amp")), {"workers": workers, "amp": amp})
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    n = len(x)
    dataset = ItemDataset(x, input_geometry(model, x, item_shape), on_bad_image=on_bad_image)
    workers = default_workers(x) if workers is None else int(workers)
    # image files: batches small enough that the batches in flight (2 per worker) stay in the MBs
    step = int(batch_size) if dataset.paths is None else min(int(batch_size), FILE_ENCODE_BATCH)
    loader, batches = make_loader(dataset, min(workers, max(1, -(-n // step))) if n else 0, device, 0)
    batches.batches = [[(0, i) for i in range(s, min(n, s + step))] for s in range(0, n, step)]
    was_training = model.training
    model.eval()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n, desc="encoding", unit="item", dynamic_ncols=True, file=sys.stderr)
    try:
        outs, kept, skipped = _run(model, loader, device, output, amp_dtype(amp, device), bar)
    finally:
        model.train(was_training)
        if bar is not None:
            bar.close()
    positions = np.concatenate(kept) if kept else np.zeros(0, dtype=np.int64)
    if not outs:
        width = model.bits if output != "features" else getattr(getattr(model, "backbone", None), "out_dim", 0)
        return torch.zeros((0, width), dtype=torch.float32), positions, skipped
    return torch.cat(outs), positions, skipped


def _run(model: nn.Module, loader: Any, device: torch.device, output: str, dtype: torch.dtype | None, bar: Any
         ) -> tuple[list[torch.Tensor], list[np.ndarray], list[tuple[int, str, str]]]:
    """The outputs, positions and skipped images of every batch ``loader`` gives."""
    outs, kept, skipped = [], [], []
    with torch.inference_mode():
        for loaded in loader:
            idx, xb, bad = unpack_batch(loaded, device, "input")
            skipped += bad
            if bar is not None:
                bar.update(len(idx) + len(bad))
            if xb is None:
                continue
            with autocast(device, dtype):
                if output == "features":
                    out = model.backbone(xb)
                else:
                    u, logits = model(xb, return_logits=True)
                    out = u if output == "u" else logits
            outs.append(out.float().cpu())
            kept.append(idx.numpy())
    return outs, kept, skipped
