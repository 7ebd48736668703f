"""The method registry: ``create(name, bits=..., **params)`` returns an unfitted hasher."""

from __future__ import annotations

import difflib
import importlib
from typing import Any

from learn2hash.errors import Learn2HashError
from learn2hash.methods.base import Hasher

_METHODS: dict[str, type[Hasher]] = {}
# modules whose import registers methods; a missing optional module is skipped
_MODULES = ("csq", "dhn", "hashnet", "dch", "shallow", "eddh", "lemon", "cca_itq")


def register(cls: type[Hasher]) -> type[Hasher]:
    """Class decorator: make ``cls`` available under ``cls.name``."""
    if not cls.name:
        raise RuntimeError(f"{cls.__name__} has no name")
    if cls.name in _METHODS and _METHODS[cls.name] is not cls:
        raise RuntimeError(f"method {cls.name!r} registered twice")
    _METHODS[cls.name] = cls
    return cls


def _ensure_loaded() -> None:
    for mod in _MODULES:
        try:
            importlib.import_module(f"learn2hash.methods.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"learn2hash.methods.{mod}":
                raise


def available() -> dict[str, type[Hasher]]:
    _ensure_loaded()
    return dict(sorted(_METHODS.items()))


def method_class(name: str) -> type[Hasher]:
    methods = available()
    if name not in methods:
        close = difflib.get_close_matches(str(name), list(methods), n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise Learn2HashError(f"unknown method {name!r}{hint}; known methods: {', '.join(methods)}")
    return methods[name]


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
