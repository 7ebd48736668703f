"""The search service: results equal a brute-force search, every bad request is a 4xx with a
message (never a 500), and the service keeps answering afterwards — in process (TestClient) and
over a real socket (uvicorn in a thread)."""

from __future__ import annotations

import io
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("httpx")
from _live import free_port, stop_process  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from learn2hash.runs import Run, train_run  # noqa: E402
from learn2hash.serve import Limits, SearchService, create_app  # noqa: E402
from learn2hash.serve.app import is_loopback  # noqa: E402

UPLOAD_LIMIT = 40_000


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Run:
    return train_run("itq", "digits", 16, tmp_path_factory.mktemp("serve") / "itq16", progress=False)


@pytest.fixture(scope="module")
def feature_run(tmp_path_factory) -> Run:
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("serve-features")
    d = load_digits()
    np.savez(folder / "digits.npz", x=d.data.astype(np.float32), labels=d.target)
    return train_run("lsh", "npz", 16, folder / "run", data_params={"path": str(folder / "digits.npz"),
                                                                     "query_size": 50, "train_size": 300},
                     progress=False)


@pytest.fixture(scope="module")
def service(image_run) -> SearchService:
    return SearchService(image_run.folder, Limits(max_upload_bytes=UPLOAD_LIMIT, max_image_pixels=1_000_000, max_k=5000))


@pytest.fixture(scope="module")
def client(service) -> TestClient:
    return TestClient(create_app(service), raise_server_exceptions=False)


@pytest.fixture(scope="module")
def feature_client(feature_run) -> TestClient:
    return TestClient(create_app(feature_run.folder), raise_server_exceptions=False)


def brute_force(codes_q, codes_db, k):
    """Ids and distances of the k nearest database codes, ties by database position."""
    q = codes_q.to_bits().astype(int)[0]
    db = codes_db.to_bits().astype(int)
    d = (db != q).sum(axis=1)
    order = sorted(range(len(d)), key=lambda i: (d[i], i))[:k]
    return order, [int(d[i]) for i in order]


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def assert_alive(client: TestClient) -> None:
    r = client.get("/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    r = client.post("/search", json={"query_index": 1, "k": 3})
    assert r.status_code == 200 and len(r.json()["ids"]) == 3


# --------------------------------------------------------------------------- answers
def test_health_info_and_docs(client, image_run):
    h = client.get("/health").json()
    assert h == {"status": "ok", "run": "itq16", "bits": 16, "n_database": 1697}
    info = client.get("/info").json()
    assert info["method"] == "itq" and info["kind"] == "image" and info["item_shape"] == [1, 8, 8]
    assert info["class_names"] == [str(i) for i in range(10)]
    assert info["accepts"] == ["query_index", "image"] and info["n_query"] == 100
    assert "built in memory" in info["index"]
    spec = client.get("/openapi.json").json()
    assert {"/search", "/items/{item_id}/image", "/queries/{i}/image", "/health"} <= set(spec["paths"])
    assert set(spec["paths"]["/search"]["post"]["requestBody"]["content"]) == {"multipart/form-data",
                                                                              "application/json"}
    assert client.get("/docs").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "app.js" in page.text
    assert client.get("/static/app.js").status_code == 200


def test_search_by_query_index_equals_brute_force(client, image_run):
    ds = image_run.dataset()
    for i, k in ((0, 10), (57, 1), (99, 1697)):
        r = client.post("/search", json={"query_index": i, "k": k})
        assert r.status_code == 200, r.text
        body = r.json()
        ids, dist = brute_force(image_run.codes("query")[[i]], image_run.codes("database"), k)
        assert body["ids"] == ids and body["distances"] == dist
        assert body["labels"] == [[str(int(ds.database.labels[j].argmax()))] for j in ids]
        assert body["relevant"] == [bool(np.any(ds.query.labels[i] & ds.database.labels[j])) for j in ids]
        assert body["query"] == {"kind": "query_index", "index": i, "labels": [str(int(ds.query.labels[i].argmax()))]}
        signs = image_run.codes("query")[[i]].to_signs()[0]
        assert body["code"] == "".join("1" if v > 0 else "0" for v in signs)


def test_search_by_uploaded_image_equals_brute_force(client, image_run):
    ds = image_run.dataset()
    item = np.asarray(ds.query.x[5])  # uint8 [1, 8, 8]
    r = client.post("/search", files={"image": ("q.png", png_bytes(item[0]), "image/png")}, data={"k": "7"})
    assert r.status_code == 200, r.text
    ids, dist = brute_force(image_run.hasher().encode(item[None]), image_run.codes("database"), 7)
    assert r.json()["ids"] == ids and r.json()["distances"] == dist
    assert "relevant" not in r.json()
    # a larger colour JPEG is converted to gray and centre-cropped / resized to 8x8
    big = np.zeros((64, 96, 3), dtype=np.uint8)
    big[:, 16:80] = np.kron(item[0], np.ones((8, 8), dtype=np.uint8))[:, :, None]
    buf = io.BytesIO()
    Image.fromarray(big).save(buf, format="JPEG", quality=95)
    r = client.post("/search", files={"image": ("q.jpg", buf.getvalue(), "image/jpeg")})
    assert r.status_code == 200 and len(r.json()["ids"]) == 10
    assert np.all(np.diff(r.json()["distances"]) >= 0)


def test_item_and_query_images_are_the_items(client, image_run):
    ds = image_run.dataset()
    for url, item in (("/items/1234/image", ds.database.x[1234]), ("/queries/3/image", ds.query.x[3])):
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        img = np.asarray(Image.open(io.BytesIO(r.content)))
        assert np.array_equal(img, np.asarray(item)[0])


def test_feature_run_search_by_features_equals_brute_force(feature_client, feature_run):
    ds = feature_run.dataset()
    x = np.asarray(ds.query.x[4], dtype=np.float32)
    r = feature_client.post("/search", json={"features": x.tolist(), "k": 5})
    assert r.status_code == 200, r.text
    ids, dist = brute_force(feature_run.hasher().encode(x[None]), feature_run.codes("database"), 5)
    assert r.json()["ids"] == ids and r.json()["distances"] == dist
    info = feature_client.get("/info").json()
    assert info["accepts"] == ["query_index", "features"] and info["has_images"] is False


def test_saved_index_is_loaded_and_must_match_the_database(image_run, tmp_path):
    import shutil

    from learn2hash import HammingIndex
    from learn2hash.errors import Learn2HashError

    folder = tmp_path / "run"
    shutil.copytree(image_run.folder, folder)
    index = HammingIndex(16)
    index.add(image_run.codes("database"))
    index.save(folder / "index")
    svc = SearchService(folder)
    assert svc.info()["index"].startswith("loaded from")
    got = svc.search(6, query_index=9)
    ids, dist = brute_force(image_run.codes("query")[[9]], image_run.codes("database"), 6)
    assert got["ids"] == ids and got["distances"] == dist
    shutil.rmtree(folder / "index")
    partial = HammingIndex(16)
    partial.add(image_run.codes("database")[:100])
    partial.save(folder / "index")
    with pytest.raises(Learn2HashError, match="rebuild it"):
        SearchService(folder)


# --------------------------------------------------------------------------- refusals
def _corrupt_png() -> bytes:
    good = png_bytes(np.zeros((8, 8), dtype=np.uint8))
    return good[:30] + bytes(40) + good[70:]


def _bomb_png() -> bytes:
    """A tiny file that declares 2000 x 2000 pixels (over the service's 1,000,000-pixel limit)."""
    return png_bytes(np.zeros((2000, 2000), dtype=np.uint8))


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _raw_png(width: int, height: int, extra: bytes = b"") -> bytes:
    """A small PNG file that declares ``width`` x ``height`` grey pixels (its data covers a few rows only)."""
    import struct
    import zlib

    rows = zlib.compress(b"".join(b"\x00" + bytes(width) for _ in range(min(height, 4))))
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)) + extra
            + _png_chunk(b"IDAT", rows) + _png_chunk(b"IEND", b""))


