"""How :class:`~learn2hash.codes.Codes` are saved and loaded: ``PATH`` (a ``.npy``) and ``PATH.json``.

Codes saved at ``PATH`` are a versioned artifact (:class:`~learn2hash._versioned.VersionedFolder`)
of the folder ``PATH`` is in: the packed array is written first under a name of its own,
``.NAME.<sha256 prefix>.npy``; the metadata file ``PATH.json`` (format, version, bits, count,
checksum, the name of that file, the provenance) is replaced last, which switches readers to the
new version; ``PATH`` itself becomes another name of the new array (a hard link, or a copy), for
tools that read ``.npy`` files. Versions older than the previous one are deleted; concurrent
saves to one path take turns (lock ``.NAME.lock``). Metadata of version 1 (before saves were
versioned) describes ``PATH`` itself and still loads.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from learn2hash import _atomic
from learn2hash._versioned import VersionedFolder
from learn2hash.errors import CorruptFileError, Learn2HashError, MissingFileError

if TYPE_CHECKING:
    from learn2hash.codes import Codes

CODES_FORMAT = "learn2hash-codes"
CODES_VERSION = 2


def save_codes(codes: "Codes", path: str | os.PathLike) -> None:
    """:meth:`Codes.save <learn2hash.codes.Codes.save>`."""
    path = Path(path)
    if path.is_dir():
        raise Learn2HashError(f"cannot write codes to {path}: it is a folder (give a file name such as codes.npy)")
    if _meta_path(path).is_dir():
        raise Learn2HashError(f"cannot write codes to {path}: {_meta_path(path)} is a folder")
    with _folder(path).save() as version:
        previous = _previous_version(path)
        name, digest = version.write_named(f".{path.name}", _atomic.npy_bytes(codes.packed, path), ".npy")
        meta = {"format": CODES_FORMAT, "version": CODES_VERSION, "bits": codes.bits, "n": len(codes),
                "file": name, "sha256": digest}
        if codes.provenance is not None:
            meta["provenance"] = codes.provenance.to_json()
        version.switch(meta)
        _link_or_copy(path.with_name(name), path)
        version.collect({name} | ({previous} if previous else set()))


def codes_saved(path: str | os.PathLike) -> bool:
    """Whether codes were saved at ``path`` (its metadata file or the ``.npy`` is there)."""
    path = Path(path)
    return _meta_path(path).exists() or path.exists()


def load_codes(cls: type, path: str | os.PathLike, mmap: bool = False) -> "Codes":
    """:meth:`Codes.load <learn2hash.codes.Codes.load>`."""
    path = Path(path)
    meta_path = _meta_path(path)
    if not meta_path.exists():
        if not path.exists():
            raise MissingFileError(f"codes file {path} does not exist")
        raise CorruptFileError(f"codes file {path} has no metadata file {meta_path} (it records the bit length)")
    return _folder(path).read(
        lambda: _read_meta(meta_path),
        lambda meta: _load_version(cls, path.parent / meta["file"] if "file" in meta else path, meta, meta_path, mmap))


def _load_version(cls: type, data: Path, meta: dict, meta_path: Path, mmap: bool) -> "Codes":
    from learn2hash.codes import Provenance

    if not data.exists():
        raise MissingFileError(f"codes file {data} named by {meta_path} does not exist")
    if "sha256" in meta and _atomic.sha256_file(data) != meta["sha256"]:
        raise CorruptFileError(f"codes file {data} does not match the checksum in {meta_path}")
    try:
        packed = _atomic.load_npy(data, mmap=mmap)
    except (ValueError, OSError) as exc:
        raise CorruptFileError(f"codes file {data} cannot be read as .npy: {exc}") from None
    try:
        codes = cls._own(packed, meta["bits"]) if packed.flags.writeable else cls(packed, meta["bits"])
    except Learn2HashError as exc:
        raise CorruptFileError(f"codes file {data} does not agree with {meta_path}: {exc}") from None
    if len(codes) != meta["n"]:
        raise CorruptFileError(f"codes file {data} holds {len(codes)} codes, {meta_path} says {meta['n']}")
    if "provenance" in meta:
        codes.provenance = Provenance.from_json(meta["provenance"], f"codes metadata {meta_path}")
    return codes


def _folder(path: Path) -> VersionedFolder:
    """Codes saved at ``path``: a versioned artifact of the folder ``path`` is in (lock ``.NAME.lock``)."""
    return VersionedFolder(path.parent, path.name + ".json", lock=f".{path.name}.lock",
                           data=_version_files(path.name), temps=_temp_files(path.name))


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _version_files(name: str) -> re.Pattern[str]:
    return re.compile(r"^\." + re.escape(name) + r"\.[0-9a-f]{12}\.npy$")


def _temp_files(name: str) -> re.Pattern[str]:
    """Temporary files of killed saves to ``name``: of the data versions, the metadata and the link."""
    return re.compile(r"^\.(\.)?" + re.escape(name) + r"\..*\.tmp$")


def _read_meta(meta_path: Path) -> dict:
    meta = _atomic.load_json(meta_path, "codes metadata", format=CODES_FORMAT, versions=(1, CODES_VERSION),
                             required={"bits": int, "n": int},
                             optional={"sha256": str, "file": str, "provenance": dict})
    if meta["bits"] < 1 or meta["n"] < 0:
        raise CorruptFileError(f"codes metadata {meta_path}: bits must be >= 1 and n >= 0, got {meta['bits']}, {meta['n']}")
    name = meta.get("file")
    if meta["version"] >= 2 and name is None:
        raise CorruptFileError(f"codes metadata {meta_path} has no 'file' (expected the name of the data file)")
    if name is not None and not _version_files(meta_path.name[:-len(".json")]).match(name):
        raise CorruptFileError(f"codes metadata {meta_path} names {name!r}, expected a data file of these codes")
    return meta


def _previous_version(path: Path) -> str | None:
    """The data file the current metadata names (kept by the next save for readers that read it)."""
    try:
        return _read_meta(_meta_path(path)).get("file")
    except Learn2HashError:
        return None


def _link_or_copy(src: Path, dst: Path) -> None:
    """Make ``dst`` name the content of ``src`` atomically (a hard link where the file system allows)."""
    tmp = dst.with_name(f".{dst.name}.{_atomic.version_token()}.link.tmp")
    try:
        os.link(src, tmp)
    except OSError:
        with open(src, "rb") as fin, _atomic.atomic_open(dst, "wb") as fout:
            shutil.copyfileobj(fin, fout)
        return
    try:
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _atomic.fsync_dir(dst.parent)
