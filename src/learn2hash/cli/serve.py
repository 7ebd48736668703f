"""``learn2hash serve``: the HTTP search service over a run or a collection."""

from __future__ import annotations

from learn2hash.cli._common import _add_parser, command
from learn2hash.errors import Learn2HashError, check_int


@command
def _add_serve(sub) -> None:
    """Serve POST /search, item images, /health, OpenAPI docs at /docs and a web page at / for run DIR, or for
    collection COLL (thumbnails of its images; with an API key, POST /items and DELETE /items/{id} change it
    live). Binds 127.0.0.1 unless --host says otherwise."""
    p = _add_parser(sub, "serve", _add_serve,
                    help="HTTP search service and web page over a run's or a collection's index")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", metavar="RUN_DIR", help="run folder to serve (its dataset's database split)")
    which.add_argument("--collection", metavar="COLL", help="collection to serve (learn2hash collection create)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--max-upload-mb", type=float, default=5.0, help="largest accepted upload in MiB (default 5)")
    p.add_argument("--max-k", type=int, default=1000, help="most results one request may ask for (default 1000)")
    p.add_argument("--max-decode-mb", type=float, default=256.0,
                   help="memory for decoding uploads at once, in MiB: sets how many are decoded concurrently, "
                        "in two lanes by size so that small images never wait behind large ones (default 256: "
                        "a quarter for images up to 1 M pixels, five at a time; the rest for larger ones, one "
                        "maximum-size image at a time)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host name the service answers to, besides the loopback names and the --host address "
                        "(repeatable; '*.example.org' for its subdomains, '*' for any)")
    p.add_argument("--api-key-file", metavar="FILE", default=None,
                   help="file holding the API key (else the environment variable LEARN2HASH_API_KEY): every "
                        "request then needs 'Authorization: Bearer <key>' (401 otherwise); without a key there are "
                        "no routes that write")
    p.add_argument("--public-read", action="store_true",
                   help="with a key, let anyone use the routes that only read (search, images, info)")
    p.add_argument("--read-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="seconds a client has to send a request's headers, and its body (plus 1 s per 64 KiB "
                        "received); slower clients are answered 408 and disconnected (default 5)")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args) -> int:
    from learn2hash.serve import Limits, load_api_key, serve

    if not 0 < args.read_timeout <= 3600:
        raise Learn2HashError(f"--read-timeout must be in (0, 3600] seconds, got {args.read_timeout}")
    if not 0 < args.max_upload_mb <= 1024:
        raise Learn2HashError(f"--max-upload-mb must be in (0, 1024], got {args.max_upload_mb}")
    check_int(args.max_k, "--max-k", 1)
    if not 0 < args.max_decode_mb <= 1 << 20:
        raise Learn2HashError(f"--max-decode-mb must be in (0, 1048576], got {args.max_decode_mb}")
    _check_bind_address(args.host, args.port)
    serve(args.run, collection=args.collection, host=args.host, port=args.port, allowed_hosts=args.allowed_host,
          limits=Limits(max_upload_bytes=int(args.max_upload_mb * (1 << 20)), max_k=args.max_k,
                        max_decode_bytes=int(args.max_decode_mb * (1 << 20)), read_timeout=args.read_timeout),
          api_key=load_api_key(args.api_key_file), public_read=args.public_read)
    return 0


def _check_bind_address(host: str, port: int) -> None:
    """Refuse (one line) a --host that is no address of this machine's resolver or a --port out of range."""
    import ipaddress
    import socket

    if not 0 <= port <= 65535:
        raise Learn2HashError(f"--port must be in 0..65535, got {port}")
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):  # numbers: an IPv4 address, never a name to look up
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise Learn2HashError(f"--host {host!r} is not an IPv4 address (four numbers 0..255)") from None
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise Learn2HashError(f"--host {host!r} is not an address or host name this machine can bind "
                              f"({getattr(exc, 'strerror', None) or exc})") from None
