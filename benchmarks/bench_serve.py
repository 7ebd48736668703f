"""Load test of `learn2hash serve` on loopback: a bounded number of concurrent requests.

Starts the service as a subprocess on a free 127.0.0.1 port, then ``--workers`` threads each send
``--requests`` requests over one keep-alive connection: ``POST /search`` with a random
query-split item and ``k``, and after each search ``GET /items/{id}/image`` of its first result.
Every ``--bad-every``-th search asks for ``k = 0`` and must be refused with 422 (refusals under
load must not disturb the others). Any other status, a malformed answer, or a connection error
counts as an error. Prints latency percentiles per request kind and the throughput.

    .venv/bin/python benchmarks/bench_serve.py --run runs/itq64 --workers 8 --requests 200

With ``--memory`` it measures instead the server's resident memory under ``--uploads`` concurrent
maximum-size uploads (``--side`` x ``--side`` PNGs, 25 M pixels by default: the service's pixel
limit), ``--rounds`` times, sampling the server's RSS from /proc every few milliseconds. It does so
twice, side by side: with the default decoding budget (``--max-decode-mb 256``: one such image
decoded at a time) and with a budget that lets all of them decode at once (the behaviour before
decoding was bounded). Every upload must be answered 200.

    .venv/bin/python benchmarks/bench_serve.py --run runs/itq16 --memory --uploads 12 --rounds 3

With ``--small-during-large`` it measures head-of-line blocking instead: ``--uploads`` threads keep
that many large uploads in flight (``--side`` x ``--side`` RGB PNGs, 25 M pixels by default), and
meanwhile one client sends ``--small`` small uploads (64 x 64 PNGs), one after the other, and
times each; it prints their p50 / p99 / max latency and the large uploads' latencies. Run it once
against each version of the service, side by side (``--server-src`` picks the source tree the
server runs from; the client is this script either way):

    .venv/bin/python benchmarks/bench_serve.py --run runs/itq32 --small-during-large --server-src /path/to/old/src
    .venv/bin/python benchmarks/bench_serve.py --run runs/itq32 --small-during-large

Client and server share this machine's cores, so the latencies include client time and the
interference of whatever else runs; compare runs taken side by side only.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import platform
import random
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run: str, port: int, log_path: Path, extra_args: tuple[str, ...] = (),
                 server_src: str | None = None) -> subprocess.Popen:
    log = open(log_path, "w")
    env = dict(os.environ)
    if server_src:
        env["PYTHONPATH"] = server_src
    proc = subprocess.Popen([sys.executable, "-m", "learn2hash", "serve", "--run", run, "--port", str(port),
                             *extra_args], stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit("the server did not answer /health within 180 s")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                if json.loads(resp.read())["status"] == "ok":
                    return proc
        except OSError:
            pass
        time.sleep(0.25)


def worker(port: int, n_requests: int, k: int, n_query: int, bad_every: int, seed: int,
           out: dict[str, list[float]], errors: list[str], lock: threading.Lock, deadline: float) -> None:
    rng = random.Random(seed)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    lat: dict[str, list[float]] = {"search": [], "image": [], "refused": []}
    mine: list[str] = []
    try:
        for r in range(n_requests):
            if time.monotonic() > deadline:
                mine.append("deadline reached")
                break
            bad = bad_every > 0 and r % bad_every == bad_every - 1
            body = json.dumps({"query_index": rng.randrange(n_query), "k": 0 if bad else k})
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/search", body=body, headers={"Content-Type": "application/json"})
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                mine.append(f"search: {type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            dt = time.perf_counter() - t0
            if bad:
                if resp.status != 422 or "k must be" not in json.loads(data)["detail"]:
                    mine.append(f"k=0 answered {resp.status}: {data[:200]!r}")
                lat["refused"].append(dt)
                continue
            if resp.status != 200:
                mine.append(f"search answered {resp.status}: {data[:200]!r}")
                continue
            result = json.loads(data)
            d = result["distances"]
            if len(result["ids"]) != k or d != sorted(d):
                mine.append(f"malformed search answer: {data[:200]!r}")
                continue
            lat["search"].append(dt)
            t0 = time.perf_counter()
            try:
                conn.request("GET", f"/items/{result['ids'][0]}/image")
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                mine.append(f"image: {type(exc).__name__}: {exc}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                continue
            dt = time.perf_counter() - t0
            if resp.status != 200 or not data.startswith(b"\x89PNG"):
                mine.append(f"image answered {resp.status}")
                continue
            lat["image"].append(dt)
    finally:
        conn.close()
        with lock:
            for key, values in lat.items():
                out[key].extend(values)
            errors.extend(mine)


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` in MiB (VmRSS from /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


class RssSampler(threading.Thread):
    """Samples a process's RSS every ``interval`` seconds until stopped; keeps the peak."""

    def __init__(self, pid: int, interval: float = 0.005):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak = pid, interval, 0.0
        self.samples = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
                self.samples += 1
            except (OSError, RuntimeError):
                return
            time.sleep(self.interval)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return self.peak


