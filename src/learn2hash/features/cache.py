"""The on-disk cache of features: entries keyed by the items' identity and the extractor's key, checked
on every read, written atomically, and rows reused across entries by per-item digests."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from learn2hash import _atomic
from learn2hash.errors import Learn2HashError
from learn2hash.features.extractors import FeatureExtractor
from learn2hash.nn.inputs import as_input_tensor

log = logging.getLogger("learn2hash.features")


CACHE_ENV = "LEARN2HASH_CACHE"
CACHE_FORMAT = "learn2hash-features"
CACHE_VERSION = 1
#: feature rows per block when an entry is checked
CHECK_BLOCK = 65536


def cache_root() -> Path:
    """``$LEARN2HASH_CACHE`` or ``~/.cache/learn2hash``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "learn2hash"


# ----------------------------------------------------------------------------- checksums
def array_sha256(x: Any, chunk_items: int = 4096) -> str:
    """sha256 of an item array's dtype, shape and bytes (row blocks, so lazy arrays stream)."""
    h = hashlib.sha256()
    first = np.asarray(x[0:1]) if len(x) else np.asarray(x)
    h.update(json.dumps({"dtype": str(first.dtype), "shape": [int(len(x)), *map(int, first.shape[1:])]}).encode())
    for s in range(0, len(x), chunk_items):
        h.update(np.ascontiguousarray(np.asarray(x[s:s + chunk_items])).tobytes())
    return h.hexdigest()


def files_sha256(paths: Any, transform: Any = None) -> str:
    """sha256 identifying image files as they are now: each file's resolved path, size and modification
    time (ns), in order, with ``transform`` (JSON-able: how they are decoded, e.g. the pipeline's
    geometry). Rewriting or touching a file changes it; reading the pixels is not needed."""
    h = hashlib.sha256(json.dumps({"files": len(paths), "transform": transform}, sort_keys=True, default=str).encode())
    for p in paths:
        h.update(_file_identity(p))
    return h.hexdigest()


