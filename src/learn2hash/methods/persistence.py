"""How a fitted :class:`~learn2hash.methods.base.Hasher` is saved and loaded: a versioned folder.

A saved hasher is a folder (:class:`~learn2hash._versioned.VersionedFolder`, lock ``.lock``)::

    hasher.json             {"format", "version", "method", "params", "state", "arrays", "files"}
                            (state: small JSON values; arrays / files: name -> {"file", "sha256"})
    <name>.<hash>.npy       one file per learned array (never pickled)
    weights.<hash>.pt       torch state_dict of deep methods (loaded with weights_only=True)

A save is atomic as a whole: the data files of the new version are written under names of their
own (``<hash>``: the first 12 hex digits of the file's sha256), ``hasher.json`` is replaced last
(the switch), then files that neither the new nor the previous ``hasher.json`` names are deleted.
A reader that finds a file gone (a second save collected it while it was reading) reads
``hasher.json`` again. Folders of format version 1 (``<name>.npy`` and ``weights.pt``, arrays as
``name -> sha256``) still load.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from learn2hash import _atomic
from learn2hash._versioned import VersionedFolder
from learn2hash.errors import CorruptFileError, Learn2HashError, MissingFileError

if TYPE_CHECKING:
    from learn2hash.methods.base import Hasher

HASHER_FORMAT = "learn2hash-hasher"
HASHER_VERSION = 2
#: the data files a save writes (and the next save may delete): name.<token>.npy / .pt, and temporaries
_VERSION_FILE = re.compile(r"^[A-Za-z0-9_][\w.-]*\.[0-9a-f]{12}\.(npy|pt)$")
_TEMP_FILE = re.compile(r"^\.(hasher\.json|[A-Za-z0-9_][\w.-]*\.[0-9a-f]{12}\.(npy|pt))\..*\.tmp$")
_V1_FILE = re.compile(r"^[A-Za-z0-9_][\w.-]*\.(npy|pt)$")
#: the logical name of a feature stage's backbone weights in a saved hasher (see ``save(features=...)``)
FEATURES_FILE = "features.pt"


def hasher_checksum(path: str | os.PathLike) -> str:
    """The identity of the hasher saved in folder ``path``: the sha256 of its ``hasher.json``, which
    lists the sha256 of every other file of the hasher. Codes, indexes and collections record it to
    say which hasher they came from; a loaded :class:`Hasher` remembers it as ``checksum_``."""
    folder = Path(path)
    meta_path = folder / "hasher.json"
    try:
        return _atomic.sha256_file(meta_path)
    except FileNotFoundError:
        raise MissingFileError(f"{folder} holds no saved hasher (expected {meta_path})") from None
    except IsADirectoryError:
        raise CorruptFileError(f"hasher file {meta_path} is a folder, expected a JSON file") from None
    except OSError as exc:
        raise CorruptFileError(f"hasher file {meta_path} cannot be read: {exc.strerror or exc}") from None


def _read_identified(meta_path: Path) -> tuple[dict[str, Any], str]:
    """``hasher.json`` read and checked, with the checksum of the very bytes read (a save that
    replaces it meanwhile makes this read again)."""
    for _ in range(5):
        before = hasher_checksum(meta_path.parent)
        meta = _read_hasher_json(meta_path)
        if hasher_checksum(meta_path.parent) == before:
            return meta, before
    raise Learn2HashError(f"hasher file {meta_path} keeps changing while it is read (another process saving it?)")


def hasher_folder(path: str | os.PathLike) -> VersionedFolder:
    """The versioned folder of a hasher saved in ``path``."""
    return VersionedFolder(path, "hasher.json", lock=".lock", data=_VERSION_FILE, temps=_TEMP_FILE)


def save_hasher(hasher: "Hasher", path: str | os.PathLike, features: Any = None) -> None:
    """:meth:`Hasher.save <learn2hash.methods.base.Hasher.save>`: write ``hasher`` (fitted) to folder ``path``."""
    folder = Path(path)
    if folder.exists() and not folder.is_dir():
        raise Learn2HashError(f"cannot save the hasher to {folder}: it is a file, expected a folder")
    state, arrays = hasher._get_state()
    extra = hasher._extra_files()
    stage: dict[str, Any] = {}
    if features is not None:
        if FEATURES_FILE in extra:
            raise Learn2HashError(f"{hasher.name} saves a file named {FEATURES_FILE}, which the feature stage needs")
        extra = {**extra, FEATURES_FILE: features.weights_bytes()}
        stage = {"features": features.describe()}
    with hasher_folder(folder).save() as version:
        previous = _files_named(folder / "hasher.json")
        array_entries, file_entries = {}, {}
        for key, arr in arrays.items():
            name, digest = version.write_named(key, _atomic.npy_bytes(arr, folder / f"{key}.npy"), ".npy")
            array_entries[key] = {"file": name, "sha256": digest}
        for logical, data in extra.items():
            stem, dot, ext = logical.rpartition(".")
            name, digest = version.write_named(stem if dot else logical, data, f".{ext}" if dot else "")
            file_entries[logical] = {"file": name, "sha256": digest}
        version.switch({
            "format": HASHER_FORMAT, "version": HASHER_VERSION, "method": hasher.name,
            "params": hasher.get_params(), "state": state, "arrays": array_entries, "files": file_entries,
            **stage,
        })
        hasher.checksum_ = hasher_checksum(folder)
        keep = {e["file"] for e in (*array_entries.values(), *file_entries.values())} | previous
        # the files of a version-1 save, once no hasher.json names them
        v1 = {f"{key}.npy" for key in arrays} | set(extra)
        version.collect(keep, also=re.compile("^(" + "|".join(map(re.escape, v1)) + ")$") if v1 else None)


def load_hasher(cls: type, path: str | os.PathLike) -> "Hasher":
    """:meth:`Hasher.load <learn2hash.methods.base.Hasher.load>`: the hasher saved in folder ``path``."""
    folder = Path(path)
    meta_path = folder / "hasher.json"
    if not meta_path.exists():
        raise Learn2HashError(f"{folder} holds no saved hasher (expected {meta_path})")

    def load(identified: tuple[dict[str, Any], str]) -> "Hasher":
        hasher = _load_version(cls, folder, meta_path, identified[0])
        hasher.checksum_ = identified[1]
        return hasher

    return hasher_folder(folder).read(lambda: _read_identified(meta_path), load)


def _new_hasher(cls: type, folder: Path, meta_path: Path, meta: dict[str, Any]) -> "Hasher":
    """The hasher ``meta`` describes, built from its saved parameters (not yet fitted)."""
    from learn2hash.methods.base import Hasher, check_bits
    from learn2hash.methods.registry import method_class

    try:
        klass = method_class(meta["method"])
    except Learn2HashError as exc:
        raise CorruptFileError(f"hasher file {meta_path}: {exc}") from None
    if cls is not Hasher and not issubclass(klass, cls):
        raise Learn2HashError(f"{folder} holds a {meta['method']} hasher, not a {cls.__name__}")
    params = meta["params"]
    allowed = set(klass._param_names())
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise CorruptFileError(f"hasher file {meta_path}: method {meta['method']!r} has no parameter "
                               f"{', '.join(map(repr, unknown))}; its parameters: {', '.join(sorted(allowed))}")
    if "bits" in params:
        try:
            check_bits(params["bits"])
        except Learn2HashError as exc:
            raise CorruptFileError(f"hasher file {meta_path}: {exc}") from None
    return klass(**params)


def _load_version(cls: type, folder: Path, meta_path: Path, meta: dict[str, Any]) -> "Hasher":
    obj = _new_hasher(cls, folder, meta_path, meta)
    arrays = _Entries(meta_path, "array")
    files = _Entries(meta_path, "file")
    for key, entry in meta["arrays"].items():
        p = _checked_file(folder, meta_path, key, entry, v1_name=f"{key}.npy")
        try:
            arrays[key] = _atomic.load_npy(p)
        except (ValueError, OSError) as exc:
            raise CorruptFileError(f"saved hasher file {p} cannot be read: {exc}") from None
    stage_weights = None
    for logical, entry in meta.get("files", {}).items():
        if logical == FEATURES_FILE and "features" in meta:
            stage_weights = _checked_file(folder, meta_path, logical, entry, v1_name=logical)
            continue
        files[logical] = _checked_file(folder, meta_path, logical, entry, v1_name=logical)
    if "features" in meta and stage_weights is None:
        raise CorruptFileError(f"hasher file {meta_path}: it has a feature stage but lists no {FEATURES_FILE}")
    state = _Entries(meta_path, "state value")
    state.update(meta.get("state", {}))
    try:
        obj._set_state(state, arrays, folder, files)
    except (Learn2HashError, FileNotFoundError):
        raise
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
        raise CorruptFileError(f"hasher file {meta_path}: its state cannot be restored "
                               f"({type(exc).__name__}: {exc})") from None
    obj.fitted_ = True
    _check_restored(obj, meta_path)
    if "features" in meta:  # a hasher behind a feature stage (needs torch)
        from learn2hash.features import FeatureHasher

        return FeatureHasher.restore(meta["features"], stage_weights, obj, meta_path)
    return obj


def _check_restored(obj: "Hasher", meta_path: Path) -> None:
    """Encode the method's probe input with the restored hasher: the saved arrays must fit together."""
    probe = obj._probe_input()
    if probe is None:
        return
    try:
        bits = obj._encode(probe).bits
    except Learn2HashError as exc:
        raise CorruptFileError(f"hasher file {meta_path}: the restored hasher cannot encode: {exc}") from None
    except (TypeError, ValueError, IndexError) as exc:  # e.g. arrays of shapes that do not fit together
        raise CorruptFileError(f"hasher file {meta_path}: the saved arrays do not fit together "
                               f"({type(exc).__name__}: {exc})") from None
    if bits != obj.bits:
        raise CorruptFileError(f"hasher file {meta_path}: its parameters say {obj.bits} bits but the saved "
                               f"arrays give {bits}-bit codes")


