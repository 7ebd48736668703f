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
    return evaluate(codes[:q], y[:q], codes[q:], y[q:])["map@all"]


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


# --------------------------------------------------------------------------- the estimator surface
def test_grid_search_without_scoring_uses_score_the_map_of_the_fold(digits_xy):
    """GridSearchCV(create("itq"), {"bits": [16, 32]}) needs no scoring: score() is the mAP of the
    fold's first fifth against the rest, worked out here by hand for every candidate and fold."""
    x, y = digits_xy
    cv = KFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(create("itq"), {"bits": [16, 32]}, cv=cv).fit(x, y)
    by_hand = {}
    for bits in (16, 32):
        scores = []
        for tr, te in cv.split(x):
            codes = create("itq", bits=bits).fit(x[tr]).encode(x[te])
            q = len(te) // 5
            scores.append(evaluate(codes[:q], y[te][:q], codes[q:], y[te][q:])["map@all"])
        by_hand[bits] = float(np.mean(scores))
    best = max(by_hand, key=by_hand.get)
    assert search.best_params_ == {"bits": best}
    assert search.best_score_ == pytest.approx(by_hand[best])
    np.testing.assert_allclose(search.cv_results_["mean_test_score"], [by_hand[16], by_hand[32]])


def test_map_scorer_topk_and_a_pipeline(digits_xy):
    from learn2hash.metrics import map_scorer

    x, y = digits_xy
    pipe = make_pipeline(StandardScaler(), create("itq", bits=16)).fit(x[:400])
    codes = Codes.from_signs(pipe.transform(x[400:]))
    held = y[400:]
    expected = evaluate(codes[:40], held[:40], codes[40:], held[40:], topk=10)["map@10"]
    assert map_scorer(topk=10)(pipe, x[400:], held) == pytest.approx(expected)
    scores = sklearn.model_selection.cross_val_score(
        make_pipeline(StandardScaler(), create("itq", bits=16)), x, y, scoring=map_scorer(topk=50), cv=3)
    assert scores.shape == (3,) and np.all((scores > 0.3) & (scores <= 1))
    with pytest.raises(Learn2HashError, match="needs labels y"):
        map_scorer()(pipe, x, None)
    with pytest.raises(Learn2HashError, match="topk must be an integer >= 1"):
        map_scorer(topk=0)


