"""Base classes of every hashing method, and how a fitted hasher is saved and loaded.

Estimators follow scikit-learn's habits: hyper-parameters are set in ``__init__`` (which does no
work), ``fit`` returns ``self``, learned state ends with ``_``, ``encode`` never changes state.
A :class:`Hasher` has the whole surface of scikit-learn's ``BaseEstimator`` and
``TransformerMixin`` (``get_params`` / ``set_params``, ``fit_transform``, ``n_features_in_``,
estimator tags, :data:`~learn2hash.errors.NotFittedError` before ``fit``) plus a ``score`` (mAP, see
:func:`learn2hash.metrics.map_scorer`), so ``GridSearchCV(create("itq"), {"bits": [16, 32]})`` needs no
``scoring``. It matches those classes instead of deriving from them: importing scikit-learn takes
a second or two, which every command of the CLI would pay; scikit-learn is imported only when one
of its protocols asks (tags, the error class, the scorer). ``tests/test_contract.py`` runs
scikit-learn's ``parametrize_with_checks`` over every registered method.

A fitted hasher is saved as a versioned folder (``hasher.json`` naming one file per learned
array); :mod:`learn2hash.methods.persistence` holds the format and the save and load.
"""

from __future__ import annotations

import abc
import dataclasses
import inspect
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Mapping

import numpy as np

from learn2hash.codes import Codes, Provenance
from learn2hash.datasets.base import Split, class_labels, is_sparse
from learn2hash.errors import CorruptFileError, InputTypeError, Learn2HashError, check_int, not_fitted
from learn2hash.methods.persistence import (FEATURES_FILE, HASHER_FORMAT, HASHER_VERSION,  # noqa: F401 (re-exported)
                                            hasher_checksum, load_hasher, save_hasher)
from learn2hash.methods.validation import Interval, validate_params

if TYPE_CHECKING:
    from learn2hash.centers import HashCenters
    from learn2hash.images import Geometry


@dataclasses.dataclass(frozen=True)
class FitContext:
    """What a run gives ``fit`` besides the data: ``fit(X, y, context=FitContext(...))``.

    ``folder``: the run folder (deep methods write their per-epoch checkpoints to
    ``folder/checkpoints`` and EDDH its distance plot to ``folder``); ``checkpoint_dir``: another
    place for the checkpoints; ``resume``: continue from the checkpoint there; ``progress``: show
    progress bars (None: when stderr is a terminal); ``log``: where the run's messages go;
    ``report_dir``: another place for the plots a fit draws (see :meth:`reports`).
    ``evaluate_every`` / ``evaluate``: deep methods call ``evaluate(encode)`` after every
    ``evaluate_every``-th epoch and after the last (``encode(x)`` gives the codes of items ``x`` under
    the weights of that moment) and record the figures it returns in that epoch's history entry
    (``learn2hash train --eval-every N``; the reference code's protocol).
    Methods that need none of it (the shallow ones) ignore it.
    """

    folder: Path | None = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    progress: bool | None = None
    log: Callable[[str], None] | None = None
    report_dir: Path | None = None
    evaluate_every: int = 0
    evaluate: Callable[[Callable[[Any], Any]], dict[str, float]] | None = None

    def checkpoints(self) -> Path | None:
        """Where checkpoints go: ``checkpoint_dir``, else ``folder/checkpoints``, else nowhere."""
        if self.checkpoint_dir is not None:
            return Path(self.checkpoint_dir)
        return None if self.folder is None else Path(self.folder) / "checkpoints"

    def reports(self) -> Path | None:
        """Where plots of the fit go: ``report_dir``, else ``folder``, else the folder holding the
        checkpoints, else nowhere."""
        if self.report_dir is not None:
            return Path(self.report_dir)
        if self.folder is not None:
            return Path(self.folder)
        checkpoints = self.checkpoints()
        return None if checkpoints is None else checkpoints.parent


def check_bits(bits: Any) -> int:
    return check_int(bits, "bits", 1, expected="a positive integer (the code length K >= 1)")


def as_split(data: Any, labels: Any = None, name: str = "train") -> Split:
    """Accept a :class:`Split`, or ``x`` with optional ``labels``, for ``fit``."""
    if isinstance(data, Split):
        if labels is not None:
            raise Learn2HashError("pass either a Split or (x, labels), not both")
        return data
    x = data
    n = len(x)
    if labels is None:
        labels = np.zeros((n, 0), dtype=bool)
    return Split(x=x, labels=labels, name=name, kind="features" if np.ndim(x) == 2 else "image")


