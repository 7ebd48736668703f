"""Read timeouts for the service's HTTP connections (uvicorn's h11 protocol with deadlines).

uvicorn closes a connection that stays idle between requests (``timeout_keep_alive``) but waits
for ever on one that has started a request and sends the rest slowly or never: partial headers
or a partial body each held a connection open for minutes. :func:`timed_protocol` makes an
``H11Protocol`` that gives every request two deadlines, after the rule of Apache's
``mod_reqtimeout``:

- **headers**: the request line and headers must arrive within ``read_timeout`` seconds of the
  request's first byte (of the connection's opening, for its first request);
- **body**: within ``read_timeout`` seconds of the headers, extended by one second for every
  ``min_body_rate`` bytes received, so a client sending at least that fast is never cut off
  and one that trickles is (the body limit bounds the extension).

Time during which the service itself does not read (flow control paused because the
application has not consumed what came, or a ``100 Continue`` not yet sent) does not count.
A request that misses its deadline is answered ``408`` (when no response has started) and its
connection closed, with one line of log; a connection that sent nothing at all is closed
silently, as an idle keep-alive connection is.
"""

from __future__ import annotations

import json
import logging

log = logging.getLogger("learn2hash.serve")

#: scope key set on a request whose body missed its deadline (the application then logs nothing more)
TIMED_OUT = "learn2hash.read_timed_out"


def response_408(message: str) -> bytes:
    body = json.dumps({"detail": message}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def timed_protocol(read_timeout: float, min_body_rate: float) -> type:
    """An ``asyncio.Protocol`` class for ``uvicorn.Config(http=...)``: h11 with the deadlines above
    (:class:`learn2hash.serve.timed_h11.TimedH11Protocol` with these two settings)."""
    from learn2hash.serve.timed_h11 import TimedH11Protocol

    if not read_timeout > 0 or not min_body_rate > 0:
        raise ValueError(f"read_timeout and min_body_rate must be positive, got {read_timeout}, {min_body_rate}")
    return type("TimedH11Protocol", (TimedH11Protocol,), {"read_timeout": read_timeout, "min_body_rate": min_body_rate,
                                                          "__module__": TimedH11Protocol.__module__})
