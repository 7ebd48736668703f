"""The faiss and milvus backends return the same results as the native index (ties aside)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from learn2hash import Codes, HammingIndex, Learn2HashError
from test_index import as_lists, clustered_bits, random_bits, ref_distances, ref_range

pytest.importorskip("faiss", reason="faiss-cpu is not installed (pip install 'learn2hash[faiss]')")
HAVE_MILVUS = importlib.util.find_spec("pymilvus") is not None and importlib.util.find_spec("milvus_lite") is not None


def check_knn_same_sets(native, peer, dist_rows):
    """Same distances row by row; same ids below the k-th distance; at the k-th distance the peer
    may choose other tied items, but each must really be at that distance."""
    (nd, ni), (pd, pi) = native, peer
    np.testing.assert_array_equal(pd, nd)
    for r in range(nd.shape[0]):
        kth = nd[r, -1]
        assert set(pi[r][pd[r] < kth]) == set(ni[r][nd[r] < kth])
        real = pi[r][pi[r] >= 0]
        assert len(set(real)) == real.size
        assert all(dist_rows[r][i] == kth for i in pi[r][pd[r] == kth] if i >= 0)


def build(bits, backend, db_bits, ids, **options):
    index = HammingIndex(bits, backend=backend, threads=1, **options)
    index.add(Codes.from_bits(db_bits[:150]), ids=ids[:150])
    index.add(Codes.from_bits(db_bits[150:]), ids=ids[150:])
    index.remove(ids[::7])
    return index


@pytest.mark.parametrize("bits", [8, 16, 24, 32, 48, 64, 128, 256])
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_faiss_backends_match_native(bits, kind):
    rng = np.random.default_rng(bits)
    gen = random_bits if kind == "random" else clustered_bits
    db_bits, q_bits = gen(rng, 300, bits), gen(rng, 6, bits)
    ids = rng.permutation(1000)[:300]
    keep = np.ones(300, bool)
    keep[::7] = False
    dist = ref_distances(q_bits, db_bits[keep])
    by_id = [dict(zip(ids[keep], row)) for row in dist]
    queries = Codes.from_bits(q_bits)
    native = build(bits, "native", db_bits, ids)
    flat = build(bits, "faiss", db_bits, ids)
    for k in (1, 10, 400):
        check_knn_same_sets(native.search(queries, k), flat.search(queries, k), by_id)
    for radius in (0, 2, bits // 4):
        want = ref_range(dist, ids[keep], radius)
        assert as_lists(flat.range_search(queries, radius)) == want
        assert as_lists(native.range_search(queries, radius)) == want
    # Hash tables probe every key within the radius: small radii only.
    for index_kind in ("hash", "multihash"):
        peer = build(bits, "faiss", db_bits, ids, faiss_index=index_kind)
        for radius in (0, 1, 3):
            assert as_lists(peer.range_search(queries, radius)) == ref_range(dist, ids[keep], radius)


def test_faiss_refuses_bits_not_multiple_of_8_and_unknown_index():
    with pytest.raises(Learn2HashError, match="multiple of 8"):
        HammingIndex(20, backend="faiss")
    with pytest.raises(Learn2HashError, match="faiss_index must be"):
        HammingIndex(16, backend="faiss", faiss_index="ivf")
    with pytest.raises(Learn2HashError, match="native backend"):
        HammingIndex(16, backend="faiss").search(Codes.from_bits(np.zeros((1, 16), bool)), 1, method="mih")


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_MILVUS, reason="pymilvus/milvus-lite are not installed (pip install 'learn2hash[milvus]')")
@pytest.mark.parametrize("bits", [8, 64, 256])
def test_milvus_lite_matches_native(bits, tmp_path):
    rng = np.random.default_rng(bits + 1)
    db_bits = clustered_bits(rng, 300, bits) if bits > 8 else random_bits(rng, 300, bits)
    q_bits = db_bits[:5]
    ids = rng.permutation(1000)[:300]
    keep = np.ones(300, bool)
    keep[::7] = False
    dist = ref_distances(q_bits, db_bits[keep])
    by_id = [dict(zip(ids[keep], row)) for row in dist]
    queries = Codes.from_bits(q_bits)
    native = build(bits, "native", db_bits, ids)
    with build(bits, "milvus", db_bits, ids, milvus_uri=str(tmp_path / "milvus.db")) as peer:
        for k in (1, 10, 400):
            check_knn_same_sets(native.search(queries, k), peer.search(queries, k), by_id)
        for radius in (0, bits // 4):
            assert as_lists(peer.range_search(queries, radius)) == ref_range(dist, ids[keep], radius)


@pytest.mark.skipif(not HAVE_MILVUS, reason="pymilvus/milvus-lite are not installed (pip install 'learn2hash[milvus]')")
def test_milvus_refuses_bits_not_multiple_of_8():
    with pytest.raises(Learn2HashError, match="multiple of 8"):
        HammingIndex(12, backend="milvus")
