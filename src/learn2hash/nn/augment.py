"""Data augmentation on float image batches ``[n, C, H, W]`` (vectorised, driven by torch's RNG).

A spec is a comma-separated list of:

- ``flip``: horizontal flip with probability 1/2 (not for digits or text);
- ``shift:P``: translate by up to P pixels in each direction, zero fill (the "pad and random crop"
  of CIFAR training); ``shift`` alone: up to 1/14 of the image's shorter side (:func:`shift_pixels`:
  2 pixels at 28, 16 at 224, none below 14 pixels, where one pixel already moves a stroke off a
  tiny image);
- ``erase`` or ``erase:S``: zero one random square of side S (default a quarter of the image side)
  with probability 1/2 (cutout);
- ``crop`` (image files only): instead of the random-resized crop the files are decoded with, the
  reference code's crop, torchvision's ``Resize(R)`` + ``RandomCrop(size)`` with R the network's
  resize before its centre crop (256 for 224) (:func:`learn2hash.images.resize_crop_image`);
  ``crop,flip`` adds the horizontal flip.

``"none"`` (or an empty string) is no augmentation. ``"auto"`` is resolved from what the training data
is before training (:func:`resolve`): the augmentations its dataset's registration declares
label-preserving (``DatasetInfo.label_preserving``: flips for clothes and photographs, nothing for
digits or text) plus ``shift``, which keeps the label of any image large enough to shift (unless
the registration declares a shift of its own); arrays of unknown origin get ``shift`` alone. The
shift is written out in pixels where the images' size is known (``"flip,shift:2"`` on
Fashion-MNIST; ``"none"`` on scikit-learn's 8x8 digits, where a one-pixel shift cost CSQ 2.8
points of validation mAP). Clips and feature vectors, which are never augmented, get ``"none"``.
Randomness comes from the global torch generator, whose state the training checkpoints carry,
so resumed runs draw the same numbers.
"""

from __future__ import annotations

from typing import Any

import torch

from learn2hash.errors import Learn2HashError

OPS = ("flip", "shift", "erase", "crop")
AUTO = "auto"
#: what ``"auto"`` gives any image: small shifts (1/14 of the side) keep every label
ANY_IMAGE = "shift"
#: ``shift`` with no argument moves an image by up to 1/SHIFT_FRACTION of its shorter side
SHIFT_FRACTION = 14


def shift_pixels(height: int, width: int) -> int:
    """How far ``shift`` with no argument moves an image of ``height`` x ``width``: 1/14 of the
    shorter side, rounded down (2 at 28 pixels as in the Fashion-MNIST recipe, 16 at 224 as the
    random 224-crops of 256-pixel photographs; 0 below 14 pixels)."""
    return min(height, width) // SHIFT_FRACTION


def resolve(spec: str | None, split: Any = None) -> str:
    """The augmentation ``spec`` stands for when training on ``split`` (a :class:`~learn2hash.datasets.base.Split`):
    ``spec`` itself unless it is ``"auto"`` (see the module docstring)."""
    if spec is None or str(spec).strip().lower() != AUTO:
        return "none" if spec is None else str(spec)
    if split is not None and getattr(split, "kind", "image") in ("clip", "features"):
        return "none"
    declared: tuple[str, ...] = ()
    name = getattr(split, "dataset", "") if split is not None else ""
    if name:
        from learn2hash.datasets import registry

        declared = tuple(registry.info(name).label_preserving)
    ops = [*declared]
    if not any(op.partition(":")[0] == "shift" for op in ops):
        ops.append(ANY_IMAGE)
    shape = tuple(getattr(split, "item_shape", ()) or ()) if split is not None else ()
    if len(shape) == 3:  # [C, H, W] arrays: write the shift out in pixels (image files: at batch time)
        pixels = shift_pixels(int(shape[1]), int(shape[2]))
        ops = [op if op != "shift" else f"shift:{pixels}" for op in ops if op != "shift" or pixels > 0]
    return ",".join(ops) or "none"


def parse(spec: str | None) -> list[tuple[str, int | None]]:
    """``"flip,shift:3"`` -> ``[("flip", None), ("shift", 3)]``; unknown ops are a clear error."""
    if spec is None or str(spec).strip().lower() in ("", "none"):
        return []
    ops: list[tuple[str, int | None]] = []
    for part in str(spec).split(","):
        name, _, arg = part.strip().partition(":")
        if name not in OPS:
            raise Learn2HashError(f"unknown augmentation {name!r} in {spec!r}; known: {', '.join(OPS)} (or 'none')")
        if name == "crop" and arg:
            raise Learn2HashError(f"augmentation {part!r}: 'crop' takes no argument (it resizes as the network's "
                                  "encoding does)")
        if arg and (not arg.isdigit() or int(arg) < 1):
            raise Learn2HashError(f"augmentation {part!r}: the argument must be a positive integer")
        ops.append((name, int(arg) if arg else None))
    return ops


def augment(x: torch.Tensor, ops: list[tuple[str, int | None]]) -> torch.Tensor:
    """Apply ``ops`` (from :func:`parse`) to an image batch; other batches are returned unchanged."""
    if not ops or x.ndim != 4:
        return x
    n, _, h, w = x.shape
    dev = x.device
    for name, arg in ops:
        if name == "flip":
            mask = (torch.rand(n) < 0.5).to(dev)
            x = torch.where(mask[:, None, None, None], x.flip(3), x)
        elif name == "shift":
            p = arg or shift_pixels(h, w)
            if p == 0:
                continue
            padded = torch.nn.functional.pad(x, (p, p, p, p))
            dy = torch.randint(0, 2 * p + 1, (n,)).to(dev)
            dx = torch.randint(0, 2 * p + 1, (n,)).to(dev)
            rows = (dy[:, None] + torch.arange(h, device=dev)[None, :])  # [n, h]
            cols = (dx[:, None] + torch.arange(w, device=dev)[None, :])  # [n, w]
            idx_r = rows[:, None, :, None].expand(n, x.shape[1], h, w + 2 * p)
            x = padded.gather(2, idx_r)
            idx_c = cols[:, None, None, :].expand(n, x.shape[1], h, w)
            x = x.gather(3, idx_c)
        elif name == "erase":
            s = arg or max(1, min(h, w) // 4)
            apply = (torch.rand(n) < 0.5).to(dev)
            cy = torch.randint(0, h, (n,)).to(dev)
            cx = torch.randint(0, w, (n,)).to(dev)
            ys = torch.arange(h, device=dev)[None, :]
            xs = torch.arange(w, device=dev)[None, :]
            in_y = (ys >= (cy[:, None] - s // 2)) & (ys < (cy[:, None] - s // 2 + s))
            in_x = (xs >= (cx[:, None] - s // 2)) & (xs < (cx[:, None] - s // 2 + s))
            box = in_y[:, :, None] & in_x[:, None, :] & apply[:, None, None]
            x = x.masked_fill(box[:, None, :, :], 0.0)
    return x