def _file_identity(path: Any) -> bytes:
    """An image file as it is now: its resolved path, size and modification time (ns), as JSON bytes."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise Learn2HashError(f"image {path} cannot be read: {exc.strerror or exc}") from None
    return json.dumps([str(Path(path).resolve()), st.st_size, st.st_mtime_ns]).encode()


def file_digests(paths: Any) -> np.ndarray:
    """``uint8[n, 32]``: per image file, the sha256 of its resolved path, size and modification time (ns),
    the identity :func:`files_sha256` gives a whole list; a row of a cache entry is reused for a file
    whose digest (and decoding) matches."""
    out = np.empty((len(paths), 32), dtype=np.uint8)
    for i, p in enumerate(paths):
        out[i] = np.frombuffer(hashlib.sha256(_file_identity(p)).digest(), dtype=np.uint8)
    return out


def cache_key(x: Any, extractor: FeatureExtractor, data_sha256: str | None = None) -> str:
    """The cache entry name of ``extractor``'s features of ``x`` (``data_sha256``: the items' identity
    when it is not the checksum of the array ``x``, e.g. :func:`files_sha256` of image files)."""
    if not extractor.key:
        raise Learn2HashError(f"feature extractor {type(extractor).__name__} has no key (needed for the cache)")
    text = json.dumps({"format": CACHE_FORMAT, "version": CACHE_VERSION,
                       "data_sha256": data_sha256 or array_sha256(x), "model": extractor.key}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


# ----------------------------------------------------------------------------- the cache
def _read_entry(npy: Path, meta_path: Path, key: str, n: int, mmap: bool = False) -> np.ndarray | None:
    """The cached array (``mmap``: memory-mapped, read-only), or None (with a warning) if the entry is
    absent, damaged or foreign."""
    if not npy.exists() and not meta_path.exists():
        return None
    try:
        meta = _atomic.load_json(meta_path)
        if meta.get("format") != CACHE_FORMAT or meta.get("version") != CACHE_VERSION or meta.get("key") != key:
            raise ValueError("the sidecar does not describe this entry")
        if _atomic.sha256_file(npy) != meta.get("sha256"):
            raise ValueError("the array does not match the checksum in its sidecar")
        z = _atomic.load_npy(npy, mmap=mmap)
        if z.dtype != np.float32 or z.ndim != 2 or z.shape[0] != n or list(z.shape) != meta.get("shape"):
            raise ValueError(f"the array has shape {z.shape} and dtype {z.dtype}, expected [{n}, d] float32")
        if not all(np.all(np.isfinite(z[s:s + CHECK_BLOCK])) for s in range(0, len(z), CHECK_BLOCK)):
            raise ValueError("the array holds NaN or infinite values")
        return z
    except (OSError, ValueError, EOFError, KeyError, TypeError, AttributeError) as exc:
        log.warning("feature cache entry %s is unusable (%s: %s); recomputing it", npy, type(exc).__name__, exc)
        return None


def visual_features(x: Any, extractor: FeatureExtractor, cache: bool = True, cache_dir: str | os.PathLike | None = None,
                    progress: bool | None = None, description: str = "visual features", *,
                    data_sha256: str | None = None, compute: Callable[[], np.ndarray] | None = None) -> np.ndarray:
    """``extractor``'s features of items ``x``, ``float32[n, d]``, from the cache when present.

    ``cache=False`` neither reads nor writes the cache. ``cache_dir`` overrides :func:`cache_root`.
    ``progress``: a tqdm bar while computing (default: when stderr is a terminal). Items that are not
    an array to checksum (image files, decoded by the image pipeline) come with ``data_sha256`` (their
    identity, :func:`files_sha256`) and ``compute`` (returns the features of all of them).
    """
    n = len(x)
    if n == 0:
        raise Learn2HashError("visual features of an empty array were asked for")
    npy = meta_path = None
    if cache:
        key = cache_key(x, extractor, data_sha256)
        folder = (Path(cache_dir) if cache_dir is not None else cache_root()) / "features"
        npy, meta_path = folder / f"{key}.npy", folder / f"{key}.json"
        z = _read_entry(npy, meta_path, key, n)
        if z is not None:
            log.info("visual features of %d items read from %s", n, npy)
            return z
    if compute is not None:
        z = np.ascontiguousarray(compute(), dtype=np.float32)
        if z.ndim != 2 or len(z) != n or not np.all(np.isfinite(z)):
            raise Learn2HashError(f"the features of {n} items came out with shape {z.shape} or non-finite values")
    else:
        z = _compute(x, extractor, progress, description)
    if cache:
        _atomic.save_npy(npy, z)
        _atomic.save_json(meta_path, {"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key,
                                      "model": extractor.key, "shape": list(z.shape),
                                      "sha256": _atomic.sha256_file(npy)})
    return z


def _compute(x: Any, extractor: FeatureExtractor, progress: bool | None, description: str) -> np.ndarray:
    from tqdm.auto import tqdm

    n = len(x)
    show = sys.stderr.isatty() if progress is None else bool(progress)
    step = max(1, int(extractor.batch_size))
    out: np.ndarray | None = None
    with tqdm(total=n, desc=description, unit="item", disable=not show, file=sys.stderr, dynamic_ncols=True) as bar:
        for s in range(0, n, step):
            batch = as_input_tensor(np.asarray(x[s:s + step]), "cpu", "items")
            f = extractor(batch)
            f = f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f)
            if f.ndim != 2 or len(f) != len(batch):
                raise Learn2HashError(f"feature extractor returned shape {f.shape} for a batch of {len(batch)} items")
            if out is None:
                out = np.empty((n, f.shape[1]), dtype=np.float32)
            out[s:s + len(f)] = f
            bar.update(len(f))
    assert out is not None
    if not np.all(np.isfinite(out)):
        raise Learn2HashError("the visual features contain NaN or infinite values (check the input items)")
    return out


def file_features(paths: list[Path], extractor: FeatureExtractor, transform: dict[str, Any],
                  compute: Callable[[np.ndarray, np.ndarray], list[dict[str, Any]]], out_dim: int, cache: bool = True,
                  cache_dir: str | os.PathLike | None = None) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Features of the image files ``paths`` decoded with ``transform`` (JSON-able: the geometry), from the
    cache when present.

    The entry of the list is keyed by :func:`files_sha256`; beside its ``.npy`` and sidecar it keeps
    ``<key>.files.npy``, the :func:`file_digests` of its rows. When the list has no entry yet, every file
    that a previous entry of the same extractor and transform holds (same path, size and modification
    time) is copied from there, and ``compute(out, positions)`` fills only the rows of the others (into
    ``out``, a memory map of the new entry's file, so nothing of size ``n`` is held in memory), returning
    the files it could not read (their rows hold a blank image's features). A changed file is therefore
    the only one recomputed, and a training sample of a folder reuses the folder's features. The
    sidecar lists the unreadable files, so a later call reports them too."""
    n = len(paths)
    if not cache:
        out = np.zeros((n, out_dim), dtype=np.float32)
        skipped = compute(out, np.arange(n))
        _check_finite(out)
        return out, skipped
    key = cache_key(None, extractor, files_sha256(paths, transform))
    return _entry_with_reuse(n, key, lambda: file_digests(paths), extractor, transform, compute, out_dim, cache_dir,
                             "image files")


