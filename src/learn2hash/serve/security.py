"""What a request must be before the service reads it: the API key, the ``Host`` header, the body size.

- **Keys**: :func:`load_api_key` reads the service's key (a file, or the :data:`API_KEY_ENV` environment
  variable), :func:`key_matches` compares a token with it in constant time.
- **Hosts**: :class:`AllowedHostsMiddleware` (Starlette's ``TrustedHostMiddleware`` in the API's error
  shape) answers 400 to a ``Host`` that is not one of the service's names (:func:`default_allowed_hosts`).
- **Body size**: :class:`BodyLimitMiddleware` answers 413 to a body over the limit, declared or streamed.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Sequence
from typing import Any

from learn2hash.errors import Learn2HashError
from learn2hash.serve.service import RequestError

#: a too-large body is read and dropped up to this many bytes so that the client sees the 413
DRAIN_LIMIT = 64 << 20

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


#: scope key set on a request whose ``Host`` header :class:`AllowedHostsMiddleware` let through
_HOST_OK = "learn2hash.host_ok"


class AllowedHostsMiddleware:
    """ASGI middleware: answer 400 to a request whose ``Host`` header names none of ``allowed_hosts``.

    Starlette's ``TrustedHostMiddleware`` does the check (entries are names or addresses without port;
    ``*.example.org`` matches its subdomains and ``*`` anything; an IPv6 address is given without
    brackets); this wrapper answers a refusal in the API's one error shape instead of plain text. A page
    on another site cannot reach a loopback service through a name of its own (DNS rebinding).
    """

    def __init__(self, app: Any, allowed_hosts: Sequence[str]):
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        patterns = check_allowed_hosts(allowed_hosts)
        self.app = app
        self.trusted = TrustedHostMiddleware(self._let_through, www_redirect=False,
                                             allowed_hosts=[f"[{h}]" if ":" in h else h for h in patterns])

    async def _let_through(self, scope, receive, send) -> None:
        scope[_HOST_OK] = True
        await self.app(scope, receive, send)

    async def __call__(self, scope, receive, send) -> None:
        async def forward(message) -> None:  # drops Starlette's plain-text refusal
            if scope.get(_HOST_OK):
                await send(message)

        await self.trusted(scope, receive, forward)
        if scope.get(_HOST_OK):
            return
        from starlette.responses import JSONResponse

        header = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        shown = header[:80] if header else "(none)"
        await JSONResponse({"detail": f"Host header {shown!r} is not a name this service answers to "
                                      "(start it with --allowed-host NAME to add one)"}, 400)(scope, receive, send)
