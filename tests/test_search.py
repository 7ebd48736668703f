"""One search path: the CLI, the HTTP service and the report return the same hits for the same query,
and those hits are a brute-force ranking by (Hamming distance, database position)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from learn2hash import report
from learn2hash.cli import main
from learn2hash.errors import Learn2HashError
from learn2hash.runs import Run, train_run
from learn2hash.search import Hit, Hits, RunSearch, item_image, search

K = 12


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    """An 8-bit LSH run on digits (short codes: many ties to break) with its index built by the CLI."""
    folder = tmp_path_factory.mktemp("search") / "lsh8"
    train_run("lsh", "digits", 8, folder, progress=False)
    assert main(["index", "build", "--run", str(folder)]) == 0
    return Run.open(folder)


def brute_force(run: Run, q: int, k: int) -> tuple[list[int], list[int], list[bool]]:
    q_bits = run.codes("query").to_bits().astype(int)[q]
    db_bits = run.codes("database").to_bits().astype(int)
    d = (db_bits != q_bits).sum(axis=1)
    order = sorted(range(len(d)), key=lambda i: (d[i], i))[:k]
    ql, dbl = run.dataset().query.labels[q], run.dataset().database.labels
    return order, [int(d[i]) for i in order], [bool((dbl[i] & ql).any()) for i in order]


def cli_hits(run: Run, q: int, capsys) -> dict:
    capsys.readouterr()
    assert main(["search", "--run", str(run.folder), "--query", str(q), "-k", str(K), "--json"]) == 0
    (query,) = json.loads(capsys.readouterr().out)["queries"]
    res = query["results"]
    return {"ids": [r["id"] for r in res], "distances": [r["distance"] for r in res],
            "labels": [[str(x) for x in r["labels"]] for r in res], "relevant": [r["relevant"] for r in res]}


def service_hits(run: Run, q: int) -> dict:
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    from fastapi.testclient import TestClient

    from learn2hash.serve import create_app

    client = TestClient(create_app(run.folder), raise_server_exceptions=False)
    r = client.post("/search", json={"query_index": q, "k": K})
    assert r.status_code == 200, r.text
    body = r.json()
    assert client.get("/info").json()["index"].startswith("loaded from")  # the index the CLI searched
    return {key: body[key] for key in ("ids", "distances", "labels", "relevant")}


def report_hits(run: Run, q: int) -> dict:
    res = report.top_results(run, [q], topn=K)
    names = run.dataset().class_names
    dbl = run.dataset().database.labels
    return {"ids": res["ids"][0].tolist(), "distances": res["distances"][0].tolist(),
            "labels": [[names[c] for c in np.flatnonzero(dbl[i])] for i in res["ids"][0]],
            "relevant": res["relevant"][0].tolist()}


@pytest.mark.parametrize("q", [0, 7, 93])
def test_cli_service_and_report_return_the_same_hits(run, q, capsys):
    ids, dist, relevant = brute_force(run, q, K)
    expected_labels = [[run.dataset().class_names[c] for c in np.flatnonzero(run.dataset().database.labels[i])]
                       for i in ids]
    expected = {"ids": ids, "distances": dist, "labels": expected_labels, "relevant": relevant}
    got = {"cli": cli_hits(run, q, capsys), "service": service_hits(run, q), "report": report_hits(run, q)}
    for where, hits in got.items():
        assert hits == expected, where
    assert len(set(dist)) < K  # ties were there to break


def test_search_api_result_type(run):
    """search() of query positions: one Hits per query, frozen Hit values, labels as class ids."""
    (hits,) = search(run, K, positions=[7])
    ids, dist, relevant = brute_force(run, 7, K)
    assert isinstance(hits, Hits) and len(hits) == K and all(isinstance(h, Hit) for h in hits)
    assert hits.ids.tolist() == ids and hits.distances.tolist() == dist and hits.relevant.tolist() == relevant
    assert hits.query == "query #7"
    assert hits.labels == tuple(np.flatnonzero(run.dataset().query.labels[7]).tolist())
    assert hits.names(hits.labels) == [run.dataset().class_names[c] for c in hits.labels]
    with pytest.raises(Exception):
        hits[0].id = 3  # frozen
    # the same query given as items (encoded by the run's hasher) or as codes: the same hits
    x = run.dataset().query.x[7:8]
    by_items = search(run, K, items=x, query_labels=run.dataset().query.labels[7:8], names=["query #7"])[0]
    by_codes = search(run, K, codes=run.codes("query")[[7]], query_labels=run.dataset().query.labels[7:8],
                      names=["query #7"])[0]
    assert by_items == hits == by_codes
    # without query labels nothing is relevant or not
    (plain,) = search(run, K, codes=run.codes("query")[[7]])
    assert plain.relevant is None and all(h.relevant is None for h in plain) and plain.ids.tolist() == ids


def test_saved_auto_and_memory_indexes_agree(run):
    codes = run.codes("query")[[3, 4]]
    results = {}
    for mode in ("saved", "auto", "memory"):
        with RunSearch(run, index=mode) as searcher:
            results[mode] = searcher.search(codes, K)
            assert searcher.index_source.startswith("built in memory" if mode == "memory" else "loaded from")
    assert results["saved"] == results["auto"] == results["memory"]


def test_search_refusals(run, tmp_path):
    with pytest.raises(Learn2HashError, match="exactly one of codes, items or positions"):
        search(run, K)
    with pytest.raises(Learn2HashError, match="exactly one of codes, items or positions"):
        search(run, K, positions=[1], codes=run.codes("query")[[1]])
    with pytest.raises(Learn2HashError, match="k must be an integer"):
        search(run, 0, positions=[1])
    with pytest.raises(Learn2HashError, match="query positions must be in"):
        search(run, K, positions=[10**6])
    with pytest.raises(Learn2HashError, match="index must be one of"):
        RunSearch(run, index="nowhere")
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(run.folder, folder)
    shutil.rmtree(folder / "index")
    with pytest.raises(Learn2HashError, match="has no index yet"):
        RunSearch(folder, index="saved")
    assert RunSearch(folder, index="auto").index_source.startswith("built in memory")


def test_item_image_needs_no_plotting_library():
    """item_image lives in learn2hash.search (the server imports it without matplotlib); report keeps the name."""
    assert report.item_image is item_image
    gray = np.arange(2 * 3, dtype=np.uint8).reshape(1, 2, 3)
    assert np.array_equal(item_image(gray), gray[0])
    rgb = np.random.default_rng(0).random((3, 4, 5)).astype(np.float32)
    out = item_image(rgb)
    assert out.shape == (4, 5, 3) and out.dtype == np.uint8
    assert np.array_equal(out, np.clip(np.moveaxis(rgb, 0, -1) * 255.0, 0, 255).astype(np.uint8))
    clip = np.stack([np.full((1, 2, 2), t, np.uint8) for t in range(5)])
    assert np.array_equal(item_image(clip), np.full((2, 2), 2, np.uint8))  # the middle frame
    assert item_image(np.zeros(64, np.float32)) is None
