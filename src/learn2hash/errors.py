"""Exceptions a user can cause.

Every error that bad input can provoke is a :class:`Learn2HashError` (a ``ValueError``), with a
message that names the input and says what was expected. The command line turns these into one
line on stderr and a non-zero exit status.
"""

from __future__ import annotations

import difflib
import numbers
from typing import Iterable


class Learn2HashError(ValueError):
    """Bad input: wrong shape, wrong bit length, NaN, unknown name, corrupt or missing file."""


class InputTypeError(Learn2HashError, TypeError):
    """Input of the wrong type where numbers were expected (an object array holding a dict ...);
    also a ``TypeError``, as numpy and scikit-learn raise for it."""


class DatasetNotFoundError(Learn2HashError, FileNotFoundError):
    """A known dataset whose files are not on this machine; the message says how to get them."""


class CorruptFileError(Learn2HashError):
    """A file that exists but cannot be trusted: truncated, wrong checksum, wrong format version."""


class ImageTooLargeError(CorruptFileError):
    """An image whose pixels or metadata would decompress to more than the decoder allows
    (a decompression bomb: Pillow's pixel limit, an oversized compressed text or profile chunk)."""


class MissingFileError(Learn2HashError, FileNotFoundError):
    """A file that a reader needs and that does not exist."""


def check_int(value: object, what: str, minimum: int, maximum: int | None = None,
              expected: str | None = None) -> int:
    """``value`` as an ``int`` when it is an integer (not a bool) in ``[minimum, maximum]``, else a
    :class:`Learn2HashError` naming ``what`` (and ``expected``, by default "an integer >= minimum"):
    the one check of integer arguments (``bits``, ``k``, ``radius``, ``threads``, ``topk`` ...)."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum
            or (maximum is not None and int(value) > maximum)):
        if expected is None:
            expected = f"an integer >= {minimum}" if maximum is None else f"an integer in [{minimum}, {maximum}]"
        raise Learn2HashError(f"{what} must be {expected}, got {value!r}")
    return int(value)


def unknown_name(kind: str, name: object, known: Iterable[str], suggest: Iterable[str] | None = None) -> Learn2HashError:
    """The error of every registry (methods, backbones, datasets) for a name it does not hold:
    ``unknown KIND 'NAME' (did you mean A, B?); known KINDs: ...``. ``known``: what the message lists;
    ``suggest``: the names close matches are drawn from (default ``known``)."""
    known = list(known)
    close = difflib.get_close_matches(str(name), list(known if suggest is None else suggest), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return Learn2HashError(f"unknown {kind} {name!r}{hint}; known {kind}s: {', '.join(known)}")


def _not_fitted_class() -> type:
    """``NotFittedError``: a :class:`Learn2HashError` that is also scikit-learn's ``NotFittedError``
    (made on first use, so that scikit-learn, a second or two to import, is imported only then)."""
    global _NOT_FITTED
    if _NOT_FITTED is None:
        try:
            from sklearn.exceptions import NotFittedError as _SklearnNotFitted
        except ImportError:  # pragma: no cover - scikit-learn is a dependency
            _SklearnNotFitted = AttributeError
        _NOT_FITTED = type("NotFittedError", (Learn2HashError, _SklearnNotFitted), {
            "__module__": __name__,
            "__doc__": "An estimator used before ``fit`` (also a ``sklearn.exceptions.NotFittedError``, "
                       "a ValueError and an AttributeError).",
        })
    return _NOT_FITTED


_NOT_FITTED: type | None = None


def not_fitted(message: str) -> Learn2HashError:
    """A :data:`NotFittedError` with ``message``, to raise."""
    return _not_fitted_class()(message)


def __getattr__(name: str):
    if name == "NotFittedError":
        return _not_fitted_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class WeightsDownloadError(Learn2HashError):
    """Pretrained weights named by a library's name that could not be downloaded (no network).

    ``what`` names the weights, ``source`` where they are published (a URL, or None), ``reason``
    the download's failure; the message says how to pass a local file instead."""

    def __init__(self, message: str, what: str = "", source: str | None = None, reason: str = ""):
        super().__init__(message)
        self.what, self.source, self.reason = what, source, reason