def row_digests(x: Any, chunk_items: int = 4096) -> np.ndarray:
    """``uint8[n, 32]``: the sha256 of each item's bytes (``x`` read in blocks, so lazy arrays stream)."""
    out = np.empty((len(x), 32), dtype=np.uint8)
    for s in range(0, len(x), chunk_items):
        block = np.ascontiguousarray(np.asarray(x[s:s + chunk_items]))
        for i, row in enumerate(block):
            out[s + i] = np.frombuffer(hashlib.sha256(row.tobytes()).digest(), dtype=np.uint8)
    return out


def array_features(x: Any, extractor: FeatureExtractor, out_dim: int, cache: bool = True,
                   cache_dir: str | os.PathLike | None = None, progress: bool | None = None,
                   description: str = "features") -> np.ndarray:
    """:func:`visual_features` of an item array with the reuse of :func:`file_features`: the entry is keyed
    by the array's checksum (:func:`cache_key`, as before), and when it is missing every item that an
    earlier entry of the same extractor holds (the same bytes, dtype and shape) is copied from there, so
    a training sample of a pool reads the pool's features."""
    first = np.asarray(x[:1])
    transform = {"items": "array", "dtype": str(first.dtype), "item_shape": list(first.shape[1:])}

    def compute(out: np.ndarray, positions: np.ndarray) -> list[dict[str, Any]]:
        from tqdm.auto import tqdm

        show = sys.stderr.isatty() if progress is None else bool(progress)
        step = max(1, int(extractor.batch_size))
        with tqdm(total=len(positions), desc=description, unit="item", disable=not show, file=sys.stderr,
                  dynamic_ncols=True) as bar:
            for s in range(0, len(positions), step):
                pos = positions[s:s + step]
                contiguous = len(pos) and pos[-1] - pos[0] == len(pos) - 1
                part = x[int(pos[0]):int(pos[-1]) + 1] if contiguous else x[pos]
                f = extractor(as_input_tensor(np.asarray(part), "cpu", "items"))
                out[pos] = f.detach().cpu().numpy() if isinstance(f, torch.Tensor) else np.asarray(f)
                bar.update(len(pos))
        return []

    if not cache:
        out = np.zeros((len(x), out_dim), dtype=np.float32)
        compute(out, np.arange(len(x)))
        _check_finite(out)
        return out
    return _entry_with_reuse(len(x), cache_key(x, extractor), lambda: row_digests(x), extractor, transform, compute,
                             out_dim, cache_dir, "items")[0]


