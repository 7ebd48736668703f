"""`--json` on train, encode, search and evaluate (one JSON document on stdout), and `--log-level`."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from learn2hash.cli import main
from learn2hash.codes import Codes
from learn2hash.metrics import evaluate
from learn2hash.runs import Run


def _json_out(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out)  # the whole of stdout is one JSON document


def test_train_encode_evaluate_search_as_json(capsys, tmp_path):
    trained = tmp_path / "itq"
    assert main(["train", "--method", "itq", "--dataset", "digits", "--bits", "16", "--out", str(trained),
                 "--no-progress", "--json"]) == 0
    doc = _json_out(capsys)
    run = Run.open(trained)
    assert doc["run"] == str(trained) and doc["method"] == "itq" and doc["bits"] == 16
    assert doc["dataset"] == "digits" and doc["metrics"] == run.metrics()
    ds = run.dataset()

    assert main(["encode", "--run", str(trained), "--split", "query", "--out", str(tmp_path / "q.npy"), "--json"]) == 0
    doc = _json_out(capsys)
    assert doc == {"n": len(ds.query), "bits": 16, "out": str(tmp_path / "q.npy")}
    assert Codes.load(tmp_path / "q.npy") == run.hasher().encode(ds.query.x)

    assert main(["evaluate", "--run", str(trained), "--topk", "100", "--json"]) == 0
    doc = _json_out(capsys)
    expected = evaluate(run.codes("query"), ds.query.labels, run.codes("database"), ds.database.labels, topk=100)
    assert doc["map@100"] == pytest.approx(expected["map@100"]) and doc["settings"]["topk"] == 100
    assert doc["n_query"] == len(ds.query) and len(doc["per_query"]["ap"]) == len(ds.query)

    assert main(["index", "build", "--run", str(trained)]) == 0
    capsys.readouterr()
    assert main(["search", "--run", str(trained), "--query", "3", "-k", "5", "--json"]) == 0
    doc = _json_out(capsys)
    assert doc["k"] == 5 and doc["n_indexed"] == len(ds.database)
    (query,) = doc["queries"]
    q_code = run.hasher().encode(ds.query.x[3:4])
    brute = q_code.distances(run.codes("database"))[0]
    got = query["results"]
    assert [r["rank"] for r in got] == [1, 2, 3, 4, 5]
    assert [r["distance"] for r in got] == sorted(brute)[:5]
    for r in got:
        assert brute[r["id"]] == r["distance"]
        shares = bool((ds.database.labels[r["id"]] & ds.query.labels[3]).any())
        names = [ds.class_names[c] for c in np.flatnonzero(ds.database.labels[r["id"]])]
        assert r["relevant"] is shares and r["labels"] == names


def test_errors_stay_one_line_on_stderr_with_json(capsys, tmp_path):
    assert main(["encode", "--run", str(tmp_path / "none"), "--split", "query", "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv,shown", [
    (["--log-level", "info", "methods"], True),
    (["methods", "--log-level", "INFO"], True),
    (["methods"], False),
])
def test_log_level_configures_the_learn2hash_loggers(argv, shown, capsys):
    assert main(argv) == 0
    capsys.readouterr()
    logging.getLogger("learn2hash.train").info("epoch 1/1  loss 0.5")
    logging.getLogger("learn2hash.train").warning("a warning")
    err = capsys.readouterr().err
    assert ("INFO learn2hash.train: epoch 1/1  loss 0.5" in err) is shown
    assert "WARNING learn2hash.train: a warning" in err
    assert len(logging.getLogger("learn2hash").handlers) == 1  # repeated calls replace the handler


@pytest.mark.slow
def test_per_epoch_lines_of_a_real_training_run_at_info(capsys, tmp_path):
    assert main(["--log-level", "info", "train", "--method", "csq", "--dataset", "digits", "--bits", "8",
                 "--epochs", "2", "--out", str(tmp_path / "csq"), "--no-progress", "--json",
                 "--param", 'backbone_options={"widths": [4], "convs_per_stage": 1}']) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["method"] == "csq"
    assert "learn2hash.train: epoch 1/2" in captured.err and "learn2hash.train: epoch 2/2" in captured.err
