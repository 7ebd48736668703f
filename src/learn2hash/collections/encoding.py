"""The encoding of a collection's images: resumable shards, several ranks under ``torchrun``, progress."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np

from learn2hash import _atomic
from learn2hash.collections._common import SHARD_FORMAT, WORK
from learn2hash.errors import CorruptFileError, Learn2HashError

if TYPE_CHECKING:
    from learn2hash.collections.collection import Collection


# ----------------------------------------------------------------------------- distributed
@contextlib.contextmanager
def _process_group() -> Iterator[tuple[int, int]]:
    """``(rank, world_size)``; under ``torchrun`` inside the process group (joined here if needed,
    gloo on CPU, nccl on GPU), else ``(0, 1)``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield 0, 1
        return
    from learn2hash.train import destroy_distributed, dist_info, init_distributed, resolve_device

    info = dist_info()
    owns = init_distributed(info, resolve_device("auto", info))
    try:
        yield info.rank, info.world_size
    finally:
        if owns:
            destroy_distributed()


def _barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()


# ----------------------------------------------------------------------------- progress
class _Progress:
    """``progress``: False/None (nothing), True (a tqdm bar on stderr: images per second, time left),
    or a callable ``(done, total)``."""

    def __init__(self, progress: Any, total: int, initial: int):
        self.callback = progress if callable(progress) else None
        self.bar = None
        self.done = initial
        self.total = total
        if progress is True:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="encoding", unit="img", dynamic_ncols=True,
                            file=sys.stderr, smoothing=0.1)
        self._report()

    def set(self, done: int) -> None:
        if self.bar is not None and done > self.done:
            self.bar.update(done - self.done)
        self.done = max(self.done, done)
        self._report()

    def _report(self) -> None:
        if self.callback is not None:
            self.callback(self.done, self.total)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# ----------------------------------------------------------------------------- the job of an encoding
ACTIVE = ".active"


def _release_freed_memory() -> None:
    """Give the memory freed by a shard's encoding back to the system (glibc keeps freed heap pages,
    fragmented by each shard's loader, so the resident size would grow with the number of shards:
    about 2.7 MB a shard measured); a no-op where there is no glibc."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextlib.contextmanager
def _encoding(work: Path, exclusive: bool = False) -> Iterator[bool]:
    """A lock on ``work/.active``: encoders hold it shared while they write shards; ``exclusive``
    (never waiting) tells whether no encoder is alive, so that unfinished files are orphans."""
    work.mkdir(parents=True, exist_ok=True)
    fd = os.open(work / ACTIVE, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
            held = True
        except BlockingIOError:
            held = False
        except ImportError:  # pragma: no cover - not POSIX: unfinished files are left to age
            held = not exclusive
        yield held
    finally:
        os.close(fd)


class _Job:
    """The files of one ``add_images`` still to encode, in shards of ``shard_size``. Each shard is
    named by a checksum of everything that decides its codes (the hasher, the root, its files with
    their sizes and modification times, the bad-image policy), so a rerun finds every finished shard
    whose files have not changed, and redoes only the others."""

    def __init__(self, coll: "Collection", rel: list[str], shard_size: int, on_bad_image: str):
        self.coll = coll
        self.rel = rel
        self.shard_size = shard_size
        self.on_bad_image = on_bad_image
        self.folder = coll.folder / WORK
        self.n_shards = -(-len(rel) // shard_size)
        settings = json.dumps({"hasher": coll.meta["hasher_sha256"], "root": coll.meta["root"],
                               "on_bad_image": on_bad_image}).encode()
        self.keys = []
        for i in range(self.n_shards):
            h = hashlib.sha256(settings)
            for name in self.files_of(i):
                try:
                    st = os.stat(coll._abs(name))
                    h.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
                except OSError:  # missing: on_bad_image decides when the shard is encoded
                    h.update(f"{name}\0missing\n".encode())
            self.keys.append(h.hexdigest()[:32])

    def shard_files(self, i: int) -> tuple[Path, Path]:
        return self.folder / f"shard-{self.keys[i]}.npy", self.folder / f"shard-{self.keys[i]}.json"

    def read_shard(self, i: int) -> tuple[np.ndarray, dict] | None:
        """``(packed codes, record)`` of a finished shard, else ``None`` (missing or damaged: redone)."""
        codes_path, meta_path = self.shard_files(i)
        try:
            meta = _atomic.load_json(meta_path, "collection shard", format=SHARD_FORMAT, versions=(1,),
                                     required={"kept": list, "skipped": list, "codes_sha256": str, "files": list})
            if meta["files"] != self.files_of(i) or _atomic.sha256_file(codes_path) != meta["codes_sha256"]:
                return None
            codes = _atomic.load_npy(codes_path)
        except (Learn2HashError, OSError, ValueError):
            return None
        bits = self.coll.bits
        if codes.dtype != np.uint8 or codes.shape != (len(meta["kept"]), (bits + 7) // 8):
            return None
        return codes, meta

    def files_of(self, i: int) -> list[str]:
        return self.rel[i * self.shard_size:(i + 1) * self.shard_size]

    def encode(self, rank: int, world: int, progress: Any, workers: int | None) -> None:
        """Encode this rank's unfinished shards (every one in a single process)."""
        with _encoding(self.folder):
            self._encode(rank, world, progress, workers)

    def _encode(self, rank: int, world: int, progress: Any, workers: int | None) -> None:
        finished = {i for i in range(self.n_shards) if self.read_shard(i) is not None}
        count = lambda: sum(len(self.files_of(i)) for i in finished)  # noqa: E731
        bar = _Progress(progress if rank == 0 else None, len(self.rel), count())
        try:
            todo = [i for i in range(self.n_shards) if i % world == rank and i not in finished]
            if todo and workers is not None:
                self.coll.hasher.workers = workers  # a runtime parameter: what is learned stays the same
            for i in todo:
                self._encode_shard(i)
                _release_freed_memory()
                finished.add(i)
                if world > 1:  # the other ranks' shards count too
                    finished.update(j for j in range(self.n_shards) if self.shard_files(j)[1].exists())
                bar.set(count())
        finally:
            bar.close()

    def _encode_shard(self, i: int) -> None:
        names = self.files_of(i)
        codes, kept, skipped = self.coll.hasher.encode_images([self.coll._abs(n) for n in names],
                                                              on_bad_image=self.on_bad_image, progress=False)
        if codes.bits != self.coll.bits:
            raise CorruptFileError(f"the run's hasher gave {codes.bits}-bit codes, the collection holds "
                                   f"{self.coll.bits} bits")
        codes_path, meta_path = self.shard_files(i)
        _atomic.save_npy(codes_path, np.ascontiguousarray(codes.packed, np.uint8))
        _atomic.save_json(meta_path, {  # last: the shard is finished once this file exists
            "format": SHARD_FORMAT, "version": 1, "files": names, "codes_sha256": _atomic.sha256_file(codes_path),
            "kept": [int(k) for k in kept],
            "skipped": [{"position": int(s["position"]), "error": str(s["error"])} for s in skipped]})

    def remove(self) -> None:
        """Delete the job's shards (after its commit)."""
        for i in range(self.n_shards):
            for path in reversed(self.shard_files(i)):  # the record first: a half-deleted shard is unfinished
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()