class _Entries(dict):
    """What a saved hasher's state, arrays and files hold; a name that is not there is a CorruptFileError."""

    def __init__(self, meta_path: Path, what: str):
        super().__init__()
        self.meta_path, self.what = meta_path, what

    def __missing__(self, key: str) -> Any:
        raise CorruptFileError(f"hasher file {self.meta_path} lists no {self.what} {key!r}, which its method needs")


def _read_hasher_json(meta_path: Path) -> dict[str, Any]:
    meta = _atomic.load_json(meta_path, "hasher file", format=HASHER_FORMAT, versions=(1, HASHER_VERSION),
                             required={"method": str, "params": dict, "arrays": dict},
                             optional={"state": dict, "files": dict, "features": dict})
    entry_type = str if meta["version"] == 1 else dict
    for key, entry in (*meta["arrays"].items(), *meta.get("files", {}).items()):
        if not _atomic.type_ok(entry, entry_type):
            raise CorruptFileError(f"hasher file {meta_path}: the entry of {key!r} is {_atomic.json_type(entry)}, "
                                   f"expected {_atomic.describe_types(entry_type)}")
        if entry_type is dict:
            _atomic.check_fields(entry, f"hasher file {meta_path}: entry {key!r}", required={"file": str, "sha256": str})
    return meta


