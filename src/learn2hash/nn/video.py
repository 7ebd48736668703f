"""Backbones for video clips: ``c3d-small`` (a small 3-D CNN) and ``framepool-small`` (a 2-D CNN per frame).

Both take a float batch of clips ``[n, T, C, H, W]`` (frames, channels, height, width; stored
``uint8`` clips are scaled to [0, 1] by :func:`learn2hash.nn.inputs.as_input_tensor`, as images
are) and give ``[n, out_dim]`` features.

- ``c3d-small`` convolves over time and space together (3x3x3 kernels, as C3D), so its features
  depend on the order of the frames: it can tell an item moving right from the same item moving
  left, whose clips hold the same set of frames.
- ``framepool-small`` applies a 2-D image backbone (``smallcnn`` by default, or any registered
  image backbone) to every frame on its own and averages the frame features over time. The mean
  is a symmetric function of the frames, so its features do not depend on their order (up to
  floating-point rounding): it is the baseline that shows what temporal modelling buys.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from learn2hash.errors import Learn2HashError
from learn2hash.nn import registry
from learn2hash.nn.registry import Backbone, BackboneInfo


def _clip_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """``input_shape`` as ``(T, C, H, W)``, or a clear error naming the backbone."""
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 4 or min(shape) < 1:
        raise Learn2HashError(f"{name} takes clips [T, C, H, W] (frames, channels, height, width), "
                              f"got item shape {shape}")
    return shape  # type: ignore[return-value]


def _positive_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 1


class _ClipBackbone(Backbone):
    """Shared input check: a batch ``[n, T, C, H, W]`` of this backbone's clip shape."""

    kind = "clip"
    input_shape: tuple[int, int, int, int]

    def check_batch(self, x: torch.Tensor) -> None:
        if x.ndim != 5:
            raise Learn2HashError(
                f"{type(self).__name__} takes a batch of clips [n, T, C, H, W] = [n, "
                f"{', '.join(map(str, self.input_shape))}], got a tensor of shape {tuple(x.shape)}"
            )
        self.check_input_shape(tuple(x.shape[1:]), "clip batch")


