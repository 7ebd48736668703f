"""The index of a run folder (``RUN/index``): built from the run's database codes, refused when stale.

:func:`build_run_index` records in the index manifest what the index was built from (its
``built_from``): a checksum of the run's database codes and of its hasher (``hasher/hasher.json``,
which itself lists the checksum of every other file of the hasher). :func:`open_run_index` loads
the index and compares that record with the run as it is now, then checks that the items with ids
``0 .. n-1`` (database positions) hold exactly the run's database codes (an index saved without a
record, e.g. by an older learn2hash, is judged by that check alone). A retrained run (the old index
kept beside new codes) or an index of foreign codes is refused with a one-line error that says
how to rebuild, or rebuilt when asked.

Items appended to the index later (ids ``>= n``, see :meth:`HammingIndex.edit`) are allowed: they
are searched with the rest and have no labels.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np

from learn2hash import _atomic
from learn2hash.codes import Codes
from learn2hash.errors import Learn2HashError
from learn2hash.index import storage
from learn2hash.index.hamming import HammingIndex

#: ``built_from["kind"]`` of an index of a run's database codes.
RUN_DATABASE = "run-database-codes"


class StaleIndexError(Learn2HashError):
    """A run's index that no longer matches (or never matched) the run's database codes."""


def codes_checksum(codes: Codes) -> str:
    """sha256 of a set of codes: the bit length and the packed bytes, in order."""
    h = hashlib.sha256(f"learn2hash-codes:{codes.bits}:{len(codes)}:".encode())
    h.update(np.ascontiguousarray(codes.packed).data)
    return h.hexdigest()


def index_folder(run) -> Path:
    return Path(run.folder) / "index"


def _hasher_checksum(run) -> str:
    path = Path(run.folder) / "hasher" / "hasher.json"
    try:
        return _atomic.sha256_file(path)
    except FileNotFoundError:
        raise Learn2HashError(f"run {run.folder} has no trained hasher yet (training did not finish?)") from None


#: sha256 of a run's ``hasher/hasher.json``: the identity of its hasher (that file lists the checksum
#: of every other file of the hasher); what an index or a collection records and is checked against
hasher_checksum = _hasher_checksum


def run_source(run, codes: Codes | None = None) -> dict[str, Any]:
    """What an index of ``run``'s database codes is built from (``codes``: those codes, if at hand)."""
    codes = run.codes("database") if codes is None else codes
    return {"kind": RUN_DATABASE, "bits": int(codes.bits), "n": len(codes),
            "database_codes_sha256": codes_checksum(codes), "hasher_sha256": _hasher_checksum(run)}


def _rebuild_hint(run) -> str:
    return f"rebuild it with `learn2hash index build --run {run.folder}`"


def build_run_index(run, backend: str = "native", threads: int | None = None, **options) -> tuple[Path, int, int]:
    """Index ``run``'s database codes (ids = database positions) in ``RUN/index``, replacing what is
    there (under the folder's writer lock: concurrent builds take turns). Returns the folder, the
    number of codes and their bit length."""
    codes = run.codes("database")
    with HammingIndex(codes.bits, backend=backend, threads=threads, **options) as index:
        index.add(codes)
        index.built_from = run_source(run, codes)
        folder = index.save(index_folder(run))
    return folder, len(codes), codes.bits


def check_run_index(index: HammingIndex, run) -> None:
    """Raise :class:`StaleIndexError` unless ``index`` holds exactly ``run``'s database codes under ids
    ``0 .. n-1`` (plus any items appended later, ids ``>= n``) and, when it records what it was
    built from (every index :func:`build_run_index` writes does), that record matches the run's
    database codes and hasher as they are now."""
    folder = index_folder(run)
    db = run.codes("database")
    src = index.built_from
    if src is not None:
        now = run_source(run, db)
        if src.get("kind") != RUN_DATABASE:
            raise StaleIndexError(f"index {folder} was built from something else than this run's database codes "
                                  f"({src.get('kind')!r}): {_rebuild_hint(run)}")
        changed = [what for key, what in (("hasher_sha256", "hasher"), ("database_codes_sha256", "database codes"))
                   if src.get(key) != now[key]]
        if changed:
            raise StaleIndexError(f"index {folder} is stale: the run's {' and '.join(changed)} changed since it "
                                  f"was built (retrained?): {_rebuild_hint(run)}")
    if index.bits != db.bits:
        raise StaleIndexError(f"index {folder} holds {index.bits}-bit codes, the run's are {db.bits} bits: "
                              f"{_rebuild_hint(run)}")
    ids = index.ids
    base = ids < len(db)
    if np.count_nonzero(base) != len(db) or not np.array_equal(index.codes().packed[base], db.packed[ids[base]]):
        raise StaleIndexError(f"index {folder} does not hold the run's {len(db)} database codes under their "
                              f"positions as ids (foreign codes, or built before the run was retrained): "
                              f"{_rebuild_hint(run)}")


def open_run_index(run, rebuild: bool = False, **load_options) -> HammingIndex:
    """Load ``RUN/index`` and check it against the run (:func:`check_run_index`). With ``rebuild``,
    a missing, stale or foreign index is rebuilt first instead of refused. ``load_options`` go to
    :meth:`HammingIndex.load` (backend, threads, ...)."""
    folder = index_folder(run)
    build_options = {k: v for k, v in load_options.items() if k not in ("mmap", "verify")}
    build_options["backend"] = build_options.get("backend") or "native"
    if not (folder / storage.MANIFEST).exists():
        if not rebuild:
            raise Learn2HashError(f"run {run.folder} has no index yet: run `learn2hash index build --run {run.folder}`")
        build_run_index(run, **build_options)
    index = HammingIndex.load(folder, **load_options)
    try:
        check_run_index(index, run)
    except StaleIndexError:
        index.close()
        if not rebuild:
            raise
        build_run_index(run, **build_options)
        index = HammingIndex.load(folder, **load_options)
        check_run_index(index, run)
    return index
