"""The search service: results equal a brute-force search, every bad request is a 4xx with a
message (never a 500), and the service keeps answering afterwards — in process (TestClient) and
over a real socket (uvicorn in a thread)."""

from __future__ import annotations

import io
import json
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
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_live_server_refuses_oversized_upload_and_keeps_serving(service):
    import uvicorn

    port = _free_port()
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
