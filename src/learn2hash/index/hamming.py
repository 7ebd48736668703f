"""``HammingIndex``: exact k-NN and range search over binary codes, with persistence and backends.

Items are kept in insertion order ("positions"); each has a user id (``int64 >= 0``). Removing an
item leaves a tombstone, so positions never move. Every backend answers the same questions:

- :meth:`HammingIndex.search` -> ``(distances int32[q, k], ids int64[q, k])``, each row sorted by
  distance, ties by insertion order (native backend; Faiss and Milvus pick their own items among
  ties at the k-th distance, and rows are then ordered by distance and insertion order). A row
  with fewer than ``k`` items available is padded with id :data:`MISSING_ID` (-1) and distance
  :data:`MISSING_DISTANCE` (2**31 - 1), so the result always has ``k`` columns.
- :meth:`HammingIndex.range_search` -> :class:`RangeResult`, every item at distance ``<= radius``.

An item may carry a *payload*: a short byte string given to :meth:`HammingIndex.add`, stored and
removed with its code (:meth:`HammingIndex.payloads`, ``search(..., with_payloads=True)``), so
that what an application keeps per item is never out of step with the index.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Iterator

import numpy as np

from learn2hash.codes import Codes, Provenance, as_codes
from learn2hash.errors import Learn2HashError, check_int
from learn2hash.index import storage
from learn2hash.index._rwlock import RWLock
from learn2hash.index.native import NativeEngine, check_method
from learn2hash.index.results import MISSING_ID, RangeResult

BACKENDS = ("native", "faiss", "milvus")
#: A save compacts an index with at least this many removed items, when they are more than half of all.
COMPACT_REMOVED = 4096
#: A k-NN result padded beyond the stored items may hold at most this many ``(distance, id)`` slots.
MAX_PADDED_RESULT = 1 << 26


def max_threads() -> int:
    """Cores this process may run on: the default thread count."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class HammingIndex:
    """An exact Hamming-space index of ``bits``-bit :class:`~learn2hash.codes.Codes`.

    ``backend``: ``"native"`` (numba kernels and multi-index hashing), ``"faiss"`` (option
    ``faiss_index`` = ``"flat"`` | ``"hash"`` | ``"multihash"``, bits a multiple of 8) or
    ``"milvus"`` (options ``milvus_uri``: a Milvus Lite file or a server URI, default a file in a
    temporary folder; ``milvus_collection``). ``threads``: kernel threads, default all cores.

    Threads: one index may be shared by any number of threads. :meth:`search`,
    :meth:`range_search`, :meth:`codes`, :attr:`ids` and :meth:`save` take a shared (read) lock and
    run at the same time; :meth:`add`, :meth:`remove` and :meth:`close` take it exclusively, so a
    search sees the index before or after a whole ``add`` (or ``remove``), never half of one. The
    lock is taken once per call, outside the kernels. ``len()`` reads a single counter, without lock.

    Processes: a save takes the folder's writer lock (see :mod:`learn2hash.index.storage`); readers
    never wait for it. A save refuses (:class:`~learn2hash.index.storage.IndexConflictError`) when
    another writer changed the folder since this index read it; :meth:`edit` holds the writer lock
    from load to save so that several processes can change one folder in turn without losing any
    change. ``built_from`` records what the index was derived from (saved in the manifest).
    """

    def __init__(self, bits: int, backend: str = "native", threads: int | None = None, **options):
        self._bits = check_int(bits, "bits", 1)
        if backend not in BACKENDS:
            raise Learn2HashError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self._backend = backend
        self.threads = threads
        self._options = dict(options)
        self._engine = _make_engine(self._bits, backend, options)
        self._segments: list[storage.Segment] = []
        self._ids_parts: list[np.ndarray] = []
        self._ids_cache: np.ndarray | None = None
        self._removed = np.zeros(0, np.uint8)  # 1 = removed, by position (empty: nothing removed)
        self._n = 0
        self._n_removed = 0
        self._next_id = 0
        self._lookup: tuple[np.ndarray, np.ndarray] | None = None  # alive ids sorted, their positions
        self._folder: Path | None = None
        self._base: str | None = None  # checksum of the manifest in _folder this state was read or saved as
        self.built_from: dict | None = None
        #: the hasher whose codes the index holds (the ``provenance`` of the first codes added to it
        #: empty, saved with it); codes of another hasher are refused by add and search. None: unknown
        self.hasher_sha256: str | None = None
        #: a save that would leave more segments merges the newest (None: never; see storage.merge_plan)
        self.max_segments: int | None = storage.MAX_SEGMENTS
        #: a save compacts first (:meth:`compact`) when at least this many items are removed and they
        #: are more than half of those stored (None: never)
        self.compact_removed: int | None = COMPACT_REMOVED
        self._starts: np.ndarray | None = None  # first position of each segment, and n
        self._compacted = False  # the next save deletes the previous version's files
        self._lock = RWLock()
        self._save_lock = threading.Lock()

    # ------------------------------------------------------------------------ properties
    @property
    def bits(self) -> int:
        return self._bits

    @property
    def backend(self) -> str:
        return self._backend

    @property
    def threads(self) -> int:
        return self._threads

    @threads.setter
    def threads(self, value: int | None) -> None:
        if value is None:
            self._threads = max_threads()
        else:
            value = check_int(value, "threads", 1)
            self._threads = value

    def __len__(self) -> int:
        """Number of items stored and not removed."""
        return self._n - self._n_removed  # each change updates one of the two counters

    def __repr__(self) -> str:
        return f"HammingIndex(bits={self._bits}, backend={self._backend!r}, n={len(self)})"

    @property
    def ids(self) -> np.ndarray:
        """Ids of the stored items, in insertion order."""
        with self._lock.reading():
            ids = self._all_ids()
            return ids[self._removed == 0] if self._n_removed else ids.copy()

    def codes(self) -> Codes:
        """Codes of the stored items, in insertion order."""
        with self._lock.reading():
            if not self._segments:
                return Codes.empty(self._bits)
            packed = np.concatenate([np.asarray(s.codes) for s in self._segments])
            if self._n_removed:
                packed = packed[self._removed == 0]
            return Codes(packed, self._bits, Provenance(self.hasher_sha256) if self.hasher_sha256 else None)

    # ------------------------------------------------------------------------ changes
    def _codes_in(self, codes, what: str) -> Codes:
        """:class:`Codes`, or a plain ``uint8[n, ceil(K/8)]`` array of packed codes as Faiss users
        hold them (converted here, once; not copied). Hamming distances do not depend on the bit
        order inside a byte; for K not a multiple of 8 the unused bits are the low bits of the last
        byte (numpy's big bit order), and must be 0."""
        if isinstance(codes, np.ndarray):  # Codes is not an ndarray
            if codes.dtype != np.uint8 or codes.ndim != 2:
                raise Learn2HashError(f"{what}: a plain array must hold packed codes, uint8[n, {(self._bits + 7) // 8}] "
                                      f"for {self._bits} bits; got {codes.dtype}{list(codes.shape)}")
            try:
                return Codes.from_packed(np.ascontiguousarray(codes), self._bits)
            except Learn2HashError as exc:
                raise Learn2HashError(f"{what}: {exc}") from None
        return as_codes(codes, what).check_bits(self._bits, what)

    def add(self, codes: Codes | np.ndarray, ids=None, payloads=None) -> np.ndarray:
        """Append ``codes`` (:class:`Codes` or packed ``uint8[n, ceil(K/8)]``); ``ids`` (distinct
        integers >= 0, not already stored) default to consecutive integers after the largest id
        ever given; ``payloads``: one ``bytes`` per code, kept with it (default: none, ``b""``).
        Returns the ids."""
        codes = self._codes_in(codes, "codes to add")
        blob = None
        if payloads is not None:
            payloads = list(payloads)
            if len(payloads) != len(codes) or not all(isinstance(b, (bytes, bytearray)) for b in payloads):
                raise Learn2HashError(f"payloads must be one bytes object per code ({len(codes)}), got "
                                      f"{len(payloads)} items")
            blob = storage.payload_arrays([bytes(b) for b in payloads])
        with self._lock.writing():
            self._check_hasher(codes, "codes to add")
            new_ids = self._add(codes, ids, blob)
            hasher = codes.provenance.hasher_sha256 if codes.provenance else None
            if hasher is not None and self.hasher_sha256 is None and self._n == len(codes):
                self.hasher_sha256 = hasher  # the first codes of an empty index say whose codes it holds
            return new_ids

    def _check_hasher(self, codes: Codes, what: str) -> None:
        """Refuse codes whose provenance names another hasher than the index's (when both are known)."""
        hasher = codes.provenance.hasher_sha256 if codes.provenance else None
        if hasher is not None and self.hasher_sha256 is not None and hasher != self.hasher_sha256:
            raise Learn2HashError(f"{what} were computed by hasher {hasher[:12]}, this index holds codes of hasher "
                                  f"{self.hasher_sha256[:12]}: Hamming distances between codes of two hashers mean "
                                  "nothing (encode with the index's hasher, or rebuild the index)")

    def _add(self, codes: Codes, ids, blob: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        m = len(codes)
        if ids is None:
            new_ids = np.arange(self._next_id, self._next_id + m, dtype=np.int64)
        else:
            new_ids = self._check_new_ids(ids, m)
        if m == 0:
            return new_ids
        packed = np.array(codes.packed, copy=True)  # the caller may reuse its array
        self._engine.add(packed)
        self._segments.append(storage.Segment(packed, new_ids, payload=blob[0] if blob else None,
                                              offsets=blob[1] if blob else None))
        self._starts = None
        self._ids_parts.append(new_ids)
        self._ids_cache = None
        self._lookup = None
        self._n += m
        if self._removed.size:
            self._removed = np.concatenate([self._removed, np.zeros(m, np.uint8)])
        self._next_id = max(self._next_id, int(new_ids.max()) + 1)
        return new_ids

    def _check_new_ids(self, ids, m: int) -> np.ndarray:
        arr = np.asarray(ids)
        if arr.ndim != 1 or arr.shape[0] != m:
            raise Learn2HashError(f"ids must be a 1-D array with one id per code ({m}), got shape {arr.shape}")
        if m and not np.issubdtype(arr.dtype, np.integer):
            raise Learn2HashError(f"ids must be integers, got dtype {arr.dtype}")
        arr = arr.astype(np.int64)
        if m and arr.min() < 0:
            raise Learn2HashError(f"ids must be >= 0 (-1 marks a missing result), got {int(arr.min())}")
        uniq, counts = np.unique(arr, return_counts=True)
        if uniq.size < m:
            raise Learn2HashError(f"ids to add contain duplicates, e.g. {int(uniq[counts > 1][0])}")
        if m and int(uniq[0]) >= self._next_id:
            return arr  # above every id ever stored (saved with the index): no clash, nothing to look up
        sorted_ids, _ = self._id_lookup()  # reads every stored id (and sorts them unless they are increasing)
        clash = np.isin(arr, sorted_ids, assume_unique=True)
        if clash.any():
            raise Learn2HashError(f"ids already in the index: {arr[clash][:5].tolist()}")
        return arr

    def remove(self, ids) -> int:
        """Remove the items with these ids (all must be stored); returns how many were removed."""
        arr = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        with self._lock.writing():
            return self._remove(arr)

    def _remove(self, arr: np.ndarray) -> int:
        pos = self._positions_of(arr)
        if not self._removed.size:
            self._removed = np.zeros(self._n, np.uint8)
        self._removed[pos] = 1
        self._n_removed += int(pos.size)
        self._engine.remove(pos)
        self._lookup = None
        return int(pos.size)

    def _all_ids(self) -> np.ndarray:
        if self._ids_cache is None:
            parts = self._ids_parts  # one part (a loaded segment, maybe memory-mapped) is used as it is
            self._ids_cache = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return self._ids_cache

    def _id_lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """``(sorted ids, their positions)`` of the stored items, built on the first look-up by id
        after a change, and the one check of the stored ids (none negative, none repeated)."""
        if self._lookup is None:
            ids = self._all_ids()
            pos = np.flatnonzero(self._removed == 0) if self._n_removed else np.arange(self._n)
            alive = ids[pos] if self._n_removed else np.asarray(ids)
            sorted_ids = alive
            increasing = alive.size < 2 or bool(np.all(alive[1:] > alive[:-1]))  # the usual case: nothing to sort
            if not increasing:
                order = np.argsort(alive, kind="stable")
                sorted_ids, pos = alive[order], pos[order]
            if sorted_ids.size and (sorted_ids[0] < 0 or not increasing and np.any(sorted_ids[1:] == sorted_ids[:-1])):
                raise Learn2HashError(f"index{'' if self._folder is None else ' ' + str(self._folder)} has negative or "
                                      "repeated ids (damaged)")
            self._lookup = (sorted_ids, pos)
        return self._lookup

    def _alive_mask(self) -> np.ndarray:
        """``uint8[n]`` with 1 for stored items, or an empty array when nothing was removed."""
        return (1 - self._removed) if self._n_removed else np.zeros(0, np.uint8)

    # ------------------------------------------------------------------------ queries
    def _queries(self, query_codes) -> np.ndarray:
        codes = self._codes_in(query_codes, "query codes")
        self._check_hasher(codes, "query codes")
        return codes.packed

    def _query_args(self, query_codes, value, name: str, minimum: int, method: str) -> tuple[np.ndarray, int]:
        """The packed queries and the checked integer ``value`` (``k`` or the radius) of a search;
        ``method`` must be one this backend takes."""
        queries = self._queries(query_codes)
        value = check_int(value, name, minimum)
        check_method(method)
        if self._backend != "native" and method != "auto":
            raise Learn2HashError(f"method={method!r} is for the native backend; the {self._backend} backend uses its own")
        return queries, value

    def search(self, query_codes: Codes | np.ndarray, k: int, method: str = "auto", with_payloads: bool = False):
        """Exact k nearest items of each query: ``(distances int32[q, k], ids int64[q, k])``.
        ``query_codes``: :class:`Codes` or packed ``uint8[q, ceil(K/8)]``, as for :meth:`add`.
        ``with_payloads``: also return the hits' payloads, ``list[list[bytes | None]]`` (``None`` in
        padded slots), read under the same lock as the search: ``(distances, ids, payloads)``.

        ``method`` (native backend): ``"scan"`` (linear scan), ``"mih"`` (multi-index hashing,
        building its tables if needed), or ``"auto"``: multi-index hashing when its cost model
        (from n, k, the substring lengths and the distances within a sample of the stored codes)
        says it is at most half the scan's cost, its tables built once the batches that would
        have used them had paid for building them; a query that turns out costlier goes to the
        scan. The answers are the same either way; the choice is logged (``learn2hash.index``,
        DEBUG). See :meth:`NativeEngine._knn_choice <learn2hash.index.native.NativeEngine>`.
        """
        queries, k = self._query_args(query_codes, k, "k", 1, method)
        with self._lock.reading():
            n_alive = self._n - self._n_removed
            if k > n_alive and queries.shape[0] * k > MAX_PADDED_RESULT:
                raise Learn2HashError(
                    f"k={k} exceeds the {n_alive} items in the index, and a result padded to {queries.shape[0]} x {k} "
                    f"would not fit in memory: ask for k <= {max(n_alive, 1)}")
            d, p = self._engine.search(queries, k, self._alive_mask(), n_alive, self._threads, method)
            if self._backend != "native":
                d, p = _order_rows(d, p)
            if with_payloads:
                return d, self._to_ids(p), [[self._payload_at(int(i)) if i >= 0 else None for i in row] for row in p]
            return d, self._to_ids(p)

    def range_search(self, query_codes: Codes, radius: int, method: str = "auto") -> RangeResult:
        """Every item within Hamming distance ``radius`` (inclusive) of each query.

        ``method`` (native backend): ``"scan"``, ``"mih"``, or ``"auto"``: multi-index hashing when
        its cost model says it is at least twice as fast as the scan (tables are built on demand
        and kept until the next :meth:`add`).
        """
        queries, radius = self._query_args(query_codes, radius, "radius", 0, method)
        with self._lock.reading():
            lims, d, p = self._engine.range_search(queries, radius, self._alive_mask(), self._threads, method)
            if self._backend != "native":
                d, p = _order_csr(lims, d, p)
            return RangeResult(lims, d.astype(np.int32, copy=False), self._to_ids(p))

    def build_tables(self, m: int | None = None) -> None:
        """Build multi-index hashing tables now (native backend), with about ``m`` substrings."""
        if self._backend != "native":
            raise Learn2HashError("multi-index tables belong to the native backend")
        m = None if m is None else check_int(m, "m", 1)
        with self._lock.reading():  # tables are derived data: searches may build them concurrently too
            self._engine.build_tables(m, self._threads)

    # ------------------------------------------------------------------------ payloads
    def _segment_starts(self) -> np.ndarray:
        if self._starts is None:
            self._starts = np.cumsum([0] + [len(s) for s in self._segments], dtype=np.int64)
        return self._starts

    def _payload_at(self, position: int) -> bytes:
        starts = self._segment_starts()
        j = int(np.searchsorted(starts, position, side="right")) - 1
        return self._segments[j].payload_of(position - int(starts[j]))

    def payloads(self, ids) -> list[bytes]:
        """The payloads of the stored items with these ids (each must be stored), in the given order."""
        arr = np.asarray(ids, dtype=np.int64).reshape(-1)
        with self._lock.reading():
            pos = self._positions_of(arr)
            return [self._payload_at(int(p)) for p in pos]

    def page(self, offset: int = 0, limit: int | None = None) -> tuple[np.ndarray, list[bytes]]:
        """``(ids, payloads)`` of the stored items ``offset .. offset + limit - 1`` in insertion order
        (all from ``offset`` when ``limit`` is None), read under one lock: a consistent page."""
        offset = check_int(offset, "offset", 0)
        with self._lock.reading():
            alive = np.flatnonzero(self._removed == 0) if self._n_removed else np.arange(self._n)
            pos = alive[offset:] if limit is None else alive[offset:offset + check_int(limit, "limit", 0)]
            ids = self._all_ids()[pos] if pos.size else np.zeros(0, np.int64)
            return ids, [self._payload_at(int(p)) for p in pos]

    def find_payloads(self, values) -> dict[bytes, np.ndarray]:
        """``{payload: ids}`` for each payload of ``values`` that stored items carry (ids sorted;
        payloads no item carries are left out): a scan of the payloads, ``O(items)``."""
        wanted = {bytes(v) for v in values}
        found: dict[bytes, list[int]] = {}
        lengths = {len(v) for v in wanted}
        with self._lock.reading():
            alive = self._removed == 0 if self._n_removed else None
            at = 0
            for seg in self._segments:
                n = len(seg)
                if seg.offsets is None:
                    cand = np.arange(n) if 0 in lengths else np.zeros(0, np.int64)
                else:
                    off = np.asarray(seg.offsets)
                    cand = np.flatnonzero(np.isin(np.diff(off), list(lengths)))
                if alive is not None and cand.size:
                    cand = cand[alive[at + cand]]
                ids = np.asarray(seg.ids)
                for i in cand.tolist():
                    v = seg.payload_of(i)
                    if v in wanted:
                        found.setdefault(v, []).append(int(ids[i]))
                at += n
        return {v: np.array(sorted(found[v]), np.int64) for v in found}

    def _positions_of(self, arr: np.ndarray) -> np.ndarray:
        sorted_ids, positions = self._id_lookup()
        where = np.minimum(np.searchsorted(sorted_ids, arr), max(0, sorted_ids.size - 1))
        hit = (sorted_ids[where] == arr) if sorted_ids.size else np.zeros(arr.size, bool)
        if not hit.all():
            raise Learn2HashError(f"ids not in the index: {arr[~hit][:5].tolist()}")
        return positions[where]

    # ------------------------------------------------------------------------ compaction
    def compact(self) -> int:
        """Rewrite the items left into one segment and forget the removed ones (ids, codes and
        payloads stay; positions change). Saved by the next :meth:`save` as one new segment, the
        old segments' files deleted. Returns the number of removed items dropped. Takes the
        exclusive lock: searches wait for it, and see the index before or after."""
        with self._lock.writing():
            dropped = self._n_removed
            if len(self._segments) <= 1 and not dropped:
                return 0
            self._lookup = None  # rebuilt on the next look-up by id; freed before the merge
            codes, ids, payload, offsets = storage.merge_segments(self._segments,
                                                                  (self._removed == 0) if dropped else None)
            codes = np.ascontiguousarray(codes)  # merged copies (one segment with no drops returned above)
            ids = np.asarray(ids, np.int64)
            engine = _make_engine(self._bits, self._backend, self._options)
            engine.add(codes)
            self._engine.close()
            self._engine = engine
            self._segments = [storage.Segment(codes, ids, payload=None if offsets is None else np.asarray(payload),
                                              offsets=offsets)]
            self._ids_parts = [ids]
            self._ids_cache = None
            self._starts = None
            self._n = int(ids.shape[0])
            self._removed = np.zeros(0, np.uint8)
            self._n_removed = 0
            self._compacted = True
            return dropped

    def _to_ids(self, positions: np.ndarray) -> np.ndarray:
        ids = np.asarray(self._all_ids())
        if positions.size and positions.min() >= 0:  # no padded slot: one gather (k-NN results are large)
            out = np.take(ids, positions)
            damaged = out.min() < 0
        else:
            out = np.full(positions.shape, MISSING_ID, np.int64)
            ok = positions >= 0
            out[ok] = ids[positions[ok]]
            damaged = np.any(out[ok] < 0)
        if damaged:  # stored ids are checked here, and on the first look-up by id, not at load
            raise Learn2HashError(f"index{'' if self._folder is None else ' ' + str(self._folder)} has negative ids (damaged)")
        return out

    # ------------------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike | None = None) -> Path:
        """Write the index to ``folder`` (default: the folder it was loaded from or last saved to).

        Segments already in that folder are kept; new codes go to one new segment; removals to a
        new tombstone file; the manifest is replaced last, atomically, under the folder's writer
        lock. Past :attr:`max_segments` segments the newest are merged; past :attr:`compact_removed`
        removed items (more than half) the index is compacted first. Saving back to the folder this
        index was read from or saved to refuses
        (:class:`~learn2hash.index.storage.IndexConflictError`, nothing written) when another
        writer has changed that folder meanwhile; saving anywhere else replaces what is there.
        """
        if folder is None:
            if self._folder is None:
                raise Learn2HashError("save() needs a folder: this index was neither loaded nor saved before")
            folder = self._folder
        folder = Path(folder)
        limit = self.compact_removed
        if limit is not None and self._n_removed >= limit and 2 * self._n_removed > self._n:
            self.compact()
        with self._save_lock, self._lock.reading():
            same = self._folder is not None and os.path.realpath(folder) == os.path.realpath(self._folder)
            removed = np.flatnonzero(self._removed).astype(np.int64) if self._n_removed else np.zeros(0, np.int64)
            compacted = self._compacted
            self._segments, self._base = storage.write(folder, self._bits, self._segments, removed, self._next_id,
                                                       self._backend, self.built_from, self._base if same else None,
                                                       hasher_sha256=self.hasher_sha256,
                                                       max_segments=self.max_segments, keep_previous=not compacted)
            self._starts = None
            self._compacted = False
            self._folder = folder
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, mmap: bool = True, backend: str | None = None,
             threads: int | None = None, verify: bool = True, **options) -> "HammingIndex":
        """Open a saved index. ``mmap=True`` maps the segments instead of reading them (a single
        segment of a multiple of 64 bits is then searched in place); ``verify`` checks every file
        against its sha256, which reads every byte once (through the page cache, not into this
        process's memory; see benchmarks/RESULTS.md for its cost at 10**8 codes). ``backend``
        defaults to the one it was saved with. Never waits for a writer of the folder.

        Loading reads no codes and no ids: the native backend builds its bit planes on the first
        scan, and ids are checked (no repeats, none negative) when first looked up."""
        stored = storage.read(folder, mmap=mmap, verify=verify)
        index = cls(stored.bits, backend=backend or stored.backend, threads=threads, **options)
        for seg in stored.segments:
            index._engine.add(seg.codes)
            index._segments.append(seg)
            index._ids_parts.append(seg.ids)
            index._n += len(seg)
        index._next_id = stored.next_id
        if stored.removed.size:
            index._removed = np.zeros(index._n, np.uint8)
            index._removed[stored.removed] = 1
            index._n_removed = int(stored.removed.size)
            index._engine.remove(stored.removed)
        index._folder = Path(folder)
        index._base = stored.manifest_checksum
        index.built_from = stored.built_from
        index.hasher_sha256 = stored.hasher_sha256
        return index

    @classmethod
    @contextlib.contextmanager
    def edit(cls, folder: str | os.PathLike, **load_options) -> Iterator["HammingIndex"]:
        """Change the index saved in ``folder`` holding its writer lock from load to save::

            with HammingIndex.edit(folder) as index:
                index.add(codes)          # saved when the block ends without an exception

        Writers that all go through ``edit`` take turns, each starting from the previous one's
        result, so no change is lost (default ids never collide). Readers are not held up. Call
        ``save`` (if at all) from the thread that entered the block; ``load_options`` go to
        :meth:`load`."""
        storage.read_manifest(folder)  # a clear error, and no folder created, when there is no index
        with storage.writer_lock(folder):
            index = cls.load(folder, **load_options)
            try:
                yield index
                index.save()
            finally:
                index.close()

    def close(self) -> None:
        """Release the backend (a Milvus connection); the index is unusable afterwards."""
        with self._lock.writing():
            self._engine.close()

    def __enter__(self) -> "HammingIndex":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _make_engine(bits: int, backend: str, options: dict):
    if backend == "native":
        if options:
            raise Learn2HashError(f"the native backend takes no options, got {sorted(options)}")
        return NativeEngine(bits)
    if backend == "faiss":
        from learn2hash.index.faiss_backend import FaissEngine

        return FaissEngine(bits, **options)
    from learn2hash.index.milvus_backend import MilvusEngine

    return MilvusEngine(bits, **options)


def _order_rows(d: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each k-NN row by (distance, position), missing slots last."""
    key_p = np.where(p < 0, np.iinfo(np.int64).max, p)
    order = np.lexsort((key_p, d.astype(np.int64)), axis=-1) if d.size else np.zeros(d.shape, np.int64)
    return np.take_along_axis(d, order, 1), np.take_along_axis(p, order, 1)


def _order_csr(lims: np.ndarray, d: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort each query's hits by (distance, position)."""
    row = np.repeat(np.arange(lims.size - 1), np.diff(lims))
    order = np.lexsort((p, d, row))
    return d[order], p[order]
