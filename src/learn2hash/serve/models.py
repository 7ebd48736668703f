"""The shapes of the HTTP API's answers (pydantic models, documented in ``/openapi.json``).

Imported only by :func:`learn2hash.serve.app.create_app` (pydantic comes with the serve extra).
Every refused request, whatever its status, is answered with :class:`Error`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

QueryKind = Literal["query_index", "image", "features"]


class Error(BaseModel):
    """Every 4xx answer: what was wrong with the request."""

    detail: str = Field(description="what was wrong, in one sentence", examples=["k must be between 1 and 1000, got 0"])


class _Health(BaseModel):
    """Liveness: what every service's ``GET /health`` says, and the size of what it serves."""

    status: Literal["ok"]
    bits: int = Field(ge=1, description="code length K")


class _Page(BaseModel):
    """A page of a list: ``items`` from position ``offset`` of the ``total``."""

    total: int = Field(ge=0, description="number of items in the list")
    offset: int = Field(ge=0)


class _Answer(BaseModel):
    """What every ``POST /search`` answers besides its results: k, the code length and the query's code."""

    k: int = Field(ge=1)
    bits: int = Field(ge=1)
    code: str = Field(pattern="^[01]+$", description="the query's code, one character per bit")


class Health(_Health):
    run: str = Field(description="name of the run folder")
    n_database: int = Field(ge=0, description="number of database items")


class InfoLimits(BaseModel):
    max_upload_bytes: int = Field(ge=1, description="largest accepted image upload, in bytes")
    max_image_pixels: int = Field(ge=1, description="most pixels (width x height) an uploaded image may have")
    max_k: int = Field(ge=1, description="most results one request may ask for")
    image_formats: list[str] = Field(description="image formats an upload may have")


class _Info(BaseModel):
    """What every service's ``GET /info`` says of its hasher."""

    method: str = Field(description="hashing method (of the run whose hasher encodes the items), e.g. itq")
    bits: int = Field(ge=1)
    item_shape: list[int] = Field(description="the shape of an item as the hasher takes it (an image: channels, "
                                              "height, width)")


class Info(_Info):
    run: str
    dataset: str
    protocol: str | None = None
    kind: str = Field(description="what the items are: image, clip, features, ...")
    n_query: int = Field(ge=0)
    n_database: int = Field(ge=0)
    class_names: list[str]
    accepts: list[QueryKind] = Field(description="the kinds of query POST /search takes for this run")
    has_images: bool = Field(description="whether GET /items/{item_id}/image and /queries/{i}/image have images")
    index: str = Field(description="where the Hamming index came from")
    limits: InfoLimits


class QueryItem(BaseModel):
    index: int = Field(ge=0, description="position in the query split")
    labels: list[str]


class QueryPage(_Page):
    items: list[QueryItem] = Field(description="items of the query split, in order")


class SearchQuery(BaseModel):
    kind: QueryKind
    index: int | None = Field(default=None, ge=0, description="the query item's position (query_index queries)")
    labels: list[str] | None = Field(default=None, description="the query item's labels (query_index queries)")


class SearchResult(_Answer):
    query: SearchQuery
    ids: list[int] = Field(description="database positions of the k nearest items, nearest first")
    distances: list[int] = Field(description="their Hamming distances (non-decreasing; ties by database position)")
    labels: list[list[str]] = Field(description="their labels")
    relevant: list[bool] | None = Field(default=None, description="whether each shares a label with the query "
                                                                  "(query_index queries only)")
    seconds: float = Field(ge=0, description="time spent encoding and searching")


# ----------------------------------------------------------------------------- a collection's service
class CollectionHealth(_Health):
    collection: str = Field(description="name of the collection folder")
    n_items: int = Field(ge=0, description="number of items now")


class CollectionLimits(InfoLimits):
    max_external_id: int = Field(ge=1, description="longest external id, in characters")


class CollectionInfo(_Info):
    collection: str = Field(description="name of the collection folder")
    n_items: int = Field(ge=0)
    has_root: bool = Field(description="whether items may have files (with thumbnails at /items/{item_id}/image)")
    writable: bool = Field(description="whether POST /items and DELETE /items/{item_id} exist (an API key is set)")
    limits: CollectionLimits


class ItemRecord(BaseModel):
    id: int = Field(ge=0, description="the item's id")
    path: str | None = Field(description="its file, relative to the collection's root (null for an uploaded item)")
    external_id: str | None = Field(description="the id given when it was added (null for an item with a file)")


class ItemPage(_Page):
    items: list[ItemRecord] = Field(description="items in the order they were added")


class Hit(ItemRecord):
    distance: int = Field(ge=0, description="Hamming distance to the query")


class CollectionSearchResult(_Answer):
    results: list[Hit] = Field(description="the k nearest items, nearest first (ties by the order they were added); "
                                           "fewer when the collection holds fewer")
    n_items: int = Field(ge=0, description="items searched")
    seconds: float = Field(ge=0, description="time spent decoding, encoding and searching")


class AddedItem(ItemRecord):
    n_items: int = Field(ge=0, description="items in the collection after the addition")


class RemovedItem(ItemRecord):
    removed: Literal[True]
    n_items: int = Field(ge=0, description="items in the collection after the removal")