def _text_bomb_png() -> bytes:
    """An 8 x 8 PNG with a compressed text chunk that inflates to 8 MB (from about 8 KB)."""
    import zlib

    return _raw_png(8, 8, _png_chunk(b"zTXt", b"comment\x00\x00" + zlib.compress(b"a" * (8 << 20), 9)))


def _tiff() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(buf, format="TIFF")
    return buf.getvalue()


BAD_IMAGE_REQUESTS = [
    ("corrupt image", {"files": {"image": ("x.png", _corrupt_png(), "image/png")}}, 422, "not a readable image"),
    ("random bytes", {"files": {"image": ("x.png", bytes(range(256)) * 4, "image/png")}}, 422, "not a readable image"),
    ("empty file", {"files": {"image": ("x.png", b"", "image/png")}}, 422, "empty"),
    ("too large upload", {"files": {"image": ("x.png", bytes(UPLOAD_LIMIT + 1), "image/png")}}, 413, "limit"),
    ("body over the limit", {"files": {"image": ("x.png", bytes(UPLOAD_LIMIT + 100_000), "image/png")}}, 413,
     "over the limit"),
    ("too many pixels", {"files": {"image": ("x.png", _bomb_png(), "image/png")}}, 413, "pixels"),
    ("decompression bomb: 400 M pixels declared", {"files": {"image": ("x.png", _raw_png(20_000, 20_000), "image/png")}},
     413, "decompression bomb"),
    ("decompression bomb: 144 M pixels declared", {"files": {"image": ("x.png", _raw_png(12_000, 12_000), "image/png")}},
     413, "pixels"),
    ("decompression bomb: compressed text chunk", {"files": {"image": ("x.png", _text_bomb_png(), "image/png")}}, 413,
     "decompression bomb"),
    ("unsupported format", {"files": {"image": ("x.tif", _tiff(), "image/tiff")}}, 415, "unsupported"),
    ("TIFF declared as PNG", {"files": {"image": ("x.png", _tiff(), "image/png")}}, 415, "TIFF"),
    ("text upload", {"files": {"image": ("x.txt", b"hello", "text/plain")}}, 415, "unsupported upload type"),
    ("no image field", {"files": {"picture": ("x.png", b"x", "image/png")}}, 422, "'image'"),
    ("k not a number", {"files": {"image": ("x.png", b"x", "image/png")}, "data": {"k": "ten"}}, 422, "k must be"),
]

BAD_JSON_REQUESTS = [
    ("k = 0", {"query_index": 0, "k": 0}, 422, "k must be between 1 and 1697"),
    ("k < 0", {"query_index": 0, "k": -3}, 422, "k must be between"),
    ("k > database", {"query_index": 0, "k": 1698}, 422, "the database holds 1697"),
    ("k not an integer", {"query_index": 0, "k": 2.5}, 422, "k must be an integer"),
    ("k boolean", {"query_index": 0, "k": True}, 422, "k must be an integer"),
    ("query index out of range", {"query_index": 100}, 422, "out of range"),
    ("negative query index", {"query_index": -1}, 422, "out of range"),
    ("query index a string", {"query_index": "3"}, 422, "must be an integer"),
    ("no query", {"k": 5}, 422, "exactly one query"),
    ("two queries", {"query_index": 1, "features": [0.0] * 64}, 422, "exactly one query"),
    ("features on an image run", {"features": [0.0] * 64}, 422, "upload an image"),
    ("unknown field", {"query_index": 1, "kk": 3}, 422, "unknown field"),
]


@pytest.mark.parametrize("name,kwargs,status,message", BAD_IMAGE_REQUESTS, ids=[b[0] for b in BAD_IMAGE_REQUESTS])
@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # `serve` silences it (tested below)
def test_bad_uploads_are_4xx_with_a_message(client, name, kwargs, status, message):
    r = client.post("/search", **kwargs)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert_alive(client)


@pytest.mark.parametrize("name,body,status,message", BAD_JSON_REQUESTS, ids=[b[0] for b in BAD_JSON_REQUESTS])
def test_bad_json_queries_are_4xx_with_a_message(client, name, body, status, message):
    r = client.post("/search", json=body)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]
    assert_alive(client)


def test_bad_bodies_and_routes(client):
    cases = [
        (client.post("/search", content=b"{not json", headers={"Content-Type": "application/json"}), 422, "not valid JSON"),
        (client.post("/search", content=b"[1, 2]", headers={"Content-Type": "application/json"}), 422, "object"),
        (client.post("/search", content=b"k=3", headers={"Content-Type": "text/plain"}), 415, "multipart/form-data"),
        (client.post("/search", content=b'{"features": [NaN]}', headers={"Content-Type": "application/json"}),
         422, "upload an image"),
        (client.get("/items/1697/image"), 404, "out of range"),
        (client.get("/items/-1/image"), 404, "out of range"),
        (client.get("/queries/100/image"), 404, "out of range"),
        (client.get("/items/abc/image"), 422, "item_id"),
        (client.get("/queries?offset=0&limit=0"), 422, "limit"),
        (client.get("/nowhere"), 404, "Not Found"),
    ]
    for r, status, message in cases:
        assert r.status_code == status, r.text
        assert message in r.json()["detail"], r.json()
    assert_alive(client)


