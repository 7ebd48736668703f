"""The HTTP API (FastAPI) and the web page over a :class:`~learn2hash.serve.service.SearchService` (a run)
or a :class:`~learn2hash.serve.service.CollectionService` (a collection).

Routes of a run::

    GET  /                      the web page (serve/static/index.html)
    GET  /health                liveness and the run's size
    GET  /info                  the run: method, bits, dataset, classes, what queries it accepts, limits
    GET  /queries?offset&limit  query-split items with their labels (for the page's picker)
    GET  /queries/{i}/image     PNG of query item i
    GET  /items/{id}/image      PNG of database item id
    POST /search                multipart (field ``image``, optional ``k``) or JSON
                                ``{"query_index": i, "k": 10}`` / ``{"features": [...], "k": 10}``
    GET  /docs, /openapi.json   OpenAPI documentation

Routes of a collection::

    GET    /                      the web page (serve/static/collection.html): thumbnails, search, add, remove
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
closed (:mod:`learn2hash.serve.protocol`).

**Keys.** With an API key (``api_key``: ``--api-key-file`` or the ``LEARN2HASH_API_KEY`` environment
variable), every route of the API, ``/docs`` and ``/openapi.json`` included, needs the header
``Authorization: Bearer <key>`` and answers 401 without it; ``public_read`` opens the routes that
only read. The page and its static files (the same for every service, holding no data) are served
to anyone; the page asks for the key and sends it. Keys are compared in constant time
(:func:`key_matches`). Routes that change a collection exist only when a key is set.
"""

import hashlib
import ipaddress
import logging
import os
import re
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from learn2hash.errors import Learn2HashError
from learn2hash.serve.protocol import TIMED_OUT, timed_protocol
from learn2hash.serve.service import (IMAGE_FORMATS, IMAGE_MEDIA_TYPES, MAX_EXTERNAL_ID, CollectionService, Limits,
                                     RequestError, SearchService)

STATIC_DIR = Path(__file__).parent / "static"
#: room for multipart headers and form fields on top of the upload limit
BODY_OVERHEAD = 64 << 10
#: a too-large body is read and dropped up to this many bytes so that the client sees the 413
DRAIN_LIMIT = 64 << 20

log = logging.getLogger("learn2hash.serve")


#: environment variable that holds the service's API key (when no key file is given)
API_KEY_ENV = "LEARN2HASH_API_KEY"
#: shortest API key accepted
MIN_KEY_LENGTH = 16
_KEY_PATTERN = re.compile(r"[\x21-\x7e]+")  # printable ASCII without spaces: what a header carries as it is


def check_api_key(key: str, where: str) -> str:
    """``key`` if it can be an API key (at least :data:`MIN_KEY_LENGTH` printable ASCII characters, no spaces),
    else a :class:`Learn2HashError` naming ``where`` it came from (never the key)."""
    if len(key) < MIN_KEY_LENGTH or not _KEY_PATTERN.fullmatch(key):
        raise Learn2HashError(f"the API key in {where} must be at least {MIN_KEY_LENGTH} printable ASCII characters "
                              f"without spaces (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return key


def load_api_key(path: Any = None, environ: Any = None) -> str | None:
    """The service's API key: the contents of ``path`` (surrounding whitespace removed) when given, else the
    :data:`API_KEY_ENV` environment variable when set and not empty, else None (no key: no write routes)."""
    if path is not None:
        try:
            with open(path, "rb") as f:
                raw = f.read(4097)
            text = raw.decode("ascii")
        except OSError as exc:
            raise Learn2HashError(f"cannot read --api-key-file {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            text = "\x00"  # refused below, without echoing the file
        if len(raw) > 4096:
            text = "\x00"
        return check_api_key(text.strip(), f"--api-key-file {path}")
    value = (os.environ if environ is None else environ).get(API_KEY_ENV, "").strip()
    return check_api_key(value, f"the environment variable {API_KEY_ENV}") if value else None


def key_matches(given: str, key: str) -> bool:
    """Whether the token ``given`` is ``key``, in time that does not depend on where they differ or on their
    lengths: :func:`secrets.compare_digest` of their SHA-256 digests."""
    return secrets.compare_digest(hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest(),
                                  hashlib.sha256(key.encode("utf-8")).digest())


def _import_fastapi():
    try:
        import fastapi  # noqa: F401
        import python_multipart  # noqa: F401
    except ImportError as exc:
        raise Learn2HashError(f"the search service needs the serve extra: pip install 'learn2hash[serve]' ({exc})") from None


class BodyLimitMiddleware:
    """ASGI middleware: refuse request bodies over ``max_bytes`` with 413, declared or streamed."""

    def __init__(self, app: Any, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:
        from starlette.responses import JSONResponse

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            try:
                size = int(declared)
            except ValueError:
                size = -1
            if size < 0:
                await JSONResponse({"detail": "invalid Content-Length header"}, 400)(scope, receive, send)
                return
            if size > self.max_bytes:
                drained, more = 0, True
                while more and drained < DRAIN_LIMIT:
                    message = await receive()
                    drained += len(message.get("body", b""))
                    more = message.get("more_body", False) and message["type"] == "http.request"
                response = JSONResponse({"detail": f"request body of {size} bytes is over the limit of "
                                                   f"{self.max_bytes} bytes"}, 413,
                                        headers={"Connection": "close"} if more else None)
                await response(scope, receive, send)
                return
        received = 0

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise RequestError(413, f"request body is over the limit of {self.max_bytes} bytes")
            return message

        await self.app(scope, limited_receive, send)


def host_name(header: str) -> str | None:
    """The name or address in a ``Host`` header (``name``, ``name:port``, ``[v6]:port``), lowercased;
    None if the header is malformed."""
    m = _HOST_HEADER.fullmatch(header)
    if m is None:
        return None
    return (m.group("v6") or m.group("name")).lower()


_HOST_HEADER = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9._-]+))(?::[0-9]{1,5})?")
_HOST_PATTERN = re.compile(r"\*|(?:\*\.)?[a-z0-9._-]+|[0-9a-f:.]+")