#: channel counts recognised when telling ``[n, H, W, C]`` from ``[n, C, H, W]``
_CHANNELS = (1, 3)


def as_items(x: Any, item_shape: tuple[int, ...] | None = None) -> Any:
    """Images as users hold them -> the ``[n, C, H, W]`` layout the networks take (one conversion,
    at the boundary); anything else is returned unchanged.

    ``[n, H, W]`` (grey) gains a channel axis; ``[n, H, W, C]`` with ``C`` in (1, 3) is moved to
    channels-first (a copy). When both readings are possible (``[n, 3, 3, 3]``), channels-first is
    kept. ``item_shape``: the per-item shape a fitted hasher expects; a layout that matches it
    after conversion wins over the guess. Lazy arrays and ``Split`` objects pass through untouched.
    """
    refuse_sparse(x)
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        if isinstance(x, (list, tuple)):
            x = np.asarray(x)
        else:
            return x
    x = _numeric_items(x)
    if item_shape is not None:
        item_shape = tuple(int(s) for s in item_shape)
        if x.shape[1:] == item_shape:
            return x
        if len(item_shape) == 3 and x.ndim == 3 and item_shape == (1, *x.shape[1:]):
            return x[:, None]
        if len(item_shape) == 3 and x.ndim == 4 and x.shape[1:] == (*item_shape[1:], item_shape[0]):
            return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        return x
    if x.ndim == 3 and np.issubdtype(x.dtype, np.number):
        return x[:, None]
    if x.ndim == 4 and x.shape[3] in _CHANNELS and x.shape[1] not in _CHANNELS:
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    return x


def _numeric_items(x: np.ndarray, what: str = "X") -> np.ndarray:
    """Checks of items of any layout (an array of file paths passes unchanged), with the phrases of
    scikit-learn's checks: object arrays of numbers become float64 (anything else in one is an
    :class:`~learn2hash.errors.InputTypeError`); 1-D, complex and empty items are errors."""
    if x.dtype == object:
        if any(isinstance(v, (str, os.PathLike)) for v in x.flat):
            return x
        try:
            x = x.astype(np.float64)
        except (TypeError, ValueError) as exc:
            raise InputTypeError(f"{what} must be numeric: {exc}") from None
    if x.dtype.kind in "US":
        return x
    if x.ndim == 1:
        raise Learn2HashError(f"{what} must hold items along its first axis ([n, d] feature vectors, [n, H, W] images "
                              f"...), got shape {x.shape}; Reshape your data: x.reshape(1, -1) for a single item")
    if np.issubdtype(x.dtype, np.complexfloating):
        raise Learn2HashError(f"{what} has dtype {x.dtype}: Complex data not supported, it must be real")
    if x.ndim >= 2 and int(np.prod(x.shape[1:])) == 0:
        raise Learn2HashError(f"{what} has 0 feature(s) (shape={x.shape}) while a minimum of 1 is required.")
    return x


def as_features(x: Any, what: str = "input", dim: int | None = None, who: str = "this hasher") -> np.ndarray:
    """Items -> ``float64[n, d]`` feature vectors; images are flattened and scaled to [0, 1].

    The errors carry the phrases scikit-learn's estimator checks look for ("Reshape your data",
    "Complex data not supported", "X has 3 features, but ITQ is expecting 4 features as input",
    ...); ``who`` names the hasher (its class name) in the last one. An object array of numbers
    is converted; one holding anything else is an :class:`~learn2hash.errors.InputTypeError`."""
    refuse_sparse(x, what)
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    a = np.asarray(x)
    if a.ndim < 2:
        hint = "; Reshape your data: x.reshape(1, -1) for a single item" if a.ndim == 1 else ""
        raise Learn2HashError(f"{what} must be a 2-D array [n, d] of feature vectors (or images), got shape "
                              f"{a.shape}{hint}")
    a = _numeric_items(a, what)
    if not np.issubdtype(a.dtype, np.number) and a.dtype != bool:
        raise InputTypeError(f"{what} must be numeric, got dtype {a.dtype}")
    scale = 1.0 / 255.0 if a.dtype == np.uint8 else 1.0
    a = np.multiply(a.reshape(a.shape[0], int(np.prod(a.shape[1:]))), scale, dtype=np.float64)  # one allocation
    if not np.all(np.isfinite(a)):
        raise Learn2HashError(f"{what} contains NaN or infinite values")
    if dim is not None and a.shape[1] != dim:
        raise Learn2HashError(f"X has {a.shape[1]} features, but {who} is expecting {dim} features as input "
                              f"({what}: this hasher was fitted on {dim} features per item)")
    return a


