"""The method registry: ``create(name, bits=..., **params)`` returns an unfitted hasher.

Every registry of learn2hash speaks the same words: ``available()`` (what exists, by name),
``register(...)`` (add one), ``create(name, ...)`` (build one; datasets: ``load(name, ...)``), and
the same error for a name it does not hold (:func:`learn2hash.errors.unknown_name`). See
:mod:`learn2hash.nn` for backbones and :mod:`learn2hash.datasets` for datasets.

The registry is lazy: each name maps to ``"module:Class"`` and the module is imported only when
the class is needed (``method_class``, ``create``, ``Hasher.load``). Listing the methods
(:func:`available`) imports nothing, so shallow methods and ``learn2hash methods`` work without
torch, which only the deep methods need. What the listing shows (input kind, supervision, one-line
summary) is declared next to the target; a test checks it against the classes.

A method defined outside the package registers itself with :func:`register` (a class decorator).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from learn2hash.errors import Learn2HashError, unknown_name

if TYPE_CHECKING:
    from learn2hash.methods.base import Hasher


@dataclass(frozen=True)
class MethodInfo:
    """A registered method, described without importing it."""

    name: str
    target: str  # "module:Class"
    input_kind: str  # what encode accepts: "features", "image", "clip" or "any"
    supervised: bool
    summary: str  # first line of the class docstring

    @property
    def needs_torch(self) -> bool:
        return self.input_kind == "any"


#: the built-in methods: name | module:Class under learn2hash.methods | what encode takes | supervised | summary
_TABLE = """
cca-itq   | cca_itq:CCAITQ      | features | no  | Multi-view CCA to ``bits`` dimensions, then an ITQ rotation shared by all modalities.
csq       | csq:CSQ             | any      | yes | Central Similarity Quantization; see the module docstring for the loss.
dch       | dch:DCH             | any      | yes | Deep Cauchy Hashing: Cauchy cross-entropy on normalised Hamming distances + Cauchy quantization.
dhn       | dhn:DHN             | any      | yes | Deep Hashing Network: pairwise cross-entropy on ``<u_i, u_j>/2`` + log cosh quantization.
eddh      | eddh:EDDH           | any      | yes | Enhanced Deep Discrete Hashing; see the module docstring for Ŝ, the objective and the steps.
hashnet   | hashnet:HashNet     | any      | yes | HashNet: balanced pairwise likelihood with ``tanh(beta * a)``, beta raised by continuation.
itq       | shallow:ITQ         | features | no  | Iterative quantization: PCA to K dimensions, then a learned orthogonal rotation.
lemon     | lemon:LEMON         | features | yes | Online cross-modal hashing: ``partial_fit(views, labels)`` per chunk, ``encode(x, modality=...)``.
lsh       | shallow:LSH         | features | no  | Locality-sensitive hashing: ``sign((x - mean) W)`` with ``W`` i.i.d. standard normal ``[d, K]``.
orthohash | orthohash:OrthoHash | any      | yes | OrthoHash: cross-entropy on scaled cosine similarities to a fixed +-1 codebook, with a margin.
sdh       | shallow:SDH         | features | yes | Supervised discrete hashing (Shen, Shen, Liu & Shen, CVPR 2015).
"""


def _builtin(table: str) -> tuple[MethodInfo, ...]:
    rows = [[cell.strip() for cell in line.split("|", 4)] for line in table.strip().splitlines()]
    return tuple(MethodInfo(name, "learn2hash.methods." + target, kind, supervised == "yes", summary)
                 for name, target, kind, supervised, summary in rows)


_BUILTIN = _builtin(_TABLE)

_INFO: dict[str, MethodInfo] = {m.name: m for m in _BUILTIN}
_CLASSES: dict[str, type[Hasher]] = {}  # imported (or externally registered) classes


def _target(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _summary(cls: type) -> str:
    doc = (cls.__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


def register(cls: type[Hasher]) -> type[Hasher]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise RuntimeError(f"{cls.__name__} has no name")
    known = _INFO.get(cls.name)
    if known is not None and known.target != _target(cls):
        raise RuntimeError(f"method {cls.name!r} registered twice ({known.target} and {_target(cls)})")
    if cls.name in _CLASSES and _CLASSES[cls.name] is not cls:
        raise RuntimeError(f"method {cls.name!r} registered twice")
    if known is None:
        _INFO[cls.name] = MethodInfo(cls.name, _target(cls), cls.input_kind, bool(cls.supervised), _summary(cls))
    _CLASSES[cls.name] = cls
    return cls


def available() -> dict[str, MethodInfo]:
    """Every registered method by name, sorted; imports no method module."""
    return dict(sorted(_INFO.items()))


def _unknown(name: Any) -> Learn2HashError:
    return unknown_name("method", name, sorted(_INFO))


def method_class(name: str) -> type[Hasher]:
    """The class of method ``name`` (its module is imported now if it was not yet)."""
    if name in _CLASSES:
        return _CLASSES[name]
    info = _INFO.get(name) if isinstance(name, str) else None
    if info is None:
        raise _unknown(name)
    module, _, qualname = info.target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name in ("torch", "torchvision") or (exc.name or "").startswith("torch."):
            raise Learn2HashError(f"method {name!r} needs PyTorch, which is not installed: "
                                  "pip install 'learn2hash[deep]'") from None
        raise
    klass = mod
    for part in qualname.split("."):
        klass = getattr(klass, part)
    _CLASSES[name] = klass  # type: ignore[assignment]
    return klass  # type: ignore[return-value]


def create(name: str, bits: int = 64, **params: Any) -> Hasher:
    """An unfitted hasher of method ``name`` with ``bits`` bits and the given hyper-parameters."""
    from learn2hash.methods.base import check_bits

    klass = method_class(name)
    check_bits(bits)
    allowed = set(klass._param_names())
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise Learn2HashError(
            f"method {name!r} has no parameter {', '.join(map(repr, unknown))}; its parameters: {', '.join(sorted(allowed))}"
        )
    return klass(bits=bits, **params)