def check_allowed_hosts(hosts: Sequence[str]) -> list[str]:
    """``hosts`` lowercased, each a name or address without port, ``*.domain`` or ``*``; else Learn2HashError."""
    patterns = [str(h).strip().lower() for h in hosts]
    bad = [h for h in patterns if not _HOST_PATTERN.fullmatch(h)]
    if bad or not patterns:
        raise Learn2HashError(f"allowed hosts must be names or addresses without port, '*.domain' or '*', "
                              f"got {bad or 'none'}")
    return list(dict.fromkeys(patterns))


def default_allowed_hosts(bind_host: str, extra: Sequence[str] = ()) -> list[str]:
    """The ``Host`` names a server bound to ``bind_host`` answers to: the loopback names and addresses, the
    bound address when it is a specific one (not 0.0.0.0 or ::), and ``extra`` (``--allowed-host``)."""
    hosts = ["127.0.0.1", "localhost", "::1"]
    bind = bind_host.strip("[]").lower()
    if bind and bind not in ("0.0.0.0", "::"):
        hosts.append(bind)
    return check_allowed_hosts(hosts + list(extra))


class AllowedHostsMiddleware:
    """ASGI middleware: answer 400 to a request whose ``Host`` header names none of ``allowed_hosts``.

    Entries are names or addresses without port; ``*.example.org`` matches its subdomains and ``*``
    anything. A page on another site cannot reach a loopback service through a name of its own
    (DNS rebinding). Starlette's ``TrustedHostMiddleware`` does the same but answers in plain text;
    here the refusal has the API's one error shape.
    """

    def __init__(self, app: Any, allowed_hosts: Sequence[str]):
        patterns = check_allowed_hosts(allowed_hosts)
        self.app = app
        self.allow_any = "*" in patterns
        self.names = {h for h in patterns if not h.startswith("*.")}
        self.suffixes = tuple(h[1:] for h in patterns if h.startswith("*."))

    async def __call__(self, scope, receive, send) -> None:
        if self.allow_any or scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        name = host_name(header)
        if name is not None and (name in self.names or name.endswith(self.suffixes)):
            await self.app(scope, receive, send)
            return
        from starlette.responses import JSONResponse

        shown = header[:80] if header else "(none)"
        await JSONResponse({"detail": f"Host header {shown!r} is not a name this service answers to "
                                      "(start it with --allowed-host NAME to add one)"}, 400)(scope, receive, send)


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
    _import_fastapi()
    from typing import Annotated

    from fastapi import Depends, FastAPI, Path, Query, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import ClientDisconnect
    from starlette.routing import Match

    from learn2hash.serve.models import Error, Health, Info, QueryPage, SearchResult

    if not isinstance(service, (SearchService, CollectionService)):
        service = open_service(service, limits)
    if api_key is not None:
        check_api_key(api_key, "api_key")
    elif public_read:
        raise Learn2HashError("public_read (--public-read) opens the read routes of a service that has an API key, "
                              f"and none is set (--api-key-file or {API_KEY_ENV})")
    lim = service.limits
    refusals = "Every refused request is answered with a 4xx status and {\"detail\": \"<what was wrong>\"}."
    if isinstance(service, CollectionService):
        info = service.info()
        description = (f"Hamming-space retrieval over collection {info['collection']}: {info['method']}, "
                       f"{info['bits']} bits" + (", items added and removed live" if api_key else "") + f". {refusals}")
    else:
        info = service.info()
        n_query = info["n_query"]
        kmax = max(1, min(lim.max_k, service.n_database))
        default_k = min(10, kmax)
        description = (f"Hamming-space retrieval over run {info['run']}: {info['method']}, {info['bits']} bits, "
                       f"{info['dataset']} ({info['n_database']} database items). {refusals}")
    app = FastAPI(title="learn2hash search", description=description,
                  version=_version(), docs_url=None, redoc_url=None, openapi_url=None)
    app.state.service = service
    app.add_middleware(BodyLimitMiddleware, max_bytes=lim.max_upload_bytes + BODY_OVERHEAD)
    if allowed_hosts is not None:
        app.add_middleware(AllowedHostsMiddleware, allowed_hosts=check_allowed_hosts(allowed_hosts))

    bearer = HTTPBearer(auto_error=False, scheme_name="apiKey",
                        description=f"the service's API key (--api-key-file or {API_KEY_ENV})")

    async def require_key(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        if credentials is None:
            raise RequestError(401, "this service needs an API key: send the header Authorization: Bearer <key>")
        if not key_matches(credentials.credentials, api_key):
            raise RequestError(401, "wrong API key")

    #: dependencies of the routes that read, and of those that write (which exist only with a key)
    read_guard = [Depends(require_key)] if api_key is not None and not public_read else []
    write_guard = [Depends(require_key)]
    read_401 = (401,) if read_guard else ()

    def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
        return {s: {"model": Error, "description": ERROR_STATUSES[s]}
                for s in sorted(set(COMMON_ERRORS + read_401 + statuses))}

    png = {200: {"description": "PNG image", "content": {"image/png": {"schema": {"type": "string",
                                                                                   "format": "binary"}}}}}

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

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page():
        name = "collection.html" if isinstance(service, CollectionService) else "index.html"
        return FileResponse(STATIC_DIR / name, media_type="text/html")

    @app.get("/openapi.json", include_in_schema=False, dependencies=read_guard)
    def openapi_document():
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False, dependencies=read_guard)
    def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - API docs")

    if isinstance(service, CollectionService):
        _collection_routes(app, service, errors, read_guard, write_guard if api_key is not None else None)
        return app

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

    png_headers = {"Cache-Control": "public, max-age=3600"}

    @app.get("/queries/{i}/image", summary="PNG image of a query-split item", response_class=Response,
             responses={**png, **errors(404, 422)}, dependencies=read_guard)
    def query_image(i: Annotated[int, Path(description=f"position in the query split (0..{n_query - 1}); "
                                                      "another integer is 404",
                                          json_schema_extra={"minimum": 0, "maximum": n_query - 1})]):
        return Response(service.item_png("query", i), media_type="image/png", headers=png_headers)

    @app.get("/items/{item_id}/image", summary="PNG image of a database item", response_class=Response,
             responses={**png, **errors(404, 422)}, dependencies=read_guard)
    def item_image(item_id: Annotated[int, Path(description=f"position in the database split "
                                                            f"(0..{service.n_database - 1}); another integer is 404",
                                                json_schema_extra={"minimum": 0,
                                                                   "maximum": service.n_database - 1})]):
        return Response(service.item_png("database", item_id), media_type="image/png", headers=png_headers)

    @app.post("/search", summary="The k nearest database items of a query item, an uploaded image or a feature "
                                 "vector", response_model=SearchResult, response_model_exclude_unset=True,
              responses=errors(415, 422), openapi_extra={"requestBody": _search_request_body(service, kmax, default_k)},
              dependencies=read_guard)
    async def search(request: Request):
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            data, image_type, form = await _read_image_form(request, ("k",), lim.max_upload_bytes)
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

    return app


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


