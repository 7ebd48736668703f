"""The h11 protocol with read deadlines that :func:`learn2hash.serve.protocol.timed_protocol` configures
(imported only when a server is made: uvicorn and h11 come with the serve extra)."""

from __future__ import annotations

from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from learn2hash.serve.protocol import TIMED_OUT, log, response_408


class TimedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with the read deadlines of :mod:`learn2hash.serve.protocol`; the class
    attributes ``read_timeout`` and ``min_body_rate`` are set by :func:`~learn2hash.serve.protocol.timed_protocol`."""

    read_timeout: float = 5.0
    min_body_rate: float = 64 << 10

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
        self._timer = self.loop.call_later(self.read_timeout, self._check)

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._phase = None, None

    def _deadline(self) -> float:
        extra = self._bytes / self.min_body_rate if self._phase == "body" else 0.0
        return self._start + self.read_timeout + extra

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
            self._timer = self.loop.call_later(self.read_timeout, self._check)
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
        message = (f"the client sent {what} too slowly: not within {self.read_timeout:g} s "
                   f"(plus 1 s per {self.min_body_rate:g} bytes received)")
        if cycle is not None and phase == "body":
            cycle.scope[TIMED_OUT] = True
            cycle.disconnected = True  # the application's next receive() is a disconnect
            cycle.message_event.set()
        if not started:
            self.transport.write(response_408(message))
        self.transport.close()
        log.warning("client %s did not send %s within the read timeout (%g s): %sconnection closed", client,
                    what, self.read_timeout, "" if started else "answered 408, ")
