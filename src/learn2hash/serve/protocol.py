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
from typing import Any

log = logging.getLogger("learn2hash.serve")

#: scope key set on a request whose body missed its deadline (the application then logs nothing more)
TIMED_OUT = "learn2hash.read_timed_out"


def _response_408(message: str) -> bytes:
    body = json.dumps({"detail": message}).encode()
    return (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def timed_protocol(read_timeout: float, min_body_rate: float) -> type:
    """An ``asyncio.Protocol`` class for ``uvicorn.Config(http=...)``: h11 with the deadlines above."""
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    if not read_timeout > 0 or not min_body_rate > 0:
        raise ValueError(f"read_timeout and min_body_rate must be positive, got {read_timeout}, {min_body_rate}")

    class TimedH11Protocol(H11Protocol):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self._timer = None
            self._phase: str | None = None  # "headers" or "body" while a deadline runs
            self._start = 0.0
            self._bytes = 0
            self._requests = 0

        # ------------------------------------------------------------------ uvicorn's hooks
        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            self._begin("headers")

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            self._bytes += len(data)
            self._follow()

        def on_response_complete(self) -> None:
            self._requests += 1
            super().on_response_complete()
            self._follow()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel()
            super().connection_lost(exc)

        # ------------------------------------------------------------------ deadlines
        def _follow(self) -> None:
            """Start, keep or stop the deadline after h11 has taken in what arrived."""
            if self.transport is None or self.transport.is_closing():
                self._cancel()
                return
            state = self.conn.their_state
            if state is h11.IDLE:
                if self.conn.trailing_data[0]:  # part of the next request line or headers
                    if self._phase != "headers" or self._requests_at_start != self._requests:
                        self._begin("headers")
                elif not (self._phase == "headers" and self._requests == 0 and self.cycle is None):
                    self._cancel()  # between requests: uvicorn's keep-alive timeout applies
            elif state is h11.SEND_BODY:
                if self._phase != "body":
                    self._begin("body")
            else:
                self._cancel()

        def _begin(self, phase: str) -> None:
            self._cancel()
            self._phase, self._start, self._bytes = phase, self.loop.time(), 0
            self._requests_at_start = self._requests
            self._timer = self.loop.call_later(read_timeout, self._check)

        def _cancel(self) -> None:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._phase = None, None

        def _deadline(self) -> float:
            extra = self._bytes / min_body_rate if self._phase == "body" else 0.0
            return self._start + read_timeout + extra

        def _check(self) -> None:
            self._timer = None
            if self._phase is None or self.transport is None or self.transport.is_closing():
                return
            now = self.loop.time()
            cycle = self.cycle
            ours = self.flow.read_paused or (self._phase == "body" and cycle is not None
                                             and cycle.waiting_for_100_continue)
            if ours:  # the service is not reading: the client's time starts again when it does
                self._start, self._bytes = now, 0
                self._timer = self.loop.call_later(read_timeout, self._check)
                return
            deadline = self._deadline()
            if now < deadline:
                self._timer = self.loop.call_later(deadline - now, self._check)
                return
            self._expire()

        def _expire(self) -> None:
            phase, cycle = self._phase, self.cycle
            self._phase = None
            client = "%s:%d" % self.client if self.client else "a client"
            if phase == "headers" and not self.conn.trailing_data[0]:
                self.transport.close()  # nothing sent: closed as an idle connection, without a word
                return
            if phase == "headers":
                what = "the request line and headers"
                started = False
            else:
                what = f"the body of {cycle.scope['method']} {cycle.scope['path']}" if cycle else "the body"
                started = cycle is not None and cycle.response_started
            message = (f"the client sent {what} too slowly: not within {read_timeout:g} s "
                       f"(plus 1 s per {min_body_rate:g} bytes received)")
            if cycle is not None and phase == "body":
                cycle.scope[TIMED_OUT] = True
                cycle.disconnected = True  # the application's next receive() is a disconnect
                cycle.message_event.set()
            if not started:
                self.transport.write(_response_408(message))
            self.transport.close()
            log.warning("client %s did not send %s within the read timeout (%g s): %sconnection closed", client,
                        what, read_timeout, "" if started else "answered 408, ")

    TimedH11Protocol.__name__ = TimedH11Protocol.__qualname__ = "TimedH11Protocol"
    return TimedH11Protocol
