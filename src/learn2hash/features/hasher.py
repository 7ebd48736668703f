"""A hasher behind the feature stage (:class:`FeatureHasher`): raw items in, codes out."""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learn2hash.errors import CorruptFileError, Learn2HashError
from learn2hash.features.cache import plain_json
from learn2hash.features.transformer import ImageFeatures


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
        from learn2hash import nn
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
            net = nn.create(str(params.get("backbone")), item_shape, untrained=True,
                                  **{k: v for k, v in options.items() if k not in ("pretrained",)})
        load_state(net, read_state_dict(weights, "saved feature backbone"), weights, "the saved feature backbone")
        feats.use_network(net, item_shape)
        if feats.identity_["weights_sha256"] != ident.get("weights_sha256"):
            raise CorruptFileError(f"hasher file {meta_path}: the feature backbone's weights do not match the "
                                   "checksum its features block records")
        if feats.identity_["geometry"] != ident.get("geometry"):
            raise CorruptFileError(f"hasher file {meta_path}: the feature backbone decodes images to "
                                   f"{feats.identity_['geometry']}, its features block says {ident.get('geometry')}")
        out = cls(feats, inner)
        out.fitted_ = True
        return out


def _as_sequence(x: Any) -> Any:
    """A single path becomes a list of one; everything else passes through."""
    if isinstance(x, (str, os.PathLike)):
        return [Path(x)]
    return x
