"""Running the service: :func:`serve` opens a run or a collection and serves the API and the page with
uvicorn (:func:`make_server`, connections with the read deadlines of :mod:`learn2hash.serve.protocol`),
after checking the address (:func:`check_bind`) and who may reach it (:func:`is_loopback`)."""

from __future__ import annotations

import ipaddress
import sys
from collections.abc import Sequence
from typing import Any

from learn2hash.errors import Learn2HashError
from learn2hash.serve.app import create_app, import_fastapi
from learn2hash.serve.protocol import timed_protocol
from learn2hash.serve.security import API_KEY_ENV, default_allowed_hosts
from learn2hash.serve.collection_service import CollectionService
from learn2hash.serve.service import Limits, SearchService


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
    import_fastapi()
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
