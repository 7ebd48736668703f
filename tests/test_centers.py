"""Hash centers (Alg. 1 of CSQ) and multi-label centroid centers."""

import math

import numpy as np
import pytest

from learn2hash.centers import (HashCenters, centroid_centers, close_rows, default_bound, distance_stats,
                                hash_centers, min_distance, sylvester_hadamard)
from learn2hash.codes import Codes, hamming_distances
from learn2hash.errors import Learn2HashError


def _pairwise(codes: Codes) -> np.ndarray:
    d = hamming_distances(codes, codes)
    return d[np.triu_indices(len(codes), 1)]


@pytest.mark.parametrize("k", [1, 2, 4, 8, 32, 64])
def test_sylvester_rows_are_orthogonal(k):
    h = sylvester_hadamard(k).astype(np.int64)
    assert h.shape == (k, k) and set(np.unique(h)) <= {-1, 1}
    assert np.array_equal(h @ h.T, k * np.eye(k, dtype=np.int64))


def test_sylvester_needs_a_power_of_two():
    with pytest.raises(Learn2HashError, match="power-of-two"):
        sylvester_hadamard(12)


@pytest.mark.parametrize("m,k", [(10, 16), (16, 16), (10, 64), (64, 64), (2, 8)])
def test_hadamard_centers_are_exactly_k_over_2_apart(m, k):
    c = hash_centers(m, k)
    assert c.method == "hadamard" and c.n == m and c.bits == k and c.bound is None
    d = _pairwise(c.codes)
    assert np.all(d == k // 2)
    assert c.min_distance == k // 2 and c.mean_distance == k / 2
    # Alg. 1's rows, the ones listed in `negated` negated as whole centers
    signs = sylvester_hadamard(k)[:m].copy()
    signs[list(c.negated)] *= -1
    assert np.array_equal(c.signs(), signs)
    assert np.array_equal(hash_centers(m, k, balance=False).signs(), sylvester_hadamard(k)[:m])


@pytest.mark.parametrize("m,k", [(10, 64), (10, 16), (10, 32), (4, 4), (5, 8), (16, 16), (20, 32), (64, 64),
                                 (100, 128)])
@pytest.mark.parametrize("seed", [0, 7])
def test_balanced_hadamard_centers_have_no_constant_bit_and_the_same_distances(m, k, seed):
    plain = hash_centers(m, k, balance=False)
    c = hash_centers(m, k, seed=seed)
    bits = c.codes.to_bits()
    ones = bits.sum(axis=0)
    assert np.all((ones > 0) & (ones < m))  # every bit differs between some two centers
    assert c.constant_bits == 0 and np.allclose(c.bit_balance, ones / m)
    if (m, k) == (10, 64):  # Alg. 1's first 10 rows of H_64 agree on columns 0, 16, 32, 48
        assert plain.constant_bits == 4
        assert sorted(np.flatnonzero(plain.bit_balance == 1.0)) == [0, 16, 32, 48]
    # the whole distance matrix is unchanged, pair by pair (brute force)
    assert np.array_equal(hamming_distances(c.codes, c.codes), hamming_distances(plain.codes, plain.codes))
    assert (c.min_distance, c.mean_distance) == (plain.min_distance, plain.mean_distance)
    # deterministic for the seed; another seed negates other centers
    again = hash_centers(m, k, seed=seed)
    assert again.codes == c.codes and again.negated == c.negated
    assert hash_centers(m, k, seed=seed + 1).negated != c.negated


def test_two_or_three_hadamard_centers_cannot_lose_their_constant_bits():
    # two centers K/2 apart agree on K/2 bits and three on K/4, whatever their signs: left as Alg. 1 gives them
    for m, k, constant in [(2, 8, 4), (3, 8, 2), (3, 64, 16)]:
        c = hash_centers(m, k, seed=5)
        assert c.negated == () and c.constant_bits == constant
        assert np.array_equal(c.signs(), sylvester_hadamard(k)[:m])


def test_bit_balance_by_hand():
    codes = Codes.from_bits(np.array([[1, 0, 1, 1], [1, 1, 0, 1], [1, 0, 0, 0]], bool))
    c = HashCenters(codes, "hadamard", 2, 8 / 3)
    assert c.bit_balance.tolist() == pytest.approx([1.0, 1 / 3, 1 / 3, 2 / 3])
    assert c.constant_bits == 1
    # hadamard2 rows hold a row and its negation: no constant bit, nothing negated
    h2 = hash_centers(100, 64)
    assert h2.method == "hadamard2" and h2.negated == () and h2.constant_bits == 0


@pytest.mark.parametrize("m,k", [(17, 16), (32, 16), (100, 64)])
def test_hadamard2_centers_are_k_over_2_or_k_apart(m, k):
    c = hash_centers(m, k)
    assert c.method == "hadamard2"
    d = hamming_distances(c.codes, c.codes)
    iu = np.triu_indices(m, 1)
    assert set(np.unique(d[iu])) == {k // 2, k}
    # distance K exactly between row i and its negation i + K
    for i in range(m - k):
        assert d[i, i + k] == k
    assert np.sum(d[iu] == k) == m - k
    assert c.min_distance == k // 2 and c.mean_distance == pytest.approx(d[iu].mean())


@pytest.mark.parametrize("m,k", [(10, 12), (200, 48), (40, 16), (300, 100)])
def test_bernoulli_centers_meet_their_bound(m, k):
    c = hash_centers(m, k, seed=3)
    assert c.method == "bernoulli" and c.bound == default_bound(m, k) and c.bound > 0
    d = _pairwise(c.codes)
    assert d.min() >= c.bound
    assert c.min_distance == d.min() and c.mean_distance == pytest.approx(d.mean())


def test_bernoulli_with_an_explicit_bound_and_seed():
    a = hash_centers(50, 40, method="bernoulli", min_distance=14, seed=1)
    assert _pairwise(a.codes).min() >= 14 and a.bound == 14
    assert hash_centers(50, 40, method="bernoulli", min_distance=14, seed=1).codes == a.codes
    assert hash_centers(50, 40, method="bernoulli", min_distance=14, seed=2).codes != a.codes
    with pytest.raises(Learn2HashError, match="could not place"):
        hash_centers(50, 40, method="bernoulli", min_distance=30)


def test_default_bound_by_hand():
    def by_formula(m, k):
        pairs = m * (m - 1) / 2
        ok = [d for d in range(1, k // 2 + 1) if pairs * sum(math.comb(k, i) for i in range(d)) / 2 ** k <= 1]
        return max(ok, default=0)

    # 100,000 centers of 64 bits: 5e9 pairs; P[Bin(64, 1/2) < 8] = 3.9e-11 (0.2 pairs), < 9: 2.8e-10 (1.4)
    assert default_bound(100_000, 64) == 8
    for m, k in [(10, 12), (200, 48), (1000, 30), (2, 10), (5000, 16)]:
        assert default_bound(m, k) == by_formula(m, k)


def test_exact_min_and_mean_against_brute_force():
    rng = np.random.default_rng(0)
    for m, k in [(3000, 64), (500, 100), (800, 20), (2, 7), (400, 130)]:
        codes = Codes.from_bits(rng.integers(0, 2, size=(m, k)).astype(bool))
        d = _pairwise(codes)
        mn, mean = distance_stats(codes)
        assert mn == d.min() and mean == pytest.approx(d.mean())
        assert min_distance(codes, start=mn) == d.min()
    assert distance_stats(Codes.from_bits(np.ones((1, 8), bool))) == (None, None)
    dup = Codes.from_bits(np.array([[1, 0, 1], [0, 0, 1], [1, 0, 1]], bool))
    assert min_distance(dup) == 0


def test_close_rows_flags_the_later_row_of_close_pairs():
    rng = np.random.default_rng(1)
    codes = Codes.from_bits(rng.integers(0, 2, size=(2000, 64)).astype(bool))
    d = hamming_distances(codes, codes)
    for below in (20, 23, 26):
        expected = np.array([(d[j, :j] < below).any() for j in range(len(codes))])
        assert np.array_equal(close_rows(codes, below), expected)


def test_centroid_centers_hand_worked():
    centers = Codes.from_bits(np.array([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 1, 1]], bool))
    labels = np.array([[1, 1, 1],    # votes +1+1-1, +1-1-1, +1+1+1, +1-1+1 -> 1 0 1 1
                       [0, 1, 1],    # +1-1 tie, -1-1 -> 0, +1+1 -> 1, -1+1 tie
                       [0, 1, 0],    # single label: its center
                       [1, 0, 1]],   # +1-1 tie, +1-1 tie, 1, 1
                      bool)
    out = centroid_centers(labels, centers, seed=0).to_bits()
    assert out[0].tolist() == [True, False, True, True]
    assert out[1, 1] == 0 and out[1, 2] == 1
    assert out[2].tolist() == [True, False, True, False]
    assert out[3, 2] == 1 and out[3, 3] == 1
    # the tie bits are Bernoulli(0.5) draws from the seed, in row-major order of the tied positions
    draws = np.random.default_rng(0).integers(0, 2, size=4).astype(bool)
    assert [out[1, 0], out[1, 3], out[3, 0], out[3, 1]] == draws.tolist()


def test_centroid_ties_are_seeded_fair_coins():
    centers = Codes.from_bits(np.array([[1] * 64, [0] * 64], bool))
    labels = np.ones((500, 2), bool)  # every bit of every item is a tie
    a = centroid_centers(labels, centers, seed=1).to_bits()
    assert np.array_equal(a, centroid_centers(labels, centers, seed=1).to_bits())
    assert not np.array_equal(a, centroid_centers(labels, centers, seed=2).to_bits())
    assert abs(a.mean() - 0.5) < 0.01  # 32,000 fair coins: sd 0.0028


def test_centroid_of_single_labels_is_the_class_center():
    c = hash_centers(10, 32)
    ids = np.arange(100) % 10
    assert centroid_centers(ids, c) == c.codes[ids]


def test_centroid_input_errors():
    c = hash_centers(3, 8)
    with pytest.raises(Learn2HashError, match="no positive label"):
        centroid_centers(np.array([[1, 0, 0], [0, 0, 0]], bool), c)
    with pytest.raises(Learn2HashError, match="4 classes but there are 3 centers"):
        centroid_centers(np.ones((2, 4), bool), c)


@pytest.mark.parametrize("args,match", [
    ((0, 16), "n_classes"), ((10, 0), "bits"), ((10, 16.0), "bits"),
    ((10, 16, "magic"), "unknown hash-center method"),
    ((10, 12, "hadamard"), "power of two"), ((40, 16, "hadamard"), "at most"),
    ((40, 16, "hadamard2"), "at most"),
])
def test_bad_arguments(args, match):
    with pytest.raises(Learn2HashError, match=match):
        hash_centers(*args)


def test_str_reports_the_statistics():
    s = str(hash_centers(10, 16))
    assert "min pairwise distance 8" in s and "mean 8.000" in s
    assert isinstance(hash_centers(3, 5), HashCenters)
