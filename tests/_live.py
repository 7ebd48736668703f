"""A service under uvicorn on a free loopback port, in a thread of the test process, with the read
deadlines of ``learn2hash serve`` (:func:`learn2hash.serve.make_server`); every wait bounded."""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app, limits=None, start_timeout: float = 20.0):
    """Yields the base URL of ``app`` served on 127.0.0.1; stops the server afterwards."""
    from learn2hash.serve import make_server

    port = free_port()
    server = make_server(app, "127.0.0.1", port, limits)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + start_timeout
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
