"""Collections at scale: encoding a folder of photographs, memory, search latency, compaction.

    nice python benchmarks/bench_collection.py --images 100000 --small 10000 --search-items 1000000 \
        --segments 1000 --out benchmarks/results/collection/bench-collection.json

1. ``collection create`` on ``--images`` generated JPEG photographs (320 x 256 px: a colour gradient
   with random shapes; made once in ``--work``, deleted at the end unless ``--keep``), each in a
   fresh process: images per second (wall time of the whole command: listing, encoding, commit) and
   the peak RSS of the process, for the first ``--small`` images (a list file) and for all of them.
   The hasher: CSQ trained for one epoch on 300 photographs of the same kind, smallcnn on 32 x 32
   inputs (the JPEGs are decoded at reduced scale, then resized), so the figure is the cost of the
   pipeline (listing, decoding in worker processes, shards, commit) more than of a network.
2. Search latency of a collection of ``--search-items`` items (64-bit codes drawn at random, paths as
   payloads; built directly through the index, not encoded) through ``Collection.search``: a query
   given as codes (the index and the item lookup) and as an image file (decoding and the hasher
   too); p50 / p99 over sequential queries.
3. Compaction: an index of ``--segments`` saved segments (1,000 items each, 10 % removed) rewritten
   into one by ``Collection.compact``; and the index files left after 100 ``add_item`` calls.
4. Search latency through the service: ``learn2hash serve --collection`` (a subprocess on 127.0.0.1, a free
   port, no API key, OMP_NUM_THREADS=1) on the collection of stage 2 (built the same way when stage 2
   is skipped); sequential ``POST /search`` requests (multipart field ``image``: one of the generated
   JPEG photographs, ``k=10``) from an httpx client after ``--service-warmup`` warm-up requests;
   p50 / p99 of the client's wall-clock time over ``--service-queries`` requests, and the server's
   own ``seconds`` (decoding, encoding, searching) beside it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BITS = 64


def _photo(args) -> None:
    """Write one photograph: a gradient in two random colours with five random shapes."""
    path, seed = args
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    w, h = 320, 256
    c0, c1 = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, w)[None, :, None]
    a = (c0 * (1 - t) + c1 * t).astype(np.uint8).repeat(h, axis=0)
    img = Image.fromarray(a)
    draw = ImageDraw.Draw(img)
    for _ in range(5):
        x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
        x1, y1 = x0 + rng.integers(20, 120), y0 + rng.integers(20, 120)
        colour = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x1, y1], fill=colour)
    img.save(path, quality=85)


def make_photos(folder: Path, n: int, seed: int, per_folder: int = 1000, classes: int | None = None) -> float:
    """``n`` photographs in sub-folders of ``per_folder`` (or in ``classes`` class folders); seconds taken."""
    t0 = time.perf_counter()
    jobs = []
    for i in range(n):
        sub = f"class{i % classes}" if classes else f"{i // per_folder:04d}"
        path = folder / sub / f"{i:07d}.jpg"
        if not path.exists():
            jobs.append((path, seed * 10_000_000 + i))
    for sub in {p.parent for p, _ in jobs}:
        sub.mkdir(parents=True, exist_ok=True)
    with multiprocessing.Pool(max(1, min(2, os.cpu_count() or 1))) as pool:
        for _ in pool.imap_unordered(_photo, jobs, chunksize=256):
            pass
    return time.perf_counter() - t0


def train_hasher(work: Path) -> Path:
    from learn2hash.runs import train_run

    run = work / "run"
    if (run / "hasher" / "hasher.json").exists():
        return run
    photos = work / "train-photos"
    make_photos(photos, 300, seed=1, classes=3)
    train_run("csq", "image-folder", BITS, run, params={"epochs": 1, "batch_size": 32, "augment": "flip",
                                                      "backbone_options": {"widths": [16, 32]}},
              data_params={"path": str(photos), "size": 32, "query_per_class": 10}, progress=False)
    return run


def create_in_a_process(run: Path, images: Path, out: Path, workers: int | None) -> dict:
    """``Collection.create`` in a fresh process: seconds, items, peak RSS of that process."""
    cmd = [sys.executable, __file__, "_create", str(run), str(images), str(out),
           str(workers if workers is not None else -1)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _create_main(run: str, images: str, out: str, workers: str) -> None:
    from learn2hash.collections import Collection

    t0 = time.perf_counter()
    coll = Collection.create(out, run, images, progress=True, workers=None if workers == "-1" else int(workers))
    seconds = time.perf_counter() - t0
    print(json.dumps({"items": len(coll), "seconds": seconds, "images_per_second": len(coll) / seconds,
                      "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "workers_peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))


def bench_create(work: Path, run: Path, n: int, small: int, workers: int | None) -> dict:
    photos = work / "photos"
    gen = make_photos(photos, n, seed=2)
    print(f"{n} photographs in {gen:.0f} s ({sum(f.stat().st_size for f in photos.rglob('*.jpg')) / n / 1024:.1f} "
          "KiB each)", file=sys.stderr)
    names = sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*.jpg"))
    listing = photos / f"first-{small}.txt"
    listing.write_text("".join(f"{name}\n" for name in names[:small]))
    results = {}
    for label, images in ((f"{small}", listing), (f"{n}", photos)):
        out = work / f"coll-{label}"
        shutil.rmtree(out, ignore_errors=True)
        results[label] = create_in_a_process(run, images, out, workers)
        print(f"create {label}: {results[label]}", file=sys.stderr)
        shutil.rmtree(out, ignore_errors=True)
    a, b = results[f"{small}"]["peak_rss_mib"], results[f"{n}"]["peak_rss_mib"]
    return {"generate_seconds": gen, "runs": results, "peak_rss_ratio": b / a}


def build_collection(folder: Path, run: Path, n: int, segments: int = 1, removed: float = 0.0,
                     rng: np.random.Generator | None = None) -> None:
    """A collection of ``n`` random codes with path payloads, in ``segments`` saved segments, written
    through the index directly (the codes are not encoded from images)."""
    from learn2hash import _atomic
    from learn2hash.codes import Codes
    from learn2hash.collections import FORMAT, META, VERSION, Collection, _hasher_checksum, _payload
    from learn2hash.index import HammingIndex

    rng = rng or np.random.default_rng(0)
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    meta = {"format": FORMAT, "version": VERSION, "bits": BITS, "run": str(run.resolve()),
            "hasher_sha256": _hasher_checksum(run), "root": str(folder.resolve()), "method": "csq"}
    _atomic.save_json(folder / META, meta)
    index = HammingIndex(BITS)
    index.built_from = Collection(folder, meta)._built_from()
    index.max_segments = None
    per = -(-n // segments)
    for s in range(0, n, per):
        m = min(per, n - s)
        codes = Codes.from_packed(rng.integers(0, 256, (m, BITS // 8), dtype=np.uint8), BITS)
        index.add(codes, payloads=[_payload(path=f"{i // 1000:04d}/{i:07d}.jpg") for i in range(s, s + m)])
        index.save(folder / "index")
    if removed:
        index.remove(rng.choice(n, int(removed * n), replace=False))
        index.compact_removed = None
        index.save(folder / "index")


def bench_search(work: Path, run: Path, n: int, queries: int, keep: bool = False) -> dict:
    from learn2hash.codes import Codes
    from learn2hash.collections import Collection

    folder = work / "coll-search"
    t0 = time.perf_counter()
    build_collection(folder, run, n)
    built = time.perf_counter() - t0
    t0 = time.perf_counter()
    coll = Collection.open(folder)
    opened = time.perf_counter() - t0
    rng = np.random.default_rng(1)
    q = Codes.from_packed(rng.integers(0, 256, (queries, BITS // 8), dtype=np.uint8), BITS)
    coll.search(q[:1], k=10)  # compile the kernels
    lat = []
    for i in range(queries):
        t0 = time.perf_counter()
        hits = coll.search(q[i:i + 1], k=10)
        lat.append(time.perf_counter() - t0)
        assert len(hits[0]) == 10 and hits[0][0].path
    photo = next((work / "train-photos").rglob("*.jpg"))
    coll.search(photo, k=10)
    img_lat = []
    for _ in range(max(20, queries // 5)):
        t0 = time.perf_counter()
        coll.search(photo, k=10)
        img_lat.append(time.perf_counter() - t0)
    if not keep:
        shutil.rmtree(folder, ignore_errors=True)
    ms = lambda xs, p: float(np.percentile(np.asarray(xs) * 1e3, p))  # noqa: E731
    return {"items": n, "k": 10, "build_seconds": built, "open_seconds": opened,
            "codes_query_ms": {"p50": ms(lat, 50), "p99": ms(lat, 99), "queries": len(lat)},
            "image_query_ms": {"p50": ms(img_lat, 50), "p99": ms(img_lat, 99), "queries": len(img_lat)}}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def bench_service(work: Path, run: Path, n: int, queries: int, warmup: int, start_timeout: float = 300.0) -> dict:
    """``POST /search`` latency of ``learn2hash serve --collection`` on ``n`` items, one request at a time."""
    import httpx

    folder = work / "coll-search"
    built = None
    if not (folder / "index").is_dir():  # stage 2 skipped (or it removed its collection): build it the same way
        t0 = time.perf_counter()
        build_collection(folder, run, n)
        built = time.perf_counter() - t0
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    log_path = work / "serve.log"
    photo = next((work / "train-photos").rglob("*.jpg"))
    data = photo.read_bytes()
    base = f"http://127.0.0.1:{port}"
    ms = lambda xs, p: float(np.percentile(np.asarray(xs) * 1e3, p))  # noqa: E731
    with open(log_path, "wb") as log:
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "learn2hash", "serve", "--collection", str(folder),
                                 "--host", "127.0.0.1", "--port", str(port)], env=env, stdout=log, stderr=log)
        try:
            with httpx.Client(base_url=base, timeout=60.0) as client:
                deadline = time.monotonic() + start_timeout
                while True:
                    if proc.poll() is not None:
                        raise SystemExit(f"the service exited with {proc.returncode}:\n"
                                         f"{log_path.read_text(errors='replace')[-3000:]}")
                    if time.monotonic() > deadline:
                        raise SystemExit(f"the service did not answer /health within {start_timeout:.0f} s")
                    try:
                        health = client.get("/health", timeout=5.0)
                        if health.status_code == 200:
                            break
                    except httpx.TransportError:
                        pass
                    time.sleep(0.2)
                started = time.perf_counter() - t0
                health = health.json()
                assert health["n_items"] == n, health

                def search() -> dict:
                    r = client.post("/search", files={"image": (photo.name, data, "image/jpeg")}, data={"k": "10"})
                    assert r.status_code == 200, (r.status_code, r.text[:500])
                    body = r.json()
                    assert len(body["results"]) == 10 and body["n_items"] == n
                    return body

                for _ in range(warmup):
                    search()
                lat, server = [], []
                for _ in range(queries):
                    t1 = time.perf_counter()
                    body = search()
                    lat.append(time.perf_counter() - t1)
                    server.append(body["seconds"])
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=30)
    shutil.rmtree(folder, ignore_errors=True)
    return {"items": n, "k": 10, "build_seconds": built, "start_seconds": started, "warmup": warmup,
            "image_bytes": len(data),
            "request_ms": {"p50": ms(lat, 50), "p99": ms(lat, 99), "queries": len(lat)},
            "server_seconds_ms": {"p50": ms(server, 50), "p99": ms(server, 99), "queries": len(server)}}


def bench_compact(work: Path, run: Path, segments: int) -> dict:
    from learn2hash.collections import Collection

    folder = work / "coll-compact"
    t0 = time.perf_counter()
    build_collection(folder, run, segments * 1000, segments=segments, removed=0.1)
    built = time.perf_counter() - t0
    coll = Collection.open(folder)
    files_before = sum(1 for _ in (folder / "index").iterdir())
    t0 = time.perf_counter()
    result = coll.compact()
    seconds = time.perf_counter() - t0
    files_after = sum(1 for _ in (folder / "index").iterdir())
    assert result["segments_after"] == 1 and len(Collection.open(folder)) == int(segments * 1000 * 0.9)
    shutil.rmtree(folder, ignore_errors=True)
    # 100 appends of one item each (the service's POST /items): the segments and files they leave
    appends = work / "coll-appends"
    build_collection(appends, run, 1000)
    coll = Collection.open(appends)
    photo = next((work / "train-photos").rglob("*.jpg")).read_bytes()
    t0 = time.perf_counter()
    for i in range(100):
        coll.add_item(photo, external_id=str(i))
    add_seconds = (time.perf_counter() - t0) / 100
    info = coll.info()
    files = sum(1 for _ in (appends / "index").iterdir())
    shutil.rmtree(appends, ignore_errors=True)
    return {"segments": segments, "items": segments * 1000, "removed": int(segments * 100), "build_seconds": built,
            "compact_seconds": seconds, "files_before": files_before, "files_after": files_after, **result,
            "after_100_add_item": {"segments": info["segments"], "index_files": files,
                                   "seconds_per_add_item": add_seconds}}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_create":
        _create_main(*sys.argv[2:6])
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--small", type=int, default=10_000)
    p.add_argument("--search-items", type=int, default=1_000_000)
    p.add_argument("--queries", type=int, default=1000)
    p.add_argument("--segments", type=int, default=1000)
    p.add_argument("--service-queries", type=int, default=300, help="timed POST /search requests (stage 4)")
    p.add_argument("--service-warmup", type=int, default=20, help="untimed POST /search requests first (stage 4)")
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: one per core)")
    p.add_argument("--work", default="/tmp/l2h-bench-collection", help="scratch folder (photographs, collections)")
    p.add_argument("--keep", action="store_true", help="keep the generated photographs")
    p.add_argument("--skip", nargs="*", default=[], choices=["create", "search", "compact", "service"])
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    result = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "command": " ".join(sys.argv)}
    try:
        run = train_hasher(work)
        if "create" not in args.skip:
            result["create"] = bench_create(work, run, args.images, args.small, args.workers)
        if "search" not in args.skip:
            result["search"] = bench_search(work, run, args.search_items, args.queries,
                                            keep="service" not in args.skip)
            print(f"search: {result['search']}", file=sys.stderr)
        if "service" not in args.skip:
            result["service"] = bench_service(work, run, args.search_items, args.service_queries, args.service_warmup)
            print(f"service: {result['service']}", file=sys.stderr)
        if "compact" not in args.skip:
            result["compact"] = bench_compact(work, run, args.segments)
            print(f"compact: {result['compact']}", file=sys.stderr)
    finally:
        shutil.rmtree(work / "coll-search", ignore_errors=True)
        if not args.keep:
            shutil.rmtree(work / "photos", ignore_errors=True)
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