def _checked_file(folder: Path, meta_path: Path, key: str, entry: Any, v1_name: str) -> Path:
    """The path of a file a hasher.json entry names, after checking its name and checksum."""
    name, digest = (v1_name, entry) if isinstance(entry, str) else (entry["file"], entry["sha256"])
    if not (_VERSION_FILE.match(name) or _V1_FILE.match(name)) or name in ("hasher.json",):
        raise CorruptFileError(f"hasher file {meta_path}: entry {key!r} names {name!r}, expected a data file of the hasher")
    p = folder / name
    if not p.exists():
        raise MissingFileError(f"saved hasher file {p} (listed in {meta_path}) is missing")
    if _atomic.sha256_file(p) != digest:
        raise CorruptFileError(f"saved hasher file {p} does not match its checksum in {meta_path}")
    return p


def _files_named(meta_path: Path) -> set[str]:
    """The data files the current hasher.json names (``set()`` when there is none or it is unreadable)."""
    if not meta_path.exists():
        return set()
    try:
        meta = _read_hasher_json(meta_path)
    except Learn2HashError:
        return set()
    if meta["version"] == 1:
        return {f"{k}.npy" for k in meta["arrays"]} | {"weights.pt"}
    return {entry["file"] for entry in (*meta["arrays"].values(), *meta.get("files", {}).values())}
