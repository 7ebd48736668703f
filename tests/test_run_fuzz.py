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
                        ("format other", {**obj, "format": "learn2hash-hasher"})]
        if rel == "metrics.json":
            objects += [("topk without its map", {**obj, "topk": 50})]
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
