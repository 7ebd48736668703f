"""k-NN with ``method="auto"``: multi-index hashing or the scan, chosen by a cost model; the
answers equal a brute-force reference whichever is chosen (ties by insertion order, k up to
and beyond the index size, removed items skipped)."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from learn2hash import HammingIndex
from learn2hash.index import MISSING_DISTANCE, MISSING_ID, mih, native


def packed_random(rng, n: int, bits: int) -> np.ndarray:
    return rng.integers(0, 256, (n, bits // 8), dtype=np.uint8)


def packed_clustered(rng, n: int, bits: int, centers: int = 6, flips: int = 2) -> np.ndarray:
    """Items near a few centers (a center with 0..flips bits flipped): many equal distances."""
    c = np.unpackbits(packed_random(rng, centers, bits), axis=1)
    out = c[rng.integers(0, centers, n)]
    for _ in range(flips):
        rows = np.flatnonzero(rng.random(n) < 0.5)
        out[rows, rng.integers(0, bits, rows.size)] ^= 1
    return np.packbits(out, axis=1)


def distances(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Hamming distances by unpacking to bits and counting the differing ones."""
    qb, dbb = np.unpackbits(q, axis=1).astype(bool), np.unpackbits(db, axis=1).astype(bool)
    return np.stack([(dbb != row).sum(axis=1) for row in qb])


def reference(dist: np.ndarray, ids: np.ndarray, alive: np.ndarray, k: int):
    """k nearest alive items by (distance, insertion position), padded like the index."""
    nq = dist.shape[0]
    out_d = np.full((nq, k), MISSING_DISTANCE, np.int64)
    out_i = np.full((nq, k), MISSING_ID, np.int64)
    pos = np.flatnonzero(alive)
    for i in range(nq):
        order = pos[np.lexsort((pos, dist[i, pos]))][:k]
        out_d[i, : order.size] = dist[i, order]
        out_i[i, : order.size] = ids[order]
    return out_d, out_i


def choices(caplog) -> list[str]:
    return [r.getMessage().split(": ")[1].split(";")[0] for r in caplog.records
            if r.name == "learn2hash.index" and "estimated scan" in r.getMessage()]


@pytest.mark.parametrize("kind", ["random", "clustered"])
@pytest.mark.parametrize("bits", [32, 64, 128])
@pytest.mark.parametrize("force", ["mih", "scan"])
def test_auto_knn_equals_brute_force_for_every_k(kind, bits, force, monkeypatch, caplog):
    # Force each outcome of the cost model in turn; both must give the reference's answers.
    if force == "mih":
        monkeypatch.setattr(native, "MIH_KNN_MARGIN", float("inf"))
        monkeypatch.setattr(mih, "build_cost", lambda n, lay: 0.0)
    else:
        monkeypatch.setattr(native, "MIH_KNN_MARGIN", 0.0)
    rng = np.random.default_rng(bits + len(kind))
    n = 300
    db = packed_random(rng, n, bits) if kind == "random" else packed_clustered(rng, n, bits)
    db[50:60] = db[40]  # exact duplicates: ties at distance 0 and at every distance after
    queries = np.concatenate([db[[40, 7, 299]], packed_random(rng, 3, bits), packed_clustered(rng, 3, bits)])
    ids = rng.permutation(5 * n)[:n]
    index = HammingIndex(bits, threads=2)
    index.add(db[:100], ids=ids[:100])
    index.add(db[100:], ids=ids[100:])
    dist = distances(queries, db)
    alive = np.ones(n, bool)
    caplog.set_level(logging.DEBUG, logger="learn2hash.index")
    for step in range(2):
        if step == 1:  # remove some items, duplicates among them: the next nearest take their place
            gone = np.concatenate([[40, 52], rng.choice(n, 30, replace=False)])
            index.remove(ids[np.unique(gone)])
            alive[gone] = False
        for k in (1, 3, 11, 64, int(alive.sum()) - 1, int(alive.sum()), n + 4):
            caplog.clear()
            d, i = index.search(queries, k, method="auto")
            rd, ri = reference(dist, ids, alive, k)
            np.testing.assert_array_equal(d, rd, err_msg=f"k={k} step={step}")
            np.testing.assert_array_equal(i, ri, err_msg=f"k={k} step={step}")
            assert choices(caplog) == ["multi-index hashing" if force == "mih" else "scan"]


def near_duplicates(rng, distinct: int, copies: int, bits: int) -> np.ndarray:
    """``distinct`` random codes, each stored ``copies`` times (0-1 bits flipped in the copies)."""
    base = np.repeat(packed_random(rng, distinct, bits), copies, axis=0)
    b = np.unpackbits(base, axis=1)
    rows = np.flatnonzero(rng.random(b.shape[0]) < 0.5)
    b[rows, rng.integers(0, bits, rows.size)] ^= 1
    return np.packbits(b, axis=1)[rng.permutation(b.shape[0])]


