"""Codes know which hasher computed them: a run never searches or scores codes of another hasher.

The reproduction of the wrong search: run R (itq, 32 bits, digits) with its index; a copy S whose
``hasher/`` is replaced by the hasher of another run (another seed). ``index build`` and ``search``
of S must answer with S's hasher as it is now: the ids and distances are checked against a brute
force search over database codes computed here, directly, with that hasher.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from learn2hash.cli import main
from learn2hash.codes import Codes, Provenance, hasher_mismatch, same_hasher
from learn2hash.index import HammingIndex
from learn2hash.index.provenance import StaleIndexError, check_codes_provenance
from learn2hash.methods import Hasher
from learn2hash.methods.base import hasher_checksum
from learn2hash.metrics import evaluate
from learn2hash.runs import Run, train_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("prov")
    r0 = train_run("itq", "digits", 32, base / "R", seed=0, progress=False)
    r1 = train_run("itq", "digits", 32, base / "R1", seed=1, progress=False)
    assert main(["index", "build", "--run", str(r0.folder)]) == 0
    return r0.folder, r1.folder


def _copy(src, dst):
    shutil.copytree(src, dst, symlinks=True)
    return dst


def _brute(hasher, x_query, x_db, k):
    q, db = hasher.encode(x_query), hasher.encode(x_db)
    dist = q.distances(db)
    order = np.lexsort((np.tile(np.arange(dist.shape[1]), (dist.shape[0], 1)), dist), axis=1)[:, :k]
    return np.take_along_axis(dist, order, axis=1), dist


def test_search_after_the_hasher_is_replaced_answers_with_the_new_hasher(runs, tmp_path, capsys):
    r0, r1 = runs
    s = _copy(r0, tmp_path / "S")
    shutil.rmtree(s / "hasher")
    shutil.copytree(r1 / "hasher", s / "hasher")
    run = Run.open(s)
    ds = run.dataset()
    x = np.asarray(ds.query.x[:5])
    np.save(tmp_path / "q.npy", x)
    capsys.readouterr()
    assert main(["index", "build", "--run", str(s)]) == 0
    capsys.readouterr()
    assert main(["search", "--run", str(s), "--query", str(tmp_path / "q.npy"), "-k", "5", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    hasher = Hasher.load(r1 / "hasher")  # the hasher S holds now, loaded from its original place
    best, dist = _brute(hasher, x, np.asarray(ds.database.x), 5)
    for qi, query in enumerate(out["queries"]):
        got = [(r["id"], r["distance"]) for r in query["results"]]
        assert [d for _, d in got] == best[qi].tolist()  # the true top 5 distances
        assert all(dist[qi, i] == d for i, d in got)  # and each id is at the distance it is reported at


def test_stale_cached_codes_are_recomputed_for_evaluate(runs, tmp_path, capsys):
    r0, r1 = runs
    s = _copy(r0, tmp_path / "S")
    shutil.rmtree(s / "hasher")
    shutil.copytree(r1 / "hasher", s / "hasher")
    capsys.readouterr()
    assert main(["evaluate", "--run", str(s), "--topk", "100", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    ds = Run.open(s).dataset()
    hasher = Hasher.load(r1 / "hasher")
    want = evaluate(hasher.encode(np.asarray(ds.query.x)), ds.query.labels,
                    hasher.encode(np.asarray(ds.database.x)), ds.database.labels, topk=100)
    assert got["map@100"] == pytest.approx(want["map@100"], abs=1e-12)
    # the recomputed codes are cached with the provenance of the hasher S holds now
    cached = Codes.load(s / "codes" / "database.npy")
    assert cached.provenance.hasher_sha256 == hasher_checksum(s / "hasher") == hasher_checksum(r1 / "hasher")
    assert cached.provenance.source == "split:database"


def test_database_codes_copied_from_another_run_are_not_scored(runs, tmp_path, capsys):
    r0, r1 = runs
    s = _copy(r0, tmp_path / "S")
    reference = Run.open(r0).metrics()["map@100"]
    for f in (s / "codes").glob("*database.npy*"):
        f.unlink()
    for f in (r1 / "codes").glob("*database.npy*"):
        shutil.copy2(f, s / "codes" / f.name)
    assert Codes.load(s / "codes" / "database.npy").provenance.hasher_sha256 == hasher_checksum(r1 / "hasher")
    capsys.readouterr()
    assert main(["evaluate", "--run", str(s), "--topk", "100", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["map@100"] == pytest.approx(reference, abs=1e-12)


def test_evaluate_files_of_two_hashers_warns_or_refuses(runs, tmp_path, capsys):
    r0, r1 = runs
    ds = Run.open(r0).dataset()
    np.save(tmp_path / "ql.npy", ds.query.labels.astype(np.uint8))
    np.save(tmp_path / "dl.npy", ds.database.labels.astype(np.uint8))
    files = ["--query-labels", str(tmp_path / "ql.npy"), "--db-labels", str(tmp_path / "dl.npy")]
    a = ["--query-codes", str(r0 / "codes" / "query.npy")]
    capsys.readouterr()
    # same hasher: no warning
    assert main(["evaluate", *a, "--db-codes", str(r0 / "codes" / "database.npy"), *files]) == 0
    assert capsys.readouterr().err == ""
    # another hasher of the same length: exit 0 with one warning line, or refused with --strict
    other = ["--db-codes", str(r1 / "codes" / "database.npy")]
    assert main(["evaluate", *a, *other, *files]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "warning" in err[0] and "different hashers" in err[0]
    assert main(["evaluate", *a, *other, *files, "--strict"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not comparable" in err[0]
    # codes that record no hasher (a plain array) are accepted without a check
    plain = Codes.load(r1 / "codes" / "database.npy").with_provenance(None)
    plain.save(tmp_path / "plain.npy")
    assert main(["evaluate", *a, "--db-codes", str(tmp_path / "plain.npy"), *files, "--strict"]) == 0


def test_index_build_refuses_codes_of_another_hasher(runs):
    r0, r1 = runs
    run = Run.open(r0)
    foreign = Codes.load(r1 / "codes" / "database.npy")
    with pytest.raises(StaleIndexError, match="computed by hasher"):
        check_codes_provenance(run, foreign)
    with pytest.raises(StaleIndexError, match="record no provenance"):
        check_codes_provenance(run, foreign.with_provenance(None))
    own = run.codes("database")
    with pytest.raises(StaleIndexError, match="not from the run's saved database split"):
        check_codes_provenance(run, own.with_provenance(Provenance(own.provenance.hasher_sha256, "split:query",
                                                                   own.provenance.source_sha256)))
    check_codes_provenance(run, own)  # the run's own codes pass


def test_the_index_keeps_its_hasher_and_refuses_codes_of_another(runs, tmp_path):
    r0, r1 = runs
    own, foreign = Codes.load(r0 / "codes" / "database.npy"), Codes.load(r1 / "codes" / "query.npy")
    with HammingIndex(32) as index:
        index.add(own[:100])
        assert index.hasher_sha256 == hasher_checksum(r0 / "hasher")
        with pytest.raises(Exception, match="this index holds codes of hasher"):
            index.search(foreign[:2], 3)
        with pytest.raises(Exception, match="this index holds codes of hasher"):
            index.add(foreign)
        assert len(index) == 100
        index.search(foreign.packed[:2], 3)  # a plain array records no hasher: searched as given
        index.save(tmp_path / "ix")
    loaded = HammingIndex.load(tmp_path / "ix")
    assert loaded.hasher_sha256 == hasher_checksum(r0 / "hasher")
    assert loaded.codes().provenance.hasher_sha256 == loaded.hasher_sha256
    with pytest.raises(Exception, match="this index holds codes of hasher"):
        loaded.range_search(foreign[:1], 2)
    # the run's index records the hasher too
    assert HammingIndex.load(r0 / "index").hasher_sha256 == hasher_checksum(r0 / "hasher")


def test_codes_provenance_travels(runs, tmp_path):
    r0, _ = runs
    hasher = Hasher.load(r0 / "hasher")
    assert hasher.checksum_ == hasher_checksum(r0 / "hasher")
    x = np.asarray(Run.open(r0).dataset().query.x[:10])
    codes = hasher.encode(x)
    assert codes.provenance == Provenance(hasher.checksum_)
    assert codes[2:5].provenance == codes.provenance and codes[[1, 3]].provenance == codes.provenance
    assert Codes.concatenate([codes[:3], codes[3:]]).provenance == codes.provenance
    tagged = codes.with_provenance(Provenance(hasher.checksum_, "array", "0" * 64))
    mixed = Codes.concatenate([tagged, codes])
    assert mixed.provenance == Provenance(hasher.checksum_)  # what both parts share
    other = codes.with_provenance(Provenance("f" * 64))
    assert Codes.concatenate([codes, other]).provenance is None
    assert same_hasher(codes, other) is False and hasher_mismatch(codes, other)
    assert same_hasher(codes, Codes.from_packed(codes.packed, 32)) is None
    tagged.save(tmp_path / "c.npy")
    assert Codes.load(tmp_path / "c.npy").provenance == tagged.provenance
    # a fresh fit is not a saved hasher: its codes record none; saving it gives it its identity
    flat = x.reshape(len(x), -1).astype(np.float64)
    fresh = Hasher.load(r0 / "hasher").fit(flat.repeat(10, axis=0) + np.random.default_rng(0).normal(size=(100, 64)))
    assert fresh.checksum_ is None and fresh.encode(flat).provenance is None
    fresh.save(tmp_path / "h")
    assert fresh.encode(flat).provenance.hasher_sha256 == hasher_checksum(tmp_path / "h")
    with pytest.raises(Exception, match="sha256"):
        Provenance("not a checksum")


def test_codes_saved_without_provenance_are_recomputed_by_a_run(runs, tmp_path):
    r0, _ = runs
    s = _copy(r0, tmp_path / "S")
    meta_path = s / "codes" / "query.npy.json"
    meta = json.loads(meta_path.read_text())
    del meta["provenance"]  # as an older learn2hash saved them
    meta_path.write_text(json.dumps(meta))
    assert Codes.load(s / "codes" / "query.npy").provenance is None  # standalone: read without a check
    run = Run.open(s)
    codes = run.codes("query")
    assert codes.provenance == run.expected_provenance("query")
    assert json.loads(meta_path.read_text())["provenance"]["hasher_sha256"] == hasher_checksum(s / "hasher")
    assert codes == Run.open(r0).codes("query")


def test_encode_input_records_the_array(runs, tmp_path, capsys):
    r0, _ = runs
    x = np.asarray(Run.open(r0).dataset().query.x[:4])
    np.save(tmp_path / "x.npy", x)
    assert main(["encode", "--run", str(r0), "--input", str(tmp_path / "x.npy"), "--out", str(tmp_path / "c.npy")]) == 0
    prov = Codes.load(tmp_path / "c.npy").provenance
    from learn2hash._atomic import sha256_file

    assert prov == Provenance(hasher_checksum(r0 / "hasher"), "array", sha256_file(tmp_path / "x.npy"))
