"""Fuzz the files of a run folder through the command line: every damage is one line, status 2.

A finished run (itq, 32 bits, digits) with a built index; each case damages one file (truncated,
not UTF-8, nested too deep, the wrong JSON type at the top, a required key deleted, a declared
key of the wrong type, inconsistent values), runs a command that reads the file through
``learn2hash.cli.main`` in-process, and restores the file. Issue 18 asks for at least 200 cases,
0 tracebacks, each a one-line error with exit status 2.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from learn2hash.cli import main
from learn2hash.runs import train_run

# What each file must hold, written out here as the expectation (not imported from the readers).
CONFIG = {"format": str, "version": int, "method": str, "bits": int, "params": dict, "dataset": str,
          "protocol": str, "seed": int, "data_params": dict}
METRICS = {"map@all": float, "precision_at_radius2": float, "recall_at_radius2": float, "n_query": int,
           "n_database": int, "ties": str, "map@100": float}
HASHER = {"format": str, "version": int, "method": str, "params": dict, "arrays": dict, "state": dict}
CODES_META = {"format": str, "version": int, "bits": int, "n": int, "file": str}
INDEX = {"format": str, "version": int, "bits": int, "segments": list, "checksum": str}
# optional keys (codes saved without provenance are recomputed by a run; an index without a hasher is an
# older one): only their wrong values are damage

WRONG = {"a list": [1], "a string": "x", "an integer": 7, "a fraction": 0.5, "null": None, "an object": {"k": 1},
         "true": True}


def _wrong_values(expected: type) -> dict:
    ok = {str: ("a string",), int: ("an integer",), float: ("an integer", "a fraction"), dict: ("an object",),
          list: ("a list",)}[expected]
    return {k: v for k, v in WRONG.items() if k not in ok}


def _object_cases(obj: dict, schema: dict) -> list:
    cases = []
    for key in schema:
        if key not in obj:
            continue
        cases.append((f"without {key}", {k: v for k, v in obj.items() if k != key}))
        for label, value in _wrong_values(schema[key]).items():
            cases.append((f"{key} is {label}", {**obj, key: value}))
    for label in ("a list", "a string", "an integer", "null", "true"):
        cases.append((f"top level is {label}", WRONG[label]))
    cases.append(("top level is a list of the object", [obj]))
    return cases


def _byte_cases(raw: bytes) -> list:
    end = len(raw.rstrip())  # cutting only the final newline leaves valid JSON
    cuts = sorted({0, 1, *(end * i // 10 for i in range(1, 10)), end - 1})
    cases = [(f"truncated to {n} bytes", raw[:n]) for n in cuts]
    cases += [("not UTF-8", b"\xff\xfe" + raw[2:]), ("nested too deep", b"[" * 200000),
              ("binary zeros", b"\x00" * 64)]
    return cases


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory):
    base = tmp_path_factory.mktemp("fuzz")
    run = train_run("itq", "digits", 32, base / "R", progress=False)
    assert main(["index", "build", "--run", str(run.folder)]) == 0
    np.save(base / "five.npy", np.asarray(run.dataset().query.x[:5]))
    return run.folder


def _cases(folder: Path, tmp: Path) -> list:
    """(label, relative path, new bytes, argv) for every case."""
    from learn2hash.index import storage

    R = str(folder)
    five = str(folder.parent / "five.npy")
    commands = {
        "config.json": [["compare", R], ["evaluate", "--run", R], ["search", "--run", R, "--query", "0"]],
        "metrics.json": [["compare", R]],
        "hasher/hasher.json": [["encode", "--run", R, "--input", five, "--out", str(tmp / "five.codes.npy")],
                               ["search", "--run", R, "--query", "0"]],
        "codes/query.npy.json": [["evaluate", "--run", R]],
        "codes/database.npy.json": [["evaluate", "--run", R]],
        "index/manifest.json": [["search", "--run", R, "--query", "0"]],
    }
    schemas = {"config.json": CONFIG, "metrics.json": METRICS, "hasher/hasher.json": HASHER,
               "codes/query.npy.json": CODES_META, "codes/database.npy.json": CODES_META,
               "index/manifest.json": INDEX}
    out = []
    for rel, schema in schemas.items():
        raw = (folder / rel).read_bytes()
        obj = json.loads(raw)
        damaged = [(label, value) for label, value in _byte_cases(raw)]
        objects = _object_cases(obj, schema)
        if rel == "hasher/hasher.json":
            arrays = obj["arrays"]
            objects += [
                ("params.bits changed", {**obj, "params": {**obj["params"], "bits": 16}}),
                ("params.bits not a number", {**obj, "params": {**obj["params"], "bits": "32"}}),
                ("an unknown parameter", {**obj, "params": {**obj["params"], "alpha": 1}}),
                ("method unknown", {**obj, "method": "nope"}),
                ("arrays a list", {**obj, "arrays": list(arrays)}),
                ("state a list", {**obj, "state": [1]}),
                ("state.dim wrong", {**obj, "state": {**obj["state"], "dim": "many"}}),
                ("state.dim missing", {**obj, "state": {k: v for k, v in obj["state"].items() if k != "dim"}}),
            ]
            for key in arrays:
                objects += [
                    (f"array {key} missing", {**obj, "arrays": {k: v for k, v in arrays.items() if k != key}}),
                    (f"array {key} entry a string", {**obj, "arrays": {**arrays, key: "abc"}}),
                    (f"array {key} without file", {**obj, "arrays": {**arrays, key: {"sha256": "0" * 64}}}),
                    (f"array {key} names another file", {**obj, "arrays": {**arrays, key: {
                        **arrays[key], "file": "../config.json"}}}),
                    (f"array {key} wrong checksum", {**obj, "arrays": {**arrays, key: {
                        **arrays[key], "sha256": "0" * 64}}}),
                ]
        if rel.startswith("codes/"):
            objects += [("bits 0", {**obj, "bits": 0}), ("bits other", {**obj, "bits": 12}),
                        ("n other", {**obj, "n": obj["n"] + 1}), ("n negative", {**obj, "n": -1}),
                        ("file elsewhere", {**obj, "file": "../config.json"}),
                        ("file missing", {**obj, "file": obj["file"][:-16] + "000000000000.npy"}),
                        ("checksum wrong", {**obj, "sha256": "0" * 64}), ("version 99", {**obj, "version": 99}),
                        ("format other", {**obj, "format": "learn2hash-hasher"}),
                        *[(f"provenance is {label}", {**obj, "provenance": value}) for label, value in
                          _wrong_values(dict).items()],
                        ("provenance hasher not a sha256", {**obj, "provenance": {**obj["provenance"],
                                                                                  "hasher_sha256": "abc"}}),
                        ("provenance hasher a number", {**obj, "provenance": {**obj["provenance"], "hasher_sha256": 7}}),
                        ("provenance source a list", {**obj, "provenance": {**obj["provenance"], "source": [1]}}),
                        ("provenance with an unknown key", {**obj, "provenance": {**obj["provenance"], "x": 1}})]
        if rel == "metrics.json":
            objects += [("topk without its map", {**obj, "topk": 50})]
        if rel == "index/manifest.json":
            objects += [(f"hasher_sha256 is {label}", {**obj, "hasher_sha256": value})
                        for label, value in {**_wrong_values(str), "not a sha256": "xyz"}.items() if value is not None]
        if rel == "config.json":
            objects += [("bits 0", {**obj, "bits": 0}), ("version 99", {**obj, "version": 99}),
                        ("format other", {**obj, "format": "learn2hash-stream"})]
        for label, value in objects:
            if rel == "index/manifest.json":
                if isinstance(value, dict) and "checksum" in value and not label.startswith("checksum"):
                    # with a matching checksum, so that the reader gets past it to the fields
                    value = {**value, "checksum": storage._checksum(value)}
            damaged.append((label, json.dumps(value).encode()))
        for i, (label, data) in enumerate(damaged):
            argv = commands[rel][i % len(commands[rel])]
            out.append((f"{rel}: {label}", rel, data, argv))
    return out


@pytest.mark.slow
def test_damaged_run_folder_files_are_one_line_errors(run_folder, tmp_path, capsys):
    cases = _cases(run_folder, tmp_path)
    assert len(cases) >= 200
    with capsys.disabled():
        print(f"\n{len(cases)} damaged files")
    originals = {p: p.read_bytes() for p in run_folder.rglob("*") if p.is_file()}
    bad = []
    for label, rel, data, argv in cases:
        path = run_folder / rel
        path.write_bytes(data)
        try:
            status = main(argv)
        except BaseException as exc:  # noqa: BLE001 - a traceback is what this test looks for
            status = f"raised {type(exc).__name__}: {exc}"
        finally:
            path.write_bytes(originals[path])
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        if status != 2 or len(err) != 1 or "Traceback" in captured.err:
            bad.append(f"{label} ({' '.join(argv[:1])}): status {status}, stderr {err[:3]}")
        elif Path(rel).name not in err[0]:
            bad.append(f"{label}: the message does not name {Path(rel).name}: {err[0]}")
    assert not bad, f"{len(bad)} of {len(cases)} cases:\n" + "\n".join(bad)
    # the run folder is intact: the commands wrote nothing into it
    for p, content in originals.items():
        assert p.read_bytes() == content, p
    assert main(["evaluate", "--run", str(run_folder)]) == 0


# --------------------------------------------------------------------------- odd files and arguments
def _swap(path: Path, make):
    """Replace ``path`` by what ``make(path)`` creates; returns a function that puts it back."""
    backup = path.with_name(path.name + ".fuzz-backup")
    path.rename(backup)

    def restore():
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path)
        backup.rename(path)

    try:
        make(path)
    except BaseException:
        restore()
        raise
    return restore


def _json_file(value):
    return lambda p: p.write_text(json.dumps(value))


def _unreadable(p: Path):
    p.symlink_to("/proc/self/mem")  # open() works, read() fails with EIO


def _odd_cases(folder: Path, tmp: Path) -> list:
    """(label, argv, setup or None, what the message must name) for odd files and arguments."""
    R = str(folder)
    splits = json.loads((folder / "splits.json").read_text())
    train = ["train", "--method", "itq", "--dataset", "digits", "--bits", "8", "--no-progress"]
    (tmp / "f").write_text("a file")
    raw = (tmp / "m.mat")
    import scipy.io

    scipy.io.savemat(raw, {"I_tr": np.random.default_rng(0).random((50, 10)), "T_tr": np.ones((50, 5)),
                           "L_tr": np.eye(5)[np.arange(50) % 5]})
    (tmp / "t.mat").write_bytes(raw.read_bytes()[:100])
    (tmp / "t2.mat").write_bytes(raw.read_bytes()[:10])
    (tmp / "t3.mat").write_bytes(raw.read_bytes()[:127])
    long_name = str(tmp / ("q" * 300 + ".npy"))
    cases = []
    for label, value in [("[]", []), ("null", None), ('{"splits": []}', {"splits": []}),
                         ('{"splits": {"query": "x"}}', {"splits": {"query": "x"}}),
                         ("its splits a list", {**splits, "splits": []}),
                         ("split query a string", {**splits, "splits": {**splits["splits"], "query": "x"}}),
                         ("split train without sha256", {**splits, "splits": {**splits["splits"], "train": {
                             k: v for k, v in splits["splits"]["train"].items() if k != "sha256"}}}),
                         ("seed a string", {**splits, "seed": "0"})]:
        cases.append((f"splits.json is {label}", ["evaluate", "--run", R], ("splits.json", _json_file(value)),
                      "splits.json"))
    for name in ("split_query.npy", "split_train.npy", "split_database.npy"):
        cases.append((f"a folder at {name}", ["evaluate", "--run", R], (name, lambda p: p.mkdir()), name))
    cases += [
        ("hasher.json unreadable", ["search", "--run", R, "--query", "0"], ("hasher/hasher.json", _unreadable),
         "hasher.json"),
        ("hasher.json unreadable (encode)", ["encode", "--run", R, "--split", "query"],
         ("hasher/hasher.json", _unreadable), "hasher.json"),
        ("index manifest unreadable", ["search", "--run", R, "--query", "0"], ("index/manifest.json", _unreadable),
         "manifest.json"),
        ("config.json unreadable", ["evaluate", "--run", R], ("config.json", _unreadable), "config.json"),
        ("splits.json unreadable", ["evaluate", "--run", R], ("splits.json", _unreadable), "splits.json"),
        ("codes metadata unreadable", ["evaluate", "--run", R], ("codes/query.npy.json", _unreadable),
         "query.npy.json"),
        ("metrics.json unreadable", ["compare", R], ("metrics.json", _unreadable), "metrics.json"),
        ("a 300-character query file name", ["search", "--run", R, "--query", long_name], None, "q" * 50),
        ("train --out under a file", [*train, "--out", str(tmp / "f" / "r")], None, str(tmp / "f")),
        ("encode --out under a file", ["encode", "--run", R, "--split", "query", "--out", str(tmp / "f" / "c.npy")],
         None, str(tmp / "f")),
        ("train --seed -1", [*train, "--out", str(tmp / "s"), "--seed", "-1"], None, "seed"),
        ("datasets --seed -1", ["datasets", "digits", "--seed", "-1"], None, "seed"),
        ("--param with 1,000 nested brackets", [*train, "--out", str(tmp / "p"), "--param", "n_iter=" + "[" * 1000],
         None, "n_iter"),
        ("--data-param with 1,000 nested brackets", ["datasets", "digits", "--data-param", "x=" + "[" * 1000], None,
         "x="),
        ("train --topk 0", [*train, "--out", str(tmp / "k0"), "--topk", "0"], None, "topk"),
        ("train --topk -1", [*train, "--out", str(tmp / "k1"), "--topk", "-1"], None, "topk"),
        ("serve --host 999.1.1.1", ["serve", "--run", R, "--host", "999.1.1.1", "--port", "8123"], None, "999.1.1.1"),
        ("serve --port 70000", ["serve", "--run", R, "--port", "70000"], None, "--port"),
    ]
    for mat in ("t.mat", "t2.mat", "t3.mat"):
        cases.append((f"stream --mat a truncated {mat}", ["stream", "--mat", str(tmp / mat), "--mat-keys",
                                                          "image=I_tr,text=T_tr,labels=L_tr", "--out", str(tmp / "st")],
                      None, mat))
    return cases


def test_odd_files_and_arguments_are_one_line_errors(run_folder, tmp_path, capsys, monkeypatch):
    import learn2hash.serve

    def no_server(*a, **k):
        raise AssertionError("the service must not start")

    monkeypatch.setattr(learn2hash.serve, "serve", no_server)
    cases = _odd_cases(run_folder, tmp_path)
    originals = {p: p.read_bytes() for p in run_folder.rglob("*") if p.is_file() and not p.is_symlink()}
    bad = []
    for label, argv, setup, named in cases:
        restore = _swap(run_folder / setup[0], setup[1]) if setup else None
        try:
            status = main(argv)
        except BaseException as exc:  # noqa: BLE001 - a traceback is what this test looks for
            status = f"raised {type(exc).__name__}: {exc}"
        finally:
            if restore:
                restore()
        captured = capsys.readouterr()
        err = captured.err.strip().splitlines()
        if status != 2 or len(err) != 1 or "Traceback" in captured.err:
            bad.append(f"{label}: status {status}, stderr {[e[:300] for e in err[:3]]}")
        elif named not in err[0]:
            bad.append(f"{label}: the message does not name {named!r}: {err[0][:300]}")
    assert not bad, f"{len(bad)} of {len(cases)} cases:\n" + "\n".join(bad)
    for name in ("r", "s", "p", "k0", "k1", "st"):  # refused before anything was written
        assert not (tmp_path / name).exists(), name
    for p, content in originals.items():
        assert p.read_bytes() == content, p
    assert main(["evaluate", "--run", str(run_folder)]) == 0


def test_any_os_error_on_a_path_is_one_line_naming_it(monkeypatch, capsys):
    import errno

    import learn2hash.cli as cli

    def fails(args):
        raise OSError(errno.EIO, "Input/output error", "/data/some/file.npy")

    parser = cli.build_parser()
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["compare"].set_defaults(func=fails)
    assert main(["compare", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["learn2hash compare: error: /data/some/file.npy: Input/output error"]
