"""The HTTP API (FastAPI) and the web page over a :class:`~learn2hash.serve.service.SearchService` (a run)
or a :class:`~learn2hash.serve.service.CollectionService` (a collection).

Routes of a run::

    GET  /                      the web page (serve/static/page.html with run.part.html)
    GET  /health                liveness and the run's size
    GET  /info                  the run: method, bits, dataset, classes, what queries it accepts, limits
    GET  /queries?offset&limit  query-split items with their labels (for the page's picker)
    GET  /queries/{i}/image     PNG of query item i
    GET  /items/{id}/image      PNG of database item id
    POST /search                multipart (field ``image``, optional ``k``) or JSON
                                ``{"query_index": i, "k": 10}`` / ``{"features": [...], "k": 10}``
    GET  /docs, /openapi.json   OpenAPI documentation

Routes of a collection::

    GET    /                      the web page (page.html with collection.part.html): thumbnails, search, add, remove
    GET    /health, /info         liveness and size; the collection, whether it is writable, the limits
    GET    /items?offset&limit    the items (id, path under the root or external id), in the order added
    GET    /items/{id}            one item
    GET    /items/{id}/image      JPEG thumbnail of the item's file, read from under the collection's root only
    POST   /search                multipart: field ``image``, optional ``k``
    POST   /items                 (with a key) multipart: field ``image``, optional ``external_id``: add it (201)
    DELETE /items/{id}            (with a key) remove it

Every refused request gets a 4xx status and ``{"detail": "<what was wrong>"}`` (the ``Error`` model),
and ``/openapi.json`` lists, per route, the parameters with their bounds, both request bodies of
``POST /search`` and every status a route can answer (400, 401, 404, 413, 415, 422). Request bodies
larger than the upload limit are refused with 413 before they are read into memory; a ``Host``
header that does not name the server is refused with 400 (DNS rebinding); a client that goes away
mid-body costs one line of log; one that sends its headers or body too slowly is answered 408 and
closed (:mod:`learn2hash.serve.protocol`). Keys, hosts and the body limit: :mod:`learn2hash.serve.security`;
running a server: :mod:`learn2hash.serve.server`.

**Keys.** With an API key (``api_key``: ``--api-key-file`` or the ``LEARN2HASH_API_KEY`` environment
variable), every route of the API, ``/docs`` and ``/openapi.json`` included, needs the header
``Authorization: Bearer <key>`` and answers 401 without it; ``public_read`` opens the routes that
only read. The page and its static files (the same for every service, holding no data) are served
to anyone; the page asks for the key and sends it. Keys are compared in constant time
(:func:`key_matches`). Routes that change a collection exist only when a key is set.
"""


import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from learn2hash.errors import Learn2HashError
from learn2hash.serve.protocol import TIMED_OUT
from learn2hash.serve.security import (API_KEY_ENV, MIN_KEY_LENGTH, AllowedHostsMiddleware,  # noqa: F401
                                       BodyLimitMiddleware, check_allowed_hosts, check_api_key,
                                       default_allowed_hosts, key_matches, load_api_key)
from learn2hash.serve.collection_service import MAX_EXTERNAL_ID, CollectionService
from learn2hash.serve.service import IMAGE_FORMATS, IMAGE_MEDIA_TYPES, Limits, RequestError, SearchService

STATIC_DIR = Path(__file__).parent / "static"
#: room for multipart headers and form fields on top of the upload limit
BODY_OVERHEAD = 64 << 10
#: the web page of each kind of service: (the word in its title, its first line while loading, its first
#: status line, its script); the page is static/page.html with static/<kind>.part.html filled in
PAGES = {"run": ("search", "loading the run…", "Pick a query to search.", "app.js"),
         "collection": ("collection", "loading the collection…", "Upload an image to search the collection.",
                        "collection.js")}

log = logging.getLogger("learn2hash.serve")


def import_fastapi() -> None:
    """Refuse in one line when the serve extra (FastAPI, python-multipart) is not installed."""
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
    except ImportError as exc:
        raise Learn2HashError(f"the search service needs the serve extra: pip install 'learn2hash[serve]' ({exc})") from None


_import_fastapi = import_fastapi