def as_array(x: Any, what: str = "X") -> Any:
    """``x`` when it can be indexed and measured as it is (an array, a lazy array of files); anything
    else that numpy reads (lists, objects with ``__array__``) as an array; a sparse matrix is an error."""
    refuse_sparse(x, what)
    if hasattr(x, "shape") and hasattr(x, "__getitem__") and hasattr(x, "__len__"):
        return x
    return np.asarray(x)


def refuse_sparse(x: Any, what: str = "X") -> None:
    """One clear error for a scipy sparse matrix, which no hasher takes."""
    if is_sparse(x):
        raise Learn2HashError(f"{what} is a scipy sparse matrix; hashers take dense arrays, sparse input is not "
                              f"supported: pass a dense array (x.toarray(), or reduce it first, e.g. TruncatedSVD)")


class Hasher(abc.ABC):
    """A function from items to K-bit codes, learned by ``fit``.

    It has the surface of a scikit-learn transformer (see the module docstring): ``fit(X, y)``,
    ``transform(X)`` (the real values whose signs are the codes), ``fit_transform``, ``score(X, y)``,
    ``n_features_in_``, ``get_params`` / ``set_params``; and ``encode(X)`` -> :class:`Codes`.
    """

    name: ClassVar[str] = ""
    #: what ``encode`` accepts: "features" (vectors / flattened images), "image", "clip" or "any"
    input_kind: ClassVar[str] = "features"
    #: whether ``fit`` uses labels
    supervised: ClassVar[bool] = False
    #: parameters that do not change what is learned (device, workers ...): a resumed run may change them
    runtime_params: ClassVar[tuple[str, ...]] = ()
    #: whether the hasher has ``encode_images(paths, ...)``, decoding image files itself (deep hashers)
    takes_image_files: ClassVar[bool] = False

    def __init__(self, bits: int = 64, seed: int = 0):
        self.bits = bits
        self.seed = seed

    #: declared hyper-parameter constraints (see :mod:`learn2hash.methods.validation`), merged
    #: along the class hierarchy and checked once, at ``fit``
    _parameter_constraints: ClassVar[dict[str, list]] = {"bits": [Interval("int", 1)], "seed": [Interval("int", 0)]}

    # ------------------------------------------------------------------ params
    @classmethod
    def _param_names(cls) -> list[str]:
        names: list[str] = []
        for klass in cls.__mro__:
            if "__init__" not in vars(klass):
                continue
            for p in inspect.signature(klass.__init__).parameters.values():
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in names:
                    names.append(p.name)
        return names

    @classmethod
    def parameter_constraints(cls) -> dict[str, list]:
        """The constraints of every hyper-parameter, a subclass's declaration overriding its parents'."""
        merged: dict[str, list] = {}
        for klass in reversed(cls.__mro__):
            merged.update(vars(klass).get("_parameter_constraints", {}))
        return merged

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The hyper-parameters, as given to ``__init__`` (scikit-learn's protocol; no hasher nests
        another estimator, so ``deep`` changes nothing)."""
        return {name: getattr(self, name) for name in self._param_names()}

    def set_params(self, **params: Any) -> "Hasher":
        """Set hyper-parameters by name (checked at the next ``fit``); returns ``self``."""
        names = self._param_names()
        unknown = sorted(set(params) - set(names))
        if unknown:
            raise Learn2HashError(f"{self.name}: no parameter {', '.join(map(repr, unknown))}; "
                                  f"its parameters: {', '.join(sorted(names))}")
        for key, value in params.items():
            setattr(self, key, value)
        return self

    def _validate_params(self) -> None:
        validate_params(self.name, self.parameter_constraints(), self.get_params(deep=False))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ scikit-learn protocol
    def __sklearn_tags__(self) -> Any:
        """Tags for scikit-learn's meta-estimators (imported only when scikit-learn asks)."""
        from sklearn.utils import InputTags, Tags, TargetTags, TransformerTags

        return Tags(estimator_type=None, target_tags=TargetTags(required=bool(self.supervised)),
                    transformer_tags=TransformerTags(preserves_dtype=[]), input_tags=InputTags(two_d_array=True),
                    non_deterministic=False)

    def __sklearn_is_fitted__(self) -> bool:
        return bool(getattr(self, "fitted_", False))

    @property
    def n_features_in_(self) -> int:
        """The number of features of each training item (scikit-learn's name; images count every
        pixel of every channel); an ``AttributeError`` before ``fit``, as scikit-learn expects."""
        n = self._n_features() if getattr(self, "fitted_", False) else None
        if n is None:
            raise AttributeError(f"{type(self).__name__} has no n_features_in_ before fit")
        return n

    def _n_features(self) -> int | None:
        """Features per training item, for :attr:`n_features_in_` (the shallow methods' ``dim_``)."""
        dim = getattr(self, "dim_", None)
        return None if dim is None else int(dim)

    def fit_transform(self, X: Any, y: Any = None, **fit_params: Any) -> np.ndarray:
        """``fit(X, y, **fit_params)`` then ``transform(X)``, as scikit-learn's ``TransformerMixin``."""
        self.fit(X, y, **fit_params)
        return self.transform(X.x if isinstance(X, Split) else X)

    def score(self, X: Any, y: Any) -> float:
        """Retrieval mAP on held-out items ``X`` with labels ``y`` (what ``GridSearchCV`` maximises
        when given no ``scoring``): the first fifth of the items are the queries, the rest the
        database, ranked by Hamming distance over the whole database
        (:func:`learn2hash.metrics.map_scorer`; ``y`` as for ``fit``)."""
        from learn2hash.metrics import map_scorer

        return map_scorer()(self, X, y)

    # ------------------------------------------------------------------ API
    def fit(self, X: Any, y: Any = None, *, context: FitContext | None = None) -> "Hasher":
        """Learn the hash function from items ``X`` and labels ``y`` (class ids ``int[n]`` or multi-hot
        ``[n, c]``; unsupervised methods ignore them), or from a training :class:`Split` as ``X``.

        ``context``: what a run gives the fit (:class:`FitContext`); methods without epochs,
        checkpoints or progress bars ignore it. After every fit ``history_`` holds one record
        per epoch (an empty list for methods without epochs) and ``skipped_images_`` the training
        images that could not be read (empty unless a deep method was told to skip them).
        """
        self._validate_params()
        refuse_sparse(X)
        if not isinstance(X, (Split, Mapping)):
            X = as_array(X)
        if not self.supervised:
            y = None  # unsupervised: whatever labels come (GridSearchCV passes them) are not used
        elif y is not None:
            if isinstance(X, Split):
                raise Learn2HashError("pass either a Split or (x, labels), not both")
            y = class_labels(y, None if isinstance(X, Mapping) else len(X), what="y")
        split = as_split(X, y)
        if len(split) < 2:
            raise Learn2HashError(f"{self.name} needs at least 2 training items, got {len(split)} "
                                  f"(n_samples={len(split)})")
        if self.supervised and split.labels.shape[1] == 0:
            raise Learn2HashError(f"{self.name} is supervised: fit needs labels (it requires y to be passed, "
                                  "but the target y is None)")
        if self.supervised:
            empty = ~split.labels.any(axis=1)
            if empty.any():
                raise Learn2HashError(
                    f"{int(empty.sum())} training items have no positive label (first at row {int(np.argmax(empty))}); "
                    "every item needs at least one class"
                )
        self.history_: list[dict[str, Any]] = []
        self.skipped_images_: list[dict[str, Any]] = []
        self.checksum_: str | None = None  # a new fit is no saved hasher (yet)
        self._fit(split, context if context is not None else FitContext())
        self.fitted_ = True
        return self

    def transform(self, x: Any) -> np.ndarray:
        """The real-valued outputs ``[n, K]`` whose signs are the codes (bit 1 for ``>= 0``)."""
        raise NotImplementedError(f"{type(self).__name__} defines no transform")

    def encode(self, x: Any) -> Codes:
        """Items -> :class:`Codes` of ``self.bits`` bits (their ``provenance`` names this hasher when it
        was saved or loaded: see :meth:`provenance`)."""
        self._check_fitted()
        codes = self._encode(x)
        if codes.bits != self.bits:  # only a damaged saved hasher gets here (load checks what it can)
            raise CorruptFileError(f"this {self.name} hasher has bits={self.bits} but its learned state gives "
                                   f"{codes.bits}-bit codes (a damaged or edited hasher.json?)")
        return codes.with_provenance(self.provenance())

    #: the checksum of the saved hasher this one was loaded from or last saved as (see
    #: :func:`hasher_checksum`); None: never saved
    checksum_: str | None = None

    def provenance(self, source: str | None = None, source_sha256: str | None = None) -> Provenance | None:
        """What codes this hasher computes record (:class:`~learn2hash.codes.Provenance`): its
        ``checksum_`` and, when given, what was encoded; None for a hasher never saved or loaded."""
        if self.checksum_ is None:
            return None
        return Provenance(self.checksum_, source, source_sha256)

    def image_geometry(self) -> "Geometry | None":
        """The geometry image files and uploads are decoded to for this hasher when it decides it
        (deep hashers: their backbone's input); None (here): items are used at their stored size."""
        return None

    def resolved_params(self, split: Split | None = None) -> dict[str, Any]:
        """Parameters given as ``"auto"`` whose value depends on the training data, as they resolve
        for ``split`` (recorded in a run's ``config.json``); none by default."""
        return {}

    @abc.abstractmethod
    def _fit(self, split: Split, context: FitContext) -> None:
        """Learn from ``split`` (labels already checked); ``context``: what the run gives the fit
        (an empty :class:`FitContext` when ``fit`` got none). State that lives only during the fit
        stays in local variables or a per-fit object (deep methods: :class:`~learn2hash.methods.deep.TrainingTask`),
        never on ``self``: after ``fit`` the hasher holds its parameters and learned state only."""

    @abc.abstractmethod
    def _encode(self, x: Any) -> Codes:
        """Items -> codes."""

    def _check_fitted(self) -> None:
        if not getattr(self, "fitted_", False):
            raise not_fitted(f"this {self.name} hasher is not fitted yet: call fit first (or load a saved one)")

    # ------------------------------------------------------------------ state
    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(small JSON-able values, named arrays) that together with the params restore the hasher."""
        return {}, {}

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray], folder: Path,
                   files: dict[str, Path]) -> None:
        """Restore the learned state from what :meth:`_get_state` and :meth:`_extra_files` saved:
        ``files`` maps each extra file's name to its checked path in ``folder``."""

    def _extra_files(self) -> dict[str, bytes]:
        """Named binary files saved with the hasher (deep methods: their weights); ``name.ext`` -> bytes."""
        return {}

    def _probe_input(self) -> Any:
        """A tiny input that ``encode`` accepts, used by :meth:`load` to check the restored state (or None)."""
        return None

    def save(self, path: str | os.PathLike, *, features: Any = None) -> None:
        """Write the fitted hasher to folder ``path``, atomically as a whole (see :mod:`learn2hash.methods.persistence`).

        ``features``: the :class:`~learn2hash.features.FeatureHasher` this hasher is the inner part of; its
        feature stage goes into ``hasher.json`` (``features``) and its backbone's weights into a data file
        (``features.pt``), written in the same version as the rest."""
        self._check_fitted()
        save_hasher(self, path, features)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Hasher":
        """Load a hasher saved by :meth:`save` (any method when called as ``Hasher.load``).

        Anything damaged (hasher.json truncated or edited, a file missing or changed, parameters
        that contradict the learned state) raises :class:`CorruptFileError` naming the file.
        """
        return load_hasher(cls, path)


