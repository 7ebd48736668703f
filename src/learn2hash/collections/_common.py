"""What the parts of a collection share: its format constants, a search hit, item sources, helpers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from learn2hash import _atomic
from learn2hash.errors import Learn2HashError
from learn2hash.search import Hit  # one result type for runs and collections

FORMAT = "learn2hash-collection"
VERSION = 1
META = "collection.json"
INDEX = "index"
WORK = "work"
#: ``built_from["kind"]`` of a collection's index
KIND = "collection"
#: files encoded per shard by default: a shard is the unit of resumption and of the progress bar
DEFAULT_SHARD_SIZE = 1024
SHARD_FORMAT = "learn2hash-collection-shard"
_PATH = b"p"
_EXTERNAL = b"x"
_ON_BAD_IMAGE = ("error", "skip")
_META_FIELDS = {"bits": int, "run": str, "hasher_sha256": str, "root": (str, type(None)), "method": str}


def _payload(path: str | None = None, external_id: str | None = None) -> bytes:
    if path is not None:
        return _PATH + path.encode("utf-8")
    return _EXTERNAL + (external_id or "").encode("utf-8")


def _source(payload: bytes | None) -> dict[str, str | None]:
    if not payload:
        return {"path": None, "external_id": None}
    text = payload[1:].decode("utf-8", errors="replace")
    if payload[:1] == _PATH:
        return {"path": text, "external_id": None}
    return {"path": None, "external_id": text}


def _hasher_checksum(run_folder: Path) -> str:
    from learn2hash.runs import Run

    return Run(run_folder).hasher_checksum()




# ----------------------------------------------------------------------------- helpers
def _read_meta(folder: Path) -> dict[str, Any]:
    path = folder / META
    if not path.exists():
        raise Learn2HashError(f"{folder} is not a collection (no {META}); make one with "
                              "`learn2hash collection create --run RUN --images DIR --out COLL`")
    return _atomic.load_json(path, "collection metadata", format=FORMAT, versions=(VERSION,), required=_META_FIELDS)


def _default_root(images: Any) -> Path:
    if isinstance(images, (str, os.PathLike)):
        src = Path(images)
        if src.is_dir():
            return src
        if src.is_file():
            return src.parent
        raise Learn2HashError(f"--images {src} is neither a folder of images nor a list file")
    paths = [os.path.abspath(os.fspath(p)) for p in images]
    if not paths:
        raise Learn2HashError("no images given")
    return Path(os.path.commonpath([os.path.dirname(p) for p in paths]))


def _as_list(queries: Any) -> list[Any]:
    if isinstance(queries, (str, os.PathLike, bytes, bytearray, memoryview)):
        return [queries]
    if isinstance(queries, np.ndarray):  # [n, H, W, C] and [n, H, W] are batches, [H, W, 1|3|4] and [H, W] one image
        if queries.ndim == 4 or (queries.ndim == 3 and queries.shape[-1] not in (1, 3, 4)):
            return list(queries)
        return [queries]
    if hasattr(queries, "getbands"):  # a PIL image
        return [queries]
    if isinstance(queries, Sequence):
        return list(queries)
    raise Learn2HashError(f"a query is an image path, image bytes, an image array or a PIL image (or a list of "
                          f"them), or Codes; got {type(queries).__name__}")


def _array_image(a: np.ndarray, what: str):
    """A decoded image ``uint8[H, W]``, ``[H, W, 1|3|4]`` as a PIL image."""
    from PIL import Image

    if a.dtype != np.uint8 or a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (1, 3, 4)):
        raise Learn2HashError(f"{what}: an image array must be uint8 [H, W], [H, W, 3] or [H, W, 4]; got "
                              f"{a.dtype}{list(a.shape)}")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    return Image.fromarray(np.ascontiguousarray(a))
