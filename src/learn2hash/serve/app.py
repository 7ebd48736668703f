"""The HTTP API (FastAPI) and the web page over a :class:`~learn2hash.serve.service.SearchService`.

Routes::

    GET  /                      the web page (serve/static/index.html)
    GET  /health                liveness and the run's size
    GET  /info                  the run: method, bits, dataset, classes, what queries it accepts, limits
    GET  /queries?offset&limit  query-split items with their labels (for the page's picker)
    GET  /queries/{i}/image     PNG of query item i
    GET  /items/{id}/image      PNG of database item id
    POST /search                multipart (field ``image``, optional ``k``) or JSON
                                ``{"query_index": i, "k": 10}`` / ``{"features": [...], "k": 10}``
    GET  /docs, /openapi.json   OpenAPI documentation

Every refused request gets a 4xx status and ``{"detail": "<what was wrong>"}``. Request bodies
larger than the upload limit are refused with 413 before they are read into memory.
"""

import ipaddress
import logging
import sys
from pathlib import Path
from typing import Any

from learn2hash.errors import Learn2HashError
from learn2hash.serve.service import Limits, RequestError, SearchService

STATIC_DIR = Path(__file__).parent / "static"
#: room for multipart headers and form fields on top of the upload limit
BODY_OVERHEAD = 64 << 10
#: a too-large body is read and dropped up to this many bytes so that the client sees the 413
DRAIN_LIMIT = 64 << 20

log = logging.getLogger("learn2hash.serve")


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


def _search_openapi() -> dict[str, Any]:
    """OpenAPI description of the two request bodies /search accepts."""
    return {"requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["image"], "properties": {
            "image": {"type": "string", "format": "binary", "description": "PNG, JPEG, GIF, BMP or WEBP image"},
            "k": {"type": "integer", "default": 10, "minimum": 1}}}},
        "application/json": {"schema": {"type": "object", "properties": {
            "query_index": {"type": "integer", "minimum": 0, "description": "position in the query split"},
            "features": {"type": "array", "items": {"type": "number"},
                         "description": "feature vector (feature-based runs)"},
            "k": {"type": "integer", "default": 10, "minimum": 1}},
            "example": {"query_index": 0, "k": 10}}},
    }}}


def create_app(service: SearchService | Any, limits: Limits | None = None):
    """The FastAPI application over ``service`` (a :class:`SearchService`, or a run folder to open)."""
    _import_fastapi()
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import FileResponse, JSONResponse, Response
    from fastapi.staticfiles import StaticFiles
    from starlette.concurrency import run_in_threadpool
    from starlette.datastructures import UploadFile

    if not isinstance(service, SearchService):
        service = SearchService(service, limits or Limits())
    lim = service.limits
    info = service.info()
    app = FastAPI(title="learn2hash search",
                  description=f"Hamming-space retrieval over run {info['run']}: {info['method']}, {info['bits']} bits, "
                              f"{info['dataset']} ({info['n_database']} database items).",
                  version=_version())
    app.state.service = service
    app.add_middleware(BodyLimitMiddleware, max_bytes=lim.max_upload_bytes + BODY_OVERHEAD)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        return JSONResponse({"detail": str(exc)}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
            parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
        return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"detail": f"internal error: {type(exc).__name__}"}, status_code=500)

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    @app.get("/health", summary="Liveness, with the run's size")
    def health() -> dict[str, Any]:
        return {"status": "ok", "run": info["run"], "bits": info["bits"], "n_database": info["n_database"]}

    @app.get("/info", summary="The run behind the service and the limits on requests")
    def run_info() -> dict[str, Any]:
        return info

    @app.get("/queries", summary="Items of the query split with their labels")
    def queries(offset: int = 0, limit: int = 100) -> dict[str, Any]:
        return service.queries(offset, limit)

    png_headers = {"Cache-Control": "public, max-age=3600"}

    @app.get("/queries/{i}/image", summary="PNG image of a query-split item",
             responses={200: {"content": {"image/png": {}}}}, response_class=Response)
    def query_image(i: int):
        return Response(service.item_png("query", i), media_type="image/png", headers=png_headers)

    @app.get("/items/{item_id}/image", summary="PNG image of a database item",
             responses={200: {"content": {"image/png": {}}}}, response_class=Response)
    def item_image(item_id: int):
        return Response(service.item_png("database", item_id), media_type="image/png", headers=png_headers)

    @app.post("/search", summary="The k nearest database items of an uploaded image, a feature vector or a query item",
              openapi_extra=_search_openapi())
    async def search(request: Request) -> dict[str, Any]:
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype == "multipart/form-data":
            form = await request.form(max_files=1, max_fields=4, max_part_size=BODY_OVERHEAD)
            upload = form.get("image")
            if not isinstance(upload, UploadFile):
                raise RequestError(422, "multipart request needs a file field named 'image'")
            data = await upload.read(lim.max_upload_bytes + 1)
            k = _int_field(form.get("k", "10"), "k")
            return await run_in_threadpool(service.search, k, image=data, image_type=upload.content_type)
        if ctype in ("application/json", ""):
            raw = await request.body()
            body = _json_object(raw)
            unknown = set(body) - {"query_index", "features", "k"}
            if unknown:
                raise RequestError(422, f"unknown field(s) {sorted(unknown)}: send query_index or features, and k")
            return await run_in_threadpool(service.search, body.get("k", 10), query_index=body.get("query_index"),
                                           features=body.get("features"))
        raise RequestError(415, f"POST /search takes multipart/form-data (an image upload) or application/json, "
                                f"not {ctype!r}")

    return app


def _int_field(value: Any, name: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise RequestError(422, f"{name} must be an integer, got {str(value)[:40]!r}") from None


def _json_object(raw: bytes) -> dict[str, Any]:
    import json

    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RequestError(422, f"the request body is not valid JSON ({exc})") from None
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


def serve(run_dir: Any, host: str = "127.0.0.1", port: int = 8000, limits: Limits | None = None) -> None:
    """Open the run, then serve the API and the page on ``host:port`` until interrupted."""
    _import_fastapi()
    import uvicorn

    if not 0 <= int(port) <= 65535:
        raise Learn2HashError(f"--port must be between 0 and 65535, got {port}")
    service = SearchService(run_dir, limits or Limits())
    app = create_app(service)
    if not is_loopback(host):
        print(f"warning: binding {host}: the service has no authentication and is reachable from other machines",
              file=sys.stderr)
    print(f"serving {service.run.folder} ({service.info()['method']}, {service.run.bits} bits, "
          f"{service.n_database} database items; index {service.index_source}) on http://{host}:{port}/ "
          f"(API docs at /docs)", file=sys.stderr, flush=True)
    uvicorn.run(app, host=host, port=int(port), log_level="warning", access_log=False)
