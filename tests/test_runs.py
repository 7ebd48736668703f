"""Run folders and the train / encode / compare commands, on the small digits dataset."""

import json

import numpy as np
import pytest

from learn2hash.cli import main
from learn2hash.codes import Codes
from learn2hash.errors import Learn2HashError
from learn2hash.runs import Run, train_run


@pytest.fixture(scope="module")
def itq_run(tmp_path_factory):
    return train_run("itq", "digits", 16, tmp_path_factory.mktemp("runs") / "itq16", seed=3)


def test_run_folder_holds_everything(itq_run):
    folder = itq_run.folder
    for name in ("config.json", "splits.json", "hasher/hasher.json", "codes/query.npy", "codes/database.npy",
                 "metrics.json"):
        assert (folder / name).exists(), name
    config = json.loads((folder / "config.json").read_text())
    assert config["method"] == "itq" and config["bits"] == 16 and config["seed"] == 3
    assert config["dataset"] == "digits" and config["protocol"] == "standard"
    assert "numpy" in config["versions"] and config["params"]["bits"] == 16
    m = itq_run.metrics()
    assert 0 < m["map@100"] <= 1 and 0 < m["map@all"] <= 1
    assert m["n_query"] == 100 and m["n_database"] == 1697 and m["topk"] == 100


def test_reopened_run_reproduces_codes_and_metrics(itq_run):
    run = Run.open(itq_run.folder)
    ds = run.dataset()
    np.testing.assert_array_equal(ds.query.indices, itq_run.dataset().query.indices)
    fresh = run.hasher().encode(ds.database.x)
    assert fresh == run.codes("database")
    again = run.evaluate(save=False)
    assert again["map@all"] == pytest.approx(itq_run.metrics()["map@all"], abs=1e-12)


def test_metrics_match_direct_evaluation(itq_run):
    from learn2hash.metrics import evaluate

    ds = itq_run.dataset()
    q, db = Codes.load(itq_run.codes_path("query")), Codes.load(itq_run.codes_path("database"))
    direct = evaluate(q, ds.query.labels, db, ds.database.labels, topk=100)
    assert itq_run.metrics()["map@100"] == pytest.approx(direct["map@100"], abs=1e-12)


def test_existing_folder_needs_resume_and_same_config(itq_run):
    with pytest.raises(Learn2HashError, match="already exists"):
        train_run("itq", "digits", 16, itq_run.folder, seed=3)
    with pytest.raises(Learn2HashError, match="different configuration.*bits"):
        train_run("itq", "digits", 32, itq_run.folder, seed=3, resume=True)


def test_open_a_folder_that_is_not_a_run(tmp_path):
    with pytest.raises(Learn2HashError, match="not a run folder"):
        Run.open(tmp_path)


