"""One index folder under concurrent writer processes, reader threads and `kill -9` (issue 18).

Every item's code is a fixed function of its id (:func:`codes_for`), so a reader can check any
index it loads against codes computed independently: the index must be loadable, must hold exactly
the codes of its ids, and must answer every search like a brute-force scan of those codes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from learn2hash import Codes, HammingIndex

BITS = 64

CODES_FOR = textwrap.dedent("""
    def codes_for(ids):
        \"\"\"uint8[n, 8]: a 64-bit mix (splitmix64) of each id, big-endian.\"\"\"
        x = np.asarray(ids, np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        x = x ^ (x >> np.uint64(31))
        return x.astype(">u8").view(np.uint8).reshape(-1, 8)
""")
exec(CODES_FOR)  # defines codes_for here, exactly as in the child processes

POPCOUNT = np.array([bin(v).count("1") for v in range(256)], np.int64)


def brute_knn(queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k nearest of the codes of ``ids`` (in this order: ties by insertion order), padded like the index."""
    dist = POPCOUNT[queries[:, None, :] ^ codes_for(ids)[None, :, :]].sum(axis=2)
    order = np.argsort(dist, axis=1, kind="stable")[:, :k]
    d = np.full((len(queries), k), np.iinfo(np.int32).max, np.int64)
    i = np.full((len(queries), k), -1, np.int64)
    d[:, :order.shape[1]] = np.take_along_axis(dist, order, 1)
    i[:, :order.shape[1]] = ids[order]
    return d, i


@pytest.fixture
def fast_tmp(tmp_path):
    """A folder in memory (/dev/shm) where there is one: these tests exercise locking and process
    deaths, not the disk, and an fsync there costs microseconds instead of milliseconds."""
    if not os.access("/dev/shm", os.W_OK):
        yield tmp_path
        return
    folder = Path(tempfile.mkdtemp(prefix="learn2hash-test-", dir="/dev/shm"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def child_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}


def check_loaded(index: HammingIndex, queries: np.ndarray, k: int) -> None:
    ids = index.ids
    assert np.array_equal(index.codes().packed, codes_for(ids)), "codes do not belong to their ids"
    d, i = index.search(Codes(queries, BITS), k)
    ed, ei = brute_knn(queries, ids, k)
    assert np.array_equal(d, ed) and np.array_equal(i, ei), "search differs from brute force"


def seed_index(folder, ids) -> None:
    ids = np.asarray(ids, np.int64)
    index = HammingIndex(BITS, threads=1)
    index.add(Codes(codes_for(ids), BITS), ids=ids)
    index.save(folder)


# ----------------------------------------------------------------------------- stress
WRITER = textwrap.dedent("""
    import json, sys
    import numpy as np
    from learn2hash import Codes, HammingIndex
    {codes_for}
    folder, w, ops, out = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    alive, removed, next_id = [], [], w * 100_000
    for op in range(ops):
        with HammingIndex.edit(folder, threads=1, mmap=False) as index:
            ids = np.arange(next_id, next_id + 1 + op % 4, dtype=np.int64)
            index.add(Codes(codes_for(ids), 64), ids=ids)
            next_id += ids.size
            alive += ids.tolist()
            if op % 7 == 6:
                index.remove([alive[0]])
                removed.append(alive.pop(0))
    json.dump({{"alive": alive, "removed": removed}}, open(out, "w"))
""").format(codes_for=CODES_FOR)


@pytest.mark.slow
def test_two_writer_processes_and_two_reader_threads(fast_tmp):
    tmp_path = fast_tmp
    folder = tmp_path / "idx"
    seed = np.arange(50, dtype=np.int64) + 10**7
    seed_index(folder, seed)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    ops = 100  # per writer: 200 writes in all
    writers = [subprocess.Popen([sys.executable, str(script), str(folder), str(w), str(ops), str(tmp_path / f"w{w}.json")],
                                env=child_env(), stderr=subprocess.PIPE) for w in (1, 2)]
    failures, loads = [], [0, 0]
    done = threading.Event()

    def reader(r: int) -> None:
        rng = np.random.default_rng(r)
        seen = 0
        while not done.is_set():
            try:
                index = HammingIndex.load(folder, threads=1)
                assert set(seed.tolist()) <= set(index.ids.tolist())
                check_loaded(index, rng.integers(0, 256, (3, 8), dtype=np.uint8), int(rng.integers(1, 12)))
                generation = json.loads((folder / "manifest.json").read_text())["generation"]
                assert generation >= seen  # never goes back
                seen = generation
                loads[r] += 1
                time.sleep(0.1)  # leave the cores to the writers
            except BaseException as exc:  # noqa: BLE001 - every failure is counted
                failures.append(f"reader {r}: {type(exc).__name__}: {exc}")

    readers = [threading.Thread(target=reader, args=(r,)) for r in range(2)]
    for t in readers:
        t.start()
    try:
        errs = [w.communicate(timeout=120)[1].decode() for w in writers]
    finally:
        done.set()
        for t in readers:
            t.join(60)
    assert [w.returncode for w in writers] == [0, 0], errs
    assert failures == []
    assert min(loads) >= 5, loads
    final = HammingIndex.load(folder)
    expected = set(seed.tolist())
    for w in (1, 2):
        result = json.loads((tmp_path / f"w{w}.json").read_text())
        expected |= set(result["alive"])
        assert not set(result["removed"]) & set(final.ids.tolist())
    assert set(final.ids.tolist()) == expected  # nothing appended was lost
    assert json.loads((folder / "manifest.json").read_text())["generation"] == 2 * ops + 1
    check_loaded(final, np.random.default_rng(5).integers(0, 256, (4, 8), dtype=np.uint8), 10)


# ----------------------------------------------------------------------------- kill -9
ZYGOTE = textwrap.dedent("""
    import os, sys
    import numpy as np
    from learn2hash import Codes, HammingIndex
    {codes_for}
    folder = sys.argv[1]
    HammingIndex.load(folder, threads=1).search(Codes(np.zeros((1, 8), np.uint8), 64), 1)  # warm
    import gc
    gc.freeze()  # else a child's first collection walks (and copies) the whole inherited heap: 0.1-0.3 s
    print("ready", flush=True)
    for line in sys.stdin:  # one line per child: the first batch it appends
        batch = int(line)
        pid = os.fork()
        if pid == 0:
            while True:
                with HammingIndex.edit(folder, threads=1) as index:
                    ids = np.arange(3 * batch, 3 * batch + 3, dtype=np.int64)
                    index.add(Codes(codes_for(ids), 64), ids=ids)
                batch += 1
        print(pid, flush=True)
        os.waitpid(pid, 0)
        print("reaped", flush=True)
""").format(codes_for=CODES_FOR)


@pytest.mark.slow
def test_appender_killed_30_times_leaves_the_old_or_the_new_index(fast_tmp):
    """A process appends batches of 3 items (ids 3b, 3b+1, 3b+2) in a loop and is killed with
    SIGKILL at a random moment, 30 times; after each kill the index holds batches 0..B exactly."""
    tmp_path = fast_tmp
    folder = tmp_path / "idx"
    seed_index(folder, [0, 1, 2])  # batch 0
    script = tmp_path / "zygote.py"
    script.write_text(ZYGOTE)
    zygote = subprocess.Popen([sys.executable, str(script), str(folder)], env=child_env(), text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    rng = np.random.default_rng(0)
    last = 0
    try:
        assert zygote.stdout.readline().strip() == "ready"
        for kill in range(30):
            zygote.stdin.write(f"{last + 1}\n")
            zygote.stdin.flush()
            pid = int(zygote.stdout.readline())
            time.sleep(float(rng.uniform(0.01, 0.12)))
            os.kill(pid, signal.SIGKILL)
            assert zygote.stdout.readline().strip() == "reaped"
            index = HammingIndex.load(folder, threads=1)  # must load, whatever the moment of death
            ids = index.ids
            batches = ids.size // 3
            assert ids.tolist() == list(range(3 * batches)), f"kill {kill}: not whole batches: {ids.tolist()[-6:]}"
            assert batches - 1 >= last  # nothing committed was lost
            check_loaded(index, rng.integers(0, 256, (2, 8), dtype=np.uint8), 5)
            last = batches - 1
    finally:
        zygote.stdin.close()
        zygote.kill()
        zygote.wait()
    assert last >= 30  # the writers did make progress between kills
    # The next save collects what killed writers left: temporaries and unlisted segments.
    manifests = [json.loads((folder / "manifest.json").read_text())]
    with HammingIndex.edit(folder) as index:
        index.add(Codes(codes_for([10**6]), BITS), ids=[10**6])
    manifests.append(json.loads((folder / "manifest.json").read_text()))
    # what the new and the previous manifest list (a save that merged segments keeps the previous ones' files)
    listed = {s[key] for m in manifests for s in m["segments"] for key in ("codes", "ids")}
    stray = [p.name for p in folder.iterdir() if p.name not in listed | {"manifest.json", ".writer.lock"}]
    assert stray == []