def page_html(kind: str) -> str:
    """The web page of a ``"run"`` or ``"collection"`` service (:data:`PAGES`)."""
    word, loading, status, script = PAGES[kind]
    panel, view = (STATIC_DIR / f"{kind}.part.html").read_text("utf-8").split("<!-- view -->\n")
    page = (STATIC_DIR / "page.html").read_text("utf-8")
    for name, value in (("kind", word), ("loading", loading), ("status", status), ("script", script)):
        page = page.replace("{{" + name + "}}", value)
    return page.replace("{{panel}}\n", panel).replace("{{view}}\n", view)


#: what each error status of the API means (every one is answered with the Error model)
ERROR_STATUSES = {
    400: "Malformed request: a Host header the service does not answer to, an invalid Content-Length, "
         "a malformed multipart body",
    401: "Missing or wrong API key: send the header Authorization: Bearer <key>",
    404: "No such item (the position is outside its split), or the run has no images",
    413: "Request body, upload or image over the limits (see GET /info)",
    415: "Unsupported content type or image format",
    422: "Invalid parameter or body: wrong type, out of bounds, unknown field, unreadable image",
}
#: errors any route can answer (refused Host, body over the limit)
COMMON_ERRORS = (400, 413)


def _search_request_body(service: SearchService, kmax: int, default_k: int) -> dict[str, Any]:
    """OpenAPI description of the bodies POST /search takes for this run: JSON, and multipart for image runs."""
    import numpy as np

    lim = service.limits
    n_query = len(service.dataset.query)
    k = {"type": "integer", "minimum": 1, "maximum": kmax, "default": default_k,
         "description": f"how many results: 1 to {kmax} (the smaller of the database size and the service's limit)"}
    query_index = {"type": "integer", "minimum": 0, "maximum": n_query - 1,
                   "description": f"position of an item of the query split (0..{n_query - 1}): search with its code"}
    as_json: dict[str, Any] = {"type": "object", "additionalProperties": False,
                               "properties": {"query_index": query_index}}
    if "features" in service.accepts:
        d = service.item_shape[0]
        top = float(np.finfo(np.float32).max)
        as_json["properties"]["features"] = {
            "type": "array", "minItems": d, "maxItems": d,
            "items": {"type": "number", "minimum": -top, "maximum": top},
            "description": f"a feature vector of {d} finite numbers (float32 range), encoded by the run's hasher"}
        as_json["oneOf"] = [{"required": ["query_index"]}, {"required": ["features"]}]
        description = "JSON with exactly one of query_index or features, and optionally k."
    else:
        as_json["required"] = ["query_index"]
        description = "JSON with query_index and optionally k"
    as_json["properties"]["k"] = k
    content: dict[str, Any] = {"application/json": {"schema": as_json,
                                                    "example": {"query_index": 0, "k": default_k}}}
    if "image" in service.accepts:
        description += (f"; or multipart/form-data with an image file in field image (at most "
                        f"{lim.max_upload_bytes} bytes and {lim.max_image_pixels} pixels) and optionally k.")
        content["multipart/form-data"] = {
            "schema": {"type": "object", "additionalProperties": False, "required": ["image"], "properties": {
                "image": {"type": "string", "format": "binary",
                          "description": f"a {', '.join(IMAGE_FORMATS)} image of at most {lim.max_upload_bytes} "
                                         f"bytes and {lim.max_image_pixels} pixels; centre-cropped and resized to "
                                         f"the run's items ({'x'.join(map(str, service.item_shape))})"},
                "k": k}},
            "encoding": {"image": {"contentType": ", ".join(IMAGE_MEDIA_TYPES)}}}
    else:
        description += "."
    return {"required": True, "description": description, "content": content}


def open_service(folder: Any, limits: Limits | None = None) -> SearchService | CollectionService:
    """The service of ``folder``: a :class:`CollectionService` for a collection (it holds ``collection.json``),
    else a :class:`SearchService` of a run folder."""
    from pathlib import Path as _Path

    from learn2hash.collections import META

    limits = limits or Limits()
    if (_Path(folder) / META).is_file():
        return CollectionService(folder, limits)
    return SearchService(folder, limits)