class HasCenters:
    """Capability mixin: a hasher that learns one hash center per class declares it by inheriting
    this; after ``fit`` (or ``load``) its ``centers_`` holds them (:class:`~learn2hash.centers.HashCenters`,
    ``centers_.codes`` a :class:`Codes` of ``bits`` bits, row ``c`` the center of class ``c``).
    Readers test ``isinstance(hasher, HasCenters)`` instead of probing for the attribute. The centers
    are saved and loaded with the hasher (``state["centers"]`` and the array ``centers``)."""

    centers_: "HashCenters"

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        state, arrays = super()._get_state()
        state["centers"], arrays["centers"] = self.centers_.to_state()
        return state, arrays

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray], folder: Path,
                   files: dict[str, Path]) -> None:
        from learn2hash.centers import HashCenters

        self.centers_ = HashCenters.from_state(state.get("centers"), arrays.get("centers"), self.bits,
                                               f"saved {self.name} hasher in {folder}")
        super()._set_state(state, arrays, folder, files)


class OnlineHasher(Hasher):
    """A hasher learned from a stream of chunks: ``partial_fit`` per chunk, old codes frozen."""

    @abc.abstractmethod
    def partial_fit(self, X: Any, y: Any = None) -> "OnlineHasher":
        """Learn from one more chunk: ``X`` as for ``fit`` (for several modalities a mapping of
        modality names to ``[n, d_m]`` arrays), ``y`` its labels."""
