"""The dataset registry: names, presence on this machine, how to get them, and ``load``."""

from __future__ import annotations

import contextlib
import contextvars
import inspect
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from learn2hash.datasets.base import SPLIT_NAMES, Dataset, read_saved_splits
from learn2hash.errors import DatasetNotFoundError, Learn2HashError, check_int, unknown_name


@dataclass
class DatasetInfo:
    name: str
    description: str
    protocols: tuple[str, ...]
    builder: Callable[..., Dataset]
    present: Callable[[], bool] = lambda: True
    how_to_get: str = ""
    location: Callable[[], str] = lambda: ""
    generic: bool = False  # a loader for users' own files (needs a path), not a named dataset
    params: dict[str, str] = field(default_factory=dict)  # loader parameter -> what it means
    #: the cutoff k of mAP@k the literature reports for it: one value, or one per protocol;
    #: ``None``: mAP over the whole database (mAP@all)
    topk: int | None | dict[str, int | None] = None
    #: where the data is published (a URL or a sentence), for ``learn2hash datasets``
    published: str = ""
    #: the file layout the loader expects in its folder, for ``learn2hash datasets`` and errors
    layout: str = ""
    #: augmentations (:mod:`learn2hash.nn.augment` ops) that keep this dataset's labels besides the
    #: small shifts that keep any image's: ``("flip",)`` for clothes and photographs; ``()`` for
    #: digits, text, clips and users' own files (a flipped digit or letter is another symbol).
    #: ``augment="auto"`` of the deep methods trains with these plus ``shift`` (1/14 of the image
    #: side, :func:`learn2hash.nn.augment.shift_pixels`), unless one of these is a shift already
    label_preserving: tuple[str, ...] = ()


_REGISTRY: dict[str, DatasetInfo] = {}


def register(info: DatasetInfo) -> DatasetInfo:
    if info.name in _REGISTRY:
        raise RuntimeError(f"dataset {info.name!r} registered twice")
    _REGISTRY[info.name] = info
    return info


def register_loader(name: str, description: str, builder: Callable[..., Dataset],
                    params: dict[str, str]) -> DatasetInfo:
    """Register a loader of users' own files (``generic``: it needs a path; one protocol, ``standard``)."""
    return register(DatasetInfo(name=name, description=description, protocols=("standard",), builder=builder,
                                generic=True, params=params))


def available() -> dict[str, DatasetInfo]:
    """Every registered dataset (named ones and loaders of users' own files) by name."""
    _ensure_loaded()
    return dict(_REGISTRY)


#: deprecated alias of :func:`available`, kept for one release
registered = available


def info(name: str) -> DatasetInfo:
    _ensure_loaded()
    if name not in _REGISTRY:
        raise unknown_name("dataset", name, sorted(_REGISTRY))
    return _REGISTRY[name]


def default_topk(name: str, protocol: str | None = None) -> int | None:
    """The k of mAP@k that dataset ``name`` reports under ``protocol`` (its first by default); None = mAP@all."""
    d = info(name)
    if isinstance(d.topk, dict):
        return d.topk.get(protocol or d.protocols[0])
    return d.topk


_DATA_ROOT: contextvars.ContextVar[Path | None] = contextvars.ContextVar("learn2hash_data_root", default=None)


def data_root() -> Path | None:
    """The folder holding one sub-folder per named dataset: the one :func:`using_data_root` set,
    else ``$LEARN2HASH_DATA`` (None when neither is set)."""
    root = _DATA_ROOT.get()
    if root is not None:
        return root
    env = os.environ.get("LEARN2HASH_DATA")
    return Path(env).expanduser() if env else None


@contextlib.contextmanager
def using_data_root(root: str | os.PathLike | None):
    """Within the block (this thread or task only), named datasets are looked for in ``root/<name>``."""
    token = _DATA_ROOT.set(Path(root).expanduser().resolve() if root is not None else None)
    try:
        yield
    finally:
        _DATA_ROOT.reset(token)


def dataset_folder(name: str, path: Any = None) -> Path | None:
    """Where named dataset ``name`` is looked for: ``path`` (``--data-path``) when given, else
    ``$LEARN2HASH_DATA/<name>``; None when neither is set."""
    if path is not None and str(path) != "":
        return Path(path).expanduser().resolve()
    root = data_root()
    return (root / name).resolve() if root is not None else None


def not_found(name: str, folder: Path | None, layout: str, published: str, problem: str = "") -> DatasetNotFoundError:
    """The one-line error for a named dataset that is not where it was looked for."""
    where = (f"looked in {folder}" if folder is not None
             else "no folder to look in (give --data-path DIR or set LEARN2HASH_DATA to a folder holding "
                  f"{name}/)")
    what = f": {problem}" if problem else ""
    return DatasetNotFoundError(f"dataset {name!r} is not installed ({where}{what}); expected {layout}"
                                + (f"; published at {published}" if published else ""))