def _collection_routes(app: Any, service: CollectionService, errors: Any, read_guard: list, write_guard: list | None):
    """The routes of a collection's service on ``app``; those that write only when ``write_guard`` (a key is set)."""
    from typing import Annotated

    from fastapi import Path, Query, Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool

    from learn2hash.serve.models import (AddedItem, CollectionHealth, CollectionInfo, CollectionSearchResult,
                                         ItemPage, ItemRecord, RemovedItem)

    lim = service.limits
    kmax = lim.max_k
    default_k = min(10, kmax)
    writable = write_guard is not None
    id_param = Annotated[int, Path(description="the item's id (another integer is 404)",
                                   json_schema_extra={"minimum": 0, "maximum": 2**63 - 1})]
    k_schema = {"type": "integer", "minimum": 1, "maximum": kmax, "default": default_k,
                "description": f"how many results: 1 to {kmax}"}
    image_schema = {"type": "string", "format": "binary",
                    "description": f"a {', '.join(IMAGE_FORMATS)} image of at most {lim.max_upload_bytes} bytes and "
                                   f"{lim.max_image_pixels} pixels; centre-cropped and resized to the hasher's input "
                                   f"({'x'.join(map(str, service.geometry.item_shape))})"}

    def multipart_body(description: str, properties: dict[str, Any]) -> dict[str, Any]:
        return {"required": True, "description": description, "content": {"multipart/form-data": {
            "schema": {"type": "object", "additionalProperties": False, "required": ["image"],
                       "properties": {"image": image_schema, **properties}},
            "encoding": {"image": {"contentType": ", ".join(IMAGE_MEDIA_TYPES)}}}}}

    def multipart_only(request: Request) -> None:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != "multipart/form-data":
            raise RequestError(415, f"{request.method} {request.url.path} takes multipart/form-data with an image "
                                    f"file in field 'image', not {ctype[:80]!r}")

    @app.get("/health", summary="Liveness, with the collection's size", response_model=CollectionHealth,
             responses=errors(), dependencies=read_guard)
    def health():
        return {"status": "ok", "collection": service.name, "bits": service.bits, "n_items": service.n_items}

    @app.get("/info", summary="The collection behind the service and the limits on requests",
             response_model=CollectionInfo, responses=errors(), dependencies=read_guard)
    def collection_info():
        return {**service.info(), "writable": writable}

    @app.get("/items", summary="The collection's items, in the order they were added", response_model=ItemPage,
             responses=errors(422), dependencies=read_guard)
    def items(offset: Annotated[int, Query(ge=0, le=2**63 - 1, description="position of the first item")] = 0,
              limit: Annotated[int, Query(ge=1, le=500, description="most items to return")] = 100):
        return service.items(offset, limit)

    @app.get("/items/{item_id}", summary="One item: its id and its source (a file under the root, or an external id)",
             response_model=ItemRecord, responses=errors(404, 422), dependencies=read_guard)
    def item(item_id: id_param):
        return service.item(item_id)

    jpeg = {200: {"description": "JPEG thumbnail", "content": {"image/jpeg": {"schema": {"type": "string",
                                                                                         "format": "binary"}}}}}

    @app.get("/items/{item_id}/image", summary="Thumbnail of an item's file (read from under the collection's root "
                                               "only)", response_class=Response,
             responses={**jpeg, **errors(404, 422)}, dependencies=read_guard)
    def item_image(item_id: id_param):
        return Response(service.thumbnail(item_id), media_type="image/jpeg",
                        headers={"Cache-Control": "private, max-age=300"})

    @app.post("/search", summary="The k nearest items of an uploaded image", response_model=CollectionSearchResult,
              responses=errors(415, 422), dependencies=read_guard,
              openapi_extra={"requestBody": multipart_body("multipart/form-data with an image file in field image "
                                                           "and optionally k", {"k": k_schema})})
    async def search(request: Request):
        multipart_only(request)
        data, image_type, form = await _read_image_form(request, ("k",), lim.max_upload_bytes)
        k = _int_field(form["k"], "k") if "k" in form else default_k
        return await run_in_threadpool(service.search, k, image=data, image_type=image_type)

    if not writable:
        return

    external = {"type": "string", "minLength": 1, "maxLength": MAX_EXTERNAL_ID, "pattern": "^[^\\x00-\\x1f\\x7f]+$",
                "description": f"your id for the item (1 to {MAX_EXTERNAL_ID} printable characters), kept as its source"}

    @app.post("/items", summary="Add an uploaded image to the collection", status_code=201, response_model=AddedItem,
              responses=errors(401, 415, 422), dependencies=write_guard,
              openapi_extra={"requestBody": multipart_body("multipart/form-data with an image file in field image and "
                                                           "optionally external_id", {"external_id": external})})
    async def add_item(request: Request):
        multipart_only(request)
        data, image_type, form = await _read_image_form(request, ("external_id",), lim.max_upload_bytes)
        added = await run_in_threadpool(service.add, data, image_type, form.get("external_id"))
        return JSONResponse(added, status_code=201)

    @app.delete("/items/{item_id}", summary="Remove an item from the collection", response_model=RemovedItem,
                responses=errors(401, 404, 422), dependencies=write_guard)
    def remove_item(item_id: id_param):
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


