"""On-disk format of a Hamming index: segments of codes and ids, a tombstone file, a JSON manifest.

```
folder/
  manifest.json                     format, version, bits, generation, segments, tombstones,
                                    built_from (what the index was derived from, or null),
                                    hasher_sha256 (whose codes it holds, when known), checksum
  seg-<generation>-<n>.codes.npy    uint8[n, ceil(bits/8)] packed codes of one segment
  seg-<generation>-<n>.ids.npy      int64[n] ids of the same items
  tomb-<generation>.npy             int64 sorted positions of removed items (when there are any)
  .writer.lock                      the writers' lock file (never deleted)
```

Every array is plain ``.npy`` (never pickled); the manifest lists every file with its sha256 and
carries a checksum of its own content. A save writes the new files first (each atomically:
temporary file, fsync, rename), replaces the manifest last, and only then deletes files that
neither the new nor the previous manifest mentions; so an interrupted save leaves the old index
(or the new one) loadable, and a reader that loaded the previous generation can still open it.
Segments are never rewritten: adding codes to a saved index writes one new segment.

Writers take an exclusive lock (:func:`writer_lock`, ``flock`` on ``.writer.lock``) for the whole
save, from reading the previous manifest to the garbage collection, so generations are numbered
one after another and a writer never deletes the files of another. The kernel drops the lock of a
killed writer. Readers never take it: a reader whose manifest was replaced while it opened the
files (two saves in between may remove them) reads the new manifest and starts again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from learn2hash import _atomic
from learn2hash.codes import n_bytes
from learn2hash.errors import CorruptFileError, Learn2HashError

FORMAT = "learn2hash-hamming-index"
VERSION = 1
MANIFEST = "manifest.json"
LOCK = ".writer.lock"
#: How often a reader starts again when the manifest keeps changing under it.
READ_ATTEMPTS = 50
_OWN_FILE = re.compile(r"^(seg-\d+-\w+\.(codes|ids)\.npy|tomb-\d+-\w+\.npy)$")
# Temporary files of an atomic write that was killed before its rename.
_STALE_TEMP = re.compile(r"^\.(seg-|tomb-|manifest\.json).*\.tmp$")


@dataclass
class Segment:
    """Codes and ids of consecutive items; ``files`` names them in ``folder`` once saved there."""

    codes: np.ndarray
    ids: np.ndarray
    folder: Path | None = None
    files: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class Stored:
    """What :func:`read` returns."""

    bits: int
    segments: list[Segment]
    removed: np.ndarray  # int64 sorted positions
    next_id: int
    backend: str
    generation: int
    built_from: dict | None = None
    manifest_checksum: str = ""
    hasher_sha256: str | None = None


class IndexConflictError(Learn2HashError):
    """A save on top of an index folder that another writer changed since this index read it."""


_held = threading.local()


@contextlib.contextmanager
def writer_lock(folder: str | os.PathLike) -> Iterator[None]:
    """Hold the exclusive writer lock of index ``folder`` (created if needed); blocks while another
    writer (a process, or another thread of this one) holds it. Re-entrant within one thread."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    key = os.path.realpath(folder)
    held: dict[str, int] = _held.__dict__.setdefault("counts", {})
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    # one open file description per holder (file_lock opens the file anew): threads exclude each other too
    with _atomic.file_lock(folder / LOCK):
        held[key] = 1
        try:
            yield
        finally:
            held.pop(key, None)


