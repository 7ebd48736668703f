"""The search services behind the HTTP API, independent of the web framework.

A :class:`SearchService` holds one run's hasher, its dataset splits and a
:class:`~learn2hash.search.RunSearch` of the database codes (``RUN/index`` when present,
else an index built in memory); :class:`~learn2hash.serve.collection_service.CollectionService`
serves a collection the same way. It turns a query — a position in the query split, an uploaded image, or a
feature vector — into a code, searches the index and describes the results. Every problem with
a request raises :class:`RequestError` with the HTTP status it deserves and a message that says
what was wrong; nothing a client sends can make it fail otherwise.

Ids of a run's database items are their positions in its database split. Uploads are decoded by
a :class:`Decoder` in two lanes by size (small images never wait behind large ones), within a
memory budget (:class:`Limits`).
"""

from __future__ import annotations

import functools
import io
import reprlib
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from learn2hash.errors import Learn2HashError
from learn2hash.search import RunSearch

#: image formats an upload may have (as Pillow names them)
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP")
#: their media types (as the API documents them)
IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp")
#: content types an upload part may declare (browsers send one of these for image files)
UPLOAD_CONTENT_TYPES = IMAGE_MEDIA_TYPES + ("image/x-ms-bmp", "application/octet-stream")
#: peak bytes of memory per pixel while one upload is decoded: Pillow keeps 4 bytes per pixel of RGB(A) or
#: 32-bit images, EXIF transposition makes a copy and the mode conversion another (a 25 M-pixel RGB PNG took
#: 190 MB turned into gray; 12 covers a 4-byte conversion too)
DECODE_BYTES_PER_PIXEL = 12
#: most uploads decoded at once in one lane, however small the images
MAX_DECODE_SLOTS = 32
#: share of the decoding budget kept for small images (their own lane, so they never wait behind large ones)
SMALL_LANE_SHARE = 0.25


def _brief_repr() -> reprlib.Repr:
    r = reprlib.Repr()
    r.maxlevel, r.maxlist, r.maxdict, r.maxstring, r.maxlong, r.maxother = 2, 4, 4, 40, 40, 40
    return r


#: a short repr of a client's value for a message (nesting and length bounded, so a huge or deep value cannot fail)
brief = _brief_repr().repr