def test_cli_train_prints_the_table_and_compare_reads_runs(tmp_path, capsys, itq_run):
    out = tmp_path / "lsh16"
    assert main(["train", "--method", "lsh", "--dataset", "digits", "--bits", "16", "--out", str(out),
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "mAP@100" in printed and "mAP@all" in printed
    assert main(["compare", str(out), str(itq_run.folder)]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["run", "method", "bits"]
    assert {line.split()[1] for line in table[2:]} == {"lsh", "itq"}


def test_cli_encode_a_split_and_an_array(tmp_path, capsys, itq_run):
    assert main(["encode", "--run", str(itq_run.folder), "--split", "query", "--out", str(tmp_path / "q.npy")]) == 0
    assert Codes.load(tmp_path / "q.npy") == itq_run.codes("query")
    x = itq_run.dataset().query.x[:5]
    np.save(tmp_path / "five.npy", np.asarray(x))
    assert main(["encode", "--run", str(itq_run.folder), "--input", str(tmp_path / "five.npy"),
                 "--out", str(tmp_path / "five.codes.npy")]) == 0
    assert Codes.load(tmp_path / "five.codes.npy") == itq_run.codes("query")[:5]


@pytest.mark.parametrize("argv, message", [
    (["train", "--method", "nope", "--dataset", "digits", "--out", "X"], "unknown method 'nope'"),
    (["train", "--method", "itq", "--dataset", "nope", "--out", "X"], "unknown dataset 'nope'"),
    (["train", "--method", "itq", "--dataset", "digits", "--bits", "0", "--out", "X"], "positive integer"),
    (["train", "--method", "itq", "--dataset", "digits", "--out", "X", "--param", "nonsense"], "key=value"),
    (["encode", "--run", "/nonexistent/run", "--split", "query"], "not a run folder"),
])
def test_cli_user_errors_are_one_line(tmp_path, capsys, argv, message):
    argv = [a if a != "X" else str(tmp_path / "r") for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0]


def test_run_with_relative_data_path_reopens_from_elsewhere(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 20))
    labels = np.repeat(np.arange(4), 100)
    x = (centers[labels] + 0.3 * rng.normal(size=(400, 20))).astype(np.float32)
    np.savez(tmp_path / "feats.npz", x=x, labels=labels)
    monkeypatch.chdir(tmp_path)
    run = train_run("itq", "npz", 8, "run", data_params={"path": "feats.npz", "query_size": 40, "train_size": 200})
    expected = run.codes("query")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    reopened = Run.open(tmp_path / "run")
    np.testing.assert_array_equal(reopened.dataset().query.x, x[reopened.dataset().query.indices])
    assert reopened.hasher().encode(reopened.dataset().query.x) == expected


def test_summary_row_columns_are_the_metric_display_names(itq_run):
    """The comparison row spells metrics as metrics.metric_name does; its columns are what
    benchmarks/reproduce.py and defaults.py read."""
    from learn2hash.runs import Run, summary_row

    run = Run.open(itq_run.folder)
    row, m = summary_row(run), run.metrics()
    assert list(row) == ["run", "method", "bits", "dataset", "protocol", "mAP@100", "mAP@all", "P@H<=2", "train s",
                         "s/epoch"]
    assert (row["mAP@100"], row["mAP@all"], row["P@H<=2"]) == (m["map@100"], m["map@all"], m["precision_at_radius2"])
    assert row["train s"] == m["train_seconds"]


def test_image_files_need_a_hasher_that_takes_them(itq_run, tmp_path):
    """A shallow hasher declares takes_image_files = False: encoding image files with it is refused
    before anything is read or written."""
    from learn2hash.errors import Learn2HashError
    from learn2hash.runs import Run, encode_image_files

    with pytest.raises(Learn2HashError, match="holds a itq hasher, which does not take image files"):
        encode_image_files(Run.open(itq_run.folder), tmp_path / "no-such-folder", tmp_path / "codes.npy")
    assert not (tmp_path / "codes.npy").exists()


def test_cli_evaluate_a_run_folder(capsys, itq_run):
    assert main(["evaluate", "--run", str(itq_run.folder), "--topk", "100"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.split() and l.split()[0] == "mAP@100")
    assert float(line.split()[1]) == pytest.approx(itq_run.metrics()["map@100"], abs=5e-5)
    assert main(["evaluate", "--run", str(itq_run.folder), "--query-codes", "q.npy"]) == 2
    assert "not both" in capsys.readouterr().err


def test_cli_evaluate_a_run_uses_the_datasets_registered_top_k(capsys, itq_run, tmp_path):
    from learn2hash.datasets.registry import default_topk
    from learn2hash.metrics import evaluate

    assert default_topk("digits", itq_run.config["protocol"]) == 100  # digits registers mAP@100
    assert main(["evaluate", "--run", str(itq_run.folder), "--json", str(tmp_path / "r.json")]) == 0
    out = capsys.readouterr().out
    assert f"mAP cutoff: 100, the top-k registered for digits [{itq_run.config['protocol']}]" in out
    metrics = {l.split()[0]: float(l.split()[1]) for l in out.splitlines() if l.startswith(("mAP@", "P@1 "))}
    ds = itq_run.dataset()
    q, db = itq_run.codes("query"), itq_run.codes("database")
    assert "mAP@all" not in metrics  # no mAP@all in place of the registered cutoff
    assert metrics["mAP@100"] == pytest.approx(evaluate(q, ds.query.labels, db, ds.database.labels, topk=100)["map@100"],
                                               abs=5e-5)
    assert json.loads((tmp_path / "r.json").read_text())["settings"]["topk"] == 100
    assert main(["evaluate", "--run", str(itq_run.folder), "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["settings"]["topk"] == 100 and "mAP cutoff: 100" in captured.err
    assert main(["evaluate", "--run", str(itq_run.folder), "--topk", "all"]) == 0
    out = capsys.readouterr().out
    assert "mAP cutoff" not in out
    line = next(l for l in out.splitlines() if l.split() and l.split()[0] == "mAP@all")
    assert float(line.split()[1]) == pytest.approx(itq_run.metrics()["map@all"], abs=5e-5)


def test_evaluate_and_encode_refuse_a_run_folder_another_process_is_writing(tmp_path):
    import os
    import subprocess
    import sys
    import threading

    from learn2hash.runs.folder import RunFolder

    folder = tmp_path / "run"
    train_run("itq", "digits", 16, folder, progress=False)
    metrics_before = (folder / "metrics.json").read_bytes()
    codes_before = (folder / "codes" / "query.npy").read_bytes()
    # another process holds the folder's writer lock (a training of it, say) until told to stop
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from learn2hash import _atomic\n"
         f"with _atomic.file_lock({str(folder / '.lock')!r}):\n"
         "    print('held', flush=True); sys.stdin.readline()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert holder.stdout.readline().strip() == "held"
        run = Run.open(folder)
        with pytest.raises(Learn2HashError, match="being written by another process"):
            run.evaluate(topk=10)
        with pytest.raises(Learn2HashError, match="being written by another process"):
            run.codes("query", recompute=True)
        assert main(["encode", "--run", str(folder), "--split", "query"]) == 2
        assert main(["evaluate", "--run", str(folder)]) == 0  # reads the cached codes, writes nothing there
        # nothing was written, and reading is never blocked
        assert (folder / "metrics.json").read_bytes() == metrics_before
        assert (folder / "codes" / "query.npy").read_bytes() == codes_before
        assert run.metrics()["map@all"] == json.loads(metrics_before)["map@all"]
        assert run.evaluate(topk=10, save=False)["topk"] == 10
    finally:
        holder.communicate("\n", timeout=30)
    assert holder.returncode == 0
    # once the holder is gone, the same calls write; within one thread the lock is re-entrant
    with RunFolder(folder).writer():
        assert Run.open(folder).evaluate(topk=10)["topk"] == 10
    assert Run.open(folder).metrics()["topk"] == 10
    # another thread of this process holding it is refused as well
    inside, release = threading.Event(), threading.Event()

    def hold():
        with RunFolder(folder).writer():
            inside.set()
            release.wait(30)

    t = threading.Thread(target=hold)
    t.start()
    try:
        assert inside.wait(30)
        with pytest.raises(Learn2HashError, match="being written by another process"):
            Run.open(folder).evaluate()
    finally:
        release.set()
        t.join(30)
    assert Run.open(folder).evaluate()["topk"] == 100


def test_run_evaluation_is_one_pass_with_the_values_of_separate_evaluations(itq_run):
    """Run.evaluate makes one evaluation for mAP@all and mAP@k (one counting pass over the database, one more
    ranking pass with ties="index"): each figure is exactly (to the bit) what
    an evaluation at that cutoff alone gives."""
    from learn2hash.metrics import evaluate

    ds = itq_run.dataset()
    q, db = itq_run.codes("query"), itq_run.codes("database")
    for ties in ("expected", "index"):
        got = itq_run.evaluate(topk=100, ties=ties, save=False)
        for key, topk in (("map@all", None), ("map@100", 100)):
            assert got[key] == evaluate(q, ds.query.labels, db, ds.database.labels, topk=topk, ties=ties)[key]


def test_metrics_written_with_older_key_spellings_are_read(itq_run, tmp_path):
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(itq_run.folder, folder)
    now = json.loads((folder / "metrics.json").read_text())
    renamed = {"map@all": "map", "n_query": "n_queries"}
    (folder / "metrics.json").write_text(json.dumps({renamed.get(k, k): v for k, v in now.items()}))
    assert Run(folder).metrics() == itq_run.metrics()
