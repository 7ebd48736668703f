"""The method contract, checked over every registered method (a new method is covered without a
new test): fit / transform / encode / save / load, clone and parameters, repeated encode, a bad
parameter found at fit; and scikit-learn's full estimator checks (``parametrize_with_checks``)
over every registered method, deep ones with one epoch of a tiny network.

Data are tiny (200 digits); deep methods train one epoch of a 4-channel CNN (marked slow).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from learn2hash.codes import Codes
from learn2hash.datasets import Split, load
from learn2hash.errors import Learn2HashError
from learn2hash.methods import FitContext, HasCenters, Hasher, available, create, method_class
from learn2hash.methods.multiview import MultiViewEncoder

BITS = 8
#: shared settings of every deep hasher that make one epoch take about a second
TINY_DEEP = dict(epochs=1, batch_size=50, backbone_options={"widths": [4], "convs_per_stage": 1})
#: per-method settings for speed only (no method needs one to be covered)
FAST = {"sdh": {"n_anchors": 50}, "eddh": {"visual": "flatten"}}


def family(name: str) -> str:
    if issubclass(method_class(name), MultiViewEncoder):
        return "multiview"
    return "deep" if available()[name].input_kind == "any" else "features"


def params_for(name: str) -> dict:
    return {**(TINY_DEEP if family(name) == "deep" else {}), **FAST.get(name, {})}


def method_params(names=None):
    """Every registered method as a pytest param; deep ones are marked slow."""
    out = []
    for name in names or available():
        marks = [pytest.mark.slow] if available()[name].needs_torch else []
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.fixture(scope="module")
def data():
    ds = load("digits", protocol="standard")
    train, query = ds.train.subset(np.arange(200)), ds.query.subset(np.arange(40))
    flat = np.asarray(train.x).reshape(200, -1).astype(np.float64) / 255.0
    views = {"left": flat[:, :32], "right": flat[:, 32:]}
    qflat = np.asarray(query.x).reshape(40, -1).astype(np.float64) / 255.0
    return {
        "deep": (train, np.asarray(query.x)),
        "features": (train, np.asarray(query.x)),
        "multiview": (Split(x=views["left"], labels=train.labels, kind="multiview", views=views), qflat[:, :32]),
    }


_FITTED: dict[str, Hasher] = {}


def fitted(name: str, data) -> Hasher:
    if name not in _FITTED:
        train, _ = data[family(name)]
        h = create(name, bits=BITS, **params_for(name))
        _FITTED[name] = h.fit(train, context=FitContext(progress=False))  # every method takes a context
    return _FITTED[name]


def test_every_method_is_covered():
    """Each registered method falls in one family the data fixture provides for."""
    assert {family(n) for n in available()} <= {"deep", "features", "multiview"}
    assert len(method_params()) == len(available()) >= 10


@pytest.mark.parametrize("name", method_params())
def test_fit_transform_encode_save_load_round_trip(name, data, tmp_path):
    h = fitted(name, data)
    _, x = data[family(name)]
    assert h.fitted_ and h.bits == BITS
    u = h.transform(x)
    assert u.shape == (len(x), BITS) and np.issubdtype(u.dtype, np.floating) and np.isfinite(u).all()
    codes = h.encode(x)
    assert isinstance(codes, Codes) and codes.bits == BITS and len(codes) == len(x)
    assert codes == Codes.from_signs(u)  # the codes are the signs of transform

    # encode never changes state, and gives the same codes every time
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in vars(h).items()}
    assert h.encode(x) == codes and h.encode(x) == codes
    assert set(vars(h)) == set(before)
    for k, v in before.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(vars(h)[k], v)

    h.save(tmp_path / "h")
    loaded = Hasher.load(tmp_path / "h")
    assert type(loaded) is type(h)
    assert loaded.get_params() == json.loads(json.dumps(h.get_params()))
    assert loaded.encode(x) == codes
    np.testing.assert_allclose(loaded.transform(x), u, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", method_params())
def test_history_exists_after_every_fit(name, data):
    """history_ (one record per epoch; none for methods without epochs) and skipped_images_ are
    there after every fit, so no caller needs to probe for them."""
    h = fitted(name, data)
    assert isinstance(h.history_, list) and all(isinstance(r, dict) for r in h.history_)
    assert len(h.history_) == (h.epochs if family(name) == "deep" else 0)
    assert h.skipped_images_ == []


#: per-fit state that once lived on the estimator (now in the fit's TrainingTask)
PER_FIT = {"train_split_", "_fit_options", "_report_dir", "bank_", "_targets", "z_", "y_", "t_", "s2_", "s_dense_",
           "y64_", "b_", "v_t_", "b_t_"}


@pytest.mark.parametrize("name", method_params())
def test_fit_leaves_parameters_and_learned_state_only(name, data, tmp_path):
    """Per-fit state lives in a per-fit object, never on the estimator: after fit, ``vars(h)`` holds the
    parameters and public learned attributes (``name_``), and a deep hasher exactly what loading its
    saved folder restores, plus ``skipped_images_`` (the fit's report on its training images)."""
    h = fitted(name, data)
    params = set(h.get_params())
    learned = set(vars(h)) - params
    assert not learned & PER_FIT
    assert all(k.endswith("_") and not k.startswith("_") for k in learned), sorted(learned)
    if family(name) == "deep":
        h.save(tmp_path / "h")
        loaded = Hasher.load(tmp_path / "h")
        assert learned == set(vars(loaded)) - params | {"skipped_images_"}


@pytest.mark.parametrize("name", method_params())
def test_capabilities_are_declared_on_the_class(name):
    """What runs and reports read of a hasher is declared, so they read it without probing:
    runtime_params (parameters a resumed run may change) names parameters of the method; hash
    centers come with the HasCenters mixin (CSQ); takes_image_files says whether encode_images exists."""
    klass = method_class(name)
    assert isinstance(klass.runtime_params, tuple) and set(klass.runtime_params) <= set(klass._param_names())
    assert issubclass(klass, HasCenters) == (name in ("csq", "orthohash"))
    # deep hashers decode image files themselves (encode_images) to the geometry they declare
    assert klass.takes_image_files == hasattr(klass, "encode_images") == (family(name) == "deep")
    if family(name) != "deep":
        assert create(name, bits=BITS).image_geometry() is None


def test_fit_context_and_its_shorthand_are_not_mixed(data, tmp_path):
    train, _ = data["deep"]
    h = create("csq", bits=BITS, **TINY_DEEP)
    with pytest.raises(Learn2HashError, match="not both"):
        h.fit(train, context=FitContext(progress=False), checkpoint_dir=tmp_path)


@pytest.mark.parametrize("name", method_params())
def test_clone_get_params_set_params(name, data):
    from sklearn.base import clone

    h = create(name, bits=BITS, **params_for(name))
    c = clone(h)
    assert type(c) is type(h) and c is not h and c.get_params() == h.get_params()
    assert c.get_params(deep=True) == c.get_params(deep=False)
    if name in _FITTED:  # a clone of a fitted hasher is unfitted, with the same parameters
        c2 = clone(_FITTED[name])
        assert not hasattr(c2, "fitted_") and c2.get_params() == _FITTED[name].get_params()
    assert c.set_params(seed=7, bits=12) is c
    p = c.get_params()
    assert p["seed"] == 7 and p["bits"] == 12
    assert {k: v for k, v in p.items() if k not in ("seed", "bits")} == \
        {k: v for k, v in h.get_params().items() if k not in ("seed", "bits")}
    with pytest.raises(Learn2HashError, match=f"{name}: no parameter 'not_a_param'"):
        c.set_params(not_a_param=1)


class _Bad:
    """A value no declared constraint accepts."""

    def __repr__(self) -> str:
        return "<bad value>"


@pytest.mark.parametrize("name", method_params())
def test_bad_parameter_is_one_clear_error_at_fit(name, data):
    train, _ = data[family(name)]
    constraints = method_class(name).parameter_constraints()
    assert {"bits", "seed"} <= set(constraints) and set(constraints) <= set(method_class(name)._param_names())
    for param in constraints:
        h = create(name, bits=BITS, **params_for(name))
        h.set_params(**{param: _Bad()})  # accepted until fit (no work in __init__ / set_params)
        with pytest.raises(Learn2HashError, match=rf"^{name}: parameter {param} must be .*, got <bad value>$"):
            h.fit(train)
        assert not hasattr(h, "fitted_")


# --------------------------------------------------------------------------- scikit-learn's checks
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

#: every deep hasher on scikit-learn's toy feature vectors: one epoch of the default MLP, on the CPU
TINY_CHECKS = dict(epochs=1, batch_size=16, device="cpu")
#: methods whose estimator tags say that they take no plain [n, d] array (input_tags.two_d_array
#: False), so parametrize_with_checks yields no check for them, with the reason
NOT_CHECKED = {
    "cca-itq": "learns a CCA between two or more modalities (a mapping of views, or a Split with views); "
               "a plain [n, d] array holds one, so every fit of a check would be the one clear error that says so",
}
#: expected failures per method (at most 3 each), each with its reason: none today (EDDH's one, a
#: fit on a single feature, now fails with scikit-learn's "1 feature(s)" in its message)
EXPECTED_FAILURES: dict[str, dict[str, str]] = {}


def _checked_estimators() -> list:
    out = []
    for name in available():
        # scikit-learn's toy data have as few as 1 feature: 1 bit fits every method
        params = {**(TINY_CHECKS if family(name) == "deep" else {}), **FAST.get(name, {})}
        out.append(create(name, bits=1, **params))
    return out


def _expected_failures(estimator) -> dict:
    return EXPECTED_FAILURES.get(estimator.name, {})


def test_every_method_is_checked_or_says_why():
    """Every registered method goes to parametrize_with_checks; scikit-learn skips only those whose tags
    say they take no plain [n, d] array, and those are the methods NOT_CHECKED gives a reason for."""
    from sklearn.utils import get_tags

    estimators = _checked_estimators()
    assert {e.name for e in estimators} == set(available())
    skipped = {e.name for e in estimators if not get_tags(e).input_tags.two_d_array}
    assert skipped == set(NOT_CHECKED)
    assert set(EXPECTED_FAILURES) <= set(available()) - skipped
    with pytest.raises(Learn2HashError, match="at least two modalities"):  # what a check's fit would meet
        create("cca-itq", bits=2).fit(np.random.default_rng(0).standard_normal((20, 4)))
    assert all(len(f) <= 3 and all(isinstance(r, str) and r for r in f.values()) for f in EXPECTED_FAILURES.values())


with warnings.catch_warnings():
    # hashers match BaseEstimator's protocol instead of deriving from it (methods/base.py says why)
    warnings.filterwarnings("ignore", message=r"Estimator \w+ does not inherit from `sklearn.base.BaseEstimator`")
    warnings.filterwarnings("ignore", message=r"Can't test estimator CCAITQ which requires input")  # NOT_CHECKED
    _ALL_CHECKS = parametrize_with_checks(_checked_estimators(), expected_failed_checks=_expected_failures)


@_ALL_CHECKS
def test_sklearn_estimator_checks(estimator, check, request):
    """scikit-learn's full estimator checks (``parametrize_with_checks``) over every registered method."""
    if family(estimator.name) == "deep":
        request.applymarker(pytest.mark.slow)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check(estimator)


def test_a_context_folder_receives_the_checkpoints(data, tmp_path):
    """FitContext(folder=...) is what `learn2hash train` passes: checkpoints go to folder/checkpoints."""
    from learn2hash.train import CHECKPOINT_NAME

    train, _ = data["deep"]
    assert FitContext(folder=tmp_path).checkpoints() == tmp_path / "checkpoints"
    assert FitContext(folder=tmp_path, checkpoint_dir=tmp_path / "c").checkpoints() == tmp_path / "c"
    assert FitContext().checkpoints() is None
    create("csq", bits=BITS, **TINY_DEEP).fit(train, context=FitContext(folder=tmp_path, progress=False))
    assert (tmp_path / "checkpoints" / CHECKPOINT_NAME).is_file()