def test_unsupervised_methods_ignore_any_y(digits_xy):
    x, _ = digits_xy
    ref = create("lsh", bits=16).fit(x).encode(x)
    for y in (np.full(len(x), -1), np.linspace(0, 1, len(x)), np.array(["a", "b"] * (len(x) // 2)), [None] * len(x)):
        assert create("lsh", bits=16).fit(x, y).encode(x) == ref
        assert create("itq", bits=16).fit(x, y).encode(x) == create("itq", bits=16).fit(x).encode(x)
    search = GridSearchCV(create("lsh"), {"bits": [8, 16]}, cv=3).fit(x, x[:, 10] / 16.0 - 0.5)  # float "labels"
    assert search.best_params_["bits"] in (8, 16)


def test_supervised_methods_take_any_class_labels(digits_xy):
    """Class labels go through np.unique: {0, 1000} is two classes; strings are classes; the codes are
    those of the same labels written 0..c-1 in sorted order, and multi-hot matrices work as before."""
    x, y = digits_xy
    kw = dict(bits=16, n_anchors=100)
    ref = create("sdh", **kw).fit(x, y)
    assert ref.classifier_.shape == (16, 10)
    names = np.array(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])
    order = np.argsort(names)  # np.unique sorts the names: class i is the i-th name in sorted order
    rank = np.empty(10, int)
    rank[order] = np.arange(10)
    by_name = create("sdh", **kw).fit(x, names[y])
    by_rank = create("sdh", **kw).fit(x, rank[y])
    assert by_name.encode(x) == by_rank.encode(x)
    assert create("sdh", **kw).fit(x, y * 1000 + 7).encode(x) == ref.encode(x)
    two = create("sdh", **kw).fit(x, np.where(y < 5, 0, 1000))
    assert two.classifier_.shape == (16, 2)
    assert two.encode(x) == create("sdh", **kw).fit(x, (y >= 5).astype(int)).encode(x)
    multi = np.eye(10, dtype=int)[y]
    assert create("sdh", **kw).fit(x, multi).encode(x) == ref.encode(x)
    with pytest.raises(Learn2HashError, match="all numbers or all strings"):
        create("sdh", **kw).fit(x, np.array([1, "a"] * (len(x) // 2), dtype=object))
    with pytest.raises(Learn2HashError, match="labels 5 items, expected one label row per item"):
        create("sdh", **kw).fit(x, y[:5])


def test_fit_transform_n_features_in_and_not_fitted(digits_xy):
    from sklearn.exceptions import NotFittedError as SklearnNotFitted

    from learn2hash.errors import NotFittedError

    x, y = digits_xy
    h = create("itq", bits=16)
    assert not hasattr(h, "n_features_in_")
    for call in (lambda: h.transform(x), lambda: h.encode(x), lambda: h.score(x, y)):
        with pytest.raises(NotFittedError, match="not fitted yet: call fit first") as info:
            call()
        assert isinstance(info.value, SklearnNotFitted) and isinstance(info.value, Learn2HashError)
    u = h.fit_transform(x, y)
    assert h.n_features_in_ == 64 and h.dim_ == 64
    np.testing.assert_array_equal(u, create("itq", bits=16).fit(x).transform(x))
    with pytest.raises(Learn2HashError, match="X has 63 features, but ITQ is expecting 64 features as input"):
        h.transform(x[:, :63])


def test_sparse_input_is_one_clear_error(digits_xy):
    import scipy.sparse

    x, y = digits_xy
    for name in ("lsh", "itq", "sdh"):
        with pytest.raises(Learn2HashError, match=r"^X is a scipy sparse matrix; .*sparse input is not supported"):
            create(name, bits=8).fit(scipy.sparse.csr_matrix(x), y)
    fitted = create("lsh", bits=8).fit(x)
    with pytest.raises(Learn2HashError, match="scipy sparse matrix"):
        fitted.transform(scipy.sparse.csr_matrix(x))


def test_deep_signatures_show_every_parameter_with_the_methods_defaults():
    import inspect

    from learn2hash.methods import method_class

    deep = method_class("csq").__mro__[[c.__name__ for c in method_class("csq").__mro__].index("DeepHasher")]
    shared = [p for p in inspect.signature(deep.__init__).parameters if p not in ("self", "bits", "seed")]
    for name in ("csq", "dch", "dhn", "hashnet", "orthohash", "eddh"):
        klass = method_class(name)
        sig = inspect.signature(klass)
        assert not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()), name
        assert set(shared) <= set(sig.parameters), name
        assert list(sig.parameters) == klass._param_names(), name
        defaults = {k: p.default for k, p in sig.parameters.items()}
        made = klass()  # what the signature says is what an instance holds
        assert made.get_params() == defaults, name
    csq = inspect.signature(method_class("csq")).parameters
    assert len(csq) == 30 and csq["head_init"].default == "standardized" and csq["epochs"].default == 30
    assert inspect.signature(method_class("dhn")).parameters["epochs"].default == 60
    assert method_class("csq")(epochs=3).epochs == 3
    with pytest.raises(TypeError, match="CSQ\\(\\): got an unexpected keyword argument 'epoch'"):
        method_class("csq")(epoch=3)


def test_not_fitted_error_and_map_scorer_at_the_top_level():
    import pickle

    import learn2hash as l2h
    from sklearn.exceptions import NotFittedError as SklearnNotFitted

    from learn2hash.errors import NotFittedError
    from learn2hash.metrics import map_scorer

    assert l2h.NotFittedError is NotFittedError and l2h.map_scorer is map_scorer
    assert issubclass(NotFittedError, Learn2HashError) and issubclass(NotFittedError, SklearnNotFitted)
    err = pickle.loads(pickle.dumps(NotFittedError("not fitted")))  # the class is found by its name
    assert type(err) is NotFittedError and str(err) == "not fitted"


def test_a_feature_hasher_takes_labels_as_its_hasher_does():
    """FeatureHasher(ImageFeatures, hasher).fit(X, y): an unsupervised hasher ignores any y, a
    supervised one takes class labels of any kind (their distinct values are the classes)."""
    import learn2hash as l2h

    x = np.random.default_rng(0).integers(0, 255, (40, 16, 16, 3), dtype=np.uint8)
    y = np.repeat([3, 900], 20)

    def feature_hasher(name, **kw):
        return l2h.FeatureHasher(l2h.ImageFeatures("smallcnn", workers=0), create(name, bits=8, **kw))

    # each feature stage starts from its own random weights: compare with its hasher fitted on its features
    h = feature_hasher("lsh").fit(x, np.array(["a", "b"] * 20))
    z = h.features.transform(x)
    assert h.encode(x) == create("lsh", bits=8).fit(z).encode(z)
    for labels in (y, np.where(y == 3, "cat", "dog")):
        h = feature_hasher("sdh", n_anchors=10).fit(x, labels)
        z = h.features.transform(x)
        assert h.hasher.classifier_.shape == (8, 2)
        assert h.encode(x) == create("sdh", bits=8, n_anchors=10).fit(z, (y == 900).astype(int)).encode(z)
