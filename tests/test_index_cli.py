"""`learn2hash index build` and `learn2hash search` on a small trained run."""

from __future__ import annotations

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