def test_streamed_body_over_the_limit_is_413(client):
    """A chunked upload (no Content-Length) is cut off once it passes the limit."""
    boundary = "b0undary"
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode()

    def chunks():
        yield head
        for _ in range(20):
            yield bytes(10_000)
        yield f"\r\n--{boundary}--\r\n".encode()

    r = client.post("/search", content=chunks(), headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert r.status_code == 413 and "over the limit" in r.json()["detail"]
    assert_alive(client)


def test_feature_run_refusals(feature_client):
    cases = [
        ({"features": [0.0] * 63}, "features has 63 values, this run expects 64"),
        ({"features": [0.0] * 65}, "expects 64"),
        ({"features": "zeros"}, "list of 64 numbers"),
        ({"features": [0.0] * 63 + ["x"]}, "list of 64 numbers"),
        ({"features": [1e300] * 64}, "finite"),
    ]
    for body, message in cases:
        r = feature_client.post("/search", json=body)
        assert r.status_code == 422 and message in r.json()["detail"], r.text
    nan = "[" + ", ".join(["0.0"] * 63 + ["NaN"]) + "]"
    r = feature_client.post("/search", content=f'{{"features": {nan}}}'.encode(),
                            headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and "finite" in r.json()["detail"], r.text
    r = feature_client.post("/search", files={"image": ("x.png", png_bytes(np.zeros((8, 8), np.uint8)), "image/png")})
    assert r.status_code == 422 and "not images" in r.json()["detail"]
    r = feature_client.get("/items/0/image")
    assert r.status_code == 404 and "not images" in r.json()["detail"]
    assert feature_client.get("/health").status_code == 200


# --------------------------------------------------------------------------- a real socket
def test_live_server_refuses_oversized_upload_and_keeps_serving(service):
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        boundary = "xyz"
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.png\"\r\n"
                f"Content-Type: image/png\r\n\r\n").encode() + bytes(3 * UPLOAD_LIMIT) + f"\r\n--{boundary}--\r\n".encode()
        req = urllib.request.Request(f"{base}/search", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code == 413 and "over the limit" in json.loads(err.value.read())["detail"]

        def search(i: int) -> list[int]:
            req = urllib.request.Request(f"{base}/search", data=json.dumps({"query_index": i % 100, "k": 5}).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=10) as resp:
                assert resp.status == 200
                return json.loads(resp.read())["distances"]

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(search, range(40)))
        assert all(len(d) == 5 and d == sorted(d) for d in results)
        with urllib.request.urlopen(f"{base}/health", timeout=10) as resp:
            assert json.loads(resp.read())["status"] == "ok"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_loopback_detection():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")


def test_cli_serve_refuses_bad_arguments(image_run, tmp_path, capsys):
    from learn2hash.cli import main

    assert main(["serve", "--run", str(tmp_path / "missing")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    assert main(["serve", "--run", str(image_run.folder), "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["serve", "--run", str(image_run.folder), "--max-k", "0"]) == 2
    capsys.readouterr()
    assert main(["serve", "--run", str(image_run.folder), "--max-decode-mb", "0"]) == 2
    assert "--max-decode-mb" in capsys.readouterr().err
    for host in ("999.1.1.1", "192.0.2.55", "no such host.invalid"):  # not an address of this machine, or no name
        assert main(["serve", "--run", str(image_run.folder), "--host", host, "--port", "0"]) == 2
        err = capsys.readouterr().err
        assert host in err and len(err.strip().splitlines()) == 1, err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", "--run", str(image_run.folder), "--port", str(busy.getsockname()[1])]) == 2
        err = capsys.readouterr().err
        assert "cannot listen on 127.0.0.1" in err and len(err.strip().splitlines()) == 1, err
    for bad in ("bad host!", "example.org:8000", "a*.example.org", ""):
        assert main(["serve", "--run", str(image_run.folder), "--allowed-host", bad]) == 2
        err = capsys.readouterr().err
        assert "allowed hosts must be" in err and len(err.strip().splitlines()) == 1, err


# --------------------------------------------------------------------------- parsing limits (issue 18.7)
def _nested(depth: int, inner: str = "0") -> str:
    return "[" * depth + inner + "]" * depth


def test_deeply_nested_json_is_4xx(client):
    for depth in (1_000, 100_000):
        for body in (_nested(depth), f'{{"query_index": {_nested(depth)}}}', f'{{"k": {_nested(depth)}}}',
                     '{"a": ' * depth + "0" + "}" * depth):
            r = client.post("/search", content=body.encode(), headers={"Content-Type": "application/json"})
            assert 400 <= r.status_code < 500, (depth, body[:20], r.status_code, r.text[:200])
            assert isinstance(r.json()["detail"], str)
    assert_alive(client)


def test_huge_numbers_are_4xx(client, feature_client):
    huge = "9" * 400
    for c, body in ((client, f'{{"query_index": {huge}}}'), (client, f'{{"query_index": 0, "k": {huge}}}'),
                    (client, f'{{"query_index": -{huge}}}'), (client, '{"query_index": 1e400}'),
                    (client, f'{{"query_index": {"9" * 5000}}}'),
                    (feature_client, '{"features": [' + ", ".join(["0"] * 63 + [huge]) + "]}"),
                    (feature_client, '{"features": [' + ", ".join(["0"] * 63 + ["-" + huge]) + "]}"),
                    (feature_client, '{"features": [' + ", ".join(["0"] * 63 + ["1e400"]) + "]}")):
        r = c.post("/search", content=body.encode(), headers={"Content-Type": "application/json"})
        assert r.status_code == 422, (body[:40], r.status_code, r.text[:200])
        assert len(r.json()["detail"]) < 1000
    r = feature_client.post("/search", files={"image": ("x.png", b"x", "image/png")}, data={"k": huge})
    assert r.status_code == 422
    assert_alive(client)


def test_null_fields_are_refused(client):
    for body in ({"query_index": 1, "k": None}, {"query_index": 1, "features": None}):
        r = client.post("/search", json=body)
        assert r.status_code == 422 and "null" in r.json()["detail"], r.text


# --------------------------------------------------------------------------- bounded decoding (issues 18.10, 28.4)
def test_decoding_lanes_follow_the_memory_budget():
    from learn2hash.serve.service import DECODE_BYTES_PER_PIXEL, MAX_DECODE_SLOTS

    # the defaults: 256 MiB; a quarter for images of up to 1 M pixels (12 MB each: 5 at once), the rest for
    # the others, where one maximum-size image (25 M pixels, 300 MB) is already over budget: 1 at a time
    d = Limits()
    assert (d.max_decode_bytes, d.small_image_pixels, d.max_image_pixels) == (256 << 20, 1_000_000, 25_000_000)
    assert d.small_decode_slots == (64 << 20) // (1_000_000 * DECODE_BYTES_PER_PIXEL) == 5
    assert d.decode_slots == 1
    per = DECODE_BYTES_PER_PIXEL
    two_large = Limits(max_image_pixels=100_000, small_image_pixels=10_000,
                       max_decode_bytes=int(2 * 100_000 * per / 0.75) + 4)
    # 3,200,004 bytes: three quarters hold two images of 1.2 MB, a quarter (800,001) six of 120,000 bytes
    assert two_large.decode_slots == 2 and two_large.small_decode_slots == 6
    assert Limits(max_image_pixels=100_000, small_image_pixels=10_000, max_decode_bytes=100).decode_slots == 1
    assert Limits(max_image_pixels=100, small_image_pixels=1, max_decode_bytes=1 << 40).small_decode_slots \
        == MAX_DECODE_SLOTS
    # every image small: one lane with the whole budget
    one = Limits(max_image_pixels=1_000, small_image_pixels=1_000, max_decode_bytes=3 * 1_000 * per)
    assert not one.split_lanes and one.decode_slots == 3 and one.small_decode_slots == 0


def _counting_decoder(monkeypatch, hold_large: threading.Event | None = None, large_from: int = 10**12):
    """Wrap the pipeline's encode_image: count concurrent decodes per lane and the threads they run on; images
    of at least ``large_from`` pixels wait for ``hold_large``."""
    from learn2hash import images

    original = images.encode_image
    lock = threading.Lock()
    stats = {"active": {}, "peak": {}, "threads": {}}

    def counting(source, geom, what=None):
        lane = threading.current_thread().name.rsplit("_", 1)[0]
        with lock:
            stats["active"][lane] = stats["active"].get(lane, 0) + 1
            stats["peak"][lane] = max(stats["peak"].get(lane, 0), stats["active"][lane])
            stats["threads"].setdefault(lane, set()).add(threading.get_ident())
        try:
            if hold_large is not None and source.width * source.height >= large_from:
                assert hold_large.wait(30), "the large decodes were never released"
            time.sleep(0.02)
            return original(source, geom, what)
        finally:
            with lock:
                stats["active"][lane] -= 1

    monkeypatch.setattr(images, "encode_image", counting)
    return stats


def test_concurrent_image_decoding_is_bounded_per_lane(image_run, monkeypatch):
    from learn2hash.serve.service import DECODE_BYTES_PER_PIXEL

    per = DECODE_BYTES_PER_PIXEL
    limits = Limits(max_image_pixels=1_000_000, small_image_pixels=10_000,
                    max_decode_bytes=int(2 * 1_000_000 * per / 0.75) + 4)
    assert limits.decode_slots == 2
    from learn2hash import images

    svc = SearchService(image_run.folder, limits)
    item = np.asarray(image_run.dataset().query.x[2])[0]
    large = png_bytes(np.kron(item, np.ones((20, 20), dtype=np.uint8)))  # 160 x 160 = 25,600 pixels: large lane
    x = images.encode_image(large, images.geometry_for(image_run.hasher(), (1, 8, 8)))
    expected = brute_force(image_run.hasher().encode(x[None]), image_run.codes("database"), 4)
    stats = _counting_decoder(monkeypatch)
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: svc.search(4, image=large), range(16)))
    assert stats["peak"] == {"learn2hash-decode": 2}
    # and only the lane's two threads ever decode (each thread that decodes a large image keeps its own arena)
    assert len(stats["threads"]["learn2hash-decode"]) == 2
    assert all([r["ids"], r["distances"]] == list(expected) for r in results)
    # a refused upload gives its slot back
    with pytest.raises(Exception, match="not a readable image"):
        svc.search(4, image=b"not an image")
    assert svc.search(4, image=large)["ids"] == results[0]["ids"]


def test_small_uploads_never_wait_behind_large_ones(image_run, monkeypatch):
    """Every large-lane slot is taken and more large uploads queue (their decoding held until the end): small
    uploads are decoded meanwhile, in their own lane, and answer what brute force says."""
    limits = Limits(max_image_pixels=1_000_000, small_image_pixels=10_000, max_decode_bytes=1)
    assert limits.decode_slots == 1 and limits.small_decode_slots == 1
    svc = SearchService(image_run.folder, limits)
    release = threading.Event()
    stats = _counting_decoder(monkeypatch, hold_large=release, large_from=10_001)
    ds = image_run.dataset()
    big = png_bytes(np.kron(np.asarray(ds.query.x[0])[0], np.ones((20, 20), dtype=np.uint8)))
    pool = ThreadPoolExecutor(4)
    try:
        pending = [pool.submit(svc.search, 3, image=big) for _ in range(4)]
        deadline = time.monotonic() + 10
        while stats["active"].get("learn2hash-decode", 0) < 1:
            assert time.monotonic() < deadline, "no large upload started decoding"
            time.sleep(0.01)
        for i in range(5):
            item = np.asarray(ds.query.x[10 + i])
            got = svc.search(5, image=png_bytes(item[0]))  # 8 x 8 pixels: the small lane
            ids, dist = brute_force(image_run.hasher().encode(item[None]), image_run.codes("database"), 5)
            assert got["ids"] == ids and got["distances"] == dist
        assert not any(f.done() for f in pending), "the large uploads were not held"
        assert stats["active"]["learn2hash-decode"] == 1  # one slot: the other three large ones queue
    finally:
        release.set()
        results = [f.result(timeout=30) for f in pending]
        pool.shutdown()
    assert stats["peak"] == {"learn2hash-decode": 1, "learn2hash-decode-small": 1}
    assert all(r["ids"] == results[0]["ids"] for r in results)


# --------------------------------------------------------------------------- disconnects and Host (issue 18.12)
def _asgi_call(app, scope_headers, messages):
    """Run one request through the ASGI app; returns (messages sent, exception raised or None)."""
    import asyncio

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/search", "raw_path": b"/search", "query_string": b"", "root_path": "",
             "headers": [(b"host", b"127.0.0.1:8000")] + scope_headers, "client": ("127.0.0.1", 50000),
             "server": ("127.0.0.1", 8000)}
    pending = list(messages)

    async def receive():
        if pending:
            return pending.pop(0)
        await asyncio.sleep(0)
        return {"type": "http.disconnect"}

    sent = []

    async def send(message):
        sent.append(message)

    try:
        asyncio.run(app(scope, receive, send))
    except Exception as exc:  # noqa: BLE001 - the test inspects what escaped
        return sent, exc
    return sent, None


@pytest.mark.parametrize("kind", ["multipart", "json"])
def test_client_disconnect_mid_body_is_one_log_line(service, caplog, kind):
    import logging

    if kind == "multipart":
        headers = [(b"content-type", b"multipart/form-data; boundary=b0"), (b"content-length", b"30000")]
        first = (b'--b0\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
                 b"Content-Type: image/png\r\n\r\n" + bytes(1000))
    else:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"30000")]
        first = b'{"query_index": 1, "k": 3, "pad": "' + b"x" * 1000
    app = create_app(service)
    with caplog.at_level(logging.INFO):
        sent, raised = _asgi_call(app, headers, [{"type": "http.request", "body": first, "more_body": True},
                                                 {"type": "http.disconnect"}])
    assert raised is None, f"{type(raised).__name__} escaped the app"
    records = [r for r in caplog.records if r.name.startswith("learn2hash")]
    assert len(records) == 1, [r.getMessage() for r in caplog.records]
    assert records[0].exc_info is None and "disconnected" in records[0].getMessage()
    assert "/search" in records[0].getMessage() and "\n" not in records[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)


