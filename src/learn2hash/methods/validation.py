"""Declared hyper-parameter constraints, checked once at ``fit``.

Each hasher class declares ``_parameter_constraints = {"name": [constraint, ...]}`` (merged along
the class hierarchy, a subclass overriding its parents); a value is valid when any of its
constraints accepts it (``None`` in the list accepts ``None``). :func:`validate_params` raises one
:class:`~learn2hash.errors.Learn2HashError` naming the method, the parameter, what was expected
and what was given. The idea follows scikit-learn's ``_param_validation``.

:func:`spell_out_signature` gives a subclass ``__init__`` written as ``(self, <own>, **deep)`` the
signature of every parameter it takes, so that ``inspect.signature`` and scikit-learn's
``get_params`` see them all.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from learn2hash.errors import Learn2HashError


class Constraint:
    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(float(v))


@dataclass(frozen=True)
class Interval(Constraint):
    """An integer (``kind="int"``) or finite real (``kind="real"``) in ``[low, high]``; ``closed``
    says which ends belong to it ("both", "left", "right", "neither"); ``None`` = unbounded."""

    kind: str
    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def accepts(self, value: Any) -> bool:
        if not (_is_int(value) if self.kind == "int" else _is_real(value)):
            return False
        v = float(value)
        if self.low is not None and (v < self.low or (v == self.low and self.closed in ("right", "neither"))):
            return False
        if self.high is not None and (v > self.high or (v == self.high and self.closed in ("left", "neither"))):
            return False
        return True

    def describe(self) -> str:
        what = "an integer" if self.kind == "int" else "a finite number"
        lo_in, hi_in = self.closed in ("both", "left"), self.closed in ("both", "right")
        if self.low is not None and self.high is not None:
            return f"{what} in {'[' if lo_in else '('}{self.low:g}, {self.high:g}{']' if hi_in else ')'}"
        if self.low is not None:
            return f"{what} {'>=' if lo_in else '>'} {self.low:g}"
        if self.high is not None:
            return f"{what} {'<=' if hi_in else '<'} {self.high:g}"
        return what


@dataclass(frozen=True)
class Options(Constraint):
    """One of the given values (strings, usually)."""

    values: tuple

    def accepts(self, value: Any) -> bool:
        return isinstance(value, type(self.values[0])) and value in self.values

    def describe(self) -> str:
        return "one of " + ", ".join(map(repr, self.values))


class Boolean(Constraint):
    def accepts(self, value: Any) -> bool:
        return isinstance(value, bool)

    def describe(self) -> str:
        return "true or false"


class String(Constraint):
    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and bool(value)

    def describe(self) -> str:
        return "a non-empty string"


class Dict(Constraint):
    def accepts(self, value: Any) -> bool:
        return isinstance(value, Mapping) and all(isinstance(k, str) for k in value)

    def describe(self) -> str:
        return "a mapping of option names to values"


@dataclass(frozen=True)
class ListOf(Constraint):
    """A list or tuple whose every element the inner constraint accepts."""

    item: Constraint

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and all(self.item.accepts(v) for v in value)

    def describe(self) -> str:
        return f"a list whose every item is {self.item.describe()}"


def describe(constraints: Iterable[Constraint | None]) -> str:
    parts = ["None" if c is None else c.describe() for c in constraints]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " or " + parts[-1]


def validate_params(owner: str, constraints: Mapping[str, list], params: Mapping[str, Any]) -> None:
    """Raise one clear error for the first parameter in ``params`` that no constraint accepts."""
    for name, allowed in constraints.items():
        if name not in params:
            continue
        value = params[name]
        if any((c is None and value is None) or (c is not None and c.accepts(value)) for c in allowed):
            continue
        raise Learn2HashError(f"{owner}: parameter {name} must be {describe(allowed)}, got {value!r}")


def spell_out_signature(cls: type, shared: list[inspect.Parameter] | None = None) -> None:
    """Give ``cls.__init__``, written as ``(self, <own parameters>, **deep)``, the signature of every
    parameter it takes: its own, then the ``shared`` ones (default: those of the parent's ``__init__``
    that it does not write itself), keyword-only, with ``cls.shared_defaults`` applied; a call binds
    to that signature, fills in its defaults and passes the shared parameters on as ``**deep``. An
    ``__init__`` without ``**deep`` is left as it is."""
    init = vars(cls).get("__init__")
    if init is None:
        if vars(cls).get("shared_defaults"):
            raise TypeError(f"{cls.__name__} declares shared_defaults but no __init__(self, ..., **deep)")
        return
    sig = inspect.signature(init)
    params = list(sig.parameters.values())
    if not params or params[-1].kind is not inspect.Parameter.VAR_KEYWORD:
        return
    own = params[:-1]
    names = {p.name for p in own}
    if shared is None:
        shared = [p for p in inspect.signature(super(cls, cls).__init__).parameters.values()
                  if p.name != "self" and p.name not in names and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)]
    defaults = dict(vars(cls).get("shared_defaults", {}))
    unknown = sorted(set(defaults) - {p.name for p in shared})
    if unknown:
        raise TypeError(f"{cls.__name__}.shared_defaults names {', '.join(unknown)}, which are not shared parameters")
    shared = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY, default=defaults.get(p.name, p.default)) for p in shared]
    full = sig.replace(parameters=own + shared)

    @functools.wraps(init)
    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            bound = full.bind(self, *args, **kwargs)
        except TypeError as exc:
            raise TypeError(f"{cls.__name__}(): {exc}") from None
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        init(arguments.pop("self"), **arguments)

    __init__.__signature__ = full  # type: ignore[attr-defined]
    cls.__init__ = __init__  # type: ignore[misc]
