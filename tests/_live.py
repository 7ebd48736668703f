"""A service under uvicorn on a free loopback port, in a thread of the test process, with the read
deadlines of ``learn2hash serve`` (:func:`learn2hash.serve.make_server`); and, for tests that start
``learn2hash serve`` as a process, the wait for its ``/health`` and its stop. Every wait bounded."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path


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


def wait_until_serving(proc: subprocess.Popen, base: str, log_path, timeout: float = 90.0,
                       headers: dict[str, str] | None = None, statuses: tuple[int, ...] = (200,)) -> None:
    """Poll ``base/health`` until it answers with one of ``statuses``; fail with the server's log if
    ``proc`` exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"server exited: {Path(log_path).read_text()}"
        assert time.monotonic() < deadline, f"server did not answer /health within {timeout:.0f} s"
        try:
            with urllib.request.urlopen(urllib.request.Request(f"{base}/health", headers=headers or {}),
                                        timeout=2) as resp:
                if resp.status in statuses:
                    return
        except urllib.error.HTTPError as err:
            if err.code in statuses:
                return
        except OSError:
            pass
        time.sleep(0.2)


def stop_process(proc: subprocess.Popen) -> None:
    """Terminate ``proc``; kill it if it has not exited within 15 s."""
    proc.terminate()
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