def test_host_header_must_be_one_the_service_serves(service):
    from learn2hash.serve.app import default_allowed_hosts

    app = create_app(service, allowed_hosts=["127.0.0.1", "localhost", "search.example.test"])
    with TestClient(app, base_url="http://127.0.0.1:8000", raise_server_exceptions=False) as c:
        assert c.get("/health").status_code == 200
        for host in ("localhost:8000", "search.example.test", "SEARCH.example.test:80", "127.0.0.1"):
            assert c.get("/health", headers={"Host": host}).status_code == 200, host
        for host in ("evil.example", "127.0.0.1.evil.example", "search.example.test.evil", "", "[::1]:8000"):
            r = c.get("/health", headers={"Host": host})
            assert r.status_code == 400 and "host" in r.json()["detail"].lower(), (host, r.text)
            r = c.post("/search", json={"query_index": 1}, headers={"Host": host})
            assert r.status_code == 400, host
    wildcard = create_app(service, allowed_hosts=["*.example.test"])
    with TestClient(wildcard, base_url="http://a.example.test", raise_server_exceptions=False) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/health", headers={"Host": "example.org"}).status_code == 400
    # the defaults: the loopback names, plus the address bound when it is a specific one
    assert set(default_allowed_hosts("127.0.0.1")) == {"127.0.0.1", "localhost", "::1"}
    assert set(default_allowed_hosts("::1")) == {"127.0.0.1", "localhost", "::1"}
    assert set(default_allowed_hosts("192.168.1.4")) == {"127.0.0.1", "localhost", "::1", "192.168.1.4"}
    assert set(default_allowed_hosts("0.0.0.0")) == {"127.0.0.1", "localhost", "::1"}
    assert set(default_allowed_hosts("127.0.0.1", ["Api.Example.test"])) == {"127.0.0.1", "localhost", "::1",
                                                                              "api.example.test"}


