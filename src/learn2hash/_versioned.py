"""Versioned folders: how learn2hash saves an artifact of several files (codes, a hasher, an index).

A versioned artifact lives in a folder as a small JSON *manifest* naming its *data files*. A save
(:meth:`VersionedFolder.save`), with the artifact's lock held from start to end:

1. writes each new data file atomically (temporary file, fsync, rename; :mod:`learn2hash._atomic`),
   under a name of its own, so the files of the current version are never overwritten;
2. replaces the manifest last (:meth:`Version.switch`): this is the commit, readers now see the
   new version;
3. deletes the data files that neither the new nor the previous manifest names, and the temporary
   files of killed saves (:meth:`Version.collect`). A reader that has just read the previous
   manifest still finds its files.

Readers take no lock (:meth:`VersionedFolder.read`): they read the manifest, then the files it
names, and when a file is gone because a concurrent save collected it, they read the (changed)
manifest again. A save killed at any point leaves the old version or the new one readable.

The lock is a :mod:`filelock` lock on a file of the folder (created if needed, left in place): one
writer per artifact, across processes and across threads of one process; a second writer waits
(or, with ``wait=False``, fails with a clear message); the OS drops the lock of a killed writer.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from learn2hash import _atomic
from learn2hash.errors import MissingFileError

__all__ = ["VersionedFolder", "Version", "read_current"]


def read_current(read_meta: Callable[[], Any], load: Callable[[Any], Any], attempts: int = 5,
                 retry_on: type[BaseException] | tuple[type[BaseException], ...] = MissingFileError,
                 same: Callable[[Any, Any], bool] | None = None) -> Any:
    """``load(meta)`` for the manifest ``read_meta()`` returns, read again when a save switched it meanwhile.

    ``load`` raising ``retry_on`` (a file the manifest names is gone, by default) while the manifest
    has changed since (``same(old, new)`` false; default ``==``) means a concurrent save collected
    that version: the new one is read instead, up to ``attempts`` times. When the manifest has not
    changed, the loss is real and the error is raised.
    """
    same = same or (lambda a, b: a == b)
    meta = read_meta()
    for attempt in range(attempts):
        try:
            return load(meta)
        except retry_on:
            latest = read_meta()
            if attempt == attempts - 1 or same(latest, meta):
                raise
            meta = latest
    raise AssertionError("unreachable")  # pragma: no cover


class VersionedFolder:
    """An artifact saved as versions in ``folder``: ``manifest`` (a file name in it) names the
    current version's data files; ``lock`` is the name of its lock file; ``data`` matches the data
    file names a save may delete once no manifest names them; ``temps`` the temporary files killed
    saves leave behind."""

    def __init__(self, folder: str | os.PathLike, manifest: str, *, lock: str, data: re.Pattern[str],
                 temps: re.Pattern[str]):
        self.folder = Path(folder)
        self.manifest = self.folder / manifest
        self.lock_path = self.folder / lock
        self.data = data
        self.temps = temps

    def lock(self, wait: bool = True, busy: str | None = None) -> contextlib.AbstractContextManager[None]:
        """The artifact's writer lock (see :func:`learn2hash._atomic.file_lock`)."""
        return _atomic.file_lock(self.lock_path, wait=wait, busy=busy)

    @contextlib.contextmanager
    def save(self, wait: bool = True, busy: str | None = None) -> Iterator["Version"]:
        """``with folder.save() as v:`` write data files, ``v.switch(manifest)``, ``v.collect(keep)``,
        with the lock held throughout."""
        self.folder.mkdir(parents=True, exist_ok=True)
        with self.lock(wait, busy):
            yield Version(self)

    def version(self) -> "Version":
        """A :class:`Version` for a caller that already holds :meth:`lock`."""
        self.folder.mkdir(parents=True, exist_ok=True)
        return Version(self)

    def read(self, read_meta: Callable[[], Any], load: Callable[[Any], Any], **kw: Any) -> Any:
        """Read the current version without a lock (:func:`read_current`)."""
        return read_current(read_meta, load, **kw)


class Version:
    """One save in progress into a :class:`VersionedFolder` (its lock held by the caller)."""

    def __init__(self, vf: VersionedFolder):
        self.vf = vf
        self.folder = vf.folder

    def write(self, name: str, data: bytes) -> str:
        """Write data file ``name`` atomically; returns its sha256."""
        _atomic.save_bytes(self.folder / name, data)
        return hashlib.sha256(data).hexdigest()

    def write_named(self, stem: str, data: bytes, suffix: str) -> tuple[str, str]:
        """Write ``data`` under a name of its content, ``stem.<sha256[:12]>suffix``; returns ``(name, sha256)``."""
        name, digest = _atomic.content_name(stem, data, suffix)
        _atomic.save_bytes(self.folder / name, data)
        return name, digest

    def write_npy(self, name: str, array: np.ndarray) -> str:
        """Write ``array`` as ``.npy`` file ``name`` (never pickled); returns its sha256."""
        return self.write(name, _atomic.npy_bytes(array, self.folder / name))

    def switch(self, manifest: Any) -> None:
        """Replace the manifest (the commit): readers see the new version from now on."""
        _atomic.save_json(self.vf.manifest, manifest)

    def collect(self, keep: Iterable[str], also: re.Pattern[str] | None = None) -> list[str]:
        """After :meth:`switch`: delete the data files not in ``keep`` (the names the new and the
        previous manifest hold), the files matching ``also`` not in ``keep``, and the temporary files
        of killed saves. Returns the names deleted."""
        keep = set(keep)
        removed = _atomic.collect_garbage(self.folder, self.vf.data, keep)
        if also is not None:
            removed += _atomic.collect_garbage(self.folder, also, keep)
        return removed + _atomic.collect_garbage(self.folder, self.vf.temps, ())