def integer_value(value: Any) -> int | None:
    """``value`` as an int if it is an integer (as JSON Schema counts them: ``3`` and ``3.0``, not ``true``)."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


class RequestError(Learn2HashError):
    """A request the service refuses: ``status`` is the HTTP status (4xx), the message says why."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _slots(budget: float, pixels: int) -> int:
    """How many images of ``pixels`` pixels ``budget`` bytes decode at once (1 to :data:`MAX_DECODE_SLOTS`)."""
    return int(max(1, min(MAX_DECODE_SLOTS, budget // (max(1, pixels) * DECODE_BYTES_PER_PIXEL))))


@dataclass(frozen=True)
class Limits:
    """What a request may carry, and how long a client may take to send it."""

    max_upload_bytes: int = 5 << 20
    max_image_pixels: int = 25_000_000
    max_k: int = 1000
    #: memory that uploads being decoded at the same time may take; sets the decoding lanes' slots
    max_decode_bytes: int = 256 << 20
    #: uploads of at most this many pixels are decoded in the small lane
    small_image_pixels: int = 1_000_000
    #: seconds a client has to send a request's headers, and its body (see :mod:`learn2hash.serve.protocol`)
    read_timeout: float = 5.0
    #: bytes per second that extend the body's deadline by one second each
    min_body_rate: int = 64 << 10

    @property
    def split_lanes(self) -> bool:
        """Whether images over :attr:`small_image_pixels` can arrive (else every upload is small: one lane)."""
        return self.max_image_pixels > self.small_image_pixels

    @property
    def decode_slots(self) -> int:
        """How many large uploads are decoded at once: as many maximum-size images as the budget's large-lane
        share (all of it with one lane) holds at :data:`DECODE_BYTES_PER_PIXEL`, at least 1."""
        share = 1 - SMALL_LANE_SHARE if self.split_lanes else 1.0
        return _slots(self.max_decode_bytes * share, self.max_image_pixels)

    @property
    def small_decode_slots(self) -> int:
        """How many small uploads are decoded at once, beside the large ones: as many images of
        :attr:`small_image_pixels` as the budget's small-lane share holds, at least 1 (0 with one lane)."""
        if not self.split_lanes:
            return 0
        return _slots(self.max_decode_bytes * SMALL_LANE_SHARE, self.small_image_pixels)


class Decoder:
    """Decodes uploaded image files in two lanes by size, so that small uploads never wait behind large ones.

    An upload's header is read first (in the caller's thread: format and size, nothing decoded); images of
    at most ``limits.small_image_pixels`` pixels are then decoded by ``limits.small_decode_slots`` threads
    of their own, larger ones by ``limits.decode_slots`` threads. Each lane's threads are the only ones that
    decode its images, so at most that many are in memory at once (each may take
    :data:`DECODE_BYTES_PER_PIXEL` bytes a pixel), and only these threads hold the memory allocator's
    per-thread arenas that decoding grows (any request thread decoding would keep its own).
    Safe to share between threads.
    """

    def __init__(self, limits: Limits):
        self.limits = limits
        self.large = ThreadPoolExecutor(max_workers=limits.decode_slots, thread_name_prefix="learn2hash-decode")
        self.small = (ThreadPoolExecutor(max_workers=limits.small_decode_slots,
                                         thread_name_prefix="learn2hash-decode-small")
                      if limits.split_lanes else self.large)

    def decode(self, data: bytes, geometry: Any, content_type: str | None = None) -> np.ndarray:
        """``uint8[C, H, W]`` of an uploaded image file through :func:`learn2hash.images.encode_image`
        (EXIF orientation, any mode, shorter side resized and centre-cropped to ``geometry``); refusals are
        :class:`RequestError` (413 too large or a decompression bomb, 415 not an image format we take,
        422 unreadable)."""
        from learn2hash import images
        from learn2hash.errors import ImageTooLargeError

        lim = self.limits
        if content_type and content_type.split(";")[0].strip().lower() not in UPLOAD_CONTENT_TYPES:
            raise RequestError(415, f"unsupported upload type {content_type!r}: send a PNG, JPEG, GIF, BMP or WEBP image")
        if len(data) == 0:
            raise RequestError(422, "the uploaded image is empty (0 bytes)")
        if len(data) > lim.max_upload_bytes:
            raise RequestError(413, f"the uploaded image has {len(data)} bytes, the limit is {lim.max_upload_bytes}")
        try:
            img = images.open_image(data, "the upload")
            try:
                if img.format not in IMAGE_FORMATS:
                    raise RequestError(415, f"unsupported image format {img.format}: send {', '.join(IMAGE_FORMATS)}")
                pixels = img.width * img.height
                if pixels > lim.max_image_pixels:
                    raise RequestError(413, f"the image is {img.width}x{img.height} pixels, the limit is "
                                            f"{lim.max_image_pixels} pixels")
                arr = self.run(pixels, images.encode_image, img, geometry, "the upload")
            finally:
                img.close()
        except RequestError:
            raise
        except ImageTooLargeError as exc:
            raise RequestError(413, f"the upload is a decompression bomb or over the decoder's limits ({exc})") from None
        except Learn2HashError as exc:
            raise RequestError(422, f"the upload is not a readable image ({exc})") from None
        return np.ascontiguousarray(arr)

    def run(self, pixels: int, work: Any, *args: Any) -> Any:
        """``work(*args)`` in the lane of an image of ``pixels`` pixels, waiting for a slot; its result."""
        lane = self.small if pixels <= self.limits.small_image_pixels else self.large
        return lane.submit(work, *args).result()

    def close(self) -> None:
        self.large.shutdown(wait=False)
        self.small.shutdown(wait=False)


class SearchService:
    """Query encoding, index search and item rendering for one run folder."""

    def __init__(self, run_or_dir: Any, limits: Limits = Limits()):
        from learn2hash.runs import Run

        self.run = run_or_dir if isinstance(run_or_dir, Run) else Run.open(run_or_dir)
        self.limits = limits
        self.dataset = self.run.dataset()
        self.hasher = self.run.hasher()
        self.query_codes = self.run.codes("query")
        # RUN/index when present (refused when stale or holding anything but the database), else built in memory
        self.searcher = RunSearch(self.run, index="auto", database_only=True)
        self.index, self.index_source = self.searcher.index, self.searcher.index_source
        self.index.search(self.query_codes[:1], 1)  # compile the search kernels before the first request
        self.n_database = len(self.dataset.database)
        self.class_names = list(self.dataset.class_names or
                                [str(i) for i in range(self.dataset.database.n_classes)])
        self.item_shape = tuple(int(s) for s in self.dataset.database.item_shape)
        self.kind = self.dataset.database.kind
        # one search at a time: the native kernels use all cores for a single query batch already
        self._lock = threading.Lock()
        self._decoder = Decoder(limits)
        self._png = functools.lru_cache(maxsize=8192)(self._render_png)

    # ------------------------------------------------------------------ description
    @property
    def accepts(self) -> list[str]:
        """The kinds of query this run can take: ``query_index`` always, ``image`` or ``features`` by item kind."""
        out = ["query_index"]
        if self.kind == "image" and len(self.item_shape) == 3:
            out.append("image")
        if self.kind == "features" and len(self.item_shape) == 1:
            out.append("features")
        return out

    def info(self) -> dict[str, Any]:
        c = self.run.config
        return {"run": self.run.folder.name, "method": c["method"], "bits": self.run.bits,
                "dataset": c["dataset"], "protocol": c.get("protocol"), "kind": self.kind,
                "item_shape": list(self.item_shape), "n_query": len(self.dataset.query),
                "n_database": self.n_database, "class_names": self.class_names, "accepts": self.accepts,
                "has_images": self.has_images, "index": self.index_source,
                "limits": {"max_upload_bytes": self.limits.max_upload_bytes,
                           "max_image_pixels": self.limits.max_image_pixels,
                           "max_k": min(self.limits.max_k, self.n_database),
                           "image_formats": list(IMAGE_FORMATS)}}

    @property
    def has_images(self) -> bool:
        return len(self.item_shape) in (3, 4)

    def label_names(self, labels_row: np.ndarray) -> list[str]:
        return [self.class_names[i] for i in np.flatnonzero(labels_row)]

    def queries(self, offset: int, limit: int) -> dict[str, Any]:
        n = len(self.dataset.query)
        if offset < 0 or limit < 1 or limit > 500:
            raise RequestError(422, f"offset must be >= 0 and limit between 1 and 500, got offset={offset}, limit={limit}")
        stop = min(n, offset + limit)
        return {"total": n, "offset": offset,
                "items": [{"index": i, "labels": self.label_names(self.dataset.query.labels[i])}
                          for i in range(offset, stop)]}

    # ------------------------------------------------------------------ queries -> codes
    def check_k(self, k: Any) -> int:
        value = integer_value(k)
        if value is None:
            raise RequestError(422, f"k must be an integer, got {brief(k)}")
        k = value
        upper = min(self.limits.max_k, self.n_database)
        if k < 1 or k > upper:
            raise RequestError(422, f"k must be between 1 and {upper} (the database holds {self.n_database} items"
                                    f", at most {self.limits.max_k} results per request), got {k}")
        return k

    def position(self, i: Any, split: str, missing_status: int = 422) -> int:
        """Check that ``i`` is an item position of ``split``; out of range is ``missing_status``."""
        n = len(self.dataset.query) if split == "query" else self.n_database
        position = integer_value(i)
        if position is None:
            raise RequestError(422, f"{split} index must be an integer, got {brief(i)}")
        if not 0 <= position < n:
            raise RequestError(missing_status, f"{split} index {brief(position)} is out of range: the {split} split "
                                               f"has {n} items (0..{n - 1})")
        return position

    def decode_image(self, data: bytes, content_type: str | None = None) -> np.ndarray:
        """An uploaded image file -> ``uint8[1, C, H, W]`` (see :meth:`Decoder.decode`)."""
        from learn2hash import images

        if "image" not in self.accepts:
            raise RequestError(422, f"this run hashes {self.kind} items of shape {list(self.item_shape)}, not images: "
                                    "send {\"features\": [...]} or {\"query_index\": i} instead")
        return self._decoder.decode(data, images.geometry_for(self.hasher, self.item_shape), content_type)[None]

    def decode_features(self, features: Any) -> np.ndarray:
        """A JSON list of numbers -> ``float32[1, d]``; the length must be the run's feature dimension."""
        if "features" not in self.accepts:
            raise RequestError(422, f"this run hashes {self.kind} items of shape {list(self.item_shape)}: "
                                    "upload an image (multipart field 'image') or send {\"query_index\": i}")
        d = self.item_shape[0]
        if not isinstance(features, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                     for v in features):
            raise RequestError(422, f"features must be a list of {d} numbers")
        if len(features) != d:
            raise RequestError(422, f"features has {len(features)} values, this run expects {d}")
        try:
            arr = np.asarray(features, dtype=np.float64)
        except OverflowError:  # an integer beyond float range
            arr = np.full(d, np.inf)
        if not np.all(np.isfinite(arr)) or np.any(np.abs(arr) > np.finfo(np.float32).max):
            raise RequestError(422, "features must be finite numbers within float32 range (no NaN or infinity)")
        return arr.astype(np.float32)[None]

    # ------------------------------------------------------------------ search
    def _encode(self, x: np.ndarray):
        try:
            return self.hasher.encode(x)
        except Learn2HashError as exc:
            raise RequestError(422, f"cannot encode the query: {exc}") from None

    def search(self, k: Any, query_index: Any = None, image: bytes | None = None,
               image_type: str | None = None, features: Any = None) -> dict[str, Any]:
        """Search with exactly one of ``query_index``, ``image`` (file bytes) or ``features``.

        Returns ``ids``, ``distances`` (non-decreasing; ties by database position), ``labels``
        (class names per result) and, for a ``query_index``, whether each result is relevant.
        """
        given = [name for name, v in (("query_index", query_index), ("image", image), ("features", features))
                 if v is not None]
        if len(given) != 1:
            raise RequestError(422, "send exactly one query: 'query_index', an 'image' upload or 'features'"
                               + (f" (got {', '.join(given)})" if given else ""))
        k = self.check_k(k)
        t0 = time.perf_counter()
        query: dict[str, Any] = {"kind": given[0]}
        qlabels = None
        if query_index is not None:
            i = self.position(query_index, "query")
            codes = self.query_codes[[i]]
            qlabels = self.dataset.query.labels[i]
            query.update(index=i, labels=self.label_names(qlabels))
            with self._lock:
                (hits,) = self.searcher.search(codes, k, query_labels=qlabels[None, :])
        else:
            if image is not None:
                x = self.decode_image(image, image_type)
            else:
                x = self.decode_features(features)
            with self._lock:
                codes = self._encode(x)
                (hits,) = self.searcher.search(codes, k)
        out = {"k": k, "bits": self.run.bits, "query": query, "code": "".join("1" if b else "0" for b in codes.to_bits()[0]),
               "ids": hits.ids.tolist(), "distances": hits.distances.tolist(),
               "labels": [[self.class_names[c] for c in h.labels] for h in hits]}
        if qlabels is not None:
            out["relevant"] = hits.relevant.tolist()
        out["seconds"] = time.perf_counter() - t0
        return out

    # ------------------------------------------------------------------ images
    def item_png(self, split: str, i: Any) -> bytes:
        """PNG bytes of item ``i`` of split ``query`` or ``database`` (middle frame of a clip)."""
        i = self.position(i, split, missing_status=404)
        if not self.has_images:
            raise RequestError(404, f"this run holds {self.kind} items of shape {list(self.item_shape)}, not images")
        return self._png(split, i)

    def _render_png(self, split: str, i: int) -> bytes:
        from PIL import Image

        from learn2hash.search import item_image

        split_obj = self.dataset.query if split == "query" else self.dataset.database
        buf = io.BytesIO()
        Image.fromarray(item_image(split_obj.x[i])).save(buf, format="PNG")
        return buf.getvalue()


def __getattr__(name: str) -> Any:
    """The collection's service and its constants, kept importable from here (they live in
    :mod:`learn2hash.serve.collection_service`)."""
    from learn2hash.serve import collection_service

    if name in _MOVED:
        return getattr(collection_service, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_MOVED = ("CollectionService", "open_under_root", "THUMBNAIL_SIDE", "MAX_THUMBNAIL_SOURCE_BYTES", "MAX_EXTERNAL_ID",
          "THUMBNAIL_CACHE")
