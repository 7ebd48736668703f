"""scikit-learn interop: clone, Pipeline and GridSearchCV on hashers; declared parameter constraints."""

from __future__ import annotations

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")
from sklearn.base import clone  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.model_selection import GridSearchCV, KFold  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from learn2hash.codes import Codes  # noqa: E402
from learn2hash.errors import Learn2HashError  # noqa: E402
from learn2hash.methods import create  # noqa: E402
from learn2hash.methods.validation import Boolean, Interval, ListOf, Options, validate_params  # noqa: E402
from learn2hash.metrics import evaluate  # noqa: E402


def map_score(estimator, x, y) -> float:
    """A GridSearchCV scorer: mAP of the first fifth of the held-out fold against the rest."""
    codes = Codes.from_signs(estimator.transform(x))
    q = len(x) // 5
    return evaluate(codes[:q], y[:q], codes[q:], y[q:])["map"]


@pytest.fixture(scope="module")
def digits_xy():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x[:600], y[:600]


def test_pipeline_after_scaler_and_pca_gives_the_hashers_outputs(digits_xy):
    x, y = digits_xy
    pipe = make_pipeline(StandardScaler(), PCA(32, random_state=0), create("itq", bits=16)).fit(x, y)
    u = pipe.transform(x)
    assert u.shape == (600, 16) and u.dtype == np.float64
    # the same as doing the steps by hand
    scaler = StandardScaler().fit(x)
    pca = PCA(32, random_state=0)
    by_hand = create("itq", bits=16).fit(pca.fit_transform(scaler.transform(x)))  # as Pipeline.fit does
    z = pca.transform(scaler.transform(x))
    np.testing.assert_allclose(u, by_hand.transform(z), atol=1e-9)
    assert Codes.from_signs(u) == by_hand.encode(z)


def test_grid_search_picks_the_best_mean_score_with_a_map_scorer(digits_xy):
    x, y = digits_xy
    cv = KFold(3, shuffle=True, random_state=0)
    grid = {"sdh__lam": [0.1, 10.0], "sdh__n_iter": [1, 3]}
    search = GridSearchCV(make_pipeline(StandardScaler(), create("sdh", bits=16, n_anchors=100)), grid,
                          scoring=map_score, cv=cv).fit(x, y)
    # independent expectation: the same folds scored by hand, one candidate at a time
    by_hand = {}
    for lam in grid["sdh__lam"]:
        for n_iter in grid["sdh__n_iter"]:
            scores = []
            for tr, te in cv.split(x):
                pipe = make_pipeline(StandardScaler(), create("sdh", bits=16, n_anchors=100, lam=lam, n_iter=n_iter))
                scores.append(map_score(pipe.fit(x[tr], y[tr]), x[te], y[te]))
            by_hand[(lam, n_iter)] = float(np.mean(scores))
    best = max(by_hand, key=by_hand.get)
    assert search.best_params_ == {"sdh__lam": best[0], "sdh__n_iter": best[1]}
    assert search.best_score_ == pytest.approx(by_hand[best])
    assert 0.3 < search.best_score_ <= 1.0


def test_clone_set_params_and_a_bad_value_found_at_fit():
    h = create("itq", bits=16, n_iter=7)
    c = clone(h)
    assert c is not h and c.get_params() == h.get_params() and not hasattr(c, "fitted_")
    assert c.set_params(n_iter=3, seed=5) is c and c.get_params(deep=True)["n_iter"] == 3 and c.seed == 5
    with pytest.raises(Learn2HashError, match=r"itq: no parameter 'n_iters'; its parameters: bits, n_iter, pca, seed"):
        c.set_params(n_iters=3)
    c.set_params(n_iter=-1)  # not checked until fit
    with pytest.raises(Learn2HashError, match=r"^itq: parameter n_iter must be an integer >= 0, got -1$"):
        c.fit(np.random.default_rng(0).standard_normal((40, 20)))


def test_validators_describe_and_check():
    cons = {"k": [Interval("int", 1)], "p": [Interval("real", 0, 1, closed="left")],
            "a": [None, Interval("real", 0, closed="neither")], "m": [Options(("x", "y"))],
            "b": [Boolean()], "h": [ListOf(Interval("int", 1))]}
    ok = {"k": np.int64(3), "p": 0.0, "a": None, "m": "y", "b": False, "h": (4, 8)}
    validate_params("t", cons, ok)
    validate_params("t", cons, {**ok, "a": 2.5})
    bad = [("k", 0, "an integer >= 1"), ("k", True, "an integer >= 1"), ("k", 2.0, "an integer >= 1"),
           ("p", 1.0, r"a finite number in \[0, 1\)"), ("p", float("nan"), "a finite number"),
           ("a", 0, "None or a finite number > 0"), ("m", "z", "one of 'x', 'y'"), ("b", 1, "true or false"),
           ("h", [4, 0], "a list whose every item is an integer >= 1"), ("h", 4, "a list")]
    for name, value, expected in bad:
        with pytest.raises(Learn2HashError, match=f"^t: parameter {name} must be {expected}"):
            validate_params("t", cons, {**ok, name: value})
