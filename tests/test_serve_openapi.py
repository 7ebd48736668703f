"""The search service's OpenAPI document tells the truth (issue 21).

- The document is valid OpenAPI 3.1 (the official schema, checked by jsonschema-rs through
  Schemathesis) and every Schema Object in it is valid JSON Schema; every route of the app is in it.
- Schemathesis (``st run --checks all``) against a live server on a loopback port, for an image run
  and a feature run: fixed seed, at least 200 generated cases each, positive and negative data,
  within a minute each. It holds the server to the document: no undocumented status, no response
  off its schema, no schema-valid request refused, no schema-invalid request accepted, no 5xx.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("schemathesis")
from _photos import photo_collection  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from learn2hash.runs import Run, train_run  # noqa: E402
from learn2hash.serve import create_app  # noqa: E402

HOOKS = Path(__file__).with_name("_schemathesis_hooks.py")
SEED = 2021
MAX_EXAMPLES = 60
TIME_LIMIT = 60.0
RUN_FIXTURES = {"image": "image_run", "features": "feature_run"}


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Run:
    return train_run("itq", "digits", 16, tmp_path_factory.mktemp("openapi") / "itq16", progress=False)


@pytest.fixture(scope="module")
def feature_run(tmp_path_factory) -> Run:
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("openapi-features")
    d = load_digits()
    np.savez(folder / "digits.npz", x=d.data.astype(np.float32), labels=d.target)
    return train_run("lsh", "npz", 16, folder / "run", data_params={"path": str(folder / "digits.npz"),
                                                                     "query_size": 50, "train_size": 300},
                     progress=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live_server(app):
    """``app`` under uvicorn on a free loopback port, in a thread; yields the base URL."""
    import uvicorn

    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _schema_objects(node, where="#"):
    """Every Schema Object of an OpenAPI document: (where, schema)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, dict):
                yield f"{where}/{key}", value
            elif key == "schemas" and where == "#/components" and isinstance(value, dict):
                for name, schema in value.items():
                    yield f"{where}/schemas/{name}", schema
            else:
                yield from _schema_objects(value, f"{where}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _schema_objects(value, f"{where}/{i}")


@pytest.mark.parametrize("which", ["image", "features"])
def test_openapi_document_is_valid_and_complete(which, request):
    import jsonschema_rs
    import schemathesis
    from fastapi.routing import APIRoute

    run = request.getfixturevalue(RUN_FIXTURES[which])
    app = create_app(run.folder)
    with TestClient(app) as client:
        spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(spec).validate()  # the OpenAPI 3.1 schema, by jsonschema-rs
    objects = list(_schema_objects(spec))
    assert len(objects) > 20
    for where, schema in objects:
        assert jsonschema_rs.meta.is_valid(schema), (where, schema)

    routes = {(r.path, m) for r in app.routes if isinstance(r, APIRoute) and r.include_in_schema for m in r.methods}
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    assert routes == documented == {("/health", "GET"), ("/info", "GET"), ("/queries", "GET"),
                                    ("/queries/{i}/image", "GET"), ("/items/{item_id}/image", "GET"),
                                    ("/search", "POST")}
    error = {"$ref": "#/components/schemas/Error"}
    expected_errors = {("/health", "get"): {"400", "413"}, ("/info", "get"): {"400", "413"},
                       ("/queries", "get"): {"400", "413", "422"},
                       ("/queries/{i}/image", "get"): {"400", "404", "413", "422"},
                       ("/items/{item_id}/image", "get"): {"400", "404", "413", "422"},
                       ("/search", "post"): {"400", "413", "415", "422"}}
    for (path, method), statuses in expected_errors.items():
        responses = spec["paths"][path][method]["responses"]
        assert set(responses) == {"200"} | statuses, (path, responses.keys())
        for status in statuses:
            assert responses[status]["content"]["application/json"]["schema"] == error, (path, status)
    assert spec["components"]["schemas"]["Error"]["required"] == ["detail"]
    assert "HTTPValidationError" not in spec["components"]["schemas"]

    # the bounds are declared
    params = {p["name"]: p["schema"] for p in spec["paths"]["/queries"]["get"]["parameters"]}
    assert params["offset"]["minimum"] == 0 and params["limit"]["minimum"] == 1 and params["limit"]["maximum"] == 500
    n_query, n_database = len(run.dataset().query), len(run.dataset().database)
    (i,) = spec["paths"]["/queries/{i}/image"]["get"]["parameters"]
    assert (i["schema"]["type"], i["schema"]["minimum"], i["schema"]["maximum"]) == ("integer", 0, n_query - 1)
    (item,) = spec["paths"]["/items/{item_id}/image"]["get"]["parameters"]
    assert (item["schema"]["minimum"], item["schema"]["maximum"]) == (0, n_database - 1)
    body = spec["paths"]["/search"]["post"]["requestBody"]
    assert body["required"] is True
    as_json = body["content"]["application/json"]["schema"]
    assert as_json["additionalProperties"] is False
    assert as_json["properties"]["k"] == {"type": "integer", "minimum": 1, "maximum": min(1000, n_database),
                                          "default": 10, "description": as_json["properties"]["k"]["description"]}
    assert as_json["properties"]["query_index"]["maximum"] == n_query - 1
    if which == "image":
        assert as_json["required"] == ["query_index"] and "features" not in as_json["properties"]
        multipart = body["content"]["multipart/form-data"]
        assert multipart["schema"]["required"] == ["image"]
        assert multipart["schema"]["properties"]["k"]["maximum"] == min(1000, n_database)
        assert set(multipart["encoding"]["image"]["contentType"].split(", ")) == {
            "image/png", "image/jpeg", "image/gif", "image/bmp", "image/webp"}
    else:
        features = as_json["properties"]["features"]
        assert features["minItems"] == features["maxItems"] == 64
        assert features["items"]["maximum"] == float(np.finfo(np.float32).max)
        assert as_json["oneOf"] == [{"required": ["query_index"]}, {"required": ["features"]}]
        assert "multipart/form-data" not in body["content"]


@pytest.mark.slow
@pytest.mark.parametrize("which", ["image", "features"])
def test_schemathesis_finds_no_contract_violation(which, request, tmp_path):
    run = request.getfixturevalue(RUN_FIXTURES[which])
    report = tmp_path / "schemathesis.json"
    st_cli = [sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"]
    command = st_cli + ["run", "--checks", "all", "--mode", "all",
               "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
               "--phases", "examples,coverage,fuzzing,stateful", "--request-timeout", "20",
               "--report", "json", "--report-json-path", str(report)]
    env = dict(os.environ, SCHEMATHESIS_HOOKS=str(HOOKS), OMP_NUM_THREADS="1", NO_COLOR="1")
    with live_server(create_app(run.folder)) as base:
        t0 = time.monotonic()
        done = subprocess.run(command + [f"{base}/openapi.json"], capture_output=True, text=True, env=env,
                              cwd=tmp_path, timeout=TIME_LIMIT * 2)
        seconds = time.monotonic() - t0
    output = done.stdout[-6000:] + done.stderr[-2000:]
    result = json.loads(report.read_text())
    assert result["exit_code"] == 0 and done.returncode == 0, output
    assert result["failures"] == [] and result["errors"] == [], output
    assert result["complete"] and result["seed"] == SEED
    assert result["operations"]["tested"] == result["operations"]["total"] == 6, result["operations"]
    assert result["test_cases"]["generated"] >= 200, result["test_cases"]
    assert seconds < TIME_LIMIT, f"schemathesis took {seconds:.0f} s"
    print(f"schemathesis ({which} run): {result['test_cases']['generated']} cases, "
          f"{result['operations']['tested']} operations, {seconds:.1f} s")


# --------------------------------------------------------------------------- a collection's service (issue 27.3)
KEY = "openapi-key-0123456789abcdef"
COLLECTION_OPERATIONS = {("/health", "GET"), ("/info", "GET"), ("/items", "GET"), ("/items/{item_id}", "GET"),
                         ("/items/{item_id}/image", "GET"), ("/search", "POST")}
WRITE_OPERATIONS = {("/items", "POST"), ("/items/{item_id}", "DELETE")}


@pytest.fixture(scope="module")
def collection_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("openapi-collection")
    photo_collection(folder, seed=0)
    return folder / "coll"


@pytest.mark.parametrize("access", ["no key", "key", "public read"])
def test_collection_openapi_document_is_valid_and_complete(access, collection_folder):
    import jsonschema_rs
    import schemathesis
    from fastapi.routing import APIRoute

    options = {"no key": {}, "key": {"api_key": KEY}, "public read": {"api_key": KEY, "public_read": True}}[access]
    app = create_app(collection_folder, **options)
    with TestClient(app) as client:
        spec = client.get("/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert spec["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(spec).validate()
    for where, schema in _schema_objects(spec):
        assert jsonschema_rs.meta.is_valid(schema), (where, schema)
    routes = {(r.path, m) for r in app.routes if isinstance(r, APIRoute) and r.include_in_schema for m in r.methods}
    documented = {(path, method.upper()) for path, ops in spec["paths"].items() for method in ops}
    expected = COLLECTION_OPERATIONS | (WRITE_OPERATIONS if "api_key" in options else set())
    assert routes == documented == expected
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            secured = "api_key" in options and ((path, method.upper()) in WRITE_OPERATIONS or access == "key")
            assert ("security" in op) == secured and ("401" in op["responses"]) == secured, (path, method)
    if "api_key" in options:
        assert spec["components"]["securitySchemes"]["apiKey"] == {
            "type": "http", "scheme": "bearer", "description": spec["components"]["securitySchemes"]["apiKey"]["description"]}
        body = spec["paths"]["/items"]["post"]["requestBody"]["content"]["multipart/form-data"]
        assert body["schema"]["required"] == ["image"] and body["schema"]["properties"]["external_id"]["maxLength"] == 256
        assert set(spec["paths"]["/items"]["post"]["responses"]) == {"201", "400", "401", "413", "415", "422"}


@pytest.mark.slow
@pytest.mark.parametrize("access", ["key", "public read"])
def test_schemathesis_finds_no_contract_violation_on_a_collection(access, collection_folder, tmp_path):
    """Schemathesis against a live collection service with an API key (sent with every request; its
    ``ignored_auth`` check also sends requests without it), the write routes included."""
    import shutil

    folder = tmp_path / "coll"
    shutil.copytree(collection_folder, folder)  # the run writes to it
    options = {"api_key": KEY, "public_read": access == "public read"}
    app = create_app(folder, **options)
    with TestClient(app) as client:
        spec = client.get("/openapi.json", headers={"Authorization": f"Bearer {KEY}"}).json()
    (tmp_path / "openapi.json").write_text(json.dumps(spec))
    report = tmp_path / "schemathesis.json"
    st_cli = [sys.executable, "-c", "import sys; from schemathesis.cli import schemathesis; sys.exit(schemathesis())"]
    env = dict(os.environ, SCHEMATHESIS_HOOKS=str(HOOKS), OMP_NUM_THREADS="1", NO_COLOR="1")
    from _live import live_server

    with live_server(app) as base:
        command = st_cli + ["run", str(tmp_path / "openapi.json"), "--url", base, "--checks", "all", "--mode", "all",
                            "--seed", str(SEED), "--max-examples", str(MAX_EXAMPLES), "--workers", "1",
                            "--phases", "examples,coverage,fuzzing,stateful", "--request-timeout", "20",
                            "-H", f"Authorization: Bearer {KEY}", "--report", "json",
                            "--report-json-path", str(report)]
        t0 = time.monotonic()
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=TIME_LIMIT * 3)
        seconds = time.monotonic() - t0
    output = done.stdout[-6000:] + done.stderr[-2000:]
    result = json.loads(report.read_text())
    assert result["exit_code"] == 0 and done.returncode == 0, output
    assert result["failures"] == [] and result["errors"] == [], output
    assert result["operations"]["tested"] == result["operations"]["total"] == 8, result["operations"]
    assert result["test_cases"]["generated"] >= 200, result["test_cases"]
    assert seconds < TIME_LIMIT * 2, f"schemathesis took {seconds:.0f} s"
    print(f"schemathesis (collection, {access}): {result['test_cases']['generated']} cases, {seconds:.1f} s")
