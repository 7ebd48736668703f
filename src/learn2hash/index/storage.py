"""On-disk format of a Hamming index: segments of codes and ids, a tombstone file, a JSON manifest.

```
folder/
  manifest.json                     format, version, bits, generation, segments, tombstones,
                                    built_from (what the index was derived from, or null),
                                    hasher_sha256 (whose codes it holds, when known), checksum
  seg-<generation>-<n>.codes.npy    uint8[n, ceil(bits/8)] packed codes of one segment
  seg-<generation>-<n>.ids.npy      int64[n] ids of the same items
  seg-<generation>-<n>.payload.npy  uint8 bytes of the items' payloads, one after another (when any
  seg-<generation>-<n>.offsets.npy  item has one) and int64[n + 1] where each item's bytes start and end
  tomb-<generation>.npy             int64 sorted positions of removed items (when there are any)
  .writer.lock                      the writers' lock file (never deleted)
```

Every array is plain ``.npy`` (never pickled); the manifest lists every file with its sha256 and
carries a checksum of its own content. A save writes the new files first (each atomically:
temporary file, fsync, rename), replaces the manifest last, and only then deletes files that
neither the new nor the previous manifest mentions; so an interrupted save leaves the old index
(or the new one) loadable, and a reader that loaded the previous generation can still open it.
Adding codes to a saved index writes one new segment; stored segments are not rewritten, except
when merged:

- **automatic merging**: when a save would leave more than ``max_segments`` segments (default
  :data:`MAX_SEGMENTS`), the newest segments are merged into one (a suffix chosen so that segment
  sizes stay roughly geometric, which bounds the bytes rewritten per item by the log of the index
  size). Merging concatenates in order, so positions and tombstones stay as they are.
- **compaction** (:meth:`HammingIndex.compact`): the items left are rewritten into one segment and
  the tombstones dropped, saved like any change (new files, then the manifest).

Either way the manifest switch is the commit: a reader sees the old segments or the merged one, and
a kill before the switch leaves the old index (its unused new files are collected by the next save).
An item may carry a *payload*, a short byte string stored beside its code and id (a collection
keeps each item's source there); an index with payloads is saved as format version 2.

The folder is a :class:`~learn2hash._versioned.VersionedFolder`. Writers take an exclusive lock
(:func:`writer_lock`, a file lock on ``.writer.lock``) for the whole
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
from learn2hash._versioned import Version, VersionedFolder
from learn2hash.codes import n_bytes
from learn2hash.errors import CorruptFileError, Learn2HashError

FORMAT = "learn2hash-hamming-index"
VERSION = 1
#: the format version of an index with payloads (version 1 readers would drop them)
PAYLOAD_VERSION = 2
#: a save that would leave more segments than this merges the newest ones (see the module's docstring)
MAX_SEGMENTS = 32
MANIFEST = "manifest.json"
LOCK = ".writer.lock"
#: How often a reader starts again when the manifest keeps changing under it.
READ_ATTEMPTS = 50
_OWN_FILE = re.compile(r"^(seg-\d+-\w+\.(codes|ids|payload|offsets)\.npy|tomb-\d+-\w+\.npy)$")
# Temporary files of an atomic write that was killed before its rename.
_STALE_TEMP = re.compile(r"^\.(seg-|tomb-|manifest\.json).*\.tmp$")


@dataclass
class Segment:
    """Codes and ids of consecutive items; ``files`` names them in ``folder`` once saved there.

    ``payload`` / ``offsets``: the items' payloads (item ``i`` holds ``payload[offsets[i]:offsets[i+1]]``),
    or ``None`` when no item of the segment has one."""

    codes: np.ndarray
    ids: np.ndarray
    folder: Path | None = None
    files: dict[str, Any] = field(default_factory=dict)
    payload: np.ndarray | None = None
    offsets: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def payload_of(self, i: int) -> bytes:
        """The payload of the segment's ``i``-th item (``b""`` when it has none)."""
        if self.offsets is None:
            return b""
        return bytes(self.payload[int(self.offsets[i]):int(self.offsets[i + 1])])


