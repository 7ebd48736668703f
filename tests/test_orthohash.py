"""OrthoHash: the loss worked out by hand, the codebook from hash_centers, a short fit on digits that
separates the classes, persistence and parameter errors."""

import math

import numpy as np
import pytest
import torch

from learn2hash import datasets
from learn2hash.centers import hash_centers
from learn2hash.errors import Learn2HashError
from learn2hash.methods import Hasher, create
from learn2hash.methods.orthohash import orthohash_loss
from learn2hash.metrics import evaluate
from learn2hash.nn.fixed_order import FixedOrderBatchNorm1d

R2 = math.sqrt(2.0)
BOOK = torch.tensor([[1.0, 1.0], [1.0, -1.0]])


def _loss(v, book, labels, **kw):
    kw = {"scale": 2.0, "margin": 0.5, **kw}
    loss, parts = orthohash_loss(torch.tensor(v, dtype=torch.float64), book.double(),
                                 torch.tensor(labels, dtype=torch.bool), **kw)
    return float(loss), {k: float(p) for k, p in parts.items()}


def test_single_label_loss_matches_a_hand_computation():
    # item 1: v along (1, 0): cos = (1/r2, 1/r2); class 0 gets the margin, z = 2 (1/r2 - 1/2, 1/r2),
    #   z1 - z0 = 1, so CE = log(1 + e^1)
    # item 2: v along (0, 1): cos = (1/r2, -1/r2); class 1 gets the margin, z = (r2, 2 (-1/r2 - 1/2)),
    #   z0 - z1 = 2 r2 + 1, so CE = log(1 + e^(2 r2 + 1))
    expected = (math.log(1 + math.e) + math.log(1 + math.exp(2 * R2 + 1))) / 2
    loss, parts = _loss([[2.0, 0.0], [0.0, 3.0]], BOOK, [[1, 0], [0, 1]])
    assert loss == pytest.approx(expected, rel=1e-12)
    assert parts == {"ce": pytest.approx(expected, rel=1e-12)}


def test_label_smoothing_spreads_the_target_over_the_positive_classes():
    # v = (1, 0) against codes (1, 1), (1, -1), (-1, -1): cos = (1/r2, 1/r2, -1/r2), labels {0, 1}:
    # z = (r2 - 1, r2 - 1, -r2); loss = LSE(z) - (r2 - 1) = log(2 + e^(1 - 2 r2))
    book = torch.tensor([[1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    loss, _ = _loss([[1.0, 0.0]], book, [[1, 1, 0]])
    assert loss == pytest.approx(math.log(2 + math.exp(1 - 2 * R2)), rel=1e-12)
    # an item without labels adds nothing to the sum (the batch mean still counts it)
    loss2, _ = _loss([[1.0, 0.0], [5.0, -1.0]], book, [[1, 1, 0], [0, 0, 0]])
    assert loss2 == pytest.approx(loss / 2, rel=1e-12)


def test_bce_and_quantization_terms_by_hand():
    softplus = lambda t: math.log1p(math.exp(t))  # noqa: E731
    # z = (r2 - 1, r2) for v = (1, 0), label 0: BCE = (softplus(-(r2 - 1)) + softplus(r2)) / 2
    loss, _ = _loss([[1.0, 0.0]], BOOK, [[1, 0]], multilabel="bce")
    assert loss == pytest.approx((softplus(-(R2 - 1)) + softplus(R2)) / 2, rel=1e-12)
    # v = (2, -1): cos(v, sign v) = 3 / (r5 r2); l1: (|2 - 1| + |-1 + 1|) / 2; l2: (1 + 0) / 2
    v, lab = [[2.0, -1.0]], [[1, 0]]
    ce, _ = _loss(v, BOOK, lab)
    for quan_type, q in [("cs", 1 - 3 / math.sqrt(10)), ("l1", 0.5), ("l2", 0.5)]:
        loss, parts = _loss(v, BOOK, lab, quan=0.3, quan_type=quan_type)
        assert parts["quantization"] == pytest.approx(q, rel=1e-12)
        assert loss == pytest.approx(ce + 0.3 * q, rel=1e-12)


def test_loss_gradient_pulls_towards_the_class_code():
    v = torch.tensor([[1.0, 0.2]], requires_grad=True)
    loss, _ = orthohash_loss(v, BOOK, torch.tensor([[False, True]]), scale=8.0, margin=0.2)
    loss.backward()
    step = v.detach() - 0.01 * v.grad
    cos = torch.nn.functional.cosine_similarity(step, BOOK[1:], dim=1)
    assert float(cos) > float(torch.nn.functional.cosine_similarity(v.detach(), BOOK[1:], dim=1))


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits", protocol="standard")


@pytest.fixture(scope="module")
def fitted(digits):
    return create("orthohash", bits=16, epochs=6).fit(digits.train, progress=False)


@pytest.mark.parametrize("method", ["bernoulli", "auto"])
def test_codebook_is_taken_from_hash_centers(digits, method):
    h = create("orthohash", bits=16, epochs=1, center_method=method, seed=3).fit(digits.train, progress=False)
    ref = hash_centers(digits.train.n_classes, 16, method=method, seed=3)
    assert h.centers_.method == ref.method
    np.testing.assert_array_equal(h.centers_.codes.packed, ref.codes.packed)


def test_short_fit_on_digits_separates_the_classes(digits, fitted):
    q, db = fitted.encode(digits.query.x), fitted.encode(digits.database.x)
    r = evaluate(q, digits.query.labels, db, digits.database.labels)
    # chance is about 0.1 (ten balanced classes); six epochs of the defaults reach about 0.9
    assert r["map@all"] > 0.75
    # the hash layer ends in a (fixed-order) BatchNorm over the bits, and the codes are its signs
    assert isinstance(fitted.model_.head.net[-1], FixedOrderBatchNorm1d)
    # most query codes are nearer their own class's codeword than any other
    dist = (q.to_signs() @ fitted.centers_.signs().T)
    assert (dist.argmax(1) == digits.query.labels.argmax(1)).mean() > 0.8


def test_save_load_round_trip_keeps_codes_and_codebook(digits, fitted, tmp_path):
    fitted.save(tmp_path / "h")
    back = Hasher.load(tmp_path / "h")
    np.testing.assert_array_equal(back.encode(digits.query.x).packed, fitted.encode(digits.query.x).packed)
    np.testing.assert_array_equal(back.centers_.codes.packed, fitted.centers_.codes.packed)


@pytest.mark.parametrize("param,value", [("margin", -0.1), ("scale", 0.0), ("quan_type", "l3"),
                                         ("multilabel", "soft"), ("center_method", "gauss")])
def test_bad_parameters_are_refused_at_fit(digits, param, value):
    with pytest.raises(Learn2HashError, match=param):
        create("orthohash", bits=16, epochs=1, **{param: value}).fit(digits.train, progress=False)
