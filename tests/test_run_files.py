"""Run-folder files: saves atomic as a whole, damaged files as one-line errors, overwrite, leftovers.

Each test reproduces a defect of issue 18 (the number in its docstring) on a small run folder.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from learn2hash import _atomic
from learn2hash import _codes_io as codes_mod  # where Codes.save lives
from learn2hash.cli import main
from learn2hash.codes import Codes
from learn2hash.errors import CorruptFileError, Learn2HashError
from learn2hash.methods import Hasher, create
from learn2hash.runs import Run, read_config, train_run

REPO = Path(__file__).resolve().parents[1]


class Killed(Exception):
    """Stands for a kill at a chosen point of a save."""


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    return train_run("itq", "digits", 32, tmp_path_factory.mktemp("base") / "R", progress=False).folder


@pytest.fixture
def run_dir(base_run, tmp_path):
    """A private copy of a finished itq run (32 bits, digits)."""
    return Path(shutil.copytree(base_run, tmp_path / "R"))


def _cli(capsys, *argv):
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.err.strip().splitlines()


def _fail_on_call(monkeypatch, module, name, call):
    """Make ``module.name`` raise :class:`Killed` on its ``call``-th call (1-based) from now on."""
    real = getattr(module, name)
    count = {"n": 0}

    def wrapper(*args, **kwargs):
        count["n"] += 1
        if count["n"] == call:
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


# ----------------------------------------------------------------------------- defect 4: atomic pairs
@pytest.mark.parametrize("step", ["metadata", "link"])
def test_codes_save_interrupted_at_any_step_leaves_old_or_new(tmp_path, monkeypatch, step):
    """4: a save stopped after the array but before the metadata left neither version readable."""
    rng = np.random.default_rng(0)
    old, new = Codes.from_signs(rng.normal(size=(40, 13))), Codes.from_signs(rng.normal(size=(25, 13)))
    path = tmp_path / "c.npy"
    old.save(path)
    if step == "metadata":  # the array of the new version is written, the metadata not yet
        _fail_on_call(monkeypatch, codes_mod._atomic, "save_json", 1)
        expected = old
    else:  # the metadata switched, the .npy name not updated yet
        _fail_on_call(monkeypatch, codes_mod, "_link_or_copy", 1)
        expected = new
    with pytest.raises(Killed):
        new.save(path)
    monkeypatch.undo()
    assert Codes.load(path) == expected
    new.save(path)  # the next save completes and collects what the interrupted one left
    assert Codes.load(path) == new
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_codes_saves_keep_current_and_previous_version_only(tmp_path):
    """4: stale versions are collected; the previous one stays for a reader that read its metadata."""
    rng = np.random.default_rng(1)
    path = tmp_path / "c.npy"
    versions = [Codes.from_signs(rng.normal(size=(10 + i, 9))) for i in range(5)]
    for c in versions:
        c.save(path)
    meta = json.loads((tmp_path / "c.npy.json").read_text())
    data = sorted(p.name for p in tmp_path.glob(".c.npy.*.npy"))
    assert len(data) == 2 and meta["file"] in data
    previous = next(n for n in data if n != meta["file"])
    assert Codes(np.load(tmp_path / previous), 9) == versions[-2]
    assert Codes.load(path) == versions[-1] and Codes(np.load(path), 9) == versions[-1]
    before = (tmp_path / "c.npy.json").read_bytes()
    versions[-1].save(path)  # saved again unchanged: the same version, named by its content
    assert (tmp_path / "c.npy.json").read_bytes() == before and Codes.load(path) == versions[-1]


def test_codes_of_format_version_1_still_load(tmp_path):
    """4: folders written before versioned saves (a .npy and its sidecar describing it) still load."""
    codes = Codes.from_signs(np.random.default_rng(2).normal(size=(12, 20)))
    np.save(tmp_path / "q.npy", codes.packed)
    (tmp_path / "q.npy.json").write_text(json.dumps({
        "format": "learn2hash-codes", "version": 1, "bits": 20, "n": 12,
        "sha256": _atomic.sha256_file(tmp_path / "q.npy")}))
    assert Codes.load(tmp_path / "q.npy") == codes
    other = codes[:5]
    other.save(tmp_path / "q.npy")  # upgrading in place keeps the version-1 file as the previous version
    assert Codes.load(tmp_path / "q.npy") == other


def _itq(bits=16, seed=0):
    from learn2hash import datasets

    ds = datasets.load("digits", protocol="standard")
    return create("itq", bits=bits, seed=seed).fit(ds.train), ds.query.x


@pytest.mark.parametrize("call", [1, 2, 3, 4])
def test_hasher_save_interrupted_leaves_the_old_hasher(tmp_path, monkeypatch, call):
    """4: a save stopped between its files (3 arrays, then hasher.json) left a folder that does not load."""
    (old, x), (new, _) = _itq(seed=0), _itq(seed=1)
    assert old.encode(x) != new.encode(x)
    old.save(tmp_path / "h")
    old_files = {e["file"] for e in json.loads((tmp_path / "h" / "hasher.json").read_text())["arrays"].values()}
    _fail_on_call(monkeypatch, _atomic, "atomic_open", call)  # 3 arrays, then hasher.json
    with pytest.raises(Killed):
        new.save(tmp_path / "h")
    monkeypatch.undo()
    assert Hasher.load(tmp_path / "h").encode(x) == old.encode(x)
    new.save(tmp_path / "h")
    assert Hasher.load(tmp_path / "h").encode(x) == new.encode(x)
    names = {p.name for p in (tmp_path / "h").iterdir()}
    assert not [n for n in names if n.endswith(".tmp")]
    new_files = {e["file"] for e in json.loads((tmp_path / "h" / "hasher.json").read_text())["arrays"].values()}
    assert {n for n in names if n.endswith(".npy")} == old_files | new_files  # this version's and the previous


def test_hasher_of_format_version_1_still_loads(tmp_path):
    """4: a hasher folder of the first format (<name>.npy, arrays as name -> sha256) loads and upgrades."""
    hasher, x = _itq()
    state, arrays = hasher._get_state()
    folder = tmp_path / "h"
    folder.mkdir()
    digests = {}
    for key, arr in arrays.items():
        np.save(folder / f"{key}.npy", arr)
        digests[key] = _atomic.sha256_file(folder / f"{key}.npy")
    (folder / "hasher.json").write_text(json.dumps({
        "format": "learn2hash-hasher", "version": 1, "method": "itq", "params": hasher.get_params(),
        "state": state, "arrays": digests}))
    assert Hasher.load(folder).encode(x) == hasher.encode(x)
    hasher.save(folder)
    hasher.save(folder)
    assert Hasher.load(folder).encode(x) == hasher.encode(x)
    assert not (folder / "pca.npy").exists()  # the version-1 files went once nothing named them


def test_saved_results_in_the_repository_still_read():
    """4/8: the run files kept under benchmarks/results pass the new validating readers."""
    folders = sorted({p.parent for p in (REPO / "benchmarks" / "results").rglob("config.json")})
    assert folders
    for folder in folders:
        run = Run.open(folder)
        assert run.metrics()["map@all"] >= 0
        assert isinstance(run.history(), list)
        assert read_config(folder / "config.json")["method"]


# ----------------------------------------------------------------------------- defect 8: one-line errors
def _edit_json(path, edit):
    obj = json.loads(path.read_text())
    obj = edit(obj)
    path.write_text(json.dumps(obj))


def _without(key):
    def edit(obj):
        del obj[key]
        return obj
    return edit


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(obj):
        target = obj
        for k in keys[:-1]:
            target = target[k]
        target[keys[-1]] = value
        return obj
    return edit


def _arrays_without_rotation(obj):
    del obj["arrays"]["rotation"]
    return obj


DAMAGE = [
    ("config.json", lambda o: [o], ["compare", "{R}"], "run configuration"),
    ("config.json", _without("method"), ["compare", "{R}"], "'method'"),
    ("config.json", _without("bits"), ["evaluate", "--run", "{R}"], "'bits'"),
    ("metrics.json", "truncate", ["compare", "{R}"], "not valid JSON"),
    ("metrics.json", _set("map@all", "high"), ["compare", "{R}"], "'map@all'"),
    ("hasher/hasher.json", _without("method"), ["encode", "--run", "{R}", "--split", "query", "--out", "{T}/q.npy"],
     "'method'"),
    ("hasher/hasher.json", _set("params", "alpha", 1), ["encode", "--run", "{R}", "--split", "query",
                                                        "--out", "{T}/q.npy"], "no parameter 'alpha'"),
    ("hasher/hasher.json", _set("params", "bits", 16), ["encode", "--run", "{R}", "--split", "query",
                                                        "--out", "{T}/q.npy"], "16 bits"),
    ("hasher/hasher.json", _set("arrays", ["mean"]), ["encode", "--run", "{R}", "--split", "query",
                                                      "--out", "{T}/q.npy"], "'arrays'"),
    ("hasher/hasher.json", _arrays_without_rotation, ["encode", "--run", "{R}", "--split", "query",
                                                      "--out", "{T}/q.npy"], "'rotation'"),
    ("hasher/hasher.json", _set("state", "dim", "many"), ["encode", "--run", "{R}", "--split", "query",
                                                          "--out", "{T}/q.npy"], "hasher.json"),
    ("codes/query.npy.json", _without("bits"), ["evaluate", "--run", "{R}"], "'bits'"),
    ("codes/database.npy.json", _set("n", "7"), ["evaluate", "--run", "{R}"], "'n'"),
]


@pytest.mark.parametrize("name, damage, argv, message", DAMAGE)
def test_damaged_run_file_is_one_line_with_status_2(run_dir, tmp_path, capsys, name, damage, argv, message):
    """8: damaged run-folder JSON gave tracebacks (AttributeError, KeyError, TypeError, an assert)."""
    path = run_dir / name
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    else:
        _edit_json(path, damage)
    status, err = _cli(capsys, *[a.format(R=run_dir, T=tmp_path) for a in argv])
    assert status == 2, err
    assert len(err) == 1 and message in err[0] and "Traceback" not in err[0], err
    assert name.split("/")[-1] in err[0]  # the message names the damaged file


def test_train_out_naming_a_file(tmp_path, capsys):
    """8: `train --out FILE` raised NotADirectoryError."""
    (tmp_path / "file").write_text("x")
    status, err = _cli(capsys, "train", "--method", "itq", "--dataset", "digits", "--bits", "16",
                       "--out", tmp_path / "file", "--no-progress")
    assert status == 2 and len(err) == 1 and "is a file" in err[0]
    assert (tmp_path / "file").read_text() == "x"


def test_encode_out_naming_a_folder(run_dir, tmp_path, capsys):
    """8: `encode --out FOLDER` raised IsADirectoryError."""
    (tmp_path / "dir").mkdir()
    status, err = _cli(capsys, "encode", "--run", run_dir, "--split", "query", "--out", tmp_path / "dir")
    assert status == 2 and len(err) == 1 and "is a folder" in err[0]


@pytest.mark.parametrize("extra, message", [
    (["--param", "seed=3"], "--seed"),
    (["--param", "bits=8"], "--bits"),
    (["--param", "n_iter=3", "--param", "n_iter=4"], "given twice"),
])
def test_train_parameter_given_twice(tmp_path, capsys, extra, message):
    """8: `train --param seed=3` raised TypeError (seed given twice to the method)."""
    status, err = _cli(capsys, "train", "--method", "itq", "--dataset", "digits", "--bits", "16",
                       "--out", tmp_path / "r", "--no-progress", *extra)
    assert status == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "r").exists()


def test_corrupt_file_errors_name_the_file_and_the_expectation(tmp_path):
    """8: the one reader: type, format, version and field checks all say what was expected."""
    p = tmp_path / "x.json"
    p.write_text('{"format": "f", "version": 1, "n": true}')
    with pytest.raises(CorruptFileError, match=r"x\.json: 'n' is true or false, expected an integer"):
        _atomic.load_json(p, "thing", format="f", versions=(1,), required={"n": int})
    with pytest.raises(CorruptFileError, match="format version 1; this learn2hash reads version 2"):
        _atomic.load_json(p, "thing", format="f", versions=(2,))
    with pytest.raises(CorruptFileError, match="is 'f', expected 'g'"):
        _atomic.load_json(p, "thing", format="g")
    p.write_text("[" * 100000)
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        _atomic.load_json(p, "thing")
    p.write_bytes(b"\xff\xfe{}")
    with pytest.raises(CorruptFileError, match="not valid JSON"):
        _atomic.load_json(p, "thing")
    with pytest.raises(Learn2HashError, match="does not exist"):
        _atomic.load_json(tmp_path / "missing.json", "thing")


# ----------------------------------------------------------------------------- defect 9: overwrite
def test_overwrite_leaves_nothing_of_the_old_run(tmp_path, capsys):
    """9: after `train --overwrite` the old run's map@50 stayed in metrics.json beside the new map@100."""
    out = tmp_path / "R"
    train_run("itq", "digits", 32, out, topk=50, progress=False)
    (out / "index").mkdir()  # stands for an index built from the old codes
    (out / "index" / "manifest.json").write_text("{}")
    (out / "report").mkdir()
    old_codes = Codes.load(out / "codes" / "database.npy")
    run = train_run("itq", "digits", 16, out, seed=1, overwrite=True, progress=False)
    m = run.metrics()
    assert "map@100" in m and "map@50" not in m and m["topk"] == 100
    assert not (out / "index").exists() and not (out / "report").exists()
    assert Codes.load(out / "codes" / "database.npy").bits == 16 != old_codes.bits
    assert not [p.name for p in out.iterdir() if p.name.startswith(".deleted-")]


