"""The service of a collection: search by an uploaded image, items added and removed live, thumbnails.

A :class:`CollectionService` serves a :class:`~learn2hash.collections.Collection` (searched through
:class:`learn2hash.search.CollectionSearch`): uploads are decoded by the :class:`~learn2hash.serve.service.Decoder`'s
lanes, items are added and removed through the collection's writer lock, thumbnails are made of its files
(read from under its root only, :func:`open_under_root`). Refusals are
:class:`~learn2hash.serve.service.RequestError` with their HTTP status.
"""

from __future__ import annotations

import io
import os
import re
import threading
import time
from collections import OrderedDict
from typing import Any

from learn2hash.errors import Learn2HashError
from learn2hash.search import CollectionSearch
from learn2hash.serve.service import IMAGE_FORMATS, Decoder, Limits, RequestError, brief, integer_value

#: longest side of a thumbnail, in pixels
THUMBNAIL_SIDE = 256
#: largest image file a thumbnail is made from, in bytes
MAX_THUMBNAIL_SOURCE_BYTES = 64 << 20
#: longest external id an upload may carry, in characters
MAX_EXTERNAL_ID = 256
#: what an external id may be (as the OpenAPI document says): 1 to MAX_EXTERNAL_ID characters, no control ones
_EXTERNAL_ID = re.compile(f"[^\\x00-\\x1f\\x7f]{{1,{MAX_EXTERNAL_ID}}}")
#: thumbnails kept in memory
THUMBNAIL_CACHE = 1024


def open_under_root(root: Any, rel: str) -> int:
    """A read-only file descriptor of the regular file ``rel`` (``/``-separated, relative) under folder ``root``,
    never of a file outside it: refused (:class:`RequestError` 404) when ``rel`` is absolute, has ``..``, ``.``,
    a backslash, a NUL or an empty component, or leads through a symbolic link anywhere (each component is
    opened with ``O_NOFOLLOW`` relative to the one before, so a link swapped in after any check is refused
    too), or is not a regular file. The caller closes it."""
    import stat

    refuse = RequestError(404, "the item's file is not a regular file under the collection's root")
    if not isinstance(rel, str) or not rel or "\x00" in rel or rel.startswith("/") or "\\" in rel:
        raise refuse
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise refuse
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    directory = flags | getattr(os, "O_DIRECTORY", 0)
    try:
        fd = os.open(os.fspath(root), directory & ~getattr(os, "O_NOFOLLOW", 0))  # the root itself may be a link
    except OSError:
        raise RequestError(404, "the collection's root folder is not there") from None
    try:
        for part in parts[:-1]:
            try:
                nxt = os.open(part, directory, dir_fd=fd)
            except OSError:
                raise refuse from None
            os.close(fd)
            fd = nxt
        try:
            f = os.open(parts[-1], flags | getattr(os, "O_NONBLOCK", 0), dir_fd=fd)  # a FIFO must not block us
        except OSError:
            raise refuse from None
    finally:
        os.close(fd)
    if not stat.S_ISREG(os.fstat(f).st_mode):
        os.close(f)
        raise refuse
    return f


def _thumbnail(img, side: int) -> bytes:
    """JPEG bytes of an opened image (decoded here), oriented, in RGB, at most ``side`` pixels a side."""
    from PIL import ImageOps

    from learn2hash import images

    img.load()
    img = ImageOps.exif_transpose(img) or img
    img = images.to_mode(img, 3)
    img.thumbnail((side, side))
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


