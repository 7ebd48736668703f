"""The scan kernels of the native index against a numpy brute force: the threshold seeded from a
chunk's first block, several blocks and chunks, removed items, 1 and 2 threads, and the
256-bit-vector layout that cores without AVX-512 get."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from learn2hash import Codes, HammingIndex, Learn2HashError
from learn2hash.codes import as_words
from learn2hash.index import MISSING_DISTANCE, MISSING_ID, _bitplanes, _kernels


def brute_distances(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Hamming distances of 0/1 matrices, counted bit by bit."""
    return (q[:, None, :] != db[None, :, :]).sum(axis=2)


def brute_knn(dist: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k nearest by (distance, insertion order), padded as the index pads."""
    nq, n = dist.shape
    out_d = np.full((nq, k), MISSING_DISTANCE, np.int64)
    out_i = np.full((nq, k), MISSING_ID, np.int64)
    for i in range(nq):
        order = np.lexsort((np.arange(n), dist[i]))[:k]
        out_d[i, : order.size] = dist[i, order]
        out_i[i, : order.size] = ids[order]
    return out_d, out_i


def codes_of(rng, kind: str, n: int, bits: int, centers: np.ndarray) -> np.ndarray:
    """``n`` random codes, or codes near a few centers (0-2 bits flipped: many exact ties)."""
    if kind == "random":
        return rng.integers(0, 2, (n, bits)).astype(bool)
    out = centers[rng.integers(0, centers.shape[0], n)].copy()
    for row in out:
        at = rng.choice(bits, size=rng.integers(0, 3), replace=False)
        row[at] = ~row[at]
    return out


@pytest.mark.parametrize("bits", [64, 100, 128, 256])
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_knn_scan_equals_brute_force_for_every_k_threads_and_removals(bits, kind, monkeypatch):
    # 2,000 codes: several blocks of either width and a partial last one; small tiles and 3 queries
    # split the database into chunks (each seeds its threshold from its own first block).
    monkeypatch.setattr(_kernels, "TILE_BYTES", 512)
    rng = np.random.default_rng(bits + len(kind))
    n = 2000
    centers = rng.integers(0, 2, (4, bits)).astype(bool)
    db = codes_of(rng, kind, n, bits, centers)
    q = np.concatenate([codes_of(rng, kind, 2, bits, centers), db[7:8]])  # one query is stored
    ids = rng.permutation(5 * n)[:n]
    dist = brute_distances(q, db)
    index = HammingIndex(bits, threads=1)
    index.add(Codes.from_bits(db), ids=ids)
    assert _kernels.work_split(3, n, 2, _bitplanes.Shape(bits))[1] > 1
    results = {}
    for threads in (1, 2):
        index.threads = threads
        for k in (1, 10, 511, 512, 513, n, n + 3):
            d, i = index.search(Codes.from_bits(q), k, method="scan")
            rd, ri = brute_knn(dist, ids, k)
            np.testing.assert_array_equal(d, rd, err_msg=f"k={k} threads={threads}")
            np.testing.assert_array_equal(i, ri, err_msg=f"k={k} threads={threads}")
            results.setdefault(k, []).append((d, i))
    for k, ((d1, i1), (d2, i2)) in results.items():
        assert np.array_equal(d1, d2) and np.array_equal(i1, i2), f"k={k}: 1 and 2 threads differ"
    # Removed items, among them the whole first block and the stored query itself.
    gone = np.concatenate([np.arange(0, _bitplanes.BLOCK), rng.choice(n, 300, replace=False)])
    gone = np.unique(gone)
    index.remove(ids[gone])
    keep = np.setdiff1d(np.arange(n), gone)
    for threads in (1, 2):
        index.threads = threads
        for k in (1, 10, 600, keep.size + 1):
            d, i = index.search(Codes.from_bits(q), k, method="scan")
            rd, ri = brute_knn(dist[:, keep], ids[keep], k)
            np.testing.assert_array_equal(d, rd, err_msg=f"after removal k={k} threads={threads}")
            np.testing.assert_array_equal(i, ri, err_msg=f"after removal k={k} threads={threads}")


@pytest.mark.parametrize("bits", [64, 100, 256])
def test_seeded_threshold_is_the_smallest_with_k_items_of_the_block_below_it(bits):
    rng = np.random.default_rng(bits)
    n = _bitplanes.BLOCK + 37  # one full block and a partial one
    db = rng.integers(0, 2, (n, bits)).astype(bool)
    db[:20] = db[20]  # ties
    q = np.concatenate([rng.integers(0, 2, (3, bits)).astype(bool), db[20:21], ~db[20:21]])
    shape = _bitplanes.Shape(bits)
    planes = _bitplanes.zeros(2, shape.PB)
    _bitplanes.build_planes(as_words(Codes.from_bits(db).packed).reshape(-1), n, shape.W, shape.P, shape.M, planes, 0)
    plan = _kernels.Plan.of(as_words(Codes.from_bits(q).packed), shape)
    flat, of, stride = planes.reshape(-1), plan.offs.reshape(-1), planes.shape[1] * _bitplanes.LANES
    sums = np.empty(shape.M * _bitplanes.LANES, np.uint64)
    dist = brute_distances(q, db)
    alive = np.ones(n, np.uint8)
    alive[rng.choice(n, 40, replace=False)] = 0
    top = bits + 1
    for b in (0, 1):
        rows = np.arange(b * _bitplanes.BLOCK, min(n, (b + 1) * _bitplanes.BLOCK))
        for mask in (np.zeros(0, np.uint8), alive):
            live = rows if mask.size == 0 else rows[mask[rows] == 1]
            for k in (1, 5, 20, 37, live.size, live.size + 1):
                for i in range(q.shape[0]):
                    got = _kernels._seed(flat, stride, of, i * plan.offs.shape[1], b, n, mask, k, top,
                                         plan.pop[i], plan.comp[i], shape.P, shape.M, shape.tag, sums)
                    d = np.sort(dist[i, live])
                    want = top if k > d.size else int(d[k - 1]) + 1
                    assert got == want, f"block {b} k={k} query {i} removed={mask.size > 0}"


def test_vector_width_follows_the_target_cpu():
    assert _bitplanes.LANES in (4, 8) and _bitplanes.BLOCK == 64 * _bitplanes.LANES
    assert _bitplanes.zeros(3, 10).ctypes.data % 64 == 0


def test_256_bit_layout_without_avx512_equals_brute_force(tmp_path):
    # A generic target CPU (no AVX-512) gets 4 lanes, blocks of 256 codes; checked in a fresh
    # process with its own kernel cache, against the same brute force.
    script = textwrap.dedent("""
        import numpy as np
        from learn2hash import Codes, HammingIndex, Learn2HashError
        from learn2hash.index import _bitplanes
        assert _bitplanes.LANES == 4 and _bitplanes.BLOCK == 256, _bitplanes.LANES
        rng = np.random.default_rng(3)
        for bits in (64, 100):
            db = rng.integers(0, 2, (700, bits)).astype(bool)
            db[:30] = db[30]
            q = np.concatenate([rng.integers(0, 2, (3, bits)).astype(bool), db[30:31]])
            dist = (q[:, None, :] != db[None, :, :]).sum(axis=2)
            index = HammingIndex(bits, threads=2)
            index.add(Codes.from_bits(db))
            for k in (1, 10, 300, 700):
                d, i = index.search(Codes.from_bits(q), k, method="scan")
                for r in range(q.shape[0]):
                    order = np.lexsort((np.arange(700), dist[r]))[:k]
                    assert np.array_equal(d[r], dist[r, order]) and np.array_equal(i[r], order), (bits, k, r)
            res = index.range_search(Codes.from_bits(q), bits // 4, method="scan")
            for r in range(q.shape[0]):
                want = np.flatnonzero(dist[r] <= bits // 4)
                assert sorted(res.query(r)[1].tolist()) == want.tolist(), (bits, r)
        print("ok")
    """)
    env = dict(os.environ, NUMBA_CPU_NAME="generic", NUMBA_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1",
               PYTHONPATH=str(Path(__file__).resolve().parents[1] / "src"))
    env.pop("NUMBA_CPU_FEATURES", None)
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-3000:]


@pytest.mark.parametrize("k", [5, 50])  # every slot filled, and padded rows (k > n)
def test_a_saved_negative_id_is_refused_when_a_search_returns_it(tmp_path, k):
    rng = np.random.default_rng(k)
    db = rng.integers(0, 2, (40, 64)).astype(bool)
    index = HammingIndex(64, threads=1)
    index.add(Codes.from_bits(db))
    folder = index.save(tmp_path / "idx")
    (ids_file,) = folder.glob("*.ids.npy")
    ids = np.load(ids_file)
    ids[3] = -7
    np.save(ids_file, ids)
    loaded = HammingIndex.load(folder, verify=False, mmap=False)
    with pytest.raises(Learn2HashError, match="negative ids"):
        loaded.search(Codes.from_bits(db[3:4]), k, method="scan")
    d, i = loaded.search(Codes.from_bits(db[5:6]), 1, method="scan")  # a search that does not return it
    assert i[0, 0] == 5 and d[0, 0] == 0