def load(name: str, protocol: str | None = None, seed: int = 0, splits: str | os.PathLike | None = None,
         **params: Any) -> Dataset:
    """Load dataset ``name`` under ``protocol`` (its first protocol by default), seeded.

    ``splits``: a folder written by :meth:`Dataset.save_splits`; the exact same items are then
    taken again (the protocol and seed are read from there). Extra keyword arguments go to the
    dataset's loader (for example ``path=`` for the generic loaders).
    """
    d = info(name)
    saved = None
    if splits is not None:
        saved = read_saved_splits(splits)
        if saved["dataset"] != name:
            raise Learn2HashError(f"saved splits in {splits} are for dataset {saved['dataset']!r}, not {name!r}")
        protocol, seed = saved["protocol"], saved["seed"]
        params = {**saved.get("params", {}), **params}
    protocol = protocol or d.protocols[0]
    if protocol not in d.protocols:
        raise Learn2HashError(
            f"dataset {name!r} has no protocol {protocol!r}; its protocols: {', '.join(d.protocols)}"
        )
    seed = check_int(seed, "seed", 0)
    _check_params(d, params)
    # a named dataset given a folder (path=, --data-path) checks that folder itself, naming what it expected
    if not d.generic and "path" not in params and not d.present():
        if d.layout:
            raise not_found(name, dataset_folder(name), d.layout, d.published)
        raise DatasetNotFoundError(f"dataset {name!r} is not installed on this machine. {d.how_to_get}")
    indices = None
    if saved is not None:
        indices = {k: (saved["splits"][k]["source"], saved["splits"][k]["indices"]) for k in SPLIT_NAMES}
    ds = d.builder(protocol=protocol, seed=int(seed), indices=indices, **params)
    # What the builder recorded (resolved paths, effective sizes) wins over the values as given.
    ds.params = {**{k: (str(v) if isinstance(v, Path) else v) for k, v in params.items()}, **ds.params}
    for split in ds.splits.values():
        split.dataset = name
    return ds


def _check_params(d: DatasetInfo, params: dict[str, Any]) -> None:
    """Refuse loader parameters the dataset does not take, naming the ones it does."""
    sig = inspect.signature(d.builder).parameters
    if any(p.kind == p.VAR_KEYWORD for p in sig.values()):
        if not d.params:
            return
        allowed = set(d.params)
    else:
        allowed = {k for k, p in sig.items() if p.kind != p.VAR_POSITIONAL} - {"protocol", "seed", "indices"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        takes = f"its parameters: {', '.join(sorted(allowed))}" if allowed else "it takes no parameters"
        raise Learn2HashError(f"dataset {d.name!r} has no parameter {', '.join(map(repr, unknown))}; {takes}")


# --------------------------------------------------------------------------- loader parameters
# Parameters may come from the command line as strings (``--data-param size=32``): these read them.

def int_param(dataset: str, name: str, value: Any, minimum: int | None = None) -> int:
    """An integer parameter (an int or a string of digits), at least ``minimum``."""
    if isinstance(value, bool):
        value = None
    try:
        out = int(value) if isinstance(value, (int, np.integer)) else int(str(value).strip())
    except (TypeError, ValueError):
        raise Learn2HashError(f"{dataset}: parameter {name} must be an integer, got {value!r}") from None
    if minimum is not None and out < minimum:
        raise Learn2HashError(f"{dataset}: parameter {name} must be >= {minimum}, got {out}")
    return out


def float_param(dataset: str, name: str, value: Any, low: float, high: float) -> float:
    """A real parameter in [low, high]."""
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise Learn2HashError(f"{dataset}: parameter {name} must be a number, got {value!r}") from None
    if not low <= out <= high:
        raise Learn2HashError(f"{dataset}: parameter {name} must be in [{low}, {high}], got {out}")
    return out


def size_param(dataset: str, value: Any, name: str = "size") -> tuple[int, int] | None:
    """An image size ``(height, width)`` from ``N`` (square), ``"HxW"`` or ``[H, W]``; ``None`` stays ``None``."""
    if value is None:
        return None
    if isinstance(value, str):
        parts = value.lower().replace(",", "x").split("x")
    elif isinstance(value, (list, tuple)):
        parts = list(value)
    else:
        parts = [value]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        raise Learn2HashError(f"{dataset}: parameter {name} must be N, HxW or [H, W], got {value!r}")
    h, w = (int_param(dataset, name, p, minimum=1) for p in parts)
    return h, w


def path_param(dataset: str, value: Any, name: str = "path", base: Path | None = None) -> Path:
    """An existing file or folder (relative paths are taken from ``base`` when given), made absolute."""
    if value is None or value == "":
        raise Learn2HashError(f"dataset {dataset!r} reads your own files: give {name}= (--data-path on the command line)")
    p = Path(value).expanduser()
    if base is not None and not p.is_absolute():
        p = base / p
    if not p.exists():
        raise Learn2HashError(f"{dataset}: {name} {str(p)!r} does not exist")
    return p.resolve()


def _ensure_loaded() -> None:
    # Importing the loader modules registers them.
    from learn2hash.datasets import digits, fashion_mnist  # noqa: F401
    for optional in ("files", "multilabel", "multiview", "clips", "cifar", "benchmarks", "video"):
        try:
            __import__(f"learn2hash.datasets.{optional}")
        except ModuleNotFoundError as exc:
            if exc.name != f"learn2hash.datasets.{optional}":
                raise