class CollectionService:
    """Search, add and remove over a :class:`~learn2hash.collections.Collection`, and thumbnails of its files.

    Uploads are decoded through the :class:`Decoder`'s lanes and encoded by the collection's hasher;
    :meth:`add` and :meth:`remove` go through the collection's writer lock, so the CLI (``collection add``,
    ``collection remove``) and this service change one collection in turn without losing anything, and
    every search reads the latest committed version. Thumbnails are read from files under the collection's
    root only (:func:`open_under_root`). Safe to share between threads.
    """

    def __init__(self, folder_or_collection: Any, limits: Limits = Limits()):
        from learn2hash.collections import Collection

        coll = folder_or_collection
        if not isinstance(coll, Collection):
            coll = Collection.open(folder_or_collection)
        self.collection = coll
        self.searcher = CollectionSearch(coll)
        self.limits = limits
        self.hasher = coll.hasher
        self.geometry = self.hasher.image_geometry()
        self.bits = coll.bits
        self.name = coll.folder.name
        self._decoder = Decoder(limits)
        # encoding one query is small: one at a time keeps the network's threads for it
        self._encode_lock = threading.Lock()
        self._thumbs: OrderedDict[tuple, bytes] = OrderedDict()  # (id, path, size, mtime) -> JPEG, least recent first
        self._thumbs_lock = threading.Lock()

    # ------------------------------------------------------------------ description
    @property
    def n_items(self) -> int:
        return len(self.collection)

    def info(self) -> dict[str, Any]:
        c = self.collection
        return {"collection": self.name, "method": c.meta["method"], "bits": self.bits, "n_items": self.n_items,
                "item_shape": list(self.geometry.item_shape), "has_root": c.root is not None,
                "limits": {"max_upload_bytes": self.limits.max_upload_bytes,
                           "max_image_pixels": self.limits.max_image_pixels,
                           "max_k": self.limits.max_k, "max_external_id": MAX_EXTERNAL_ID,
                           "image_formats": list(IMAGE_FORMATS)}}

    def check_k(self, k: Any) -> int:
        value = integer_value(k)
        if value is None:
            raise RequestError(422, f"k must be an integer, got {brief(k)}")
        if not 1 <= value <= self.limits.max_k:
            raise RequestError(422, f"k must be between 1 and {self.limits.max_k}, got {value}")
        return value

    def check_id(self, item_id: Any) -> int:
        value = integer_value(item_id)
        if value is None or not 0 <= value < 2**63:
            raise RequestError(422, f"item id must be an integer >= 0, got {brief(item_id)}")
        return value

    # ------------------------------------------------------------------ uploads -> codes
    def encode_upload(self, data: bytes, content_type: str | None = None):
        """An uploaded image file -> its :class:`~learn2hash.codes.Codes` (one row) under the collection's hasher."""
        x = self._decoder.decode(data, self.geometry, content_type)[None]
        with self._encode_lock:
            try:
                codes = self.hasher.encode(x)
            except Learn2HashError as exc:
                raise RequestError(422, f"cannot encode the upload: {exc}") from None
        return codes.check_bits(self.bits, "codes of the upload")

    # ------------------------------------------------------------------ search
    def search(self, k: Any, image: bytes | None = None, image_type: str | None = None) -> dict[str, Any]:
        """The ``k`` nearest items of an uploaded image: ``results`` of ``{id, distance, path, external_id}``,
        nearest first (ties by insertion order), fewer when the collection holds fewer."""
        if image is None:
            raise RequestError(422, "send an image upload (multipart field 'image')")
        k = self.check_k(k)
        t0 = time.perf_counter()
        codes = self.encode_upload(image, image_type)
        (hits,) = self.searcher.search(codes, k)
        return {"k": k, "bits": self.bits, "code": "".join("1" if b else "0" for b in codes.to_bits()[0]),
                "results": [h.as_dict() for h in hits], "n_items": self.n_items,
                "seconds": time.perf_counter() - t0}

    # ------------------------------------------------------------------ items
    def item(self, item_id: Any) -> dict[str, Any]:
        item_id = self.check_id(item_id)
        try:
            return self.collection.item(item_id)
        except Learn2HashError:
            raise RequestError(404, f"no item {item_id} in the collection") from None

    def items(self, offset: int, limit: int) -> dict[str, Any]:
        """A page of the items, in insertion order: ``{total, offset, items: [{id, path, external_id}]}``."""
        if offset < 0 or not 1 <= limit <= 500:
            raise RequestError(422, f"offset must be >= 0 and limit between 1 and 500, got offset={offset}, "
                                    f"limit={limit}")
        total = len(self.collection)
        offset = min(offset, total)
        return {"total": total, "offset": offset, "items": self.collection.items(offset, limit)}

    def add(self, image: bytes, image_type: str | None = None, external_id: Any = None) -> dict[str, Any]:
        """Encode an uploaded image and add it (with ``external_id`` as its source, if given) through the
        collection's writer lock; returns ``{id, path, external_id, n_items}``."""
        if external_id is not None:
            if not isinstance(external_id, str) or not _EXTERNAL_ID.fullmatch(external_id):
                raise RequestError(422, f"external_id must be 1 to {MAX_EXTERNAL_ID} characters without control "
                                        f"characters, got "
                                        f"{brief(external_id)}")
        codes = self.encode_upload(image, image_type)
        item_id = int(self.collection.add_codes(codes, external_ids=[external_id])[0])
        return {"id": item_id, "path": None, "external_id": external_id if external_id is not None else "",
                "n_items": self.n_items}

    def remove(self, item_id: Any) -> dict[str, Any]:
        """Remove item ``item_id`` through the collection's writer lock (404 when it is not there)."""
        item_id = self.check_id(item_id)
        record = self.item(item_id)
        try:
            removed = self.collection.remove(ids=[item_id])
        except Learn2HashError:
            self.item(item_id)  # removed by another writer meanwhile: 404
            raise
        if removed != 1:
            raise RequestError(404, f"no item {item_id} in the collection")
        return {**record, "removed": True, "n_items": self.n_items}

    # ------------------------------------------------------------------ thumbnails
    def thumbnail(self, item_id: Any) -> bytes:
        """JPEG thumbnail (at most :data:`THUMBNAIL_SIDE` pixels a side) of the file of item ``item_id``, read
        from under the collection's root only; 404 for an item without a file (added with an external id)."""
        record = self.item(item_id)
        if record["path"] is None:
            raise RequestError(404, f"item {record['id']} has no file (it was added with an external id)")
        root = self.collection.root
        if root is None:
            raise RequestError(404, "the collection has no root folder")
        fd = open_under_root(root, record["path"])
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            key = (record["id"], record["path"], st.st_size, st.st_mtime_ns)
            with self._thumbs_lock:
                if key in self._thumbs:
                    self._thumbs.move_to_end(key)
                    return self._thumbs[key]
            if st.st_size > MAX_THUMBNAIL_SOURCE_BYTES:
                raise RequestError(413, f"the file of item {record['id']} has {st.st_size} bytes, thumbnails are "
                                        f"made of files of at most {MAX_THUMBNAIL_SOURCE_BYTES}")
            data = f.read(MAX_THUMBNAIL_SOURCE_BYTES + 1)
        jpeg = self._render_thumbnail(record["id"], data)
        with self._thumbs_lock:
            self._thumbs[key] = jpeg
            while len(self._thumbs) > THUMBNAIL_CACHE:
                self._thumbs.popitem(last=False)
        return jpeg

    def _render_thumbnail(self, item_id: int, data: bytes) -> bytes:
        from PIL import Image

        from learn2hash import images
        from learn2hash.errors import ImageTooLargeError

        try:
            img = images.open_image(data, f"the file of item {item_id}")
            try:
                if img.format == "JPEG":
                    img.draft("RGB", (THUMBNAIL_SIDE, THUMBNAIL_SIDE))  # decoded at up to 1/8 of its size
                pixels = img.width * img.height
                if pixels > self.limits.max_image_pixels:
                    raise RequestError(413, f"the file of item {item_id} is {img.width}x{img.height} pixels, "
                                            f"thumbnails are made of images of at most {self.limits.max_image_pixels}")
                return self._decoder.run(pixels, _thumbnail, img, THUMBNAIL_SIDE)
            finally:
                img.close()
        except RequestError:
            raise
        except (ImageTooLargeError, Image.DecompressionBombError) as exc:
            raise RequestError(413, f"the file of item {item_id} is over the decoder's limits ({exc})") from None
        except (Learn2HashError, OSError, ValueError, SyntaxError, EOFError) as exc:  # decoding fails in the lane too
            raise RequestError(404, f"the file of item {item_id} is not a readable image ({exc})") from None