def _checksum(manifest: dict) -> str:
    body = {k: v for k, v in manifest.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def read_manifest(folder: str | os.PathLike) -> dict:
    """The manifest of the index in ``folder``, checked (format, version, its own checksum)."""
    path = Path(folder) / MANIFEST
    if not path.exists():
        raise Learn2HashError(f"{folder} is not a saved Hamming index: it has no {MANIFEST}")
    manifest = _atomic.load_json(path, "Hamming index manifest", format=FORMAT, versions=(VERSION,))
    if manifest.get("checksum") != _checksum(manifest):
        raise CorruptFileError(f"index manifest {path} does not match its own checksum (edited or damaged)")
    return manifest


def _field(manifest: dict, key: str, kind: type, path: Path) -> Any:
    value = manifest.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise CorruptFileError(f"index manifest {path}: field {key!r} is missing or not a {kind.__name__}")
    return value


def _load_array(folder: Path, entry: dict, key: str, verify: bool, mmap: bool) -> np.ndarray:
    name = entry.get(key)
    if not isinstance(name, str) or not _OWN_FILE.match(name):
        raise CorruptFileError(f"index manifest in {folder} names an invalid file {name!r}")
    path = folder / name
    try:
        if verify and _atomic.sha256_file(path) != entry.get(key + "_sha256"):
            raise CorruptFileError(f"index file {path} does not match its checksum in the manifest")
    except FileNotFoundError:
        raise CorruptFileError(f"index file {path} listed in the manifest is missing") from None
    if not path.exists():
        raise CorruptFileError(f"index file {path} listed in the manifest is missing")
    try:
        return _atomic.load_npy(path, mmap=mmap)
    except Exception as exc:  # a damaged .npy header fails in numpy's parser with many exception types
        raise CorruptFileError(f"index file {path} cannot be read as .npy: {type(exc).__name__}: {exc}") from None


def read(folder: str | os.PathLike, mmap: bool = True, verify: bool = True) -> Stored:
    """Load a saved index; any damage (truncation, changed bytes, wrong version) is a clear error.

    Never waits for a writer: when a file the manifest lists cannot be read and the manifest has
    been replaced meanwhile, it starts again from the new manifest."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for attempt in range(READ_ATTEMPTS):
        try:
            return _read(folder, manifest, mmap, verify)
        except CorruptFileError:
            latest = read_manifest(folder)
            if latest.get("checksum") == manifest.get("checksum") or attempt == READ_ATTEMPTS - 1:
                raise
            manifest = latest
    raise AssertionError("unreachable")


def _read(folder: Path, manifest: dict, mmap: bool, verify: bool) -> Stored:
    path = folder / MANIFEST
    bits = _field(manifest, "bits", int, path)
    if bits < 1:
        raise CorruptFileError(f"index manifest {path}: bits must be positive, got {bits}")
    entries = _field(manifest, "segments", list, path)
    segments = []
    total = 0
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("n"), int):
            raise CorruptFileError(f"index manifest {path}: a segment entry is malformed")
        codes = _load_array(folder, entry, "codes", verify, mmap)
        ids = _load_array(folder, entry, "ids", verify, mmap)
        n = entry["n"]
        if codes.dtype != np.uint8 or codes.shape != (n, n_bytes(bits)):
            raise CorruptFileError(
                f"index file {folder / entry['codes']} holds {codes.dtype} {codes.shape}, "
                f"expected uint8 ({n}, {n_bytes(bits)}) for {n} codes of {bits} bits"
            )
        if ids.dtype != np.int64 or ids.shape != (n,):
            raise CorruptFileError(f"index file {folder / entry['ids']} holds {ids.dtype} {ids.shape}, expected int64 ({n},)")
        pad = 8 * n_bytes(bits) - bits
        if pad and n and np.any(np.asarray(codes[:, -1]) & np.uint8((1 << pad) - 1)):
            raise CorruptFileError(f"index file {folder / entry['codes']} has codes longer than {bits} bits")
        segments.append(Segment(codes, ids, folder, {k: entry[k] for k in ("codes", "ids", "codes_sha256", "ids_sha256", "n")}))
        total += n
    removed = np.zeros(0, np.int64)
    tomb = manifest.get("tombstones")
    if tomb is not None:
        if not isinstance(tomb, dict) or not isinstance(tomb.get("n"), int):
            raise CorruptFileError(f"index manifest {path}: the tombstone entry is malformed")
        removed = np.asarray(_load_array(folder, tomb, "file", verify, False))
        if removed.dtype != np.int64 or removed.shape != (tomb["n"],):
            raise CorruptFileError(f"tombstone file {folder / tomb['file']} holds {removed.dtype} {removed.shape}")
        if removed.size and (removed.min() < 0 or removed.max() >= total or np.any(np.diff(removed) <= 0)):
            raise CorruptFileError(f"tombstone file {folder / tomb['file']} lists positions outside 0..{total - 1}")
    if _field(manifest, "n", int, path) != total:
        raise CorruptFileError(f"index manifest {path} says {manifest['n']} items, its segments hold {total}")
    built_from = manifest.get("built_from")
    if built_from is not None and not isinstance(built_from, dict):
        raise CorruptFileError(f"index manifest {path}: field 'built_from' is not an object")
    hasher = manifest.get("hasher_sha256")
    if hasher is not None and not (isinstance(hasher, str) and re.fullmatch(r"[0-9a-f]{64}", hasher)):
        raise CorruptFileError(f"index manifest {path}: field 'hasher_sha256' is not a sha256 (64 hex digits)")
    return Stored(bits, segments, removed, _field(manifest, "next_id", int, path),
                  _field(manifest, "backend", str, path), _field(manifest, "generation", int, path),
                  built_from, manifest["checksum"], hasher)


def _previous(folder: Path) -> dict | None:
    try:
        return read_manifest(folder)
    except Learn2HashError:
        return None


def write(folder: str | os.PathLike, bits: int, segments: list[Segment], removed: np.ndarray, next_id: int,
          backend: str, built_from: dict | None = None, base: str | None = None,
          hasher_sha256: str | None = None) -> tuple[list[Segment], str]:
    """Save an index to ``folder`` under the writer lock; returns the segment list as now stored
    (unsaved segments are merged into one new segment) and the new manifest's checksum. Segments
    already stored in this folder are not rewritten.

    ``base``: the checksum of the manifest the index was read from (or last saved as) in this
    folder; when the folder's manifest is no longer that one, another writer has changed it and
    :class:`IndexConflictError` is raised with nothing written. ``None`` replaces whatever the
    folder holds."""
    folder = Path(folder)
    with writer_lock(folder):
        return _write(folder, bits, segments, removed, next_id, backend, built_from, base, hasher_sha256)


def _write(folder: Path, bits: int, segments: list[Segment], removed: np.ndarray, next_id: int,
           backend: str, built_from: dict | None, base: str | None,
           hasher_sha256: str | None = None) -> tuple[list[Segment], str]:
    previous = _previous(folder)
    if base is not None and (previous or {}).get("checksum") != base:
        now = f"generation {previous.get('generation')}" if previous else "no readable manifest"
        raise IndexConflictError(
            f"index {folder} was changed by another writer since this index was read or saved (it now holds "
            f"{now}); nothing was written: load it again and redo the change, or make the change inside "
            f"`with HammingIndex.edit({str(folder)!r}) as index:`, which holds the writer lock")
    known = set()
    if previous is not None:
        known = {(s.get("codes"), s.get("codes_sha256")) for s in previous.get("segments", []) if isinstance(s, dict)}
    generation = (previous.get("generation", 0) if previous else 0) + 1
    token = secrets.token_hex(4)

    here = folder.resolve()
    resolved: dict[Path, Path] = {}

    def stored_here(seg: Segment) -> bool:
        if seg.folder is None or (seg.files.get("codes"), seg.files.get("codes_sha256")) not in known:
            return False
        if seg.folder not in resolved:
            resolved[seg.folder] = seg.folder.resolve()
        return resolved[seg.folder] == here

    out: list[Segment] = []
    pending: list[Segment] = []

    def flush() -> None:
        if not pending:
            return
        codes = np.concatenate([np.asarray(s.codes) for s in pending]) if len(pending) > 1 else np.asarray(pending[0].codes)
        ids = np.concatenate([np.asarray(s.ids) for s in pending]) if len(pending) > 1 else np.asarray(pending[0].ids)
        stem = f"seg-{generation:06d}-{len(out)}{token}"
        files = {"codes": f"{stem}.codes.npy", "ids": f"{stem}.ids.npy", "n": int(ids.shape[0])}
        _atomic.save_npy(folder / files["codes"], np.ascontiguousarray(codes, np.uint8))
        _atomic.save_npy(folder / files["ids"], np.ascontiguousarray(ids, np.int64))
        files["codes_sha256"] = _atomic.sha256_file(folder / files["codes"])
        files["ids_sha256"] = _atomic.sha256_file(folder / files["ids"])
        out.append(Segment(codes, ids, folder, files))
        pending.clear()

    for seg in segments:
        if len(seg) == 0:
            continue
        if stored_here(seg):
            flush()
            out.append(seg)
        else:
            pending.append(seg)
    flush()

    tomb = None
    if removed.size:
        name = f"tomb-{generation:06d}-{token}.npy"
        _atomic.save_npy(folder / name, np.asarray(removed, np.int64))
        tomb = {"file": name, "n": int(removed.size), "file_sha256": _atomic.sha256_file(folder / name)}
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "bits": int(bits),
        "generation": generation,
        "n": int(sum(len(s) for s in out)),
        "next_id": int(next_id),
        "backend": backend,
        "segments": [dict(s.files) for s in out],
        "tombstones": tomb,
        "built_from": built_from,
    }
    if hasher_sha256 is not None:  # the hasher whose codes the index holds
        manifest["hasher_sha256"] = hasher_sha256
    manifest["checksum"] = _checksum(manifest)
    _atomic.save_json(folder / MANIFEST, manifest)
    _collect_garbage(folder, manifest, previous)
    return out, manifest["checksum"]


def _referenced(manifest: dict | None) -> set[str]:
    if not manifest:
        return set()
    names = set()
    for s in manifest.get("segments", []) or []:
        if isinstance(s, dict):
            names.update(str(s.get(k)) for k in ("codes", "ids"))
    tomb = manifest.get("tombstones")
    if isinstance(tomb, dict):
        names.add(str(tomb.get("file")))
    return names


def _collect_garbage(folder: Path, manifest: dict, previous: dict | None) -> None:
    """Delete this format's files that neither the new nor the previous manifest references."""
    keep = _referenced(manifest) | _referenced(previous)
    for path in folder.iterdir():
        if (_OWN_FILE.match(path.name) and path.name not in keep) or _STALE_TEMP.match(path.name):
            try:
                path.unlink()
            except OSError:
                pass