def is_loopback(host: str) -> bool:
    """Whether ``host`` names only this machine (loopback address or ``localhost``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, port: int) -> None:
    """Refuse, in one line, a ``host:port`` this machine cannot listen on (not an address of it, no such
    name, the port in use), before anything is loaded; uvicorn would log its error and exit."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError, ValueError) as exc:
        raise Learn2HashError(f"--host {host!r} is not an address or a name this machine knows ({exc})") from None
    family, kind, proto, _, address = infos[0]
    try:
        with socket.socket(family, kind, proto) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            s.bind(address)
    except OSError as exc:
        raise Learn2HashError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def make_server(app: Any, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None):
    """A ``uvicorn.Server`` for ``app`` on ``host:port`` whose connections have the read deadlines of
    :mod:`learn2hash.serve.protocol` (``limits.read_timeout``, ``limits.min_body_rate``); start it with
    ``server.run()`` (or in a thread, as the tests do)."""
    import uvicorn

    if limits is None:
        service = getattr(getattr(app, "state", None), "service", None)
        limits = service.limits if service is not None else Limits()
    config = uvicorn.Config(app, host=host, port=int(port), log_level="warning", access_log=False,
                            http=timed_protocol(limits.read_timeout, limits.min_body_rate))
    return uvicorn.Server(config)