def test_evaluating_again_replaces_the_earlier_evaluation(run_dir):
    """9: a second evaluation at another cutoff kept the first one's map@k."""
    run = Run.open(run_dir)
    before = run.metrics()
    run.evaluate(topk=20)
    m = run.metrics()
    assert "map@20" in m and "map@100" not in m and m["topk"] == 20
    assert m["train_seconds"] == before["train_seconds"]  # what training recorded stays


# ----------------------------------------------------------------------------- defect 12a: leftovers
def test_resume_removes_a_killed_trainings_checkpoint_temporaries(tmp_path, monkeypatch):
    """12: a killed training's .checkpoint.pt.*.tmp survived a successful resume."""
    from learn2hash import datasets
    from learn2hash.train import checkpoint as checkpoint_mod

    ds = datasets.load("digits", protocol="standard")
    params = dict(epochs=3, batch_size=100, backbone_options={"widths": [4, 8]}, device="cpu")
    ckpt = tmp_path / "checkpoints"
    real_save = checkpoint_mod.save_checkpoint

    def killed_while_saving_epoch_2(path, payload):
        if payload["epoch"] == 2:
            (path.parent / f".{path.name}.k1ll3d.tmp").write_bytes(b"half a checkpoint")
            raise Killed
        real_save(path, payload)

    monkeypatch.setattr(checkpoint_mod, "save_checkpoint", killed_while_saving_epoch_2)
    with pytest.raises(Killed):
        create("dhn", bits=8, **params).fit(ds.train, checkpoint_dir=ckpt, progress=False)
    monkeypatch.undo()
    assert sorted(p.name for p in ckpt.iterdir()) == [".checkpoint.pt.k1ll3d.tmp", "checkpoint.pt"]
    resumed = create("dhn", bits=8, **params).fit(ds.train, checkpoint_dir=ckpt, resume=True, progress=False)
    assert [h["epoch"] for h in resumed.history_] == [1, 2, 3]
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint.pt"]
    # a resume with nothing left to train removes them too
    (ckpt / ".checkpoint.pt.k1ll3d.tmp").write_bytes(b"half a checkpoint")
    create("dhn", bits=8, **params).fit(ds.train, checkpoint_dir=ckpt, resume=True, progress=False)
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint.pt"]