def multipart_png(data: bytes, boundary: str = "l2hbenchboundary") -> tuple[bytes, str]:
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


def upload(port: int, body: bytes, ctype: str) -> tuple[int, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    t0 = time.perf_counter()
    try:
        conn.request("POST", "/search", body=body, headers={"Content-Type": ctype})
        resp = conn.getresponse()
        resp.read()
        return resp.status, time.perf_counter() - t0
    finally:
        conn.close()


def upload_memory(run: str, uploads: int, rounds: int, side: int, extra_args: tuple[str, ...]) -> dict:
    """Peak RSS of a server receiving ``uploads`` concurrent ``side`` x ``side`` PNG uploads, ``rounds`` times."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (90, 140, 200)).save(buf, format="PNG")
    body, ctype = multipart_png(buf.getvalue())
    small, _ = multipart_png(_small_png())
    port = free_port()
    proc = start_server(run, port, Path("/tmp") / f"bench_serve_memory_{port}.log", extra_args)
    try:
        status, _ = upload(port, small, ctype)  # load the decoders
        if status != 200:
            raise SystemExit(f"a small upload was answered {status}")
        baseline = rss_mb(proc.pid)
        sampler = RssSampler(proc.pid)
        sampler.start()
        statuses, latencies = [], []
        t0 = time.perf_counter()
        for _ in range(rounds):
            with ThreadPoolExecutor(uploads) as pool:
                for status, seconds in pool.map(lambda _: upload(port, body, ctype), range(uploads)):
                    statuses.append(status)
                    latencies.append(seconds)
        wall = time.perf_counter() - t0
        peak = sampler.stop()
        after = rss_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    return {"png_bytes": len(buf.getvalue()), "baseline_mb": baseline, "peak_mb": peak, "after_mb": after,
            "statuses": statuses, "wall_s": wall, "latencies": latencies, "samples": sampler.samples}


def _small_png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buf, format="PNG")
    return buf.getvalue()


def memory_main(args) -> int:
    configs = [("bounded: default decoding budget (--max-decode-mb 256)", ()),
               ("unbounded: every upload decoded at once (--max-decode-mb 8192)", ("--max-decode-mb", "8192"))]
    print(f"run {args.run}; {args.uploads} concurrent uploads of a {args.side}x{args.side} RGB PNG, "
          f"{args.rounds} rounds; machine: {platform.machine()}, {os.cpu_count()} cores")
    ok = True
    results = {}
    for label, extra in configs:
        r = upload_memory(args.run, args.uploads, args.rounds, args.side, extra)
        results[label] = r
        bad = [s for s in r["statuses"] if s != 200]
        ok &= not bad
        lat = np.asarray(r["latencies"])
        print(f"  {label}\n    PNG {r['png_bytes']:,} bytes; server RSS before {r['baseline_mb']:.0f} MiB, "
              f"peak {r['peak_mb']:.0f} MiB ({r['samples']} samples), after {r['after_mb']:.0f} MiB; "
              f"{len(r['statuses'])} uploads in {r['wall_s']:.1f} s (latency p50 {np.median(lat):.2f} s, "
              f"max {lat.max():.2f} s); non-200 answers: {len(bad)}")
    (bounded, rb), (unbounded, ru) = results.items()
    print(f"peak RSS bounded / unbounded: {rb['peak_mb'] / ru['peak_mb']:.2f}; growth over the baseline "
          f"{rb['peak_mb'] - rb['baseline_mb']:.0f} MiB vs {ru['peak_mb'] - ru['baseline_mb']:.0f} MiB; "
          f"wall time bounded / unbounded {rb['wall_s'] / ru['wall_s']:.2f}")
    under = rb["peak_mb"] < 1024
    print(f"bounded peak under 1 GiB: {under}")
    return 0 if ok and under else 1


def small_during_large(args) -> int:
    """p50 / p99 latency of small uploads while ``args.uploads`` large uploads are kept in flight."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (args.side, args.side), (90, 140, 200)).save(buf, format="PNG")
    large, ctype = multipart_png(buf.getvalue())
    rng = np.random.default_rng(0)
    smalls = []
    for _ in range(args.small):
        b = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(b, format="PNG")
        smalls.append(multipart_png(b.getvalue())[0])
    port = free_port()
    src = args.server_src or str(REPO / "src")
    proc = start_server(args.run, port, Path("/tmp") / f"bench_serve_hol_{port}.log", server_src=src)
    stop = threading.Event()
    large_lat: list[float] = []
    large_status: list[int] = []
    in_flight = [0]
    lock = threading.Lock()

    def keep_uploading() -> None:
        while not stop.is_set():
            with lock:
                in_flight[0] += 1
            try:
                status, seconds = upload(port, large, ctype)
            finally:
                with lock:
                    in_flight[0] -= 1
            large_status.append(status)
            large_lat.append(seconds)

    small_lat, small_status, in_flight_seen = [], [], []
    t_start = time.perf_counter()
    try:
        status, _ = upload(port, smalls[0], ctype)  # load the decoders
        if status != 200:
            raise SystemExit(f"a small upload was answered {status}")
        threads = [threading.Thread(target=keep_uploading, daemon=True) for _ in range(args.uploads)]
        for t in threads:
            t.start()
        time.sleep(2.0)  # every large upload has been sent and is decoding or waiting to
        deadline = time.monotonic() + args.time_limit
        for body in smalls:
            if time.monotonic() > deadline:
                break
            in_flight_seen.append(in_flight[0])
            status, seconds = upload(port, body, ctype)
            small_status.append(status)
            small_lat.append(seconds)
            time.sleep(0.05)
        stop.set()
        for t in threads:
            t.join(timeout=600)
    finally:
        stop.set()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
    bad = [s for s in small_status + large_status if s != 200]
    print(f"run {args.run}; server from {src}; {args.uploads} large uploads ({args.side}x{args.side} RGB PNG, "
          f"{len(buf.getvalue()):,} bytes) kept in flight, {len(small_lat)} small uploads (64x64 PNG) one after "
          f"the other; machine: {platform.machine()}, {os.cpu_count()} cores; {time.perf_counter() - t_start:.0f} s")
    print(f"  small upload latency  {percentiles(small_lat)}")
    print(f"  large upload latency  {percentiles(large_lat)}")
    print(f"  large uploads in flight when each small one was sent: min {min(in_flight_seen)}, "
          f"median {int(np.median(in_flight_seen))}; non-200 answers: {len(bad)}")
    return 0 if not bad and len(small_lat) == args.small else 1


def percentiles(values: list[float]) -> str:
    if not values:
        return "n=0"
    a = np.asarray(values) * 1000
    p50, p95, p99 = np.percentile(a, [50, 95, 99])
    return f"n={a.size:5d}  p50 {p50:7.2f} ms  p95 {p95:7.2f} ms  p99 {p99:7.2f} ms  max {a.max():7.2f} ms"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder to serve")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--requests", type=int, default=200, help="searches per worker (each followed by an image GET)")
    p.add_argument("-k", type=int, default=10)
    p.add_argument("--bad-every", type=int, default=20, help="every N-th search asks for k=0 (0: never)")
    p.add_argument("--time-limit", type=float, default=300.0, help="stop sending after this many seconds")
    p.add_argument("--memory", action="store_true", help="measure the server's RSS under concurrent large uploads")
    p.add_argument("--uploads", type=int, default=12, help="--memory: concurrent uploads (default 12)")
    p.add_argument("--rounds", type=int, default=3, help="--memory: rounds of concurrent uploads (default 3)")
    p.add_argument("--side", type=int, default=5000, help="--memory: image side in pixels (default 5000)")
    p.add_argument("--small-during-large", action="store_true",
                   help="measure small uploads' latency while --uploads large ones are in flight")
    p.add_argument("--small", type=int, default=30, help="--small-during-large: small uploads to time (default 30)")
    p.add_argument("--server-src", default=None, help="source tree the server runs from (default: this one's src)")
    args = p.parse_args(argv)
    if args.small_during_large:
        if not (1 <= args.uploads <= 64 and 1 <= args.small <= 1000 and 1 <= args.side <= 5000):
            raise SystemExit("--uploads must be 1..64, --small 1..1000 and --side 1..5000")
        return small_during_large(args)
    if args.memory:
        if not (1 <= args.uploads <= 64 and 1 <= args.rounds <= 20 and 1 <= args.side <= 5000):
            raise SystemExit("--uploads must be 1..64, --rounds 1..20 and --side 1..5000")
        return memory_main(args)
    if not (1 <= args.workers <= 64 and 1 <= args.requests <= 10_000):
        raise SystemExit("--workers must be 1..64 and --requests 1..10000")

    port = free_port()
    log_path = Path("/tmp") / f"bench_serve_{port}.log"
    t_start = time.perf_counter()
    proc = start_server(args.run, port, log_path)
    startup = time.perf_counter() - t_start
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=10) as resp:
            info = json.loads(resp.read())
        lat: dict[str, list[float]] = {"search": [], "image": [], "refused": []}
        errors: list[str] = []
        lock = threading.Lock()
        deadline = time.monotonic() + args.time_limit
        threads = [threading.Thread(target=worker, args=(port, args.requests, args.k, info["n_query"], args.bad_every,
                                                         seed, lat, errors, lock, deadline))
                   for seed in range(args.workers)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.perf_counter() - t0
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
            alive = json.loads(resp.read())["status"] == "ok"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()

    total = sum(len(v) for v in lat.values())
    print(f"run {args.run}: {info['method']}, {info['bits']} bits, {info['dataset']}, "
          f"{info['n_database']:,} database items; index {info['index']}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; server startup {startup:.1f} s")
    print(f"{args.workers} workers x {args.requests} searches (k={args.k}, every {args.bad_every}th with k=0), "
          f"each valid search followed by one item image")
    print(f"answered {total} requests in {wall:.1f} s ({total / wall:.0f} requests/s); errors: {len(errors)}; "
          f"service alive afterwards: {alive}")
    for key, label in (("search", "POST /search"), ("image", "GET /items/{id}/image"), ("refused", "k=0 -> 422")):
        print(f"  {label:<22} {percentiles(lat[key])}")
    for e in errors[:10]:
        print(f"  error: {e}")
    return 0 if not errors and alive else 1


if __name__ == "__main__":
    sys.exit(main())