def merge_segments(segments: list[Segment], keep: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``(codes, ids, payload, offsets)`` of ``segments`` one after another (payloads ``None`` when
    none of them has any). ``keep`` (``bool[n]`` over all their rows, in order): only those rows,
    taken segment by segment, so that no merged copy of the dropped rows is ever made."""
    if len(segments) == 1 and keep is None:
        s = segments[0]
        return np.asarray(s.codes), np.asarray(s.ids), s.payload, s.offsets
    parts, at = [], 0
    for s in segments:
        parts.append((s, slice(None) if keep is None else keep[at:at + len(s)]))
        at += len(s)
    codes = np.concatenate([np.asarray(s.codes)[k] for s, k in parts])
    ids = np.concatenate([np.asarray(s.ids)[k] for s, k in parts])
    if all(s.offsets is None for s in segments):
        return codes, ids, None, None
    lengths, payload = [], []
    for s, k in parts:
        if s.offsets is None:
            lengths.append(np.zeros(len(s), np.int64)[k])
            continue
        sizes = np.diff(np.asarray(s.offsets))
        data = np.asarray(s.payload)[:int(s.offsets[-1])]
        lengths.append(sizes[k])
        payload.append(data if keep is None else data[np.repeat(k, sizes)])  # one mask byte per payload byte
    offsets = np.zeros(ids.shape[0] + 1, np.int64)
    np.cumsum(np.concatenate(lengths), out=offsets[1:])
    return codes, ids, np.concatenate(payload), offsets


def payload_arrays(payloads: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """``(payload uint8[...], offsets int64[n + 1])`` of a list of byte strings."""
    lengths = np.fromiter((len(p) for p in payloads), np.int64, len(payloads))
    offsets = np.zeros(len(payloads) + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return np.frombuffer(b"".join(payloads), np.uint8).copy(), offsets


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
    with _folder(folder).lock():
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
    manifest = _atomic.load_json(path, "Hamming index manifest", format=FORMAT, versions=(VERSION, PAYLOAD_VERSION))
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
    return _folder(folder).read(lambda: read_manifest(folder), lambda manifest: _read(folder, manifest, mmap, verify),
                                attempts=READ_ATTEMPTS, retry_on=CorruptFileError,
                                same=lambda a, b: a.get("checksum") == b.get("checksum"))


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
        payload = offsets = None
        if "payload" in entry:
            payload = _load_array(folder, entry, "payload", verify, mmap)
            offsets = _load_array(folder, entry, "offsets", verify, mmap)
            if payload.dtype != np.uint8 or payload.ndim != 1 or offsets.dtype != np.int64 or offsets.shape != (n + 1,):
                raise CorruptFileError(f"index files {folder / entry['payload']} / {folder / entry['offsets']} hold "
                                       f"{payload.dtype} {payload.shape} / {offsets.dtype} {offsets.shape}, expected "
                                       f"uint8 bytes and int64 ({n + 1},) offsets")
            o = np.asarray(offsets)
            if o[0] != 0 or o[-1] != payload.shape[0] or np.any(np.diff(o) < 0):
                raise CorruptFileError(f"index file {folder / entry['offsets']} holds offsets outside its payload")
        keys = ("codes", "ids", "codes_sha256", "ids_sha256", "n") + (
            ("payload", "offsets", "payload_sha256", "offsets_sha256") if payload is not None else ())
        segments.append(Segment(codes, ids, folder, {k: entry[k] for k in keys}, payload, offsets))
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
          hasher_sha256: str | None = None, max_segments: int | None = MAX_SEGMENTS,
          keep_previous: bool = True) -> tuple[list[Segment], str]:
    """Save an index to ``folder`` under the writer lock; returns the segment list as now stored
    (unsaved segments are merged into one new segment) and the new manifest's checksum. Segments
    already stored in this folder are not rewritten.

    ``base``: the checksum of the manifest the index was read from (or last saved as) in this
    folder; when the folder's manifest is no longer that one, another writer has changed it and
    :class:`IndexConflictError` is raised with nothing written. ``None`` replaces whatever the
    folder holds.

    ``max_segments``: past this many segments the newest are merged (:func:`merge_plan`; ``None``:
    never). ``keep_previous=False`` deletes the files of the previous version too once the new
    manifest is in place (a compaction leaves one segment behind; a reader that read the previous
    manifest just before finds its files gone, reads the new manifest and starts again)."""
    folder = Path(folder)
    with writer_lock(folder):
        return _write(folder, bits, segments, removed, next_id, backend, built_from, base, hasher_sha256,
                      max_segments, keep_previous)


def merge_plan(sizes: list[int], max_segments: int) -> int:
    """Where the merged suffix starts when segments of ``sizes`` (oldest first) exceed ``max_segments``
    (``len(sizes)``: nothing to merge). The suffix holds at least the newest half of ``max_segments``
    and then every older segment not larger than what is merged so far, so sizes stay roughly
    geometric (older segments larger) and an item is rewritten about log2(n) times in all."""
    if len(sizes) <= max_segments:
        return len(sizes)
    start = len(sizes) - max(2, len(sizes) - max_segments // 2)
    total = sum(sizes[start:])
    while start > 0 and sizes[start - 1] <= total:
        start -= 1
        total += sizes[start]
    return start


def _folder(folder: Path) -> VersionedFolder:
    return VersionedFolder(folder, MANIFEST, lock=LOCK, data=_OWN_FILE, temps=_STALE_TEMP)


def _write(folder: Path, bits: int, segments: list[Segment], removed: np.ndarray, next_id: int,
           backend: str, built_from: dict | None, base: str | None, hasher_sha256: str | None = None,
           max_segments: int | None = MAX_SEGMENTS, keep_previous: bool = True) -> tuple[list[Segment], str]:
    previous = _previous(folder)
    if base is not None and (previous or {}).get("checksum") != base:
        now = f"generation {previous.get('generation')}" if previous else "no readable manifest"
        raise IndexConflictError(
            f"index {folder} was changed by another writer since this index was read or saved (it now holds "
            f"{now}); nothing was written: load it again and redo the change, or make the change inside "
            f"`with HammingIndex.edit({str(folder)!r}) as index:`, which holds the writer lock")
    generation = (previous.get("generation", 0) if previous else 0) + 1
    version = _folder(folder).version()
    writer = _SegmentWriter(version, generation, secrets.token_hex(4))
    segments = [seg for seg in segments if len(seg)]
    stored = _stored_here(folder, segments, previous)
    out = writer.store(segments, stored, _merge_from(segments, stored, max_segments))
    tomb = writer.tombstones(removed)
    manifest = {
        "format": FORMAT,
        "version": PAYLOAD_VERSION if any(s.offsets is not None for s in out) else VERSION,
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
    version.switch(manifest)
    version.collect(_referenced(manifest) | (_referenced(previous) if keep_previous else set()))
    return out, manifest["checksum"]


def _stored_here(folder: Path, segments: list[Segment], previous: dict | None) -> list[bool]:
    """For each segment, whether the previous manifest of ``folder`` lists it (it is not written again)."""
    known = set()
    if previous is not None:
        known = {(s.get("codes"), s.get("codes_sha256")) for s in previous.get("segments", []) if isinstance(s, dict)}
    here = folder.resolve()
    resolved: dict[Path, Path] = {}

    def stored(seg: Segment) -> bool:
        if seg.folder is None or (seg.files.get("codes"), seg.files.get("codes_sha256")) not in known:
            return False
        if seg.folder not in resolved:
            resolved[seg.folder] = seg.folder.resolve()
        return resolved[seg.folder] == here

    return [stored(seg) for seg in segments]


def _merge_from(segments: list[Segment], stored: list[bool], max_segments: int | None) -> int:
    """The position from which segments are merged into one (``len(segments)``: none are)."""
    # the segments a save leaves: each stored one, and one per run of unsaved ones
    runs = sum(1 for i, ok in enumerate(stored) if ok or i == 0 or stored[i - 1])
    if max_segments is None or runs <= max_segments:
        return len(segments)
    sizes: list[int] = []
    starts: list[int] = []
    for i, seg in enumerate(segments):
        if stored[i] or i == 0 or stored[i - 1]:
            sizes.append(0)
            starts.append(i)
        sizes[-1] += len(seg)
    first = merge_plan(sizes, max_segments)
    return starts[first] if first < len(sizes) else len(segments)


class _SegmentWriter:
    """Writes the new files of one index save (generation ``generation``, names made unique by ``token``)."""

    def __init__(self, version: Version, generation: int, token: str):
        self.version, self.generation, self.token = version, generation, token

    def store(self, segments: list[Segment], stored: list[bool], merge_from: int) -> list[Segment]:
        """The segments as saved: stored ones kept, each run of unsaved ones (and all from ``merge_from``) merged
        into one new segment."""
        out: list[Segment] = []
        pending: list[Segment] = []
        for i, seg in enumerate(segments):
            if stored[i] and i < merge_from:
                if pending:
                    out.append(self.segment(pending, len(out)))
                    pending = []
                out.append(seg)
            else:
                pending.append(seg)
        if pending:
            out.append(self.segment(pending, len(out)))
        return out

    def segment(self, pending: list[Segment], position: int) -> Segment:
        """Write ``pending`` merged as one new segment, the ``position``-th of the index."""
        codes, ids, payload, offsets = merge_segments(pending)
        stem = f"seg-{self.generation:06d}-{position}{self.token}"
        files = {"codes": f"{stem}.codes.npy", "ids": f"{stem}.ids.npy", "n": int(ids.shape[0])}
        arrays = {"codes": np.ascontiguousarray(codes, np.uint8), "ids": np.ascontiguousarray(ids, np.int64)}
        if payload is not None:
            files.update(payload=f"{stem}.payload.npy", offsets=f"{stem}.offsets.npy")
            arrays.update(payload=np.ascontiguousarray(payload, np.uint8),
                          offsets=np.ascontiguousarray(offsets, np.int64))
        for key, array in arrays.items():
            files[key + "_sha256"] = self.version.write_npy(files[key], array)
        return Segment(arrays["codes"], arrays["ids"], self.version.folder, files, arrays.get("payload"),
                       arrays.get("offsets"))

    def tombstones(self, removed: np.ndarray) -> dict | None:
        """Write the tombstone file (None when nothing is removed); its manifest entry."""
        if not removed.size:
            return None
        name = f"tomb-{self.generation:06d}-{self.token}.npy"
        digest = self.version.write_npy(name, np.asarray(removed, np.int64))
        return {"file": name, "n": int(removed.size), "file_sha256": digest}


def _referenced(manifest: dict | None) -> set[str]:
    if not manifest:
        return set()
    names = set()
    for s in manifest.get("segments", []) or []:
        if isinstance(s, dict):
            names.update(str(s.get(k)) for k in ("codes", "ids", "payload", "offsets") if k in s)
    tomb = manifest.get("tombstones")
    if isinstance(tomb, dict):
        names.add(str(tomb.get("file")))
    return names
