"""RunFolder: the one writer of run folders (train, stream and evaluate write through it).

It owns the run folder's files: the versioned ``config.json`` (built by :func:`make_config`,
written once, and compared on resume through the one JSON reader
:func:`learn2hash._atomic.load_json`), the splits, the hasher (saved atomically; a stream keeps
the previous copy until its commit point), ``history.json``, ``skipped_images.json``,
``metrics.json``, the writer lock (``.lock``), the leftovers of an interrupted writer and the
deletion of derived artifacts on overwrite (:data:`DERIVED`).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import threading
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from learn2hash import _atomic
from learn2hash.errors import CorruptFileError, Learn2HashError
from learn2hash.train.distributed import is_main_process  # the one test of rank 0 (imports no torch)

RUN_FORMAT = "learn2hash-run"
RUN_VERSION = 1

#: what config.json must hold (train and stream write it; read by :func:`read_config`)
CONFIG_FIELDS = {"method": str, "bits": int, "params": dict, "dataset": str, "protocol": str, "seed": int,
                 "data_params": dict}
CONFIG_OPTIONAL = {"sizes": dict, "versions": dict, "stream": dict, "resolved": dict, "features": dict}
#: everything in a run folder that is derived from its configuration, most derived first: an
#: overwrite deletes them in this order, so that whatever an interrupted overwrite leaves behind
#: still agrees with what it was derived from
DERIVED = ("index", "report", "metrics.json", "stream.png", "stream.json", "codes", "history.json",
           "skipped_images.json", "hasher", "hasher.new", "hasher.old", "checkpoints")

#: what an interrupted write of the run folder's own files leaves: temporaries and renamed-away artifacts
_LEFTOVERS = re.compile(r"^(\.(config\.json|metrics\.json|history\.json|skipped_images\.json|splits\.json|split_\w+\.npy)\..*\.tmp"
                        r"|\.deleted-.*)$")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("learn2hash", "numpy", "scipy", "scikit-learn", "torch", "numba"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def read_config(path: str | os.PathLike) -> dict[str, Any]:
    """A run folder's ``config.json``, checked (a damaged one raises CorruptFileError naming it)."""
    path = Path(path)
    config = _atomic.load_json(path, "run configuration", format=RUN_FORMAT, versions=(RUN_VERSION,),
                               required=CONFIG_FIELDS, optional=CONFIG_OPTIONAL)
    if config["bits"] < 1:
        raise CorruptFileError(f"run configuration {path}: 'bits' must be a positive integer, got {config['bits']}")
    return config


def make_config(*, method: str, bits: int, params: dict[str, Any], dataset: str, protocol: str, seed: int,
                data_params: dict[str, Any], sizes: dict[str, int],
                stream: dict[str, Any] | None = None) -> dict[str, Any]:
    """The content of a run folder's ``config.json`` (format, version and package versions added)."""
    config = {
        "format": RUN_FORMAT, "version": RUN_VERSION, "method": method, "bits": int(bits), "params": params,
        "dataset": dataset, "protocol": protocol, "seed": int(seed),
        "data_params": {k: (str(v) if isinstance(v, Path) else v) for k, v in data_params.items()},
        "sizes": sizes, "versions": package_versions(),
    }
    if stream is not None:
        config["stream"] = stream
    return config