@pytest.mark.slow
def test_cli_server_keeps_connection_refuses_foreign_hosts_and_logs_disconnects(image_run, tmp_path):
    """`learn2hash serve` as a process: a kept-alive connection survives refused bodies, a foreign Host is
    refused, --allowed-host adds a name, and a client that disconnects mid-body costs one line of log."""
    import http.client
    import os
    import subprocess
    import sys

    port = free_port()
    log_path = tmp_path / "serve.log"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    with open(log_path, "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "learn2hash", "serve", "--run", str(image_run.folder),
                                 "--port", str(port), "--allowed-host", "search.example.test"],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "server did not start"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        conn.request("GET", "/health")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read()
        sock = conn.sock
        bad_bodies = [_nested(100_000), '{"query_index": ' + "9" * 400 + "}", '{"k": ' + "9" * 5000 + "}", "{not json"]
        for body in bad_bodies:
            conn.request("POST", "/search", body=body.encode(), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert 400 <= resp.status < 500 and "detail" in json.loads(resp.read())
            conn.request("POST", "/search", body=b'{"query_index": 2, "k": 4}',
                         headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.status == 200 and len(json.loads(resp.read())["ids"]) == 4
            assert conn.sock is sock, "the kept-alive connection was closed"
        for host, status in (("evil.example", 400), (f"search.example.test:{port}", 200), (f"localhost:{port}", 200)):
            conn.request("GET", "/health", headers={"Host": host})
            resp = conn.getresponse()
            assert resp.status == status, host
            body = json.loads(resp.read())
            assert (status == 200) or "host" in body["detail"].lower()
        conn.close()
        # a client that sends half a body and goes away
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(b"POST /search HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 30000\r\n\r\n" + b'{"query_index": 1, "pad": "' + b"x" * 2000)
            time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as resp:
            assert resp.status == 200
        deadline = time.monotonic() + 15
        while "disconnected" not in log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop_process(proc)
    text = log_path.read_text()
    assert "Traceback" not in text and "unexpected error" not in text, text
    assert len([line for line in text.splitlines() if "disconnected" in line]) == 1, text


# --------------------------------------------------------------------------- fuzz
def _image_file(fmt: str, rng: np.random.Generator) -> bytes:
    pixels = rng.integers(0, 256, size=(24, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def _fuzz_requests() -> list[tuple[str, str, str, dict]]:
    """(name, which client, method + path, request keyword arguments): malformed JSON, huge numbers, nested
    structures, wrong content types, truncated and mislabelled images, bad query strings and paths."""
    rng = np.random.default_rng(18)
    cases: list[tuple[str, str, str, dict]] = []

    def raw(name, body: bytes, ctype="application/json", which="image"):
        cases.append((name, which, "POST /search", {"content": body, "headers": {"Content-Type": ctype}}))

    valid = {"image": b'{"query_index": 3, "k": 5}',
             "features": json.dumps({"features": [float(v) for v in rng.normal(size=64).round(3)], "k": 3}).encode()}
    for which, body in valid.items():
        for cut in sorted(set(np.linspace(0, len(body) - 1, 25).astype(int))):
            raw(f"truncated JSON {which} [:{cut}]", body[:cut], which=which)
    for i in range(15):
        raw(f"random bytes {i}", rng.bytes(int(rng.integers(1, 300))))
    for junk in (b"\xff\xfe{}", b'{"k": 1,}', b"{'k': 1}", b'{"k": 1} {"k": 2}', b"null", b"true", b'"text"', b"[]",
                 b'{"query_index": 1, "query_index": "x"}', b"\x00" * 64, '{"k": "é"}'.encode("latin-1")):
        raw(f"malformed JSON {junk[:12]!r}", junk)
    huge = ["9" * 400, "-" + "9" * 400, "1e400", "-1e400", "9" * 5000, "1" + "0" * 4301, "1e-400", "0.5e309"]
    for value in huge:
        raw(f"huge k {value[:8]}", f'{{"query_index": 0, "k": {value}}}'.encode())
        raw(f"huge query_index {value[:8]}", f'{{"query_index": {value}}}'.encode())
        raw(f"huge feature {value[:8]}", ('{"features": [' + ", ".join(["0"] * 63 + [value]) + "]}").encode(),
            which="features")
    for depth in (10, 500, 1_000, 5_000, 100_000):
        raw(f"nested list depth {depth}", _nested(depth).encode())
        raw(f"nested object depth {depth}", ('{"a": ' * depth + "0" + "}" * depth).encode())
        raw(f"nested k depth {depth}", f'{{"query_index": 0, "k": {_nested(depth, "5")}}}'.encode())
        raw(f"nested query_index depth {depth}", f'{{"query_index": {_nested(depth, "1")}}}'.encode())
        raw(f"nested features depth {depth}", f'{{"features": {_nested(depth, "0.5")}}}'.encode(), which="features")
    png = _image_file("PNG", rng)
    for ctype, body in (("text/plain", b"k=3"), ("application/xml", b"<k>3</k>"), ("image/png", png),
                        ("application/x-www-form-urlencoded", b"query_index=1&k=3"),
                        ("multipart/form-data", b"--x\r\n\r\n"), ("multipart/form-data; boundary=zz", b"--yy\r\nhi"),
                        ("multipart/mixed; boundary=zz", b"--zz--"), ("application/json; charset=utf-16",
                                                                       '{"query_index": 1}'.encode("utf-16")),
                        ("application/octet-stream", rng.bytes(100)), ("APPLICATION/JSON", b'{"query_index": 1}'),
                        ("text/html; charset=utf-8", b"<html>"),
                        ("application/json", b"\xef\xbb\xbf{\"query_index\": 1}"),
                        ("multipart/form-data; boundary=" + "b" * 5000, b"--" + b"b" * 5000)):
        raw(f"content type {ctype[:30]}", body, ctype=ctype)
        raw(f"content type {ctype[:30]} (features run)", body, ctype=ctype, which="features")
    for fmt, ctype in (("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif"), ("BMP", "image/bmp"),
                       ("WEBP", "image/webp")):
        data = _image_file(fmt, rng)
        for cut in sorted(set([1, 8, 16, 33, 64] + list((np.array([0.25, 0.5, 0.75, 0.95]) * len(data)).astype(int))
                              + [len(data) - 1])):
            cases.append((f"truncated {fmt} [:{cut}]", "image", "POST /search",
                          {"files": {"image": ("x", data[:cut], ctype)}, "data": {"k": "3"}}))
        flipped = bytearray(data)
        for pos in rng.integers(0, len(data), size=20):
            flipped[pos] ^= 0xFF
        cases.append((f"corrupted {fmt}", "image", "POST /search", {"files": {"image": ("x", bytes(flipped), ctype)}}))
        cases.append((f"{fmt} labelled as text", "image", "POST /search",
                      {"files": {"image": ("x", data, "text/csv")}}))
    for k in ("", " ", "3.5", "1e3", "0x10", "9" * 400, "9" * 5000, "-1", "[3]", "３"):
        cases.append((f"multipart k={k[:8]!r}", "image", "POST /search",
                      {"files": {"image": ("x.png", png, "image/png")}, "data": {"k": k}}))
    for query in ("offset=" + "9" * 400, "limit=" + "9" * 400, "offset=-" + "9" * 400, "offset=1e400", "limit=[1]",
                  "offset=%00", "limit=", "offset=0&offset=1", "limit=0.5", "offset=" + "9" * 5000):
        cases.append((f"GET /queries?{query[:20]}", "image", f"GET /queries?{query}", {}))
    for path in ("/items/" + "9" * 400 + "/image", "/queries/-" + "9" * 400 + "/image", "/items/1e400/image",
                 "/queries/%00/image", "/items/" + "9" * 5000 + "/image", "/items/0x10/image"):
        cases.append((f"GET {path[:30]}", "image", f"GET {path}", {}))
        cases.append((f"GET {path[:30]} (features run)", "features", f"GET {path}", {}))
    return cases


def test_service_fuzz_never_answers_500(client, feature_client):
    cases = _fuzz_requests()
    assert len(cases) >= 200
    clients = {"image": client, "features": feature_client}
    failures, statuses = [], []
    for name, which, target, kwargs in cases:
        method, url = target.split(" ", 1)
        r = clients[which].request(method, url, **kwargs)
        statuses.append(r.status_code)
        if r.status_code >= 500:
            failures.append(f"{name}: {r.status_code} {r.text[:200]}")
        elif r.status_code >= 400:
            try:
                detail = r.json()["detail"]
            except (ValueError, KeyError, TypeError):
                detail = None
            if not isinstance(detail, str) or len(detail) > 2000:
                failures.append(f"{name}: {r.status_code} without a short string detail: {r.text[:200]}")
    assert not failures, f"{len(failures)} of {len(cases)} fuzz requests failed:\n" + "\n".join(failures[:40])
    assert sum(400 <= s < 500 for s in statuses) >= 0.9 * len(cases)
    assert_alive(client)
    assert feature_client.get("/health").status_code == 200


# --------------------------------------------------------------------------- read timeouts (issue 28.4)
READ_TIMEOUT = 1.0
#: how late after its deadline a slow connection may still be closed (timers, a loaded machine)
CLOSE_SLACK = 2.0


def _slow_client(port: int, parts: list[tuple[float, bytes]], until: float = 8.0) -> dict:
    """Open a connection, send ``parts`` (each after waiting its delay) while the server keeps it open, then
    read until the server closes it; returns what came back and when (seconds since connecting)."""
    t0 = time.monotonic()
    received = b""
    closed_at = None
    with socket.create_connection(("127.0.0.1", port), timeout=until) as s:
        try:
            for delay, data in parts:
                time.sleep(delay)
                s.sendall(data)
        except OSError:  # the server closed the connection while we were still sending
            pass
        s.settimeout(max(0.1, until - (time.monotonic() - t0)))
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                received += chunk
        except socket.timeout:
            return {"received": received, "closed_at": None}
        except OSError:
            pass
        closed_at = time.monotonic() - t0
    return {"received": received, "closed_at": closed_at}


def _trickle(data: bytes, every: float) -> list[tuple[float, bytes]]:
    return [(every, data[i:i + 1]) for i in range(len(data))]


def test_slow_clients_get_408_and_are_closed_within_the_read_timeout(service, caplog):
    """Slow-body (and slow-header) client fuzz: every stalled or trickling request is answered 408 and closed
    within the read timeout (plus slack), whatever it keeps sending; /health answers meanwhile; a client that
    sends a body slowly but at the minimum rate is served; one log line per timeout, no traceback."""
    import dataclasses
    import logging

    from _live import live_server

    limits = dataclasses.replace(service.limits, read_timeout=READ_TIMEOUT)
    host = b"Host: 127.0.0.1\r\n"
    json_head = b"POST /search HTTP/1.1\r\n" + host + b"Content-Type: application/json\r\n"
    boundary = b"b0undary"
    multipart = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
                 b"Content-Type: image/png\r\n\r\n" + png_bytes(np.zeros((8, 8), np.uint8))[:40])
    cases = {
        # name: (parts, expected status or None for a silent close)
        "nothing sent": ([], None),
        "partial request line": ([(0, b"POST /sea")], 408),
        "partial headers": ([(0, json_head + b"Content-Len")], 408),
        "headers trickled": (_trickle(b"GET /health HTTP/1.1\r\n" + host + b"X-Pad: " + b"a" * 60, 0.05), 408),
        "body never sent": ([(0, json_head + b"Content-Length: 100\r\n\r\n")], 408),
        "partial body": ([(0, json_head + b'Content-Length: 100\r\n\r\n{"query_index": 1')], 408),
        "body trickled": ([(0, json_head + b"Content-Length: 400\r\n\r\n{")] + _trickle(b" " * 60, 0.05), 408),
        "chunked body trickled": ([(0, json_head + b"Transfer-Encoding: chunked\r\n\r\n")]
                                  + [(0.1, b"1\r\n \r\n")] * 30, 408),
        "multipart upload stalls": ([(0, b"POST /search HTTP/1.1\r\n" + host + b"Content-Type: multipart/form-data; "
                                     b"boundary=" + boundary + b"\r\nContent-Length: 5000\r\n\r\n" + multipart)], 408),
        "second request stalls": ([(0, b"GET /health HTTP/1.1\r\n" + host + b"\r\nGET /hea")], 408),
        "body the route does not read, trickled": ([(0, b"GET /health HTTP/1.1\r\n" + host
                                                     + b"Content-Length: 1000\r\n\r\n")] + _trickle(b"x" * 60, 0.05),
                                                   None),
    }
    padded = b'{"query_index": 3, "k": 4}' + b" " * (96 * 1024)
    steady = [(0, json_head + f"Content-Length: {len(padded)}\r\n\r\n".encode())] + \
             [(0.15, padded[i:i + 8192]) for i in range(0, len(padded), 8192)]
    health = {"latencies": [], "statuses": []}
    stop = threading.Event()

    def poll_health(base: str) -> None:
        while not stop.is_set():
            t0 = time.monotonic()
            with urllib.request.urlopen(f"{base}/health", timeout=5) as resp:
                health["statuses"].append(resp.status)
            health["latencies"].append(time.monotonic() - t0)
            time.sleep(0.05)

    with caplog.at_level(logging.INFO), live_server(create_app(service), limits) as base:
        port = int(base.rsplit(":", 1)[1])
        poller = threading.Thread(target=poll_health, args=(base,), daemon=True)
        poller.start()
        try:
            with ThreadPoolExecutor(len(cases) + 1) as pool:
                futures = {name: pool.submit(_slow_client, port, parts) for name, (parts, _) in cases.items()}
                steady_future = pool.submit(_slow_client, port, steady + [(0, b"")])
                results = {name: f.result(timeout=30) for name, f in futures.items()}
                steady_result = steady_future.result(timeout=30)
        finally:
            stop.set()
            poller.join(timeout=10)
    failures = []
    for name, (parts, status) in cases.items():
        got = results[name]
        if got["closed_at"] is None or got["closed_at"] > READ_TIMEOUT + CLOSE_SLACK:
            failures.append(f"{name}: closed at {got['closed_at']}")
            continue
        if got["closed_at"] < READ_TIMEOUT - 0.05:
            failures.append(f"{name}: closed after {got['closed_at']:.2f} s, before the read timeout")
        statuses = [int(code) for code in re.findall(rb"HTTP/1\.1 (\d{3}) ", got["received"])]
        expected = ([200] if name.startswith(("second", "body the route")) else []) + ([status] if status else [])
        if statuses != expected:
            failures.append(f"{name}: answered {statuses}, expected {expected}")
        if status == 408 and b"too slowly" not in got["received"]:
            failures.append(f"{name}: the 408 does not say why: {got['received'][-200:]!r}")
    assert not failures, failures
    # sent at about 53 KB/s for ~1.8 s (longer than the read timeout, faster than the minimum rate): served
    assert b"HTTP/1.1 200" in steady_result["received"] and b'"ids"' in steady_result["received"], steady_result
    assert health["statuses"] and set(health["statuses"]) == {200}
    assert max(health["latencies"]) < 2.0, max(health["latencies"])
    lines = [r for r in caplog.records if r.name.startswith("learn2hash")]
    assert not any(r.exc_info for r in caplog.records)
    timeouts = [r.getMessage() for r in lines if "read timeout" in r.getMessage()]
    assert len(timeouts) == sum(1 for name, (_, status) in cases.items() if name != "nothing sent"), timeouts
    assert not [r.getMessage() for r in lines if "disconnected" in r.getMessage()]


# --------------------------------------------------------------------------- API keys (issue 27.3)
API_KEY = "test-key-0123456789abcdef"
READ_REQUESTS = [("GET", "/health", {}), ("GET", "/info", {}), ("GET", "/queries?limit=3", {}),
                 ("GET", "/queries/2/image", {}), ("GET", "/items/5/image", {}),
                 ("POST", "/search", {"json": {"query_index": 1, "k": 3}}),
                 ("POST", "/search", {"files": {"image": ("q.png", png_bytes(np.zeros((8, 8), np.uint8)), "image/png")}}),
                 ("GET", "/openapi.json", {}), ("GET", "/docs", {})]


def _bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


def test_without_a_key_every_route_is_open_and_none_declares_security(client):
    for method, url, kwargs in READ_REQUESTS:
        assert client.request(method, url, **kwargs).status_code == 200, url
    spec = client.get("/openapi.json").json()
    assert "securitySchemes" not in spec.get("components", {})
    assert not any("security" in op or "401" in op["responses"] for ops in spec["paths"].values() for op in ops.values())


def test_with_a_key_every_route_needs_it(service):
    app = create_app(service, api_key=API_KEY)
    c = TestClient(app, raise_server_exceptions=False)
    for method, url, kwargs in READ_REQUESTS:
        for headers in ({}, _bearer("wrong-key-0123456789abcdef"), _bearer(API_KEY + "x"), _bearer(API_KEY[:-1]),
                        {"Authorization": f"Basic {API_KEY}"}, {"Authorization": API_KEY}, _bearer(""),
                        {"Authorization": ("Bearer " + "é" * 30).encode("utf-8")}):
            r = c.request(method, url, headers=headers, **kwargs)
            assert r.status_code == 401, (url, headers, r.status_code)
            assert r.headers["www-authenticate"] == "Bearer" and "key" in r.json()["detail"]
        r = c.request(method, url, headers=_bearer(API_KEY), **kwargs)
        assert r.status_code == 200, (url, r.text[:200])
    r = c.request("POST", "/search", headers={"authorization": f"bearer {API_KEY}"}, json={"query_index": 1})
    assert r.status_code == 200  # the scheme's name is case-insensitive (RFC 7235)
    # the page and its static files hold no data: served to anyone (the page asks for the key)
    assert c.get("/").status_code == 200 and c.get("/static/app.js").status_code == 200
    # an unauthorised request learns nothing about its parameters: 401 before 422 or 404
    assert c.post("/search", json={"query_index": -5, "k": 0}).status_code == 401
    assert c.get("/items/999999/image").status_code == 401
    # the document declares the scheme, on every operation, with 401 among the answers
    spec = c.get("/openapi.json", headers=_bearer(API_KEY)).json()
    assert spec["components"]["securitySchemes"] == {"apiKey": {
        "type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["apiKey"]["description"]}}
    for path, ops in spec["paths"].items():
        for name, op in ops.items():
            assert op["security"] == [{"apiKey": []}], (path, name)
            assert op["responses"]["401"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_public_read_opens_the_read_routes(service):
    c = TestClient(create_app(service, api_key=API_KEY, public_read=True), raise_server_exceptions=False)
    for method, url, kwargs in READ_REQUESTS:
        assert c.request(method, url, **kwargs).status_code == 200, url
    spec = c.get("/openapi.json").json()
    assert not any("security" in op for ops in spec["paths"].values() for op in ops.values())  # a run has no writes


def test_keys_are_compared_in_constant_time(service, monkeypatch):
    """The decision is secrets.compare_digest's alone, on SHA-256 digests of the token and the key (equal lengths
    whatever the token's, so neither where they differ nor how long the token is shows in the time taken)."""
    import hashlib
    import secrets

    calls = []
    real = secrets.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(secrets, "compare_digest", spy)
    c = TestClient(create_app(service, api_key=API_KEY), raise_server_exceptions=False)
    digest = lambda text: hashlib.sha256(text.encode()).digest()  # noqa: E731
    for token, status in (("nope", 401), (API_KEY, 200), ("x" * 5000, 401), (API_KEY[:-1] + "X", 401)):
        calls.clear()
        assert c.get("/health", headers=_bearer(token)).status_code == status
        assert calls == [(digest(token), digest(API_KEY))]
    calls.clear()
    assert c.get("/health").status_code == 401 and calls == []  # no token: nothing to compare
    # and the comparison decides: a comparison that says "equal" lets a wrong token in
    monkeypatch.setattr(secrets, "compare_digest", lambda a, b: True)
    assert c.get("/health", headers=_bearer("wrong")).status_code == 200
    monkeypatch.setattr(secrets, "compare_digest", lambda a, b: False)
    assert c.get("/health", headers=_bearer(API_KEY)).status_code == 401


def test_api_keys_are_read_from_a_file_or_the_environment(tmp_path, monkeypatch):
    from learn2hash.errors import Learn2HashError
    from learn2hash.serve.app import API_KEY_ENV, load_api_key

    key_file = tmp_path / "key"
    key_file.write_text(f"  {API_KEY}\n")
    assert load_api_key(key_file, environ={}) == API_KEY
    assert load_api_key(key_file, environ={API_KEY_ENV: "other-key-0123456789"}) == API_KEY  # the file wins
    assert load_api_key(None, environ={API_KEY_ENV: f" {API_KEY} "}) == API_KEY
    assert load_api_key(None, environ={}) is None and load_api_key(None, environ={API_KEY_ENV: "  "}) is None
    for text in ("short", "has a space inside it", "tab\there-0123456789", "é" * 20, "x" * 5000):
        key_file.write_bytes(text.encode())
        with pytest.raises(Learn2HashError) as err:
            load_api_key(key_file, environ={})
        assert str(key_file) in str(err.value) and text[:12] not in str(err.value)  # names the file, not the key
    with pytest.raises(Learn2HashError, match="cannot read --api-key-file"):
        load_api_key(tmp_path / "missing", environ={})
    with pytest.raises(Learn2HashError, match=API_KEY_ENV):
        load_api_key(None, environ={API_KEY_ENV: "short"})


def test_cli_serve_refuses_bad_key_settings(image_run, tmp_path, capsys, monkeypatch):
    from learn2hash.cli import main
    from learn2hash.serve.app import API_KEY_ENV

    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert main(["serve", "--run", str(image_run.folder), "--public-read"]) == 2
    assert "--public-read" in capsys.readouterr().err
    (tmp_path / "key").write_text("short")
    assert main(["serve", "--run", str(image_run.folder), "--api-key-file", str(tmp_path / "key")]) == 2
    err = capsys.readouterr().err
    assert "at least 16" in err and len(err.strip().splitlines()) == 1
    assert main(["serve", "--run", str(image_run.folder), "--read-timeout", "0"]) == 2
    assert "--read-timeout" in capsys.readouterr().err
