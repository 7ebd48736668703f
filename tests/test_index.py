"""HammingIndex (native backend): exact k-NN and range search against a brute-force reference."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from learn2hash import Codes, HammingIndex, Learn2HashError
from learn2hash.codes import as_words
from learn2hash.index import MISSING_DISTANCE, MISSING_ID, _bitplanes, _kernels, native

BITS = [8, 16, 24, 32, 48, 64, 128, 256]


# ----------------------------------------------------------------------------- references
def ref_distances(q: np.ndarray, db: np.ndarray) -> np.ndarray:
    """Hamming distances of 0/1 matrices, by counting differing bits (no packing involved)."""
    return (q[:, None, :] != db[None, :, :]).sum(axis=2)


def ref_knn(dist: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """k nearest by (distance, insertion order), padded with MISSING_* like the index."""
    nq, n = dist.shape
    out_d = np.full((nq, k), MISSING_DISTANCE, np.int64)
    out_i = np.full((nq, k), MISSING_ID, np.int64)
    for i in range(nq):
        order = sorted(range(n), key=lambda j: (dist[i, j], j))[:k]
        out_d[i, : len(order)] = dist[i, order]
        out_i[i, : len(order)] = ids[order]
    return out_d, out_i


def ref_range(dist: np.ndarray, ids: np.ndarray, radius: int) -> list[list[tuple[int, int]]]:
    return [[(int(dist[i, j]), int(ids[j])) for j in sorted(np.flatnonzero(dist[i] <= radius), key=lambda j: (dist[i, j], j))]
            for i in range(dist.shape[0])]


def as_lists(res) -> list[list[tuple[int, int]]]:
    return [list(zip(res.query(i)[0].tolist(), res.query(i)[1].tolist())) for i in range(res.n_queries)]


def random_bits(rng, n: int, bits: int) -> np.ndarray:
    return rng.integers(0, 2, (n, bits)).astype(bool)


def clustered_bits(rng, n: int, bits: int, centers: int = 5, flips: int = 2) -> np.ndarray:
    """Items near a few centers: each is a center with at most ``flips`` bits flipped (many ties)."""
    c = random_bits(rng, centers, bits)
    out = c[rng.integers(0, centers, n)].copy()
    for row in out:
        idx = rng.choice(bits, size=rng.integers(0, flips + 1), replace=False)
        row[idx] = ~row[idx]
    return out


DATA = {"random": random_bits, "clustered": clustered_bits}


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_search_and_range_equal_brute_force(bits, kind):
    rng = np.random.default_rng(bits * 7 + len(kind))
    n, nq = 257, 11
    db_bits = DATA[kind](rng, n, bits)
    q_bits = np.concatenate([DATA[kind](rng, nq - 2, bits), db_bits[:2]])  # two exact duplicates
    ids = rng.permutation(10 * n)[:n]
    index = HammingIndex(bits, threads=1)
    index.add(Codes.from_bits(db_bits), ids=ids)
    queries = Codes.from_bits(q_bits)
    dist = ref_distances(q_bits, db_bits)
    for k in (1, 9, n + 5):
        for method in ("scan", "mih", "auto"):
            d, i = index.search(queries, k, method=method)
            rd, ri = ref_knn(dist, ids, k)
            assert d.dtype == np.int32 and i.dtype == np.int64 and d.shape == (nq, k)
            np.testing.assert_array_equal(d, rd, err_msg=f"k={k} {method}")
            np.testing.assert_array_equal(i, ri, err_msg=f"k={k} {method}")
    for radius in (0, bits // 8, bits // 3):
        for method in ("scan", "mih", "auto"):
            res = index.range_search(queries, radius, method=method)
            assert res.lims.dtype == np.int64 and res.distances.dtype == np.int32 and res.ids.dtype == np.int64
            assert as_lists(res) == ref_range(dist, ids, radius), f"radius={radius} {method}"


@pytest.mark.parametrize("bits", [64, 100])
def test_two_threads_and_several_database_chunks_agree_with_reference(bits, monkeypatch):
    # Small tiles make few queries split the database into chunks, merged by (distance, position).
    monkeypatch.setattr(_kernels, "TILE_BYTES", 256)
    rng = np.random.default_rng(5)
    db_bits = clustered_bits(rng, 3000, bits, centers=3, flips=3)
    q_bits = clustered_bits(rng, 3, bits, centers=3, flips=3)
    ids = np.arange(3000) * 2 + 1
    index = HammingIndex(bits, threads=2)
    index.add(Codes.from_bits(db_bits[:1000]), ids=ids[:1000])
    index.add(Codes.from_bits(db_bits[1000:]), ids=ids[1000:])
    assert _kernels.work_split(3, 3000, 2, _bitplanes.Shape(bits))[1] > 1
    dist = ref_distances(q_bits, db_bits)
    for k in (5, 100, 2000):
        d, i = index.search(Codes.from_bits(q_bits), k, method="scan")
        rd, ri = ref_knn(dist, ids, k)
        np.testing.assert_array_equal(d, rd)
        np.testing.assert_array_equal(i, ri)
    res = index.range_search(Codes.from_bits(q_bits), 4, method="scan")
    assert as_lists(res) == ref_range(dist, ids, 4)


@pytest.mark.parametrize("bits", [1, 8, 24, 40, 64, 100, 128, 256, 300])
def test_bit_plane_kernel_mask_and_distances_equal_brute_force_at_every_threshold(bits):
    # The block test must keep exactly the codes at distance < t, for every t from 1 to bits + 1,
    # for queries with few ones, many ones (complemented) and all zeros/ones, and report their
    # exact distances; 600 codes leave a partial third block.
    rng = np.random.default_rng(bits)
    n = 600
    db_bits = random_bits(rng, n, bits)
    db_bits[:40] = False
    db_bits[40:80] = True
    q_bits = np.concatenate([random_bits(rng, 5, bits), np.zeros((1, bits), bool), np.ones((1, bits), bool),
                             rng.random((2, bits)) < 0.15, rng.random((2, bits)) < 0.85])
    shape = _bitplanes.Shape(bits)
    words = as_words(Codes.from_bits(db_bits).packed)
    planes = _bitplanes.zeros(3, shape.PB)
    _bitplanes.build_planes(words.reshape(-1), n, shape.W, shape.P, shape.M, planes, 0)
    plan = _kernels.Plan.of(as_words(Codes.from_bits(q_bits).packed), shape)
    dist = ref_distances(q_bits, db_bits)
    for t in range(1, bits + 2):
        mask, got = _block_tests(planes, *plan.args, shape.P, shape.M, shape.tag, t)
        keep = np.unpackbits(mask.view(np.uint8), axis=1, bitorder="little")[:, :n].astype(bool)
        np.testing.assert_array_equal(keep, dist < t, err_msg=f"t={t}")
        np.testing.assert_array_equal(got[:, :n][keep], dist[keep], err_msg=f"t={t}")


@njit
def _block_tests(planes, offs, pop, comp, P, M, tag, t):
    """Every block's mask (``uint64[q, blocks * LANES]``) and the distances it reports (-1 elsewhere)."""
    nq, nb, lanes = offs.shape[0], planes.shape[0], _bitplanes.LANES
    flat, stride, ow, of = planes.reshape(-1), planes.shape[1] * lanes, offs.shape[1], offs.reshape(-1)
    masks = np.zeros((nq, nb * lanes), np.uint64)
    dist = np.full((nq, nb * _bitplanes.BLOCK), -1, np.int64)
    sums = np.empty(M * lanes, np.uint64)
    for i in range(nq):
        h, cm, cin, zoff = _bitplanes.threshold_args(t, pop[i], comp[i], P, M)
        for b in range(nb):
            m = _bitplanes.below(flat, b * stride, of, i * ow, h, cm, cin, zoff, tag, sums)
            for lane in range(lanes):
                masks[i, b * lanes + lane] = m[lane]
                for j in range(64):
                    if (m[lane] >> np.uint64(j)) & np.uint64(1):
                        dist[i, b * _bitplanes.BLOCK + lane * 64 + j] = _bitplanes.distance_at(sums, lane, j, t, M)
    return masks, dist


