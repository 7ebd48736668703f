"""LSH, ITQ and SDH: codes, the properties of their optimisers, persistence, errors, retrieval order."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest

from learn2hash.codes import Codes
from learn2hash.datasets import load
from learn2hash.errors import Learn2HashError
from learn2hash.metrics import evaluate
from learn2hash.methods import Hasher, create
from learn2hash.methods.shallow import ITQ, LSH, SDH


def gaussian_data(n: int = 2000, d: int = 24, seed: int = 0) -> np.ndarray:
    """Anisotropic Gaussian data with a non-zero mean (so centring matters)."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) * np.linspace(0.2, 3.0, d) + 5.0


def labelled_blobs(n_per: int = 40, d: int = 10, c: int = 4, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((c, d)) * 3
    y = np.repeat(np.arange(c), n_per)
    return centres[y] + rng.standard_normal((len(y), d)), y


@pytest.fixture(scope="module")
def digits():
    return load("digits", protocol="standard")


# --------------------------------------------------------------------------- codes
@pytest.mark.parametrize("method", ["lsh", "itq"])
def test_unsupervised_codes_shape_and_balance(method):
    x = gaussian_data()
    h = create(method, bits=16, seed=3).fit(x)
    codes = h.encode(x)
    assert isinstance(codes, Codes) and codes.bits == 16 and len(codes) == len(x)
    assert codes.packed.shape == (len(x), 2)
    ones = codes.to_bits().mean(axis=0)
    # each bit is the sign of a zero-mean symmetric projection of centred data
    assert np.all(np.abs(ones - 0.5) < 0.06), ones
    # codes are the signs of the projections
    assert codes == Codes.from_signs(h.transform(x))


def test_lsh_is_seeded():
    x = gaussian_data(n=300)
    a = create("lsh", bits=32, seed=7).fit(x).encode(x)
    b = create("lsh", bits=32, seed=7).fit(x).encode(x)
    c = create("lsh", bits=32, seed=8).fit(x).encode(x)
    assert a == b
    assert a != c


def test_lsh_projects_centred_data():
    x = gaussian_data(n=500, d=6)
    h = create("lsh", bits=8).fit(x)
    np.testing.assert_allclose(h.mean_, x.mean(axis=0))
    # the codes do not change when every item (training and query) is shifted together
    shift = np.arange(6.0) * 100
    h2 = create("lsh", bits=8).fit(x + shift)
    assert h2.encode(x + shift) == h.encode(x)


def test_odd_bit_length():
    x = gaussian_data(n=200)
    for method in ("lsh", "itq"):
        codes = create(method, bits=13).fit(x).encode(x)
        assert codes.bits == 13 and codes.packed.shape == (200, 2)


def test_encode_in_blocks_matches_whole(monkeypatch):
    import learn2hash.methods.shallow as shallow

    x, y = labelled_blobs()
    h = create("sdh", bits=8, n_anchors=50).fit(x, y)
    whole = h.encode(x)
    monkeypatch.setattr(shallow, "ENCODE_BLOCK", 7)
    assert h.encode(x) == whole
    assert len(h.encode(x[:0])) == 0


# --------------------------------------------------------------------------- ITQ
def test_itq_quantization_loss_decreases_and_rotation_is_orthogonal():
    x = gaussian_data()
    h = create("itq", bits=12, n_iter=30).fit(x)
    loss = np.array(h.loss_history_)
    assert len(loss) == 30
    assert np.all(np.diff(loss) <= 1e-9 * loss[0])
    assert loss[-1] < loss[0]
    # recompute the final loss independently: ||sign(V R) - V R||^2 with R from before the last update
    np.testing.assert_allclose(h.rotation_.T @ h.rotation_, np.eye(12), atol=1e-10)
    v = (x - x.mean(axis=0)) @ h.pca_
    vr = v @ h.rotation_
    final = float(np.sum((np.where(vr >= 0, 1.0, -1.0) - vr) ** 2))
    assert final <= loss[-1] + 1e-9 * loss[0]


def test_itq_pca_is_the_top_principal_subspace():
    x = gaussian_data(d=10)
    h = create("itq", bits=3, n_iter=5).fit(x)
    # data variances are linspace(0.2, 3, d)^2 on the axes: the top 3 components are the last 3 axes
    basis = np.abs(h.pca_)
    assert set(np.argmax(basis, axis=0)) == {7, 8, 9}


def test_itq_refuses_more_bits_than_features():
    x = gaussian_data(d=8)
    with pytest.raises(Learn2HashError, match="at most the feature dimension"):
        create("itq", bits=9).fit(x)


# --------------------------------------------------------------------------- SDH
def test_sdh_objective_never_increases():
    x, y = labelled_blobs()
    h = create("sdh", bits=12, n_anchors=60, n_iter=4).fit(x, y)
    steps = [s for s, _ in h.objective_history_]
    values = np.array([v for _, v in h.objective_history_])
    assert steps.count("B") >= 4
    assert np.all(np.diff(values) <= 1e-9 * abs(values[0])), list(zip(steps, values))
    assert values[-1] < values[0]


def test_sdh_dcc_sweep_reaches_single_bit_optimum():
    """At a fixed point of DCC no single bit flip lowers J (checked by brute force)."""
    rng = np.random.default_rng(0)
    n, k, c, f = 7, 4, 3, 5
    h = SDH(bits=k, nu=0.3, lam=0.5, delta=0.1)
    y = np.eye(c)[rng.integers(0, c, n)]
    phi = rng.standard_normal((n, f))
    p = rng.standard_normal((f, k))
    w = rng.standard_normal((k, c))
    b = np.where(rng.standard_normal((n, k)) >= 0, 1.0, -1.0)
    q = y @ w.T + h.nu * (phi @ p)
    before = h.objective(y, b, w, phi, p)
    for _ in range(50):
        if h.dcc_sweep(b, w, q) == 0:
            break
    after = h.objective(y, b, w, phi, p)
    assert after <= before + 1e-12
    for i, j in itertools.product(range(n), range(k)):
        flipped = b.copy()
        flipped[i, j] *= -1
        assert h.objective(y, flipped, w, phi, p) >= after - 1e-12


def test_sdh_anchors_and_width():
    x, y = labelled_blobs(n_per=10)
    h = create("sdh", bits=8, n_anchors=1000).fit(x, y)
    assert h.anchors_.shape == (40, 10)  # fewer items than anchors: all items are anchors
    dist = np.sqrt(((x[:, None, :] - h.anchors_[None]) ** 2).sum(-1))
    assert h.sigma_ == pytest.approx(dist.mean())
    h2 = create("sdh", bits=8, n_anchors=15).fit(x, y)
    assert h2.anchors_.shape == (15, 10)
    assert all((x == a).all(axis=1).any() for a in h2.anchors_)


def test_sdh_needs_labels():
    with pytest.raises(Learn2HashError, match="supervised"):
        create("sdh", bits=8).fit(gaussian_data(n=50))


@pytest.mark.parametrize("param,value", [("n_anchors", 0), ("lam", -1.0), ("nu", float("nan")), ("n_iter", 1.5)])
def test_sdh_bad_params(param, value):
    x, y = labelled_blobs(n_per=5)
    with pytest.raises(Learn2HashError, match=param):
        create("sdh", bits=8, **{param: value}).fit(x, y)


# --------------------------------------------------------------------------- persistence and errors
@pytest.mark.parametrize("method", ["lsh", "itq", "sdh"])
def test_save_load_gives_identical_codes(method, tmp_path, digits):
    h = create(method, bits=24, n_anchors=100) if method == "sdh" else create(method, bits=24)
    h.fit(digits.train)
    h.save(tmp_path / "h")
    loaded = Hasher.load(tmp_path / "h")
    assert type(loaded) is type(h) and loaded.get_params() == h.get_params()
    assert loaded.encode(digits.database.x) == h.encode(digits.database.x)


@pytest.mark.parametrize("method", ["lsh", "itq", "sdh"])
def test_refuses_other_feature_dimension(method, tmp_path, digits):
    h = create(method, bits=16).fit(digits.train)
    with pytest.raises(Learn2HashError, match="fitted on 64"):
        h.encode(np.zeros((3, 65)))
    h.save(tmp_path / "h")
    with pytest.raises(Learn2HashError, match="fitted on 64"):
        Hasher.load(tmp_path / "h").encode(np.zeros((3, 8, 9), np.uint8))
    with pytest.raises(Learn2HashError, match="NaN"):
        h.encode(np.full((2, 64), np.nan))


def test_unfitted_refuses_encode():
    for klass in (LSH, ITQ, SDH):
        with pytest.raises(Learn2HashError, match="not fitted"):
            klass(bits=8).encode(np.zeros((2, 4)))


def test_shallow_module_does_not_import_torch():
    import subprocess

    code = "import sys, learn2hash.methods.shallow; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- retrieval
def test_retrieval_order_on_digits(digits):
    """Supervision and learned rotations pay: SDH > ITQ > LSH in mAP on digits, 32 bits."""
    scores = {}
    for method in ("lsh", "itq", "sdh"):
        h = create(method, bits=32).fit(digits.train)
        scores[method] = evaluate(h.encode(digits.query.x), digits.query.labels,
                                  h.encode(digits.database.x), digits.database.labels)["map@all"]
    assert scores["sdh"] > scores["itq"] > scores["lsh"], scores
    assert scores["sdh"] > 0.8, scores


@pytest.mark.parametrize("method", ["lsh", "itq"])
def test_encoding_no_items_gives_empty_codes(method):
    x = np.random.default_rng(0).standard_normal((200, 12))
    h = create(method, bits=8).fit(x)
    codes = h.encode(np.zeros((0, 12)))
    assert len(codes) == 0 and codes.bits == 8
    with pytest.raises(Learn2HashError, match="12"):
        h.encode(np.zeros((0, 5)))