class C3DSmall(_ClipBackbone):
    """A small 3-D CNN that trains on a few CPU cores.

    A stem of ``stem_kernel`` (time x space, default 3x7x7) convolution with spatial stride
    ``stem_stride`` (default 4, reduced so the map keeps at least one pixel), then one 3x3x3
    convolution per further entry of ``widths``; each of these halves time and space (stride 2
    on that axis) while the axis is at least 8 long. Every convolution is followed by BatchNorm
    and ReLU; global average pooling over time and space gives ``widths[-1]`` features. With the
    defaults a 16x64x64 clip becomes 16x16x16 after the stem, then 8x8x8, 4x4x4 and 4x4x4.
    """

    def __init__(self, input_shape: tuple[int, ...], widths: Sequence[int] = (16, 32, 64, 128),
                 stem_kernel: Sequence[int] = (3, 7, 7), stem_stride: int = 4, dropout: float = 0.0):
        super().__init__()
        t, c, h, w = _clip_shape("c3d-small", input_shape)
        widths = [int(v) for v in widths]
        kernel = tuple(int(k) for k in stem_kernel)
        if not widths or min(widths) < 1:
            raise Learn2HashError(f"c3d-small needs at least one positive width, got {widths}")
        if len(kernel) != 3 or min(kernel) < 1 or any(k % 2 == 0 for k in kernel):
            raise Learn2HashError(f"c3d-small: stem_kernel must be 3 odd sizes (time, height, width), got {kernel}")
        if not _positive_int(stem_stride):
            raise Learn2HashError(f"c3d-small: stem_stride must be a positive integer, got {stem_stride!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
            raise Learn2HashError(f"c3d-small: dropout must be in [0, 1), got {dropout!r}")
        self.input_shape = (t, c, h, w)
        stride = max(1, min(int(stem_stride), h, w))
        layers: list[nn.Module] = [
            nn.Conv3d(c, widths[0], kernel, stride=(1, stride, stride), padding=tuple(k // 2 for k in kernel),
                      bias=False),
            nn.BatchNorm3d(widths[0]), nn.ReLU(inplace=True)]
        size = [t, -(-h // stride), -(-w // stride)]
        for prev, width in zip(widths, widths[1:]):
            steps = tuple(2 if s >= 8 else 1 for s in size)
            layers += [nn.Conv3d(prev, width, 3, stride=steps, padding=1, bias=False), nn.BatchNorm3d(width),
                       nn.ReLU(inplace=True)]
            size = [-(-s // st) for s, st in zip(size, steps)]
        layers += [nn.AdaptiveAvgPool3d(1), nn.Flatten()]
        if dropout:
            layers.append(nn.Dropout(float(dropout)))
        self.features = nn.Sequential(*layers)
        self.out_dim = widths[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_batch(x)
        return self.features(x.transpose(1, 2))  # [n, C, T, H, W] for Conv3d


class FramePool(_ClipBackbone):
    """An image backbone applied to every frame, its features averaged over time.

    ``frame_backbone``: a registered image backbone (default ``smallcnn``) built for frames
    ``[C, H, W]`` with the remaining options; ``frame_size``: frames are first shrunk to this
    side (area averaging; ``None`` keeps them as they are).
    """

    def __init__(self, input_shape: tuple[int, ...], frame_backbone: str = "smallcnn", frame_size: int | None = None,
                 untrained: bool = False, **frame_options: Any):
        super().__init__()
        t, c, h, w = _clip_shape("framepool", input_shape)
        if frame_size is not None and not _positive_int(frame_size):
            raise Learn2HashError(f"framepool: frame_size must be a positive integer or None, got {frame_size!r}")
        self.input_shape = (t, c, h, w)
        self.frame_hw = (h, w) if frame_size is None else (min(h, int(frame_size)), min(w, int(frame_size)))
        self.frame = registry.create(frame_backbone, (c,) + self.frame_hw, untrained=untrained, **frame_options)
        self.out_dim = self.frame.out_dim

    def resolved_options(self) -> dict[str, Any]:
        """The frame backbone's own options, defaults spelled out, with ``frame_backbone`` and ``frame_size``."""
        options = super().resolved_options()
        return {"frame_backbone": options.get("frame_backbone"), "frame_size": options.get("frame_size"),
                **self.frame.resolved_options()}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.check_batch(x)
        n, t = x.shape[:2]
        frames = x.reshape((n * t,) + tuple(x.shape[2:]))
        if tuple(frames.shape[2:]) != self.frame_hw:
            frames = F.adaptive_avg_pool2d(frames, self.frame_hw)
        return self.frame(frames).reshape(n, t, -1).mean(dim=1)


def framepool_small(input_shape: tuple[int, ...], **options: Any) -> FramePool:
    """``FramePool`` with small defaults: for ``smallcnn`` frames, one conv per stage with widths
    16/32/64, on frames shrunk to 32x32 (per clip about 1.5 times the training time of ``c3d-small``)."""
    if options.get("frame_backbone", "smallcnn") == "smallcnn":
        options = {"frame_size": 32, "widths": (16, 32, 64), "convs_per_stage": 1, **options}
    return FramePool(input_shape, **options)


registry.register(BackboneInfo(
    "c3d-small", ("clip",), C3DSmall, "small 3-D CNN for clips [T, C, H, W], trains on a few CPU cores",
    default_for=("clip",)))
registry.register(BackboneInfo(
    "framepool-small", ("clip",), framepool_small,
    "frame-pooling baseline for clips: smallcnn (widths 16/32/64, one conv per stage) on each frame "
    "shrunk to 32x32, features averaged over time (ignores frame order)",
    untrained_options={"untrained": True}))