def test_bit_planes_built_piece_by_piece_equal_planes_built_at_once():
    rng = np.random.default_rng(9)
    db_bits = random_bits(rng, 1300, 72)
    whole = HammingIndex(72, threads=1)
    whole.add(Codes.from_bits(db_bits))
    pieces = HammingIndex(72, threads=1)
    for lo, hi in [(0, 1), (1, 255), (255, 256), (256, 700), (700, 1300)]:
        pieces.add(Codes.from_bits(db_bits[lo:hi]))
        pieces._engine._sync_planes()  # planes are built lazily: extend them after each piece
    a, b = whole._engine, pieces._engine
    a._sync_planes()
    blocks = -(-1300 // _bitplanes.BLOCK)
    np.testing.assert_array_equal(a._planes[:blocks], b._planes[:blocks])
    assert a._planes.ctypes.data % 64 == 0 and b._planes.ctypes.data % 64 == 0


@pytest.mark.parametrize("surplus", [1.5, 0.01])
def test_knn_started_from_sampled_thresholds_equals_brute_force(surplus, monkeypatch):
    # A tiny surplus starts most queries below their k-th distance: they must be scanned again.
    monkeypatch.setattr(native, "PILOT_STRIDE", 2)
    monkeypatch.setattr(native, "PILOT_MIN_BLOCKS", 2)
    monkeypatch.setattr(native, "PILOT_MIN_KP", 1)
    monkeypatch.setattr(native, "PILOT_SURPLUS", surplus)
    rng = np.random.default_rng(int(surplus * 100))
    db_bits = np.concatenate([random_bits(rng, 2000, 48), clustered_bits(rng, 1500, 48, centers=4, flips=3)])
    q_bits = np.concatenate([random_bits(rng, 6, 48), clustered_bits(rng, 6, 48, centers=4, flips=3)])
    index = HammingIndex(48, threads=2)
    index.add(Codes.from_bits(db_bits))
    gone = np.arange(0, 3500, 7)
    index.remove(gone)
    keep = np.ones(3500, bool)
    keep[gone] = False
    engine = index._engine
    starts, passes = [], []
    pilot, one_pass = engine._pilot_thresholds, engine._knn_pass
    monkeypatch.setattr(engine, "_pilot_thresholds", lambda *a: starts.append(pilot(*a)) or starts[-1])
    monkeypatch.setattr(engine, "_knn_pass", lambda *a: passes.append(a[4]) or one_pass(*a))
    dist = ref_distances(q_bits, db_bits[keep])
    for k in (40, 200):
        passes.clear()
        d, i = index.search(Codes.from_bits(q_bits), k, method="scan")
        rd, ri = ref_knn(dist, np.arange(3500)[keep], k)
        np.testing.assert_array_equal(d, rd)
        np.testing.assert_array_equal(i, ri)
        assert starts[-1] is not None and passes[0] < k  # the sample's pass, then the full one
        if surplus < 1:
            assert len(passes) == 3  # and the queries that started too low, again


def test_range_scan_with_more_hits_than_first_pass_room():
    # 300 identical codes: every query has 300 hits, beyond the first pass's 64 per query.
    rng = np.random.default_rng(2)
    base = random_bits(rng, 1, 40)
    db_bits = np.concatenate([np.repeat(base, 300, axis=0), random_bits(rng, 50, 40)])
    index = HammingIndex(40, threads=1)
    index.add(Codes.from_bits(db_bits))
    q_bits = np.concatenate([base, random_bits(rng, 2, 40)])
    res = index.range_search(Codes.from_bits(q_bits), 3, method="scan")
    assert as_lists(res) == ref_range(ref_distances(q_bits, db_bits), np.arange(350), 3)
    assert res.lims[1] - res.lims[0] >= 300


def test_mih_over_budget_queries_fall_back_to_the_scan(monkeypatch):
    rng = np.random.default_rng(3)
    db_bits = clustered_bits(rng, 2000, 32, centers=2, flips=1)
    q_bits = clustered_bits(rng, 6, 32, centers=2, flips=1)
    index = HammingIndex(32, threads=1)
    index.add(Codes.from_bits(db_bits))
    index.build_tables()
    monkeypatch.setattr(native.NativeEngine, "_budget", lambda self: 5)
    dist = ref_distances(q_bits, db_bits)
    res = index.range_search(Codes.from_bits(q_bits), 6, method="auto")
    assert as_lists(res) == ref_range(dist, np.arange(2000), 6)
    d, i = index.search(Codes.from_bits(q_bits), 4, method="auto")
    np.testing.assert_array_equal(i, ref_knn(dist, np.arange(2000), 4)[1])


def test_remove_then_search_skips_removed_and_ids_can_be_reused():
    rng = np.random.default_rng(4)
    db_bits = clustered_bits(rng, 400, 64)
    ids = np.arange(400) + 1000
    index = HammingIndex(64, threads=1)
    index.add(Codes.from_bits(db_bits), ids=ids)
    gone = ids[::3]
    assert index.remove(gone) == gone.size
    assert len(index) == 400 - gone.size
    keep = np.ones(400, bool)
    keep[::3] = False
    q_bits = db_bits[:5]
    dist = ref_distances(q_bits, db_bits[keep])
    for method in ("scan", "mih"):
        d, i = index.search(Codes.from_bits(q_bits), 10, method=method)
        rd, ri = ref_knn(dist, ids[keep], 10)
        np.testing.assert_array_equal(d, rd)
        np.testing.assert_array_equal(i, ri)
        assert as_lists(index.range_search(Codes.from_bits(q_bits), 5, method=method)) == ref_range(dist, ids[keep], 5)
    np.testing.assert_array_equal(index.ids, ids[keep])
    assert index.codes() == Codes.from_bits(db_bits[keep])
    index.add(Codes.from_bits(db_bits[:1]), ids=[gone[0]])  # a removed id is free again
    d, i = index.search(Codes.from_bits(db_bits[:1]), 400)
    assert gone[0] in i[d == 0]
    with pytest.raises(Learn2HashError, match="not in the index"):
        index.remove([gone[1]])


def test_padding_when_k_exceeds_the_stored_items():
    index = HammingIndex(16, threads=1)
    q = Codes.from_bits(np.zeros((2, 16), bool))
    d, i = index.search(q, 3)
    assert (d == MISSING_DISTANCE).all() and (i == MISSING_ID).all()
    index.add(Codes.from_bits(np.eye(16, dtype=bool)[:2]), ids=[7, 9])
    d, i = index.search(q, 4)
    np.testing.assert_array_equal(d, [[1, 1, MISSING_DISTANCE, MISSING_DISTANCE]] * 2)
    np.testing.assert_array_equal(i, [[7, 9, -1, -1]] * 2)
    assert index.search(Codes.empty(16), 5)[0].shape == (0, 5)
    assert index.range_search(Codes.empty(16), 2).lims.tolist() == [0]


def test_auto_ids_continue_after_the_largest_id():
    index = HammingIndex(8)
    a = index.add(Codes.from_bits(np.zeros((3, 8), bool)))
    b = index.add(Codes.from_bits(np.ones((2, 8), bool)), ids=[10, 4])
    c = index.add(Codes.from_bits(np.ones((2, 8), bool)))
    assert a.tolist() == [0, 1, 2] and b.tolist() == [10, 4] and c.tolist() == [11, 12]


def test_explicit_ids_are_checked_against_stored_ones_above_and_below_the_largest(tmp_path):
    # Ids above every id ever stored need no look-up (an append to a large index costs only its own
    # size); any other id is looked up. Both hold after a save and load and after a removal.
    rng = np.random.default_rng(3)
    codes = lambda m: Codes.from_packed(rng.integers(0, 256, (m, 2), dtype=np.uint8), 16)
    index = HammingIndex(16)
    index.add(codes(4), ids=[10, 20, 30, 40])
    index.save(tmp_path / "idx")
    index = HammingIndex.load(tmp_path / "idx")
    index.remove([40])  # removed, but still below "every id ever stored"
    index.add(codes(2), ids=[41, 50])
    with pytest.raises(Learn2HashError, match=r"already in the index: \[20\]"):
        index.add(codes(2), ids=[20, 60])
    index.add(codes(2), ids=[15, 40])  # below the largest, not stored (40 was removed): accepted
    with pytest.raises(Learn2HashError, match=r"already in the index: \[50\]"):
        index.add(codes(2), ids=[50, 51])
    assert sorted(index.ids.tolist()) == [10, 15, 20, 30, 40, 41, 50]
    assert index.add(codes(1)).tolist() == [51]  # default ids continue above the largest


# ----------------------------------------------------------------------------- refusals
def test_bad_input_is_refused_with_clear_errors():
    index = HammingIndex(16)
    codes = Codes.from_bits(np.zeros((3, 16), bool))
    with pytest.raises(Learn2HashError, match="codes to add have 8 bits, expected 16"):
        index.add(Codes.from_bits(np.zeros((3, 8), bool)))
    with pytest.raises(Learn2HashError, match="must be learn2hash.Codes"):
        index.add([[0, 0]] * 3)  # a plain uint8 array is taken (tests/test_inputs.py), a list is not
    with pytest.raises(Learn2HashError, match="duplicates"):
        index.add(codes, ids=[1, 2, 1])
    with pytest.raises(Learn2HashError, match="one id per code"):
        index.add(codes, ids=[1, 2])
    with pytest.raises(Learn2HashError, match=">= 0"):
        index.add(codes, ids=[1, 2, -3])
    with pytest.raises(Learn2HashError, match="integers"):
        index.add(codes, ids=[1.5, 2, 3])
    index.add(codes, ids=[1, 2, 3])
    with pytest.raises(Learn2HashError, match=r"already in the index: \[3\]"):
        index.add(codes, ids=[3, 4, 5])
    assert len(index) == 3  # nothing half-added
    with pytest.raises(Learn2HashError, match="query codes have 8 bits"):
        index.search(Codes.from_bits(np.zeros((1, 8), bool)), 1)
    for bad_k in (0, -1, 1.5, True):
        with pytest.raises(Learn2HashError, match="k must be"):
            index.search(codes, bad_k)
    with pytest.raises(Learn2HashError, match="radius must be"):
        index.range_search(codes, -1)
    with pytest.raises(Learn2HashError, match="method must be"):
        index.search(codes, 1, method="fast")
    with pytest.raises(Learn2HashError, match="not in the index"):
        index.remove([99])
    with pytest.raises(Learn2HashError, match="backend must be"):
        HammingIndex(16, backend="annoy")
    with pytest.raises(Learn2HashError, match="threads"):
        HammingIndex(16, threads=0)
    with pytest.raises(Learn2HashError, match="bits"):
        HammingIndex(0)
    with pytest.raises(Learn2HashError, match="no options"):
        HammingIndex(16, faiss_index="flat")
