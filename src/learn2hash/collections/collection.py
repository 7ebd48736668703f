"""The :class:`Collection` (see :mod:`learn2hash.collections`)."""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from learn2hash import _atomic
from learn2hash.codes import Codes
from learn2hash.collections._common import (DEFAULT_SHARD_SIZE, FORMAT, INDEX, KIND, META, SHARD_FORMAT, VERSION, WORK,
                                            _ON_BAD_IMAGE, Hit, _array_image, _as_list, _default_root,
                                            _hasher_checksum, _payload, _read_meta, _source)
from learn2hash.collections.encoding import _barrier, _encoding, _Job, _process_group
from learn2hash.errors import CorruptFileError, Learn2HashError, check_int
from learn2hash.index import storage
from learn2hash.index.hamming import HammingIndex


# ----------------------------------------------------------------------------- the collection
class Collection:
    """A collection folder, opened. Make one with :meth:`create`, open one with :meth:`open`.

    Threads: one object may be shared by any number of threads. :meth:`search`, :meth:`item`,
    :meth:`info` and ``len()`` read the latest committed version (a whole change or none of it);
    changes (:meth:`add_images`, :meth:`add_item`, :meth:`remove`, :meth:`compact`) take turns
    through the writer lock, and encode their images before taking it. A search in the process
    that makes a change may see it a moment before it is on disk (never half of it); other
    processes see it once committed.
    """

    def __init__(self, folder: Path, meta: dict[str, Any]):
        self.folder = folder
        self.meta = meta
        self._index_dir = folder / INDEX
        self._index: HammingIndex | None = None
        self._manifest_bytes: bytes | None = None
        self._hasher = None
        self._hasher_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._edit_owner: int | None = None
        #: the images the last :meth:`add_images` of this object left out (``on_bad_image="skip"``):
        #: ``[{"path": ..., "error": ...}]``
        self.last_skipped: list[dict[str, str]] = []
        #: the ids the last :meth:`add_images` (or :meth:`create`) of this object added
        self.last_added = np.zeros(0, np.int64)

    # ------------------------------------------------------------------ making and opening
    @classmethod
    def create(cls, folder: str | os.PathLike, run: Any, images: Any, *, on_bad_image: str = "error",
               shard_size: int = DEFAULT_SHARD_SIZE, progress: Any = None, workers: int | None = None,
               root: str | os.PathLike | None = None) -> "Collection":
        """Create collection ``folder`` of the images ``images`` encoded by run ``run``'s hasher.

        ``run``: a run folder (or :class:`~learn2hash.runs.Run`) whose hasher takes image files.
        ``images``: a folder (searched recursively), a list file (one path per line, relative to
        the list's folder), or a sequence of image paths; item paths are kept relative to
        ``root``, which defaults to the folder, the list's folder, or the common folder of the paths.
        Files added later must lie under the root. ``on_bad_image``: ``"error"`` (stop, naming the
        file) or ``"skip"`` (left out, listed in :attr:`last_skipped`). ``shard_size``: files per
        shard (see the module's docstring); ``progress``: True for a progress bar on stderr, or a
        callable ``(done, total)``; ``workers``: image decoding processes.

        Running it again on the same folder with the same run and root continues an interrupted
        creation (finished shards are kept) and adds nothing twice; a folder holding another
        collection or other files is refused. Under ``torchrun`` the ranks share the work.
        """
        from learn2hash.runs import Run

        folder = Path(folder)
        run_folder = Path(run.folder if hasattr(run, "folder") else run)
        run_obj = run if hasattr(run, "folder") else Run.open(run_folder)
        hasher_sha = _hasher_checksum(run_folder)
        files_root = Path(root) if root is not None else _default_root(images)
        if not files_root.is_dir():
            raise Learn2HashError(f"the collection's root {files_root} is not a folder")
        meta = {"format": FORMAT, "version": VERSION, "bits": int(run_obj.bits), "run": str(run_folder.resolve()),
                "hasher_sha256": hasher_sha, "root": str(files_root.resolve()), "method": run_obj.method}
        with _process_group() as (rank, world):
            if (folder / META).exists():
                have = _read_meta(folder)
                for key, what in (("run", "run"), ("hasher_sha256", "hasher"), ("root", "root")):
                    if have.get(key) != meta[key]:
                        raise Learn2HashError(
                            f"{folder} already holds a collection of another {what} ({have.get(key)}); add images "
                            f"to it with `learn2hash collection add {folder} --images ...`, or choose another --out")
            else:
                if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
                    raise Learn2HashError(f"--out {folder} exists and is not a collection: choose a new folder")
                hasher = run_obj.hasher()
                if not getattr(hasher, "takes_image_files", False):
                    raise Learn2HashError(f"run {run_folder} holds a {run_obj.method} hasher, which does not take "
                                          "image files: a collection needs a hasher trained on images")
                _barrier(world)  # every rank has checked the folder before rank 0 writes
                if rank == 0:
                    folder.mkdir(parents=True, exist_ok=True)
                    _atomic.save_json(folder / META, meta)
                _barrier(world)
            coll = cls.open(folder)
            if getattr(run_obj, "_hasher", None) is not None:  # loaded above: the same file, just checked
                coll._hasher = run_obj._hasher
            coll.add_images(images, on_bad_image=on_bad_image, shard_size=shard_size, progress=progress,
                            workers=workers)
        return coll

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "Collection":
        """Open collection ``folder``. Refused (one-line :class:`Learn2HashError`) when it is not a
        collection, when its run folder is gone, or when the run's hasher has changed since the
        collection was made (its codes would not match new queries). Never waits for a writer."""
        folder = Path(folder)
        meta = _read_meta(folder)
        run = Path(meta["run"])
        try:
            now = _hasher_checksum(run)
        except Learn2HashError:
            raise Learn2HashError(f"collection {folder} was made with the hasher of run {run}, which is no longer "
                                  "there (moved or deleted?)") from None
        if now != meta["hasher_sha256"]:
            raise Learn2HashError(
                f"collection {folder} was made with the hasher of run {run} as it was then (sha256 "
                f"{meta['hasher_sha256'][:12]}...); that hasher has changed since ({now[:12]}...), so its codes no "
                "longer match new queries: create a new collection")
        coll = cls(folder, meta)
        coll._current()
        return coll

    @classmethod
    @contextlib.contextmanager
    def edit(cls, folder: str | os.PathLike) -> Iterator["Collection"]:
        """Hold the collection's writer lock for a block of changes, committed together when it ends
        without an exception (nothing is committed otherwise)::

            with Collection.edit(folder) as coll:
                coll.remove(paths=["old.jpg"])
                coll.add_images(["new.jpg"])

        Other writers (processes, threads, the CLI, the service) wait for the block; readers do not."""
        coll = cls.open(folder)
        with coll._write_lock, storage.writer_lock(coll._index_dir):
            index = coll._for_write()
            coll._edit_owner = threading.get_ident()
            try:
                yield coll
                coll._commit(index)
            except BaseException:
                coll._discard()
                raise
            finally:
                coll._edit_owner = None
            if (coll.folder / WORK).is_dir():
                coll._collect_work()  # the shards of images added in the block, now committed

    # ------------------------------------------------------------------ properties
    @property
    def bits(self) -> int:
        return int(self.meta["bits"])

    @property
    def root(self) -> Path | None:
        """The folder item paths are relative to."""
        return Path(self.meta["root"]) if self.meta.get("root") else None

    @property
    def run(self) -> Path:
        return Path(self.meta["run"])

    @property
    def hasher(self):
        """The run's hasher, loaded on first use (checked against the collection's record)."""
        if self._hasher is None:
            with self._hasher_lock:
                if self._hasher is None:
                    from learn2hash.runs import Run

                    if _hasher_checksum(self.run) != self.meta["hasher_sha256"]:
                        raise Learn2HashError(f"the hasher of run {self.run} changed while collection {self.folder} "
                                              "was open: open it again")
                    self._hasher = Run.open(self.run).hasher()
        return self._hasher

    def __len__(self) -> int:
        return len(self._current())

    def __repr__(self) -> str:
        return f"Collection({str(self.folder)!r}: {len(self)} items, {self.bits} bits)"

    # ------------------------------------------------------------------ the index, as committed
    def _load_index(self) -> tuple[HammingIndex, bytes | None]:
        manifest = self._index_dir / storage.MANIFEST
        for _ in range(storage.READ_ATTEMPTS):
            try:
                raw = manifest.read_bytes()
            except FileNotFoundError:
                index = HammingIndex(self.bits)
                index.built_from = self._built_from()
                return index, None
            index = HammingIndex.load(self._index_dir)
            if index.built_from is None or index.built_from.get("hasher_sha256") != self.meta["hasher_sha256"]:
                raise CorruptFileError(f"the index of collection {self.folder} was not built with its hasher")
            if index.bits != self.bits:
                raise CorruptFileError(f"the index of collection {self.folder} holds {index.bits}-bit codes, "
                                       f"the collection {self.bits}")
            if index._base == json.loads(raw).get("checksum"):
                return index, raw
        raise Learn2HashError(f"the index of collection {self.folder} keeps changing; try again")

    def _built_from(self) -> dict[str, Any]:
        return {"kind": KIND, "hasher_sha256": self.meta["hasher_sha256"], "bits": self.bits}

    def _current(self) -> HammingIndex:
        """The latest committed index (reloaded when another writer has changed it)."""
        if self._edit_owner == threading.get_ident():
            return self._index
        try:
            raw = (self._index_dir / storage.MANIFEST).read_bytes()
        except FileNotFoundError:
            raw = None
        if self._index is not None and raw == self._manifest_bytes:
            return self._index
        with self._refresh_lock:
            if self._index is None or raw != self._manifest_bytes:
                self._index, self._manifest_bytes = self._load_index()
            return self._index

    def refresh(self) -> None:
        """Read the latest committed version now (searches do this themselves)."""
        self._current()

    def _for_write(self) -> HammingIndex:
        """The latest committed index, to change (with the writer lock held)."""
        return self._current()

    def _commit(self, index: HammingIndex) -> None:
        index.save(self._index_dir)
        self._manifest_bytes = (self._index_dir / storage.MANIFEST).read_bytes()
        self._index = index

    def _discard(self) -> None:
        with self._refresh_lock:
            self._index, self._manifest_bytes = self._load_index()

    @contextlib.contextmanager
    def _writing(self) -> Iterator[HammingIndex]:
        """The index to change, committed at the end of the block (inside :meth:`edit`: at its end)."""
        if self._edit_owner == threading.get_ident():
            yield self._index
            return
        with self._write_lock, storage.writer_lock(self._index_dir):
            index = self._for_write()
            try:
                yield index
                self._commit(index)
            except BaseException:
                self._discard()
                raise

    # ------------------------------------------------------------------ paths
    def _abs(self, rel: str) -> Path:
        return Path(self.meta["root"]) / rel

    def _relative(self, path: str | os.PathLike, what: str = "image") -> str:
        """``path`` (absolute, or relative to the current folder) as a path relative to the root."""
        root = self.meta["root"]  # resolved when the collection was made
        full = os.path.abspath(os.fspath(path))
        rel = os.path.relpath(full, root)
        if rel.split(os.sep)[0] == os.pardir:  # given through a link to the root (or one of its parents)?
            rel = os.path.relpath(os.path.join(os.path.realpath(os.path.dirname(full)), os.path.basename(full)), root)
        if rel == os.curdir or rel.split(os.sep)[0] == os.pardir or os.path.isabs(rel):
            raise Learn2HashError(f"{what} {path} lies outside the collection's root {root}: a collection holds "
                                  "files under its root only (make a new collection with a root above both)")
        return Path(rel).as_posix()

    def _files(self, source: Any) -> list[str]:
        """Paths relative to the root of the images ``source`` names (folder, list file, or paths),
        in order, each once."""
        from learn2hash import images

        if not isinstance(source, (str, os.PathLike)):
            return list(dict.fromkeys(self._relative(p) for p in source))
        src_root, names = images.list_image_names(source)
        base = os.path.relpath(os.path.realpath(src_root), self.meta["root"])
        if base.split(os.sep)[0] == os.pardir:
            base = None  # outside the root: each file says so below
        prefix = None if base is None or base == os.curdir else Path(base).as_posix() + "/"
        for i, name in enumerate(names):  # in place, plain strings: a listing of millions stays small
            if base is not None and not os.path.isabs(name) and os.path.normpath(name) == name \
                    and name.split("/")[0] != os.pardir:
                if prefix:
                    names[i] = prefix + name
            else:
                names[i] = self._relative(os.path.join(src_root, name))
        # a folder's walk names each file once; a list may repeat one
        return names if Path(source).is_dir() else list(dict.fromkeys(names))

    # ------------------------------------------------------------------ changes
    def add_images(self, images: Any, *, on_bad_image: str = "error", shard_size: int = DEFAULT_SHARD_SIZE,
                   progress: Any = None, workers: int | None = None) -> np.ndarray:
        """Encode and add image files: a folder (recursively), a list file, or a sequence of paths,
        all under the collection's root. Files whose path is already in the collection are left
        out, so running the same command again adds nothing twice (remove an item first to encode
        its file again). Returns the new items' ids (``int64``, in path order).

        Resumable and distributed as :meth:`create` (see the module's docstring). Under
        ``torchrun`` the ids are returned on rank 0 (an empty array elsewhere)."""
        if on_bad_image not in _ON_BAD_IMAGE:
            raise Learn2HashError(f"on_bad_image must be 'error' or 'skip', got {on_bad_image!r}")
        shard_size = check_int(shard_size, "shard_size", 1)
        rel = self._files(images)
        with _process_group() as (rank, world):
            index = self._current()
            if len(index):  # leave out what is in the collection already
                present = index.find_payloads(_payload(path=r) for r in rel)
                todo = [r for r in rel if _payload(path=r) not in present]
                del present
            else:
                todo = rel
            del rel, index
            self.last_skipped = []
            self.last_added = np.zeros(0, np.int64)
            if not todo:
                if rank == 0:
                    self._collect_work()  # shards a killed run committed but did not delete
                return self.last_added
            job = _Job(self, todo, shard_size, on_bad_image)
            job.encode(rank, world, progress, workers)
            _barrier(world)
            ids = np.zeros(0, np.int64)
            if rank == 0:
                ids = self._commit_job(job)
            _barrier(world)
            self.last_added = ids
            return ids

    def _commit_job(self, job: _Job) -> np.ndarray:
        new_ids = []
        skipped = []
        with self._writing() as index:
            names = [job.files_of(i) for i in range(job.n_shards)]
            # added by another writer since the job was planned
            present = index.find_payloads(_payload(path=n) for part in names for n in part) if len(index) else {}
            shards = []
            for i in range(job.n_shards):
                done = job.read_shard(i)
                if done is None:
                    if all(_payload(path=n) in present for n in names[i]):
                        continue  # committed by another run of the same files, which deleted the shard
                    raise Learn2HashError(f"shard {job.keys[i]} of the encoding in {job.folder} is missing or "
                                          "damaged; run the same command again to encode it")
                shards.append((i, done))
            for i, (codes, meta) in shards:
                kept = np.asarray(meta["kept"], np.int64)
                payloads = [_payload(path=names[i][k]) for k in kept.tolist()]
                fresh = np.array([p not in present for p in payloads], bool)
                skipped += [{"path": names[i][s["position"]], "error": s["error"]} for s in meta["skipped"]]
                if not fresh.any():
                    continue
                new_ids.append(index.add(Codes.from_packed(codes[fresh], self.bits),
                                         payloads=[p for p, f in zip(payloads, fresh) if f]))
        if self._edit_owner != threading.get_ident():  # in an edit block: once the block is committed
            job.remove()
            self._collect_work()
        self.last_skipped = skipped
        return np.concatenate(new_ids) if new_ids else np.zeros(0, np.int64)

    def _collect_work(self) -> int:
        """Delete the finished shards in ``work/`` whose kept files are all in the collection (left by
        a run killed between its commit and its clean-up) and, when no encoder is alive, the
        unfinished ones and temporary files of killed writes. Finished shards of an encoding still
        to be committed are kept. Returns the number of files deleted."""
        work = self.folder / WORK
        if not work.is_dir():
            return 0
        records = {}
        for path in work.glob("shard-*.json"):
            try:
                meta = _atomic.load_json(path, "collection shard", format=SHARD_FORMAT, versions=(1,),
                                         required={"kept": list, "files": list})
                records[path] = [meta["files"][int(k)] for k in meta["kept"]]
            except (Learn2HashError, OSError, ValueError, IndexError, TypeError):
                continue
        deleted = 0
        with self._write_lock, storage.writer_lock(self._index_dir):
            present = self._current().find_payloads([_payload(path=n) for kept in records.values() for n in kept])
            for path, kept in records.items():
                if all(_payload(path=n) in present for n in kept):
                    for victim in (path, path.with_suffix(".npy")):  # the record first
                        with contextlib.suppress(FileNotFoundError):
                            victim.unlink()
                            deleted += 1
        with _encoding(work, exclusive=True) as alone:
            if alone:
                for path in work.iterdir():
                    if path.name.endswith(".tmp") or (path.name.startswith("shard-") and path.suffix == ".npy"
                                                      and not path.with_suffix(".json").exists()):
                        with contextlib.suppress(FileNotFoundError):
                            path.unlink()
                            deleted += 1
        return deleted

    def add_item(self, image: Any, external_id: str | None = None) -> int:
        """Encode one image and add it; returns its id. ``image``: the bytes of an image file, a
        decoded image (``uint8[H, W, C]`` or ``[H, W]`` array, or a PIL image), or the path of an
        image file under the root (then its source is that path). ``external_id``: a string of
        yours stored as the item's source (ids need not be unique: :meth:`remove` by external id
        removes every item carrying it)."""
        path = None
        if isinstance(image, (str, os.PathLike)):
            path = self._relative(image)
            if external_id is not None:
                raise Learn2HashError("give an image file's path or an external id as the item's source, not both")
        if external_id is not None and not isinstance(external_id, str):
            raise Learn2HashError(f"external_id must be a string, got {type(external_id).__name__}")
        codes = self.encode([image if path is None else self._abs(path)])
        with self._writing() as index:
            return int(index.add(codes, payloads=[_payload(path=path, external_id=external_id)])[0])

    def add_codes(self, codes: Codes, *, paths: Sequence[str | os.PathLike | None] | None = None,
                  external_ids: Sequence[str | None] | None = None) -> np.ndarray:
        """Add items whose codes the caller has computed with this collection's hasher (see
        :meth:`encode`; e.g. a service that decodes uploads itself), with their sources: ``paths``
        (files under the root) or ``external_ids``, one per code (``None``: no source of that
        kind). Returns their ids. Nothing checks that the codes come from the collection's hasher:
        codes of any other hasher would make its searches meaningless."""
        codes = codes.check_bits(self.bits, "codes to add") if isinstance(codes, Codes) else \
            Codes.from_packed(np.ascontiguousarray(codes), self.bits)
        n = len(codes)
        paths = list(paths) if paths is not None else [None] * n
        external_ids = list(external_ids) if external_ids is not None else [None] * n
        if len(paths) != n or len(external_ids) != n:
            raise Learn2HashError(f"give one path / external id per code ({n}), got {len(paths)} / {len(external_ids)}")
        payloads = []
        for path, xid in zip(paths, external_ids):
            if path is not None and xid is not None:
                raise Learn2HashError("an item's source is a path or an external id, not both")
            if xid is not None and not isinstance(xid, str):
                raise Learn2HashError(f"external ids must be strings, got {type(xid).__name__}")
            rel = None if path is None else (self._relative(path) if os.path.isabs(os.fspath(path))
                                             else self._relative(self._abs(Path(os.fspath(path)).as_posix())))
            payloads.append(_payload(path=rel, external_id=xid))
        with self._writing() as index:
            return index.add(codes, payloads=payloads)

    def remove(self, ids: Iterable[int] | None = None, paths: Iterable[str | os.PathLike] | None = None,
               external_ids: Iterable[str] | None = None) -> int:
        """Remove items by id, by path (relative to the root, or a path to the file) and by external
        id; every one named must be in the collection (else nothing is removed). Returns how many
        items were removed."""
        wanted: list[bytes] = [_payload(path=self._relative(p) if os.path.isabs(os.fspath(p)) else
                                        Path(os.fspath(p)).as_posix()) for p in (paths or [])]
        wanted += [_payload(external_id=str(e)) for e in (external_ids or [])]
        id_list = [int(i) for i in (ids or [])]
        with self._writing() as index:
            found = index.find_payloads(wanted) if wanted else {}
            missing = [_source(w)["path"] or _source(w)["external_id"] for w in wanted if w not in found]
            if missing:
                raise Learn2HashError(f"not in collection {self.folder}: {', '.join(map(str, missing[:5]))}"
                                      + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
            all_ids = np.unique(np.concatenate([np.asarray(id_list, np.int64)] + list(found.values())))
            if not all_ids.size:
                return 0
            return index.remove(all_ids)

    def compact(self) -> dict[str, int]:
        """Rewrite the index's segments into one and drop removed items for good (ids stay), atomically
        (a reader sees the old segments or the new one; a kill leaves the old ones). Returns the
        segments before and after and the removed items dropped."""
        with self._writing() as index:
            before = len(index._segments)
            dropped = index.compact()
        return {"segments_before": before, "segments_after": len(self._current()._segments), "dropped": dropped}

    # ------------------------------------------------------------------ queries
    def encode(self, queries: Any) -> Codes:
        """Codes of images: a path, the bytes of an image file, an array (``[H, W, C]``, ``[H, W]``
        or a batch ``[n, H, W, C]``), a PIL image, or a list of these; each decoded to the hasher's
        input the way the service decodes uploads (:func:`learn2hash.images.encode_image`)."""
        from learn2hash import images

        hasher = self.hasher
        geom = hasher.image_geometry()
        if geom is None:
            raise Learn2HashError(f"the {hasher.name} hasher of run {self.run} does not decode images itself")
        items = _as_list(queries)
        if not items:
            return Codes.empty(self.bits)
        arrays = []
        for i, item in enumerate(items):
            what = f"image {item}" if isinstance(item, (str, os.PathLike)) else f"query image {i}"
            if isinstance(item, np.ndarray):
                item = _array_image(item, what)
            arrays.append(images.encode_image(item, geom, what=what))
        codes = hasher.encode(np.stack(arrays))
        return codes.check_bits(self.bits, "codes of the query images")

    def search(self, query: Any, k: int = 10) -> list[list[Hit]]:
        """The ``k`` nearest items of each query, nearest first (ties by insertion order); a query is
        an image (see :meth:`encode`: paths, bytes, arrays, PIL images, or a list of them) or
        :class:`Codes` of the collection's bits. Returns one
        list of :class:`Hit` per query (shorter than ``k`` when the collection holds fewer items)."""
        k = check_int(k, "k", 1)
        if isinstance(query, Codes):
            codes = query.check_bits(self.bits, "query codes")
        else:
            codes = self.encode(query)
        index = self._current()
        n = len(index)
        if n == 0:
            return [[] for _ in range(len(codes))]
        d, ids, payloads = index.search(codes, min(k, n), with_payloads=True)
        out = []
        for qi in range(len(codes)):
            row = []
            for dist, i, p in zip(d[qi], ids[qi], payloads[qi]):
                if i < 0:
                    break
                row.append(Hit(int(i), int(dist), **_source(p)))
            out.append(row)
        return out

    def item(self, id: int) -> dict[str, Any]:
        """``{"id", "path", "external_id"}`` of a stored item (an error when it is not stored)."""
        index = self._current()
        return {"id": int(id), **_source(index.payloads([int(id)])[0])}

    def ids(self) -> np.ndarray:
        """The ids of the items, in insertion order (``int64``)."""
        return self._current().ids

    def items(self, offset: int = 0, limit: int | None = None) -> list[dict[str, Any]]:
        """``[{"id", "path", "external_id"}]`` of the items ``offset .. offset + limit - 1`` in
        insertion order, from one committed version (a consistent page)."""
        ids, payloads = self._current().page(offset, limit)
        return [{"id": int(i), **_source(p)} for i, p in zip(ids.tolist(), payloads)]

    def info(self) -> dict[str, Any]:
        """What the collection holds: items, bits, run, method, hasher checksum, root, index segments,
        removed items not yet compacted, finished shards of interrupted encodings in ``work/``."""
        index = self._current()
        work = self.folder / WORK
        return {"folder": str(self.folder), "items": len(index), "bits": self.bits, "run": self.meta["run"],
                "method": self.meta["method"], "hasher_sha256": self.meta["hasher_sha256"], "root": self.meta["root"],
                "segments": len(index._segments), "removed_not_compacted": int(index._n_removed),
                "next_id": int(index._next_id),
                "pending_shards": sum(1 for p in work.glob("shard-*.json")) if work.is_dir() else 0}