# ----------------------------------------------------------------------------- defect 4: readers during saves
def _read_while_saving(save_a, save_b, load, saves=60):
    """Load over and over while another thread saves a and b alternately; return what the loads gave."""
    import threading

    errors, results, done = [], [], threading.Event()

    def writer():
        try:
            for i in range(saves):
                (save_a if i % 2 else save_b)()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            done.set()

    t = threading.Thread(target=writer)
    t.start()
    while not done.is_set():
        results.append(load())
    t.join()
    assert not errors, errors
    return results


def test_codes_readers_see_old_or_new_while_saves_collect_versions(tmp_path):
    """4: a reader never finds the pair half-written, nor its version collected under it."""
    rng = np.random.default_rng(5)
    a, b = Codes.from_signs(rng.normal(size=(300, 24))), Codes.from_signs(rng.normal(size=(200, 24)))
    path = tmp_path / "c.npy"
    a.save(path)
    got = _read_while_saving(lambda: a.save(path), lambda: b.save(path), lambda: Codes.load(path))
    assert got and all(c == a or c == b for c in got)


def test_hasher_readers_see_old_or_new_while_saves_collect_versions(tmp_path):
    (a, x), (b, _) = _itq(seed=0), _itq(seed=1)
    ca, cb = a.encode(x), b.encode(x)
    folder = tmp_path / "h"
    a.save(folder)
    got = _read_while_saving(lambda: a.save(folder), lambda: b.save(folder),
                             lambda: Hasher.load(folder).encode(x), saves=30)
    assert got and all(c == ca or c == cb for c in got)
