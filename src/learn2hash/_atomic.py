"""Atomic writes, the one JSON reader, and the pieces of a versioned multi-file save.

- :func:`atomic_open` / :func:`save_npy` / :func:`save_json`: write to a temporary file in the
  same folder, fsync, rename over the target. A reader sees either the old file or the new one,
  never a half-written one, and a failure leaves the target untouched.
- :func:`load_json`: every JSON file learn2hash reads goes through it. It checks the format
  name, the version and the type of each declared field, and raises
  :class:`~learn2hash.errors.CorruptFileError` naming the file and what was expected (a
  missing file is a :class:`~learn2hash.errors.MissingFileError`).
- An artifact of several files (codes + metadata, a saved hasher) is saved as a *version*: new
  data files under names of their own (:func:`content_name`), then the small JSON file that names them
  is replaced last (the switch), then :func:`collect_garbage` removes what neither the new nor
  the previous JSON file names. One writer at a time per artifact (:func:`file_lock`); readers
  take no lock: they read the JSON file, then the files it names, and retry when a concurrent
  save collected them in between. :mod:`learn2hash._versioned` puts these pieces together.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from learn2hash.errors import CorruptFileError, Learn2HashError, MissingFileError

import filelock


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry (the rename) to disk; a no-op where the OS does not allow it."""
    try:
        fd = os.open(os.fspath(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file beside ``path``; on clean exit fsync it and rename it to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write ``array`` as ``.npy`` (never pickled), atomically."""
    save_bytes(path, npy_bytes(array, path))


def npy_bytes(array: np.ndarray, what: object = "an array") -> bytes:
    """The ``.npy`` file content of ``array`` (never pickled)."""
    array = np.asarray(array)
    if array.dtype.hasobject:
        raise TypeError(f"refusing to save an object array to {what}: only plain dtypes are stored")
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def save_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path``, atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def content_name(stem: str, data: bytes, suffix: str) -> tuple[str, str]:
    """``(stem.<first 12 hex digits of sha256>suffix, sha256 hex)``: the file name of one saved version.

    Named by content, a version saved again unchanged keeps its name and the JSON file naming it
    stays byte for byte the same.
    """
    digest = hashlib.sha256(data).hexdigest()
    return f"{stem}.{digest[:12]}{suffix}", digest


def load_npy(path: str | os.PathLike, mmap: bool = False) -> np.ndarray:
    """Read a ``.npy`` written by :func:`save_npy`; pickled content is refused.

    A damaged file raises ``ValueError`` (numpy's header parser fails with many exception types,
    ``SyntaxError`` and ``tokenize.TokenError`` among them); a missing file raises ``OSError``.
    """
    try:
        return np.load(os.fspath(path), allow_pickle=False, mmap_mode="r" if mmap else None)
    except OSError:
        raise
    except Exception as exc:
        raise ValueError(f"{path} is not a readable .npy file: {type(exc).__name__}: {exc}") from None


def save_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=json_default) + "\n"
    with atomic_open(path, "w") as fh:
        fh.write(text)


# ----------------------------------------------------------------------------- the JSON reader
_TYPE_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer", float: "a number",
               bool: "true or false", type(None): "null"}


def json_type(value: Any) -> str:
    """How a JSON value is described in messages: ``"a list"``, ``"a string"``, ``"null"`` ..."""
    for t in (bool, int, float, str, list, dict, type(None)):
        if isinstance(value, t):
            return _TYPE_NAMES[t]
    return type(value).__name__


def _as_tuple(types: Any) -> tuple[type, ...]:
    return types if isinstance(types, tuple) else (types,)


def describe_types(types: Any) -> str:
    return " or ".join(_TYPE_NAMES.get(t, t.__name__) for t in _as_tuple(types))


def type_ok(value: Any, types: Any) -> bool:
    """JSON typing: ``int`` excludes booleans, ``float`` accepts integers (not booleans)."""
    for t in _as_tuple(types):
        if t is int:
            if isinstance(value, int) and not isinstance(value, bool):
                return True
        elif t is float:
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                return True
        elif isinstance(value, t):
            return True
    return False


def check_fields(obj: Mapping[str, Any], where: str, required: Mapping[str, Any] | None = None,
                 optional: Mapping[str, Any] | None = None) -> Mapping[str, Any]:
    """Check that ``obj`` has every ``required`` key and that each declared key has its JSON type.

    ``where`` names the file (and the place in it) for the message, e.g. ``"hasher file X: 'arrays'"``.
    """
    for key, types in (required or {}).items():
        if key not in obj:
            raise CorruptFileError(f"{where} has no {key!r} (expected {describe_types(types)})")
    for key, types in {**(optional or {}), **(required or {})}.items():
        if key in obj and not type_ok(obj[key], types):
            raise CorruptFileError(f"{where}: {key!r} is {json_type(obj[key])}, expected {describe_types(types)}")
    return obj


def load_json(path: str | os.PathLike, what: str = "JSON file", *, format: str | None = None,
              versions: Iterable[int] | None = None, kind: type | None = None,
              required: Mapping[str, Any] | None = None, optional: Mapping[str, Any] | None = None) -> Any:
    """Read a JSON file and check what it holds; the one JSON reader of learn2hash.

    ``what`` names the file in messages ("run configuration", "codes metadata" ...). ``format``:
    the value its ``"format"`` key must have; ``versions``: the ``"version"`` values this code
    reads; ``kind``: ``dict`` or ``list`` (implied ``dict`` by any of the other checks);
    ``required`` / ``optional``: ``{key: type or (types...)}`` (see :func:`type_ok`).
    Damage of any kind (truncated, not UTF-8, not JSON, too deeply nested, wrong types, missing
    keys) raises :class:`CorruptFileError`; a missing file :class:`MissingFileError`.
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError:
        raise MissingFileError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise CorruptFileError(f"{what} {path} is a folder, expected a JSON file") from None
    except OSError as exc:  # an unreadable file (EIO, a name too long, permissions ...)
        raise CorruptFileError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    try:
        obj = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CorruptFileError(f"{what} {path} is not valid JSON (truncated or damaged? {detail})") from None
    if kind is None and (format is not None or versions is not None or required or optional):
        kind = dict
    if kind is not None and not isinstance(obj, kind):
        raise CorruptFileError(f"{what} {path} holds {json_type(obj)}, expected {_TYPE_NAMES.get(kind, kind)}")
    if format is not None and obj.get("format") != format:
        raise CorruptFileError(f"{path} is not a learn2hash {what}: its \"format\" is {obj.get('format')!r}, "
                               f"expected {format!r}")
    if versions is not None:
        versions = tuple(versions)
        version = obj.get("version")
        if not type_ok(version, int) or version not in versions:
            known = ", ".join(map(str, versions))
            raise CorruptFileError(f"{what} {path} has format version {version!r}; this learn2hash reads "
                                   f"version{'s' if len(versions) > 1 else ''} {known}")
    if required or optional:
        check_fields(obj, f"{what} {path}", required, optional)
    return obj


# ----------------------------------------------------------------------------- versioned saves
def version_token() -> str:
    """A fresh random name part (12 hex digits), for temporary names."""
    return secrets.token_hex(6)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, wait: bool = True, busy: str | None = None) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed, left in place) while inside.

    A :class:`filelock.FileLock` (``flock`` on POSIX, ``LockFileEx`` on Windows), opened anew per
    call, so that two threads of one process exclude each other as two processes do. ``wait``:
    block until the lock is free; otherwise raise :class:`Learn2HashError` with message ``busy``
    when another holder has it. Readers never take it. The lock goes with the process: a writer
    killed while holding it releases it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(path, timeout=-1 if wait else 0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise Learn2HashError(busy or f"{path.parent} is being written by another process") from None
    try:
        yield
    finally:
        lock.release()


def collect_garbage(folder: str | os.PathLike, candidates: re.Pattern[str], keep: Iterable[str]) -> list[str]:
    """Delete the files in ``folder`` whose names match ``candidates`` and are not in ``keep``.

    Call it with the artifact's lock held, after the switch, with ``keep`` = the files the new and
    the previous version name (a reader that has just read the previous JSON file still finds its
    files). Returns the names deleted.
    """
    folder = Path(folder)
    keep = set(keep)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.name in keep or not candidates.match(entry.name):
            continue
        with contextlib.suppress(OSError):  # gone already, a folder, not ours to delete: left as is
            os.unlink(entry.path)
            removed.append(entry.name)
    return removed


def stale_temps(name: str) -> re.Pattern[str]:
    """Names of the temporary files :func:`atomic_open` makes for target ``name`` (left by a kill)."""
    return re.compile(r"^\." + re.escape(name) + r"\.[^/]*\.tmp$")


def json_default(obj: Any) -> Any:
    """``json.dumps(default=...)`` of learn2hash: numpy scalars and arrays, paths."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")




def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()