def serve(run_dir: Any = None, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None,
          allowed_hosts: Sequence[str] = (), api_key: str | None = None, public_read: bool = False,
          collection: Any = None) -> None:
    """Open the run (``run_dir``) or the collection (``collection``), then serve the API and the page on
    ``host:port`` until interrupted.

    Requests must name the server by one of :func:`default_allowed_hosts` (the loopback names, the bound
    address) or by one of ``allowed_hosts`` (``--allowed-host``; ``*`` accepts any name). ``api_key`` and
    ``public_read``: see :func:`create_app`.
    """
    _import_fastapi()
    import warnings

    from PIL import Image

    if not 0 <= int(port) <= 65535:
        raise Learn2HashError(f"--port must be between 0 and 65535, got {port}")
    check_bind(host, int(port))
    hosts = default_allowed_hosts(host, allowed_hosts)  # checked before the run is opened
    if api_key is None and public_read:
        raise Learn2HashError("--public-read opens the read routes of a service that has an API key, and none is "
                              f"set: give --api-key-file or set {API_KEY_ENV}")
    if (run_dir is None) == (collection is None):
        raise Learn2HashError("serve a run (--run) or a collection (--collection), one of them")
    limits = limits or Limits()
    service = CollectionService(collection, limits) if collection is not None else SearchService(run_dir, limits)
    app = create_app(service, allowed_hosts=hosts, api_key=api_key, public_read=public_read)
    # the service refuses images over its own pixel limit (413); Pillow's warning about large images is noise
    warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
    if not is_loopback(host) and api_key is None:
        print(f"warning: binding {host}: the service has no API key and is reachable from other machines; "
              f"it answers requests addressed to {', '.join(hosts)} (add names with --allowed-host; "
              f"set a key with --api-key-file or {API_KEY_ENV})", file=sys.stderr)
    access = ("no API key" if api_key is None else
              "API key needed to write" if public_read else "API key needed")
    if isinstance(service, CollectionService):
        what = (f"collection {service.collection.folder} ({service.info()['method']}, {service.bits} bits, "
                f"{service.n_items} items; {access})")
    else:
        what = (f"{service.run.folder} ({service.info()['method']}, {service.run.bits} bits, "
                f"{service.n_database} database items; index {service.index_source}; {access})")
    print(f"serving {what} on http://{host}:{port}/ (API docs at /docs)", file=sys.stderr, flush=True)
    server = make_server(app, host, port, limits)
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind (address in use, not an address of this machine)
        raise Learn2HashError(f"cannot serve on {host}:{port}: the address is in use or not one of this machine's "
                              "(see the line above)") from None
