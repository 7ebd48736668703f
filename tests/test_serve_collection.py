"""The service as a live collection (issue 27.3): searches equal brute force over the committed items,
write routes exist only with an API key and need it, thumbnails come from under the collection's root
only, and the CLI and the service change one collection at the same time without losing anything."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from learn2hash.collections import Collection  # noqa: E402
from learn2hash.index import HammingIndex  # noqa: E402
from learn2hash.serve import create_app  # noqa: E402

KEY = "collection-key-0123456789"
TINY_CSQ = dict(epochs=3, batch_size=8, lr=1e-3, backbone_options={"widths": [8, 16]}, augment="flip")
SRC = str(Path(__file__).resolve().parents[1] / "src")
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": SRC + (os.pathsep + os.environ["PYTHONPATH"] if os.environ.get("PYTHONPATH") else "")}


def photo(seed: int, size: tuple[int, int] = (36, 48)) -> np.ndarray:
    """A colour "photograph": tinted noise with a bright square; the tint (seed % 3) is its class."""
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 90, size + (3,)).astype(np.uint8)
    a[..., seed % 3] += 120
    y, x = rng.integers(0, size[0] - 8), rng.integers(0, size[1] - 8)
    a[y:y + 8, x:x + 8] = 255
    return a


def jpeg(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_photos(root: Path, seeds) -> list[Path]:
    out = []
    for s in seeds:
        path = root / f"class{s % 3}" / f"{s:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(jpeg(photo(s)))
        out.append(path)
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from learn2hash.runs import train_run

    photos = tmp_path_factory.mktemp("train") / "photos"
    write_photos(photos, range(30))
    return train_run("csq", "image-folder", 16, tmp_path_factory.mktemp("runs") / "csq", params=TINY_CSQ,
                     data_params={"path": str(photos), "size": 16, "query_per_class": 2}, progress=False)


@pytest.fixture
def collection(run, tmp_path) -> Path:
    """A fresh collection of 30 photographs (seeds 100..129) under tmp_path/root."""
    write_photos(tmp_path / "root", range(100, 130))
    Collection.create(tmp_path / "coll", run.folder, tmp_path / "root")
    return tmp_path / "coll"


def query_code(run, data: bytes):
    """The code of an uploaded image file, by the library's own pipeline (not the service's)."""
    from learn2hash import images

    hasher = run.hasher()
    return hasher.encode(images.encode_image(data, hasher.image_geometry())[None])


def brute_force(run, folder: Path, data: bytes, k: int) -> list[dict]:
    """The k nearest committed items of an image (read from disk now): distance, then insertion order."""
    from learn2hash.collections import _source

    index = HammingIndex.load(folder / "index")
    ids = index.ids
    dist = query_code(run, data).distances(index.codes())[0]
    order = sorted(range(len(ids)), key=lambda i: (int(dist[i]), i))[:k]
    payloads = index.payloads(ids[order]) if order else []
    return [{"id": int(ids[i]), "distance": int(dist[i]), **_source(p)} for i, p in zip(order, payloads)]


def upload(data: bytes, name: str = "q.jpg") -> dict:
    return {"files": {"image": (name, data, "image/jpeg")}}


def bearer(token: str = KEY) -> dict:
    return {"Authorization": f"Bearer {token}"}


# --------------------------------------------------------------------------- searching
def test_search_equals_brute_force_over_the_committed_items(run, collection):
    c = TestClient(create_app(collection), raise_server_exceptions=False)
    info = c.get("/info").json()
    assert info["n_items"] == 30 and info["bits"] == 16 and info["writable"] is False and info["method"] == "csq"
    assert c.get("/health").json() == {"status": "ok", "collection": "coll", "bits": 16, "n_items": 30}
    for seed, k in ((100, 5), (7, 12), (1001, 30), (5, 1000)):
        data = jpeg(photo(seed, (40, 30)))
        r = c.post("/search", **upload(data), data={"k": str(k)})
        assert r.status_code == 200, r.text
        body = r.json()
        got = [{key: h[key] for key in ("id", "distance", "path", "external_id")} for h in body["results"]]
        assert got == brute_force(run, collection, data, k)
        assert body["code"] == "".join("1" if b else "0" for b in query_code(run, data).to_bits()[0])
    page = c.get("/items?offset=28&limit=5").json()
    assert page["total"] == 30 and [i["id"] for i in page["items"]] == [28, 29]
    assert c.get("/items/3").json() == {"id": 3, **{k: v for k, v in Collection.open(collection).item(3).items()
                                                   if k != "id"}}
    for bad, status in (("/items/30", 404), ("/items/-1", 422), ("/items/x", 422), ("/items?limit=0", 422)):
        assert c.get(bad).status_code == status, bad
    assert c.post("/search", json={"k": 3}).status_code == 415  # a collection is searched by an image
    assert c.post("/search", **upload(b"not an image")).status_code == 422


# --------------------------------------------------------------------------- keys and the write routes
def test_without_a_key_the_write_routes_are_absent(collection):
    c = TestClient(create_app(collection), raise_server_exceptions=False)
    data = jpeg(photo(3))
    assert c.post("/items", **upload(data)).status_code == 405  # GET /items exists, POST does not
    assert c.post("/items", **upload(data), headers=bearer()).status_code == 405
    assert c.delete("/items/3").status_code == 405
    spec = c.get("/openapi.json").json()
    assert set(spec["paths"]["/items"]) == {"get"} and set(spec["paths"]["/items/{item_id}"]) == {"get"}
    assert "securitySchemes" not in spec.get("components", {})
    assert len(Collection.open(collection)) == 30


def test_with_a_key_writes_need_it_and_persist(run, collection):
    c = TestClient(create_app(collection, api_key=KEY), raise_server_exceptions=False)
    data = jpeg(photo(4242))
    requests = [("GET", "/health", {}), ("GET", "/info", {}), ("GET", "/items", {}), ("GET", "/items/1", {}),
                ("GET", "/items/1/image", {}), ("POST", "/search", upload(data)), ("POST", "/items", upload(data)),
                ("DELETE", "/items/1", {}), ("GET", "/openapi.json", {}), ("GET", "/docs", {})]
    for method, url, kwargs in requests:
        for headers in ({}, bearer("wrong-key-0123456789abc"), bearer(KEY.upper()), {"Authorization": f"Basic {KEY}"}):
            r = c.request(method, url, headers=headers, **kwargs)
            assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", (method, url, headers)
    assert len(Collection.open(collection)) == 30  # nothing was added or removed without the key
    assert c.get("/").status_code == 200 and c.get("/static/collection.js").status_code == 200

    r = c.post("/items", **upload(data), data={"external_id": "shop-4242"}, headers=bearer())
    assert r.status_code == 201, r.text
    added = r.json()
    assert added == {"id": 30, "path": None, "external_id": "shop-4242", "n_items": 31}
    on_disk = Collection.open(collection)  # another reader: the item is committed
    assert len(on_disk) == 31 and on_disk.item(30) == {"id": 30, "path": None, "external_id": "shop-4242"}
    r = c.post("/search", **upload(data), data={"k": "31"}, headers=bearer())
    hits = r.json()["results"]
    assert [{k: h[k] for k in ("id", "distance", "path", "external_id")} for h in hits] == \
        brute_force(run, collection, data, 31)
    assert {"id": 30, "distance": 0} in [{"id": h["id"], "distance": h["distance"]} for h in hits]
    assert c.get("/items/30/image", headers=bearer()).status_code == 404  # an upload has no file under the root

    r = c.delete("/items/30", headers=bearer())
    assert r.status_code == 200 and r.json() == {"id": 30, "path": None, "external_id": "shop-4242", "removed": True,
                                                 "n_items": 30}
    assert c.delete("/items/30", headers=bearer()).status_code == 404
    assert c.delete("/items/999", headers=bearer()).status_code == 404
    assert len(Collection.open(collection)) == 30
    r = c.post("/search", **upload(data), data={"k": "31"}, headers=bearer())
    assert 30 not in [h["id"] for h in r.json()["results"]] and len(r.json()["results"]) == 30
    for bad in ("", "x" * 257, "tab\there", "nul\x00"):
        r = c.post("/items", **upload(data), data={"external_id": bad}, headers=bearer())
        assert r.status_code == 422 and "external_id" in r.json()["detail"], bad
    assert c.post("/items", json={"external_id": "x"}, headers=bearer()).status_code == 415
    assert c.post("/items", **upload(b"junk"), headers=bearer()).status_code == 422
    assert len(Collection.open(collection)) == 30  # refused uploads add nothing

    spec = c.get("/openapi.json", headers=bearer()).json()
    assert spec["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    assert set(spec["paths"]["/items"]) == {"get", "post"} and set(spec["paths"]["/items/{item_id}"]) == {"get",
                                                                                                           "delete"}
    for ops in spec["paths"].values():
        for op in ops.values():
            assert op["security"] == [{"apiKey": []}] and "401" in op["responses"]


def test_public_read_opens_reads_but_not_writes(collection):
    c = TestClient(create_app(collection, api_key=KEY, public_read=True), raise_server_exceptions=False)
    data = jpeg(photo(77))
    assert c.get("/info").json()["writable"] is True
    assert c.post("/search", **upload(data)).status_code == 200
    assert c.get("/items/2/image").status_code == 200
    assert c.post("/items", **upload(data)).status_code == 401
    assert c.delete("/items/2").status_code == 401
    assert c.post("/items", **upload(data), headers=bearer()).status_code == 201
    spec = c.get("/openapi.json").json()
    assert "security" not in spec["paths"]["/search"]["post"]
    assert spec["paths"]["/items"]["post"]["security"] == [{"apiKey": []}]
    assert spec["paths"]["/items/{item_id}"]["delete"]["security"] == [{"apiKey": []}]


# --------------------------------------------------------------------------- thumbnails
def test_thumbnails_come_from_under_the_root_only(run, collection, tmp_path):
    from learn2hash.collections import _payload

    root = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = photo(999, (64, 64))
    secret[:] = 7  # a flat image: its thumbnail would be recognisable
    (outside / "secret.jpg").write_bytes(jpeg(secret))
    (root / "evil.jpg").symlink_to(outside / "secret.jpg")  # a link out of the root
    (root / "linkdir").symlink_to(outside, target_is_directory=True)  # a folder link out of the root
    (root / "inner.jpg").symlink_to(root / "class0" / "0102.jpg")  # a link that stays inside: not followed either
    os.mkfifo(root / "fifo.jpg")  # must not block the service
    (root / "class1" / "truncated.jpg").write_bytes(jpeg(photo(5, (200, 300)))[:700])  # decoding fails midway
    (root / "class1" / "text.jpg").write_text("not an image")
    crafted = ["../outside/secret.jpg", str(outside / "secret.jpg"), "class0/../../outside/secret.jpg",
               "./class0/0102.jpg", "class0//0102.jpg", "class0\\..\\..\\outside\\secret.jpg", "evil.jpg",
               "linkdir/secret.jpg", "inner.jpg", "fifo.jpg", "class0", "missing.jpg", "class0/0102.jpg\x00.png", ""]
    coll = Collection.open(collection)
    codes = query_code(run, jpeg(photo(1)))
    with coll._writing() as index:  # items whose stored paths an attacker chose (a collection folder is user data)
        first = int(index.add(Codes_repeat(codes, len(crafted)), payloads=[_payload(path=p) for p in crafted])[0])
    c = TestClient(create_app(collection), raise_server_exceptions=False)
    with coll._writing() as index:  # files under the root that are no images: 404 too, never a 500
        broken = int(index.add(Codes_repeat(codes, 2), payloads=[_payload(path="class1/truncated.jpg"),
                                                                  _payload(path="class1/text.jpg")])[0])
    for item_id in (broken, broken + 1):
        r = c.get(f"/items/{item_id}/image")
        assert r.status_code == 404 and "not a readable image" in r.json()["detail"], r.text
    for i, path in enumerate(crafted):
        t0 = time.monotonic()
        r = c.get(f"/items/{first + i}/image")
        assert r.status_code == 404, (path, r.status_code)
        assert time.monotonic() - t0 < 10
        assert "regular file under the collection's root" in r.json()["detail"], (path, r.json())
    # a real item: a JPEG thumbnail of its file, at most 256 pixels a side, the file's colours
    item = coll.item(2)
    r = c.get("/items/2/image")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    thumb = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), dtype=float)
    original = np.asarray(Image.open(root / item["path"]).convert("RGB"), dtype=float)
    assert thumb.shape == original.shape  # 48 x 36 is under 256: kept at its size
    assert np.abs(thumb.mean(axis=(0, 1)) - original.mean(axis=(0, 1))).max() < 8
    # the thumbnail cache follows changes of the file
    big = np.zeros((600, 300, 3), np.uint8)
    big[:, :, 2] = 200
    (root / item["path"]).write_bytes(jpeg(big))
    r = c.get("/items/2/image")
    thumb = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    assert thumb.shape == (256, 128, 3) and thumb[..., 2].mean() > 150


def Codes_repeat(codes, n: int):
    from learn2hash.codes import Codes

    return Codes.from_packed(np.repeat(np.asarray(codes.packed), n, axis=0), codes.bits)


def test_a_root_moved_away_is_404_and_back_is_200(collection, tmp_path):
    c = TestClient(create_app(collection), raise_server_exceptions=False)
    assert c.get("/items/0/image").status_code == 200
    shutil.move(tmp_path / "root", tmp_path / "elsewhere")
    r = c.get("/items/1/image")
    assert r.status_code == 404 and "root" in r.json()["detail"]
    shutil.move(tmp_path / "elsewhere", tmp_path / "root")
    assert c.get("/items/1/image").status_code == 200


# --------------------------------------------------------------------------- the CLI and the service, together
def _start_server(args: list[str], log_path: Path, port: int) -> subprocess.Popen:
    from _live import wait_until_serving

    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "learn2hash", "serve", *args, "--port", str(port)],
                                stdout=subprocess.DEVNULL, stderr=log, env=ENV)
    wait_until_serving(proc, f"http://127.0.0.1:{port}", log_path, timeout=120, headers=bearer())
    return proc


def _multipart(fields: dict[str, str], data: bytes) -> tuple[bytes, str]:
    boundary = "l2hboundary"
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n".encode()
             for k, v in fields.items()]
    parts.append(f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"u.jpg\"\r\n"
                 f"Content-Type: image/jpeg\r\n\r\n".encode() + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _call(base: str, method: str, path: str, body: bytes | None = None, ctype: str | None = None) -> tuple[int, dict]:
    headers = {**bearer(), **({"Content-Type": ctype} if ctype else {})}
    req = urllib.request.Request(base + path, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _raw_png(width: int, height: int) -> bytes:
    """A small PNG file that declares ``width`` x ``height`` grey pixels (a decompression bomb when large)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"".join(b"\x00" + bytes(width) for _ in range(4)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


@pytest.mark.slow
def test_cli_collection_add_and_service_post_items_at_once_lose_nothing(run, collection, tmp_path):
    """`learn2hash collection add` (4 runs, 3 new files each) while `learn2hash serve --collection` takes
    POST /items (and removes every third of them again) from 3 clients and answers searches, until the CLI is
    done: every item of both writers is there once, the removed ones are gone, every search during the writes
    names only items at their true distance, in order, and every search afterwards equals brute force over
    the committed items. The server's stderr holds its one line (no warning), decompression bombs included."""
    from _live import free_port, stop_process

    from learn2hash.collections import _source

    root = tmp_path / "root"
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "serve.log"
    proc = _start_server(["--collection", str(collection), "--api-key-file", str(key_file)], log_path, port)
    lists = []
    for b in range(4):
        files = write_photos(root, range(200 + 3 * b, 203 + 3 * b))
        lists.append(root / f"batch{b}.txt")  # a list file's paths are relative to its folder
        lists[-1].write_text("".join(f"{p.relative_to(root).as_posix()}\n" for p in files))
    cli_done = threading.Event()
    searched: list[tuple[bytes, list[dict]]] = []
    kept: list[str] = []
    overlap: list[str] = []  # uploads added while the CLI was running
    errors: list[str] = []
    lock = threading.Lock()

    def client(c: int) -> None:
        for i in range(40):
            if cli_done.is_set() and i >= 4:
                return
            name = f"upload-{c}-{i}"
            body, ctype = _multipart({"external_id": name}, jpeg(photo(500 + 50 * c + i)))
            status, added = _call(base, "POST", "/items", body, ctype)
            if status != 201:
                errors.append(f"POST /items {name}: {status} {added}")
                continue
            if not cli_done.is_set():
                overlap.append(name)
            if i % 3 == 2:  # remove every third again
                status, removed = _call(base, "DELETE", f"/items/{added['id']}")
                if status != 200 or removed["external_id"] != name:
                    errors.append(f"DELETE {added['id']}: {status} {removed}")
            else:
                with lock:
                    kept.append(name)
            q = jpeg(photo(c * 7 + i))
            body, ctype = _multipart({"k": "60"}, q)
            status, result = _call(base, "POST", "/search", body, ctype)
            if status != 200:
                errors.append(f"search: {status} {result}")
            else:
                with lock:
                    searched.append((q, result["results"]))
            time.sleep(0.1)

    try:
        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(client, c) for c in range(3)]
            try:
                for listing in lists:
                    done = subprocess.run([sys.executable, "-m", "learn2hash", "collection", "add", str(collection),
                                           "--images", str(listing), "--no-progress"],
                                          capture_output=True, text=True, env=ENV, timeout=300)
                    assert done.returncode == 0, done.stderr
            finally:
                cli_done.set()
            for f in futures:
                f.result(timeout=300)
        assert not errors, errors
        # decompression bombs and a large image: refused or served, and never a warning on stderr
        for data, status in ((_raw_png(12_000, 12_000), 413), (_raw_png(20_000, 20_000), 413),
                             (jpeg(np.zeros((1500, 1500, 3), np.uint8)), 200)):
            body, ctype = _multipart({}, data)
            assert _call(base, "POST", "/search", body, ctype)[0] == status

        index = HammingIndex.load(collection / "index")
        sources = [_source(p) for p in index.payloads(index.ids)]
        paths = [s["path"] for s in sources if s["path"] is not None]
        externals = [s["external_id"] for s in sources if s["path"] is None]
        expected_paths = [f"class{s % 3}/{s:04d}.jpg" for s in list(range(100, 130)) + list(range(200, 212))]
        assert sorted(paths) == sorted(expected_paths)  # each once
        assert sorted(externals) == sorted(kept) and len(overlap) >= 6, (len(kept), len(overlap))
        print(f"{len(overlap)} uploads while the CLI added, {len(kept)} kept, {len(searched)} searches")
        assert len(index) == 42 + len(kept)
        # during the writes: every hit an item at its true distance, in order (an item's code never changes)
        codes_of = dict(zip(index.ids.tolist(), index.codes().to_bits().astype(np.int8)))
        assert len(searched) >= 12
        for q, hits in searched:
            bits = query_code(run, q).to_bits()[0].astype(np.int8)
            d = [h["distance"] for h in hits]
            assert d == sorted(d)
            for h in hits:
                if h["id"] in codes_of:
                    assert int((codes_of[h["id"]] != bits).sum()) == h["distance"]
        # afterwards: equal to brute force over what is committed
        for seed in (1, 2, 3, 200, 501):
            q = jpeg(photo(seed))
            body, ctype = _multipart({"k": "100"}, q)
            status, result = _call(base, "POST", "/search", body, ctype)
            assert status == 200
            got = [{k: h[k] for k in ("id", "distance", "path", "external_id")} for h in result["results"]]
            assert got == brute_force(run, collection, q, 100)
    finally:
        stop_process(proc)
    lines = log_path.read_text().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("serving collection"), lines


def test_cli_serve_collection_refusals(run, collection, tmp_path, capsys):
    from learn2hash.cli import main

    assert main(["serve", "--collection", str(tmp_path / "nowhere")]) == 2
    assert "not a collection" in capsys.readouterr().err
    with pytest.raises(SystemExit) as err:
        main(["serve", "--collection", str(collection), "--run", str(run.folder)])
    assert err.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    # a collection whose hasher changed is refused with one line
    changed = tmp_path / "changed-run"
    shutil.copytree(run.folder, changed)
    Collection.create(tmp_path / "c2", changed, tmp_path / "root")
    hasher_json = changed / "hasher" / "hasher.json"
    hasher_json.write_text(hasher_json.read_text() + " ")
    assert main(["serve", "--collection", str(tmp_path / "c2")]) == 2
    err = capsys.readouterr().err
    assert "has changed" in err and len(err.strip().splitlines()) == 1