def _canonical(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (so a fresh configuration compares with a saved one)."""
    return json.loads(json.dumps(obj, sort_keys=True, default=str))


#: the run folders whose lock this thread holds (:meth:`RunFolder.writer` is re-entrant per thread)
_HELD = threading.local()


class RunFolder:
    """The files of one run folder; the only code that writes them."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunFolder({str(self.path)!r})"

    # ------------------------------------------------------------------ lock and cleanup
    @contextlib.contextmanager
    def writer(self, busy: str | None = None) -> Iterator[None]:
        """Make the main process the only writer of the folder while inside (other ranks: no-op).

        Re-entrant within a thread (a training encodes and evaluates its run inside its own lock);
        while another process or thread holds it, raises :class:`Learn2HashError` at once with
        ``busy`` (default: a message for ``train --out``)."""
        if not is_main_process():
            yield
            return
        key = str(self.path.resolve())
        held: set[str] | None = getattr(_HELD, "paths", None)
        if held is None:
            held = _HELD.paths = set()
        if key in held:
            yield
            return
        self.path.mkdir(parents=True, exist_ok=True)
        with _atomic.file_lock(self.path / ".lock", wait=False,
                               busy=busy or f"run folder {self.path} is being written by another process; wait for "
                                            "it or choose another --out"):
            held.add(key)
            try:
                yield
            finally:
                held.discard(key)

    def remove_leftovers(self) -> None:
        """Delete what an interrupted writer left (call with the folder's lock held)."""
        if not self.path.is_dir():
            return
        for entry in os.scandir(self.path):
            if _LEFTOVERS.match(entry.name):
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    Path(entry.path).unlink(missing_ok=True)

    def clear_derived(self) -> list[str]:
        """Delete every derived artifact (see :data:`DERIVED`); returns the names deleted.

        Each one is first renamed out of the way (atomically), so a reader sees it whole or not at all.
        """
        removed = []
        for name in DERIVED:
            path = self.path / name
            if not path.exists() and not path.is_symlink():
                continue
            trash = self.path / f".deleted-{name}-{_atomic.version_token()}"
            os.replace(path, trash)
            _atomic.fsync_dir(self.path)
            if trash.is_dir() and not trash.is_symlink():
                shutil.rmtree(trash, ignore_errors=True)
            else:
                trash.unlink(missing_ok=True)
            removed.append(name)
        return removed

    # ------------------------------------------------------------------ configuration and splits
    @property
    def config_path(self) -> Path:
        return self.path / "config.json"

    def has_config(self) -> bool:
        return self.config_path.exists()

    def read_config(self) -> dict[str, Any]:
        return read_config(self.config_path)

    def config_differences(self, config: dict[str, Any], keys: Iterable[str],
                           runtime_params: Iterable[str] = ()) -> list[str]:
        """The ``keys`` in which the saved configuration differs from ``config`` (resume check).

        Method parameters named in ``runtime_params`` (device, workers ...: they do not change
        what is learned) are left out of the comparison.
        """
        existing = self.read_config()
        runtime = set(runtime_params)
        diff = []
        for key in keys:
            saved, mine = existing.get(key), config.get(key)
            if key == "params" and runtime:
                saved = {k: v for k, v in (saved or {}).items() if k not in runtime}
                mine = {k: v for k, v in (mine or {}).items() if k not in runtime}
            if _canonical(saved) != _canonical(mine):
                diff.append(key)
        return diff

    def write_config(self, config: dict[str, Any]) -> None:
        _atomic.save_json(self.config_path, config)

    def save_splits(self, dataset: Any) -> None:
        dataset.save_splits(self.path)

    # ------------------------------------------------------------------ hasher
    def save_hasher(self, hasher: Any) -> None:
        """Save ``hasher/`` (:meth:`Hasher.save` replaces a previous one atomically)."""
        hasher.save(self.path / "hasher")

    def stage_hasher(self, hasher: Any) -> None:
        """Replace ``hasher/``, keeping the previous copy (``hasher.old``) until :meth:`commit_hasher`,
        so that a crash at any point leaves a complete copy of both behind."""
        new, cur, old = self.path / "hasher.new", self.path / "hasher", self.path / "hasher.old"
        shutil.rmtree(new, ignore_errors=True)
        hasher.save(new)
        shutil.rmtree(old, ignore_errors=True)
        if cur.exists():
            os.replace(cur, old)
        os.replace(new, cur)
        _atomic.fsync_dir(self.path)

    def commit_hasher(self) -> None:
        """The staged hasher is the one that counts: drop the previous copy."""
        shutil.rmtree(self.path / "hasher.old", ignore_errors=True)

    def recover_hasher(self, accept: Callable[[Any], bool], what: str) -> Any:
        """The saved hasher (of ``hasher``, ``hasher.old``, ``hasher.new``) that ``accept`` takes; it
        becomes ``hasher/`` and the other copies go. ``what`` says what was expected, for the error."""
        from learn2hash.methods import Hasher

        for name in ("hasher", "hasher.old", "hasher.new"):
            folder = self.path / name
            if not (folder / "hasher.json").exists():
                continue
            try:
                hasher = Hasher.load(folder)
            except Learn2HashError:
                continue
            if accept(hasher):
                if name != "hasher":
                    shutil.rmtree(self.path / "hasher", ignore_errors=True)
                    os.replace(folder, self.path / "hasher")
                for other in ("hasher.old", "hasher.new"):
                    shutil.rmtree(self.path / other, ignore_errors=True)
                return hasher
        raise CorruptFileError(f"{self.path}: no saved hasher {what}")

    # ------------------------------------------------------------------ training records and metrics
    def save_history(self, history: list[dict[str, Any]]) -> None:
        _atomic.save_json(self.path / "history.json", history)

    def save_skipped_images(self, skipped: list[Any]) -> Path:
        path = self.path / "skipped_images.json"
        _atomic.save_json(path, {"count": len(skipped), "images": skipped})
        return path

    def save_metrics(self, metrics: dict[str, Any]) -> None:
        _atomic.save_json(self.path / "metrics.json", metrics)
