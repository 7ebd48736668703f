"""`learn2hash index build` and `learn2hash search` on a small trained run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from learn2hash.cli import main
from learn2hash.runs import Run, train_run


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "itq"
    train_run("itq", "digits", 16, folder)
    return folder


def test_index_build_then_search_a_query_position(run_folder, capsys):
    assert main(["index", "build", "--run", str(run_folder)]) == 0
    assert "indexed 1697 database codes of 16 bits" in capsys.readouterr().out
    assert main(["search", "--run", str(run_folder), "--query", "4", "-k", "6"]) == 0
    out = capsys.readouterr().out.splitlines()
    run = Run.open(run_folder)
    q, db = run.codes("query")[4], run.codes("database")
    dist = q.distances(db)[0]
    order = np.lexsort((np.arange(dist.size), dist))[:6]
    rows = [line.split() for line in out[3:9]]
    assert [int(r[1]) for r in rows] == order.tolist()  # ids = database positions, ties by position
    assert [int(r[2]) for r in rows] == dist[order].tolist()
    labels = run.dataset().database.labels
    assert [r[3] for r in rows] == [str(int(np.flatnonzero(labels[i])[0])) for i in order]


def test_search_a_npy_batch_and_refusals(run_folder, tmp_path, capsys):
    main(["index", "build", "--run", str(run_folder)])
    x = np.asarray(Run.open(run_folder).dataset().query.x[:2])
    np.save(tmp_path / "q.npy", x)
    assert main(["search", "--run", str(run_folder), "--query", str(tmp_path / "q.npy"), "-k", "3"]) == 0
    out = capsys.readouterr().out
    assert "q.npy[0]" in out and "q.npy[1]" in out
    assert main(["search", "--run", str(run_folder), "--query", "100000"]) == 2
    assert "not a query-split position" in capsys.readouterr().err
    assert main(["search", "--run", str(tmp_path), "--query", "1"]) == 2


def test_search_a_1d_feature_vector_is_one_item(run_folder, tmp_path, capsys):
    """A (64,) array is one item: the answer is brute force over the database codes of its code (issue 28.4)."""
    main(["index", "build", "--run", str(run_folder)])
    capsys.readouterr()
    run = Run.open(run_folder)
    x = np.random.default_rng(3).random(64).astype(np.float32)
    np.save(tmp_path / "one.npy", x)
    assert main(["search", "--run", str(run_folder), "--query", str(tmp_path / "one.npy"), "-k", "5", "--json"]) == 0
    (query,) = json.loads(capsys.readouterr().out)["queries"]
    dist = run.hasher().encode(x[None]).distances(run.codes("database"))[0]
    order = np.lexsort((np.arange(dist.size), dist))[:5]
    assert query["query"] == "one.npy[0]"
    assert [r["id"] for r in query["results"]] == order.tolist()
    assert [r["distance"] for r in query["results"]] == dist[order].tolist()


def test_search_of_a_deep_run_prints_nothing_on_stderr(tmp_path):
    """Searching a CSQ run with an image file (decoded to a read-only array) or a .npy query warns about nothing
    (issue 28.4)."""
    import os
    import subprocess
    import sys

    from PIL import Image

    folder = tmp_path / "csq"
    train_run("csq", "digits", 16, folder, params={"epochs": 1}, progress=False)
    assert main(["index", "build", "--run", str(folder)]) == 0
    x = np.asarray(Run.open(folder).dataset().query.x[:3])
    np.save(tmp_path / "q.npy", x)
    np.save(tmp_path / "one.npy", x[0])
    Image.fromarray(np.kron(x[1, 0], np.ones((4, 4), dtype=np.uint8))).convert("RGB").save(tmp_path / "q.png")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="default")
    for query in ("q.png", "q.npy", "one.npy", "2"):
        done = subprocess.run([sys.executable, "-m", "learn2hash", "search", "--run", str(folder), "--query",
                               query if query.isdigit() else str(tmp_path / query), "-k", "3"],
                              capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", done.stderr
        assert "3 nearest of 1697" in done.stdout