def _entry_with_reuse(n: int, key: str, digests_of: Callable[[], np.ndarray], extractor: FeatureExtractor,
                      transform: dict[str, Any], compute: Callable[[np.ndarray, np.ndarray], list[dict[str, Any]]],
                      out_dim: int, cache_dir: str | os.PathLike | None, what: str
                      ) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """The cache entry ``key`` of ``n`` items, or a new one: rows reused from earlier entries of the same
    extractor and ``transform`` by the items' digests, the rest computed into a memory map of its file."""
    folder = (Path(cache_dir) if cache_dir is not None else cache_root()) / "features"
    npy, meta_path, files_npy = folder / f"{key}.npy", folder / f"{key}.json", folder / f"{key}.files.npy"
    z = _read_entry(npy, meta_path, key, n, mmap=True)
    if z is not None:
        log.info("features of %d %s read from %s", n, what, npy)
        return z, list(_atomic.load_json(meta_path).get("skipped", []))
    folder.mkdir(parents=True, exist_ok=True)
    digests = digests_of()
    import tempfile

    fd, tmp = tempfile.mkstemp(prefix=f".{npy.name}.", suffix=".tmp", dir=folder)
    os.close(fd)
    try:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, out_dim))
        done = _reuse_rows(folder, extractor.key, transform, digests, out, exclude=key)
        todo = np.flatnonzero(~done)
        log.info("features of %d %s: %d reused from earlier entries, %d to compute", n, what, n - len(todo),
                 len(todo))
        skipped = compute(out, todo) if len(todo) else []
        _check_finite(out)
        out.flush()
        del out
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, npy)
        _atomic.fsync_dir(folder)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _atomic.save_npy(files_npy, digests)
    _atomic.save_json(meta_path, {"format": CACHE_FORMAT, "version": CACHE_VERSION, "key": key, "model": extractor.key,
                                  "shape": [n, out_dim], "sha256": _atomic.sha256_file(npy), "skipped": skipped,
                                  "transform": transform, "files_sha256": _atomic.sha256_file(files_npy)})
    return _atomic.load_npy(npy, mmap=True), skipped


def _reuse_rows(folder: Path, model: str, transform: dict[str, Any], digests: np.ndarray, out: np.ndarray,
                exclude: str) -> np.ndarray:
    """Copy into ``out`` the rows that earlier file entries of ``model`` and ``transform`` hold for files of
    these ``digests`` (unreadable files excepted); returns which rows were filled. An entry that does not
    check out (checksums, shapes) is passed over."""
    done = np.zeros(len(digests), dtype=bool)
    wanted = {bytes(d): i for i, d in enumerate(digests)}
    for meta_path in sorted(folder.glob("*.json")):
        if done.all():
            break
        try:
            meta = _atomic.load_json(meta_path)
            if meta.get("model") != model or meta.get("transform") != plain_json(transform) or meta.get("key") == exclude:
                continue
            files_npy = meta_path.with_name(f"{meta['key']}.files.npy")
            if _atomic.sha256_file(files_npy) != meta.get("files_sha256"):
                continue
            theirs = _atomic.load_npy(files_npy)
            blank = {int(s["position"]) for s in meta.get("skipped", [])}
            mine, rows = [], []
            for row, d in enumerate(theirs):
                i = wanted.get(bytes(d))
                if i is not None and not done[i] and row not in blank:
                    mine.append(i)
                    rows.append(row)
            if not mine:  # nothing to take: its features are not even read
                continue
            z = _read_entry(meta_path.with_suffix(".npy"), meta_path, meta["key"], len(theirs), mmap=True)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, Learn2HashError):
            continue
        if z is None or z.shape[1] != out.shape[1] or theirs.shape != (len(z), 32):
            continue
        if mine:
            order = np.argsort(rows)
            mine_a, rows_a = np.asarray(mine)[order], np.asarray(rows)[order]
            for s in range(0, len(rows_a), CHECK_BLOCK):
                out[mine_a[s:s + CHECK_BLOCK]] = z[rows_a[s:s + CHECK_BLOCK]]
            done[mine_a] = True
    return done


def _check_finite(z: np.ndarray) -> None:
    for s in range(0, len(z), CHECK_BLOCK):
        if not np.all(np.isfinite(z[s:s + CHECK_BLOCK])):
            raise Learn2HashError("the features contain NaN or infinite values (check the input items)")


def plain_json(value: Any) -> Any:
    from learn2hash.nn.registry import plain_options

    if isinstance(value, os.PathLike):
        return str(value)
    return plain_options(value)
