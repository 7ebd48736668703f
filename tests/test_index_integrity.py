"""Index integrity under reuse and concurrency (issue 18, defects 1, 2, 3, 5, 6).

Each test reproduces one defect: a stale or foreign run index used silently, two writers
corrupting a folder or losing an append, adding while searching, appended ids in `search`, a
huge k.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from learn2hash import Codes, HammingIndex, Learn2HashError
from learn2hash.cli import main
from learn2hash.index import storage
from learn2hash.runs import Run, train_run


def knn(query: Codes, db: Codes, k: int) -> tuple[list, list]:
    """Brute force: k nearest database positions by (distance, position)."""
    dist = query.distances(db)[0]
    order = np.lexsort((np.arange(dist.size), dist))[:k]
    return order.tolist(), dist[order].tolist()


def result_rows(out: str) -> list[list[str]]:
    """The table rows of a `learn2hash search` output (lines under the dashes)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("----")) + 1
    return [line.split() for line in lines[start:] if line.strip() and line.split()[0].isdigit()]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_run("itq", "digits", 16, tmp_path_factory.mktemp("integrity") / "itq", progress=False).folder


@pytest.fixture
def run_folder(trained, tmp_path):
    folder = tmp_path / "run"
    shutil.copytree(trained, folder)
    return folder


# ----------------------------------------------------------------------------- 1. stale / foreign index
def _retrain_keeping_the_index(run_folder):
    """Retrain the run (--overwrite) with its old index put back: `train --overwrite` deletes RUN/index
    (issue 18, 9), so a stale index now comes from a copy or an older learn2hash that kept it."""
    kept = run_folder.parent / "kept-index"
    shutil.copytree(run_folder / "index", kept)
    train_run("itq", "digits", 16, run_folder, seed=1, overwrite=True, progress=False)
    assert not (run_folder / "index").exists()
    shutil.copytree(kept, run_folder / "index")


