"""Compaction under a concurrent reader: a writer process appends, removes and compacts an index
folder, saving after each step, while this process loads it (memory-mapped) again and again;
every load holds exactly the items committed up to some batch, codes matching ids, and searches
agree with brute force on what was loaded. After each batch the writer waits (up to a minute) until
the reader has loaded it, so the reader sees every batch whatever the machine's speed, and still
loads while the next batch and the compactions are being written."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import numpy as np

from learn2hash import Codes, HammingIndex

BITS = 64
BATCHES = 24
WRITER = textwrap.dedent("""
    import sys
    import time
    from pathlib import Path
    import numpy as np
    from learn2hash import Codes, HammingIndex

    def codes_for(ids):
        x = np.asarray(ids, np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        x = x ^ (x >> np.uint64(29))
        return x.astype(">u8").view(np.uint8).reshape(-1, 8)

    def wait_until_read(seen, b):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if int(Path(seen).read_text()) >= b:
                    return
            except (OSError, ValueError):
                pass
            time.sleep(0.001)

    folder, batches, seen = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    for b in range(1, batches):
        with HammingIndex.edit(folder, threads=1) as index:
            ids = np.arange(10 * b, 10 * b + 10, dtype=np.int64)
            index.add(Codes(codes_for(ids), 64), ids=ids)
            if b % 3 == 0:
                index.remove([10 * b + 1])
        if b % 3 == 0:
            with HammingIndex.edit(folder, threads=1) as index:
                index.compact()  # one segment, removed items dropped; saved when the block ends
        wait_until_read(seen, b)
    print("done", flush=True)
""")


def codes_for(ids):
    x = np.asarray(ids, np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    x = x ^ (x >> np.uint64(29))
    return x.astype(">u8").view(np.uint8).reshape(-1, 8)


def expected_ids(last_batch: int) -> list[int]:
    """Items alive once batch ``last_batch`` is committed, in insertion order."""
    return [10 * b + j for b in range(last_batch + 1) for j in range(10) if not (b % 3 == 0 and b > 0 and j == 1)]


def test_compaction_under_a_concurrent_reader_loses_nothing(tmp_path):
    folder = tmp_path / "idx"
    seed = HammingIndex(BITS, threads=1)
    seed.add(Codes(codes_for(np.arange(10)), BITS), ids=np.arange(10))
    seed.save(folder)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    seen = tmp_path / "seen"  # the last batch this process has loaded, for the writer to wait on
    writer = subprocess.Popen([sys.executable, str(script), str(folder), str(BATCHES), str(seen)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    rng = np.random.default_rng(0)
    seen_batches, loads, generations = set(), 0, set()
    deadline = time.monotonic() + 240
    try:
        while True:
            finished = writer.poll() is not None
            index = HammingIndex.load(folder, threads=1)  # memory-mapped, verified
            ids = index.ids
            last = int(ids.max()) // 10
            assert ids.tolist() == expected_ids(last), f"load {loads}: items lost or out of order"
            assert np.array_equal(index.codes().packed, codes_for(ids)), "codes do not belong to their ids"
            q = rng.integers(0, 256, (3, 8), dtype=np.uint8)
            d, i = index.search(Codes(q, BITS), 5)
            dist = np.unpackbits(codes_for(ids)[None, :, :] ^ q[:, None, :], axis=2).sum(axis=2)
            for r in range(3):
                order = np.lexsort((np.arange(ids.size), dist[r]))[:5]
                assert d[r].tolist() == dist[r, order].tolist() and i[r].tolist() == ids[order].tolist()
            generations.add(index._base)
            seen_batches.add(last)
            (tmp_path / "seen.tmp").write_text(str(max(seen_batches)))
            os.replace(tmp_path / "seen.tmp", seen)
            index.close()
            loads += 1
            if finished:
                break
            assert time.monotonic() < deadline, "the writer did not finish in time"
    finally:
        if writer.poll() is None:
            writer.kill()
        out, err = writer.communicate(timeout=30)
    assert writer.returncode == 0 and out.strip() == "done", err
    assert max(seen_batches) == BATCHES - 1  # the last load saw everything
    assert seen_batches >= set(range(1, BATCHES))  # every batch was loaded while the writer ran
    assert len(generations) >= BATCHES - 1