def create_app(service: SearchService | CollectionService | Any, limits: Limits | None = None,
               allowed_hosts: Sequence[str] | None = None, api_key: str | None = None, public_read: bool = False):
    """The FastAPI application over ``service`` (a :class:`SearchService`, a :class:`CollectionService`, or a
    run or collection folder to open).

    ``allowed_hosts``: the ``Host`` names it answers to (see :class:`AllowedHostsMiddleware`);
    None answers any (an application mounted elsewhere; :func:`serve` always passes a list).
    ``api_key``: every route needs ``Authorization: Bearer <api_key>`` (401 otherwise), except the routes
    that only read when ``public_read``; None: no key, every route open and no route that writes.
    """
    import_fastapi()
    from fastapi import FastAPI

    if not isinstance(service, (SearchService, CollectionService)):
        service = open_service(service, limits)
    if api_key is not None:
        check_api_key(api_key, "api_key")
    elif public_read:
        raise Learn2HashError("public_read (--public-read) opens the read routes of a service that has an API key, "
                              f"and none is set (--api-key-file or {API_KEY_ENV})")
    app = FastAPI(title="learn2hash search", description=_description(service, api_key),
                  version=_version(), docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.add_middleware(BodyLimitMiddleware, max_bytes=service.limits.max_upload_bytes + BODY_OVERHEAD)
    if allowed_hosts is not None:
        app.add_middleware(AllowedHostsMiddleware, allowed_hosts=check_allowed_hosts(allowed_hosts))
    _error_handlers(app)
    guards = _Guards(api_key, public_read)
    _page_routes(app, service, guards.read)
    if isinstance(service, CollectionService):
        _collection_routes(app, service, guards)
    else:
        _run_routes(app, service, guards)
    return app


def _description(service: SearchService | CollectionService, api_key: str | None) -> str:
    refusals = "Every refused request is answered with a 4xx status and {\"detail\": \"<what was wrong>\"}."
    info = service.info()
    if isinstance(service, CollectionService):
        return (f"Hamming-space retrieval over collection {info['collection']}: {info['method']}, "
                f"{info['bits']} bits" + (", items added and removed live" if api_key else "") + f". {refusals}")
    return (f"Hamming-space retrieval over run {info['run']}: {info['method']}, {info['bits']} bits, "
            f"{info['dataset']} ({info['n_database']} database items). {refusals}")


class _Guards:
    """The dependencies of the routes that read (``read``) and of those that write (``write``, None without a
    key: no route writes), and the documented error answers of a route (:meth:`errors`)."""

    def __init__(self, api_key: str | None, public_read: bool):
        from typing import Annotated

        from fastapi import Depends
        from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

        bearer = HTTPBearer(auto_error=False, scheme_name="apiKey",
                            description=f"the service's API key (--api-key-file or {API_KEY_ENV})")

        async def require_key(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
            if credentials is None:
                raise RequestError(401, "this service needs an API key: send the header Authorization: Bearer <key>")
            if not key_matches(credentials.credentials, api_key):
                raise RequestError(401, "wrong API key")

        self.read = [Depends(require_key)] if api_key is not None and not public_read else []
        self.write = [Depends(require_key)] if api_key is not None else None
        self._read_401 = (401,) if self.read else ()

    def errors(self, *statuses: int) -> dict[int | str, dict[str, Any]]:
        from learn2hash.serve.models import Error

        return {s: {"model": Error, "description": ERROR_STATUSES[s]}
                for s in sorted(set(COMMON_ERRORS + self._read_401 + statuses))}


def _error_handlers(app: Any) -> None:
    """Every refusal in the API's one error shape, ``{"detail": ...}``; nothing unexpected escapes as a traceback."""
    from fastapi import Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect
    from starlette.routing import Match

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse({"detail": str(exc)}, status_code=exc.status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        headers = dict(exc.headers or {})
        if exc.status_code == 405:  # Allow: every method of the path, not only those of the route matched first
            methods = set()
            for route in app.router.routes:
                match, _ = route.matches(request.scope)
                if match != Match.NONE and getattr(route, "methods", None):
                    methods |= set(route.methods)
            headers["Allow"] = ", ".join(sorted(methods))
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(ClientDisconnect)
    async def _client_gone(request: Request, exc: ClientDisconnect):
        if request.scope.get(TIMED_OUT):  # answered 408 and logged by the protocol
            return JSONResponse({"detail": "the client sent the body too slowly"}, status_code=408)
        client = f"{request.client.host}:{request.client.port}" if request.client else "a client"
        log.warning("client %s disconnected before sending the whole body of %s %s", client, request.method,
                    request.url.path)
        return JSONResponse({"detail": "the client disconnected"}, status_code=400)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)


def _page_routes(app: Any, service: SearchService | CollectionService, read_guard: list) -> None:
    """The web page, its static files and the API documentation."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import HTMLResponse, JSONResponse
    from fastapi.staticfiles import StaticFiles

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    page = page_html("collection" if isinstance(service, CollectionService) else "run")

    @app.get("/", include_in_schema=False)
    def index():
        return HTMLResponse(page)

    @app.get("/openapi.json", include_in_schema=False, dependencies=read_guard)
    def openapi_document():
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=read_guard)
    def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - API docs")


_PNG = {200: {"description": "PNG image", "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}}}}
_PNG_HEADERS = {"Cache-Control": "public, max-age=3600"}


def _run_routes(app: Any, service: SearchService, guards: _Guards) -> None:
    """The routes of a run's service (see the module docstring)."""
    from typing import Annotated

    from fastapi import Path, Query
    from fastapi.responses import Response

    from learn2hash.serve.models import Health, Info, QueryPage

    info = service.info()
    n_query, errors, read_guard = info["n_query"], guards.errors, guards.read

    @app.get("/health", summary="Liveness, with the run's size", response_model=Health, responses=errors(),
             dependencies=read_guard)
    def health():
        return {"status": "ok", "run": info["run"], "bits": info["bits"], "n_database": info["n_database"]}

    @app.get("/info", summary="The run behind the service and the limits on requests", response_model=Info,
             responses=errors(), dependencies=read_guard)
    def run_info():
        return info

    @app.get("/queries", summary="Items of the query split with their labels", response_model=QueryPage,
             responses=errors(422), dependencies=read_guard)
    def queries(offset: Annotated[int, Query(ge=0, description="position of the first item")] = 0,
                limit: Annotated[int, Query(ge=1, le=500, description="most items to return")] = 100):
        return service.queries(offset, limit)

    @app.get("/queries/{i}/image", summary="PNG image of a query-split item", response_class=Response,
             responses={**_PNG, **errors(404, 422)}, dependencies=read_guard)
    def query_image(i: Annotated[int, Path(description=f"position in the query split (0..{n_query - 1}); "
                                                      "another integer is 404",
                                          json_schema_extra={"minimum": 0, "maximum": n_query - 1})]):
        return Response(service.item_png("query", i), media_type="image/png", headers=_PNG_HEADERS)

    @app.get("/items/{item_id}/image", summary="PNG image of a database item", response_class=Response,
             responses={**_PNG, **errors(404, 422)}, dependencies=read_guard)
    def item_image(item_id: Annotated[int, Path(description=f"position in the database split "
                                                            f"(0..{service.n_database - 1}); another integer is 404",
                                                json_schema_extra={"minimum": 0,
                                                                   "maximum": service.n_database - 1})]):
        return Response(service.item_png("database", item_id), media_type="image/png", headers=_PNG_HEADERS)

    _run_search_route(app, service, guards)


def _run_search_route(app: Any, service: SearchService, guards: _Guards) -> None:
    """POST /search of a run: multipart (an image upload) or JSON (a query position or a feature vector)."""
    from fastapi import Request
    from starlette.concurrency import run_in_threadpool

    from learn2hash.serve.models import SearchResult

    kmax = max(1, min(service.limits.max_k, service.n_database))
    default_k = min(10, kmax)

    @app.post("/search", summary="The k nearest database items of a query item, an uploaded image or a feature "
                                 "vector", response_model=SearchResult, response_model_exclude_unset=True,
              responses=guards.errors(415, 422),
              openapi_extra={"requestBody": _search_request_body(service, kmax, default_k)}, dependencies=guards.read)
    async def search(request: Request):
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            data, image_type, form = await _read_image_form(request, ("k",), service.limits.max_upload_bytes)
            k = _int_field(form["k"], "k") if "k" in form else default_k
            return await run_in_threadpool(service.search, k, image=data, image_type=image_type)
        if ctype in ("application/json", ""):
            raw = await request.body()
            body = _json_object(raw)
            unknown = set(body) - {"query_index", "features", "k"}
            if unknown:
                raise RequestError(422, f"unknown field(s) {sorted(unknown)}: send query_index or features, and k")
            nulls = sorted(name for name, value in body.items() if value is None)
            if nulls:
                raise RequestError(422, f"{', '.join(nulls)} must not be null (leave a field out instead)")
            return await run_in_threadpool(service.search, body.get("k", default_k),
                                           query_index=body.get("query_index"), features=body.get("features"))
        raise RequestError(415, f"POST /search takes multipart/form-data (an image upload) or application/json, "
                                f"not {ctype[:80]!r}")


async def _read_image_form(request: Any, fields: Sequence[str], max_bytes: int) -> tuple[bytes, str | None, Any]:
    """A multipart body with a file field ``image`` and at most the text ``fields``: (the file's bytes, at most
    ``max_bytes`` + 1 of them; its declared content type; the form)."""
    from starlette.datastructures import UploadFile

    form = await request.form(max_files=1, max_fields=len(fields) + 3, max_part_size=BODY_OVERHEAD)
    upload = form.get("image")
    if not isinstance(upload, UploadFile):
        raise RequestError(422, "multipart request needs a file field named 'image'")
    unknown = set(form.keys()) - {"image", *fields}
    if unknown:
        raise RequestError(422, f"unknown field(s) {sorted(unknown)}: send a file 'image'"
                                + "".join(f" and optionally '{f}'" for f in fields))
    for name in fields:
        if name in form and not isinstance(form[name], str):
            raise RequestError(422, f"{name} must be a text field, not a file")
    return await upload.read(max_bytes + 1), upload.content_type, form


_ID_SCHEMA = {"minimum": 0, "maximum": 2**63 - 1}
_JPEG = {200: {"description": "JPEG thumbnail", "content": {"image/jpeg": {"schema": {"type": "string",
                                                                                      "format": "binary"}}}}}


def _multipart_body(service: CollectionService, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI description of a multipart body: an image file in field ``image`` and the text ``properties``."""
    lim = service.limits
    image = {"type": "string", "format": "binary",
             "description": f"a {', '.join(IMAGE_FORMATS)} image of at most {lim.max_upload_bytes} bytes and "
                            f"{lim.max_image_pixels} pixels; centre-cropped and resized to the hasher's input "
                            f"({'x'.join(map(str, service.geometry.item_shape))})"}
    return {"required": True, "description": description, "content": {"multipart/form-data": {
        "schema": {"type": "object", "additionalProperties": False, "required": ["image"],
                   "properties": {"image": image, **properties}},
        "encoding": {"image": {"contentType": ", ".join(IMAGE_MEDIA_TYPES)}}}}}


def _multipart_only(request: Any) -> None:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "multipart/form-data":
        raise RequestError(415, f"{request.method} {request.url.path} takes multipart/form-data with an image "
                                f"file in field 'image', not {ctype[:80]!r}")


def _collection_routes(app: Any, service: CollectionService, guards: _Guards) -> None:
    """The routes of a collection's service on ``app``; those that write only when a key is set."""
    from typing import Annotated

    from fastapi import Path, Query
    from fastapi.responses import Response

    from learn2hash.serve.models import CollectionHealth, CollectionInfo, ItemPage, ItemRecord

    errors, read_guard = guards.errors, guards.read
    id_param = Annotated[int, Path(description="the item's id (another integer is 404)", json_schema_extra=_ID_SCHEMA)]

    @app.get("/health", summary="Liveness, with the collection's size", response_model=CollectionHealth,
             responses=errors(), dependencies=read_guard)
    def health():
        return {"status": "ok", "collection": service.name, "bits": service.bits, "n_items": service.n_items}

    @app.get("/info", summary="The collection behind the service and the limits on requests",
             response_model=CollectionInfo, responses=errors(), dependencies=read_guard)
    def collection_info():
        return {**service.info(), "writable": guards.write is not None}

    @app.get("/items", summary="The collection's items, in the order they were added", response_model=ItemPage,
             responses=errors(422), dependencies=read_guard)
    def items(offset: Annotated[int, Query(ge=0, le=2**63 - 1, description="position of the first item")] = 0,
              limit: Annotated[int, Query(ge=1, le=500, description="most items to return")] = 100):
        return service.items(offset, limit)

    @app.get("/items/{item_id}", summary="One item: its id and its source (a file under the root, or an external id)",
             response_model=ItemRecord, responses=errors(404, 422), dependencies=read_guard)
    def item(item_id: id_param):
        return service.item(item_id)

    @app.get("/items/{item_id}/image", summary="Thumbnail of an item's file (read from under the collection's root "
                                               "only)", response_class=Response,
             responses={**_JPEG, **errors(404, 422)}, dependencies=read_guard)
    def item_image(item_id: id_param):
        return Response(service.thumbnail(item_id), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=300"})

    _collection_search_route(app, service, guards)
    if guards.write is not None:
        _collection_write_routes(app, service, guards)


def _collection_search_route(app: Any, service: CollectionService, guards: _Guards) -> None:
    from fastapi import Request
    from starlette.concurrency import run_in_threadpool

    from learn2hash.serve.models import CollectionSearchResult

    kmax = service.limits.max_k
    default_k = min(10, kmax)
    k_schema = {"type": "integer", "minimum": 1, "maximum": kmax, "default": default_k,
                "description": f"how many results: 1 to {kmax}"}

    @app.post("/search", summary="The k nearest items of an uploaded image", response_model=CollectionSearchResult,
              responses=guards.errors(415, 422), dependencies=guards.read,
              openapi_extra={"requestBody": _multipart_body(service, "multipart/form-data with an image file in "
                                                                     "field image and optionally k", {"k": k_schema})})
    async def search(request: Request):
        _multipart_only(request)
        data, image_type, form = await _read_image_form(request, ("k",), service.limits.max_upload_bytes)
        k = _int_field(form["k"], "k") if "k" in form else default_k
        return await run_in_threadpool(service.search, k, image=data, image_type=image_type)


def _collection_write_routes(app: Any, service: CollectionService, guards: _Guards) -> None:
    """POST /items and DELETE /items/{id} (only with a key)."""
    from typing import Annotated

    from fastapi import Path, Request
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    from learn2hash.serve.models import AddedItem, RemovedItem

    errors = guards.errors
    external = {"type": "string", "minLength": 1, "maxLength": MAX_EXTERNAL_ID, "pattern": "^[^\\x00-\\x1f\\x7f]+$",
                "description": f"your id for the item (1 to {MAX_EXTERNAL_ID} printable characters), kept as its source"}

    @app.post("/items", summary="Add an uploaded image to the collection", status_code=201, response_model=AddedItem,
              responses=errors(401, 415, 422), dependencies=guards.write,
              openapi_extra={"requestBody": _multipart_body(service, "multipart/form-data with an image file in field "
                                                                     "image and optionally external_id",
                                                            {"external_id": external})})
    async def add_item(request: Request):
        _multipart_only(request)
        data, image_type, form = await _read_image_form(request, ("external_id",), service.limits.max_upload_bytes)
        added = await run_in_threadpool(service.add, data, image_type, form.get("external_id"))
        return JSONResponse(added, status_code=201)

    @app.delete("/items/{item_id}", summary="Remove an item from the collection", response_model=RemovedItem,
                responses=errors(401, 404, 422), dependencies=guards.write)
    def remove_item(item_id: Annotated[int, Path(description="the item's id (another integer is 404)",
                                                 json_schema_extra=_ID_SCHEMA)]):
        return service.remove(item_id)


def _int_field(value: Any, name: str) -> int:
    """A multipart field that must hold an integer (decimal digits, optional sign)."""
    text = value if isinstance(value, str) else ""
    if not re.fullmatch(r"[+-]?[0-9]{1,30}", text):
        shown = repr(text[:40]) if isinstance(value, str) else "a file"
        raise RequestError(422, f"{name} must be an integer, got {shown}")
    return int(text)


def _json_object(raw: bytes) -> dict[str, Any]:
    import json

    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(422, f"the request body is not valid JSON ({str(exc)[:200]})") from None
    except RecursionError:
        raise RequestError(422, "the request body is not valid JSON for this API: nested too deeply") from None
    if not isinstance(body, dict):
        raise RequestError(422, "the JSON body must be an object like {\"query_index\": 0, \"k\": 10}")
    return body


def _version() -> str:
    from learn2hash import __version__

    return __version__


# moved: kept importable from here
from learn2hash.serve.server import check_bind, is_loopback, make_server, serve  # noqa: E402,F401