def test_search_refuses_an_index_kept_from_before_a_retrain_and_rebuilds_when_asked(run_folder, capsys):
    assert main(["index", "build", "--run", str(run_folder)]) == 0
    _retrain_keeping_the_index(run_folder)
    capsys.readouterr()
    assert main(["search", "--run", str(run_folder), "--query", "0", "-k", "5"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stale" in err and f"index build --run {run_folder}" in err

    assert main(["search", "--run", str(run_folder), "--query", "0", "-k", "5", "--rebuild-index"]) == 0
    rows = result_rows(capsys.readouterr().out)
    run = Run.open(run_folder)
    ids, dist = knn(run.codes("query")[0], run.codes("database"), 5)
    assert [int(r[1]) for r in rows] == ids and [int(r[2]) for r in rows] == dist
    assert main(["search", "--run", str(run_folder), "--query", "0", "-k", "5"]) == 0  # rebuilt for good


def test_index_records_what_it_was_built_from(run_folder):
    from learn2hash.index.provenance import codes_checksum

    assert main(["index", "build", "--run", str(run_folder)]) == 0
    built_from = json.loads((run_folder / "index" / "manifest.json").read_text())["built_from"]
    run = Run.open(run_folder)
    assert built_from["database_codes_sha256"] == codes_checksum(run.codes("database"))
    assert built_from["n"] == len(run.codes("database")) and built_from["bits"] == 16
    # codes_checksum depends on every bit and on the bit length
    db = run.codes("database")
    flipped = db.packed.copy()
    flipped[7, 1] ^= 1
    assert codes_checksum(Codes(flipped, 16)) != built_from["database_codes_sha256"]


def test_service_refuses_a_stale_index(run_folder):
    from learn2hash.serve.service import SearchService

    assert main(["index", "build", "--run", str(run_folder)]) == 0
    _retrain_keeping_the_index(run_folder)
    with pytest.raises(Learn2HashError, match="stale.*index build --run"):
        SearchService(run_folder)


def test_search_refuses_an_index_of_foreign_codes(run_folder, capsys):
    n = len(Run.open(run_folder).codes("database"))
    foreign = HammingIndex(16)
    foreign.add(Codes.from_bits(np.random.default_rng(0).integers(0, 2, (n, 16))))  # ids 0..n-1, other codes
    foreign.save(run_folder / "index")
    assert main(["search", "--run", str(run_folder), "--query", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "foreign" in err and "index build --run" in err
    # an index holding exactly the run's database codes is accepted even without a record of its source
    own = HammingIndex(16)
    own.add(Run.open(run_folder).codes("database"))
    own.save(run_folder / "index")
    assert main(["search", "--run", str(run_folder), "--query", "0"]) == 0


# ----------------------------------------------------------------------------- 2. two writers
def random_index(seed: int, n: int = 200) -> HammingIndex:
    index = HammingIndex(64, threads=1)
    index.add(Codes.from_bits(np.random.default_rng(seed).integers(0, 2, (n, 64))))
    return index


def test_a_writer_waits_for_another_between_its_segments_and_its_manifest(monkeypatch, tmp_path):
    """Writer A has written its segments and is about to write its manifest when writer B saves.
    Without a lock B took the same generation and its garbage collection deleted A's segments,
    leaving a manifest that lists missing files."""
    folder = tmp_path / "idx"
    a, b = random_index(1), random_index(2)
    at_manifest, release = threading.Event(), threading.Event()
    real = storage._atomic.save_json

    def slow_manifest(path, obj):
        if threading.current_thread().name == "writer-a" and os.path.basename(path) == storage.MANIFEST:
            at_manifest.set()
            release.wait(10)
        return real(path, obj)

    monkeypatch.setattr(storage._atomic, "save_json", slow_manifest)
    ta = threading.Thread(target=a.save, args=(folder,), name="writer-a")
    ta.start()
    assert at_manifest.wait(10)
    tb = threading.Thread(target=b.save, args=(folder,), name="writer-b")
    tb.start()
    tb.join(1.0)  # with the lock, B waits for A
    release.set()
    ta.join(10)
    tb.join(10)
    loaded = HammingIndex.load(folder)  # loadable, and the last writer's index
    assert np.array_equal(loaded.codes().packed, b.codes().packed)
    assert json.loads((folder / storage.MANIFEST).read_text())["generation"] == 2


def test_a_save_on_top_of_a_folder_changed_meanwhile_is_refused_not_lost(tmp_path):
    folder = tmp_path / "idx"
    random_index(1).save(folder)
    first, second = HammingIndex.load(folder), HammingIndex.load(folder)
    first.add(Codes.from_bits(np.ones((3, 64), bool)), ids=[1000, 1001, 1002])
    first.save()
    second.add(Codes.from_bits(np.zeros((2, 64), bool)), ids=[2000, 2001])
    with pytest.raises(storage.IndexConflictError, match="changed by another writer"):
        second.save()
    assert {1000, 1001, 1002} <= set(HammingIndex.load(folder).ids.tolist())  # the first append survives
    # edit() starts from what is on disk, under the lock: both appends kept
    with HammingIndex.edit(folder) as index:
        index.add(Codes.from_bits(np.zeros((2, 64), bool)), ids=[2000, 2001])
    assert {1000, 1001, 1002, 2000, 2001} <= set(HammingIndex.load(folder).ids.tolist())
    # saving elsewhere, or again after a successful save, is no conflict
    first.add(Codes.from_bits(np.ones((1, 64), bool)), ids=[3000])
    with pytest.raises(storage.IndexConflictError):
        first.save()
    first.save(tmp_path / "copy")
    first.add(Codes.from_bits(np.ones((1, 64), bool)), ids=[3001])
    first.save()
    assert HammingIndex.load(tmp_path / "copy").ids[-2:].tolist() == [3000, 3001]
    with pytest.raises(Learn2HashError, match="no manifest.json"):
        with HammingIndex.edit(tmp_path / "nothing-here"):
            pass
    assert not (tmp_path / "nothing-here").exists()


def test_a_reader_whose_files_are_collected_meanwhile_starts_again(monkeypatch, tmp_path):
    """A reader has read the manifest; before it opens the segments two saves replace the index, and
    the second one's garbage collection deletes them. The reader must not fail: it never waits for
    writers, so it starts again from the new manifest."""
    folder = tmp_path / "idx"
    random_index(1).save(folder)
    real = storage._load_array
    calls = []

    def writers_strike_first(*args, **kwargs):
        if not calls:
            random_index(2).save(folder)
            random_index(3).save(folder)
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(storage, "_load_array", writers_strike_first)
    loaded = HammingIndex.load(folder)
    assert np.array_equal(loaded.codes().packed, random_index(3).codes().packed)


@pytest.mark.slow
def test_concurrent_index_builds_leave_a_loadable_index(run_folder):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    cmd = [sys.executable, "-m", "learn2hash", "index", "build", "--run", str(run_folder), "--threads", "1"]
    n = len(Run.open(run_folder).codes("database"))
    for _ in range(3):
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(2)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err.decode()
        index = HammingIndex.load(run_folder / "index")
        assert index.ids.tolist() == list(range(n))
        assert main(["search", "--run", str(run_folder), "--query", "3", "-k", "2"]) == 0


# ----------------------------------------------------------------------------- 3. add while searching
ADD_WHILE_SEARCHING = textwrap.dedent("""
    import sys, threading, time
    import numpy as np
    from learn2hash import Codes
    from learn2hash.index import HammingIndex, _bitplanes

    # Every add below outgrows the arrays; growing the bit planes is made slow (a stalled add), so
    # searches run while an add is under way. Dense thread switches make the interleaving finer.
    real_zeros = _bitplanes.zeros
    def slow_zeros(blocks, PB):
        if blocks > 1:
            time.sleep(0.02)
        return real_zeros(blocks, PB)
    _bitplanes.zeros = slow_zeros
    sys.setswitchinterval(1e-5)

    BITS, K, ROUNDS = 64, 5, int(sys.argv[1])
    rng = np.random.default_rng(0)
    bounds = np.cumsum([300] + [1000 * 2 ** j for j in range(6)])
    packed = rng.integers(0, 256, (int(bounds[-1]), 8), dtype=np.uint8)
    queries = Codes(rng.integers(0, 256, (2, 8), dtype=np.uint8), BITS)
    table = np.array([bin(v).count("1") for v in range(256)], np.int32)
    dist_all = table[queries.packed[:, None, :] ^ packed[None, :, :]].sum(axis=2)
    expected = {}
    for m in bounds:
        order = np.argsort(dist_all[:, :m], axis=1, kind="stable")[:, :K]
        expected[int(m)] = (np.take_along_axis(dist_all, order, 1), order)
    failures, searches = [], [0]
    for r in range(ROUNDS):
        index = HammingIndex(BITS, threads=1)
        index.add(Codes(packed[:bounds[0]], BITS))
        index.search(queries, K, method="scan")  # compiled before the race
        committed, announced = [int(bounds[0])], [int(bounds[0])]
        done = threading.Event()

        def reader():
            while not done.is_set():
                lo = committed[-1]
                d, i = index.search(queries, K, method="scan")
                hi = announced[-1]
                searches[0] += 1
                if not any(np.array_equal(d, expected[m][0]) and np.array_equal(i, expected[m][1])
                           for m in bounds if lo <= m <= hi):
                    failures.append((lo, hi, i.tolist()))

        readers = [threading.Thread(target=reader) for _ in range(3)]
        for t in readers:
            t.start()
        for j in range(1, len(bounds)):
            announced.append(int(bounds[j]))
            index.add(Codes(packed[bounds[j - 1]:bounds[j]], BITS))
            committed.append(int(bounds[j]))
        done.set()
        for t in readers:
            t.join()
    print(f"searches={searches[0]} failures={len(failures)} {failures[:2]}", flush=True)
    sys.exit(1 if failures else 0)
""")


def test_adding_while_searching_never_crashes_nor_shows_half_an_add(tmp_path):
    script = tmp_path / "add_while_searching.py"
    script.write_text(ADD_WHILE_SEARCHING)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run([sys.executable, str(script), "4"], env=env, capture_output=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stdout.decode(), proc.stderr.decode()[-2000:])
    assert "failures=0" in proc.stdout.decode()


def test_the_reader_writer_lock_lets_readers_share_and_writers_wait():
    from learn2hash.index._rwlock import RWLock

    lock, log = RWLock(), []
    inside = threading.Barrier(2, timeout=5)

    def reader(name):
        with lock.reading():
            inside.wait()  # both readers are inside at once, or this times out
            log.append(name)

    readers = [threading.Thread(target=reader, args=(f"r{i}",)) for i in range(2)]
    for t in readers:
        t.start()
    for t in readers:
        t.join(10)
    assert sorted(log) == ["r0", "r1"]
    def writer():
        with lock.writing():
            log.append("w")

    with lock.reading():
        writer = threading.Thread(target=writer)
        writer.start()
        writer.join(0.3)
        assert writer.is_alive() and "w" not in log  # a writer waits for the reader
    writer.join(5)
    assert log[-1] == "w"


# ----------------------------------------------------------------------------- 5. appended ids in search
def test_search_shows_appended_ids_without_labels(run_folder, capsys):
    assert main(["index", "build", "--run", str(run_folder)]) == 0
    run = Run.open(run_folder)
    n = len(run.codes("database"))
    index = HammingIndex.load(run_folder / "index")
    index.add(run.codes("query")[[0, 0]])  # two items at distance 0 from query 0, ids n and n + 1
    index.save()
    capsys.readouterr()
    assert main(["search", "--run", str(run_folder), "--query", "0", "-k", "4"]) == 0
    out = capsys.readouterr().out
    rows = result_rows(out)
    assert [(int(r[1]), int(r[2]), r[3], r[4]) for r in rows[:2]] == [(n, 0, "-", "-"), (n + 1, 0, "-", "-")]
    ids, dist = knn(run.codes("query")[0], run.codes("database"), 2)
    assert [int(r[1]) for r in rows[2:]] == ids and [int(r[2]) for r in rows[2:]] == dist
    assert f"4 nearest of {n + 2} indexed items" in out and "appended" in out


# ----------------------------------------------------------------------------- 6. huge or nonsense k
def test_huge_k_is_clamped_to_the_index_and_nonsense_k_is_one_line(run_folder, capsys):
    assert main(["index", "build", "--run", str(run_folder)]) == 0
    n = len(Run.open(run_folder).codes("database"))
    capsys.readouterr()
    assert main(["search", "--run", str(run_folder), "--query", "0", "-k", "1000000000000"]) == 0
    out = capsys.readouterr().out
    assert f"{n} nearest of {n} database items" in out and len(result_rows(out)) == n
    for k in ("0", "-5"):
        assert main(["search", "--run", str(run_folder), "--query", "0", "-k", k]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "-k must be at least 1" in err


def test_library_search_refuses_a_padded_result_that_cannot_fit():
    index = random_index(0, n=50)
    q = index.codes()[:2]
    with pytest.raises(Learn2HashError, match="ask for k <= 50"):
        index.search(q, 10**12)
    d, i = index.search(q, 60)  # modest padding stays as documented
    assert d.shape == (2, 60) and (i[:, 50:] == -1).all()