def test_auto_picks_multi_index_hashing_where_it_pays_and_the_scan_where_not(caplog):
    rng = np.random.default_rng(0)
    bits, n, nq = 64, 120_000, 400
    caplog.set_level(logging.DEBUG, logger="learn2hash.index")
    # Near-duplicate codes (8 of each): the k nearest of a stored code lie in its own buckets.
    db = near_duplicates(rng, n // 8, 8, bits)
    queries = db[rng.integers(0, n, nq)]
    index = HammingIndex(bits, threads=1)
    index.add(db)
    dist = np.bitwise_count(queries.view(np.uint64)[:, None, 0] ^ db.view(np.uint64)[None, :, 0]).astype(np.int64)
    pos = np.arange(n)
    for _ in range(10):  # the batches answered by the scan pay for the tables, then they are built
        caplog.clear()
        index.search(queries, 1, method="auto")
        if choices(caplog) == ["multi-index hashing"]:
            break
    for k in (1, 4):
        caplog.clear()
        d, i = index.search(queries, k, method="auto")
        assert choices(caplog) == ["multi-index hashing"], caplog.text
        for r in range(nq):  # the k smallest (distance, position) keys
            key = dist[r] * n + pos
            top = np.sort(key[np.argpartition(key, k)[:k]])
            np.testing.assert_array_equal(d[r], top // n)
            np.testing.assert_array_equal(i[r], top % n)
    # k = 1000 needs items far beyond the near duplicates: the scan.
    caplog.clear()
    index.search(queries[:20], 1000, method="auto")
    assert choices(caplog) == ["scan"]
    # Uniformly random codes: every query's nearest are far away, the scan wins at any k.
    index = HammingIndex(bits, threads=1)
    index.add(packed_random(rng, n, bits))
    for k in (1, 10):
        caplog.clear()
        index.search(packed_random(rng, nq, bits), k, method="auto")
        assert choices(caplog) == ["scan"]


def test_tables_are_built_only_once_the_scans_would_have_paid_for_them(caplog):
    rng = np.random.default_rng(1)
    bits, n = 64, 120_000
    db = near_duplicates(rng, n // 4, 4, bits)
    index = HammingIndex(bits, threads=1)
    index.add(db)
    caplog.set_level(logging.DEBUG, logger="learn2hash.index")
    seen = []
    while len(seen) < 20_000 and "multi-index hashing" not in seen[-20:]:
        caplog.clear()  # one query a call: building costs more than one scan saves
        index.search(db[rng.integers(0, n, 1)], 1, method="auto")
        seen += choices(caplog)
    first = seen.index("multi-index hashing")
    for _ in range(20):  # built: every later query uses the tables
        caplog.clear()
        index.search(db[rng.integers(0, n, 1)], 1, method="auto")
        seen += choices(caplog)
    assert 5 < first and set(seen[first:]) == {"multi-index hashing"}
    scan, cost = [float(x) for x in re.findall(r"estimated scan ([\d.e+-]+) ms, multi-index hashing ([\d.e+-]+)",
                                                caplog.text)[0]]
    saved_per_query = scan - cost
    build = mih.build_cost(n, mih.knn_layout(n, bits)) / 1e6
    assert first == pytest.approx(build / saved_per_query, abs=2)  # built as soon as the saving paid for it
    assert index._engine._tables  # built, and kept until the next add
    index.add(db[:10])
    assert not index._engine._tables


def test_auto_range_search_checks_the_codes_crowding(caplog):
    rng = np.random.default_rng(2)
    bits, n, nq = 64, 120_000, 50
    caplog.set_level(logging.DEBUG, logger="learn2hash.index")

    def run(db, queries):
        index = HammingIndex(bits, threads=1)
        index.add(db)
        caplog.clear()
        got = index.range_search(queries, 2, method="auto")
        said = [r.getMessage().split(": ")[1].split(";")[0] for r in caplog.records
                if r.getMessage().startswith("range search of")]
        want = index.range_search(queries, 2, method="scan")
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
        return said

    # Spread-out codes: a query's probed buckets hold a handful of items.
    assert run(packed_random(rng, n, bits), packed_random(rng, 40 * nq, bits)) == ["multi-index hashing"]
    # 3 clusters: every probed bucket of a query holds a share of its cluster; the scan is cheaper.
    db = packed_clustered(rng, n, bits, centers=3, flips=2)
    assert run(db, db[:nq]) == ["scan"]
