"""One vocabulary for the three registries (methods, backbones, datasets), and the old names as aliases."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

from learn2hash import datasets, methods
from learn2hash.errors import Learn2HashError, check_int

pytest.importorskip("torch")
from learn2hash import nn  # noqa: E402


def _known_in(message: str, kind: str) -> list[str]:
    m = re.fullmatch(rf"unknown {kind} 'nosuch-thing'( \(did you mean [^)]*\?\))?; known {kind}s: (.*)", message)
    assert m, message
    return m.group(2).split(", ")


def test_every_registry_has_available_create_or_load_and_register():
    for registry in (methods, nn, datasets):
        assert callable(registry.available) and callable(registry.register)
    assert callable(methods.create) and callable(nn.create) and callable(datasets.load)
    assert "itq" in methods.available() and "digits" in datasets.available() and "smallcnn" in nn.available()
    assert methods.create("itq", bits=16).bits == 16
    net = nn.create("mlp", (12,))
    assert net(__import__("torch").zeros(2, 12)).shape[0] == 2
    assert int(np.prod(datasets.load("digits").train.x.shape[1:])) == 64  # 8x8 images


def test_the_old_names_are_the_same_functions_and_warn_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert datasets.registered() == datasets.available()
        assert nn.available_backbones() == nn.available()
    assert nn.create_backbone is nn.create and nn.register_backbone is nn.register
    assert datasets.registered is datasets.available


def test_an_unknown_name_is_the_same_error_listing_what_exists_in_every_registry():
    cases = [("method", lambda: methods.create("nosuch-thing"), sorted(methods.available())),
             ("dataset", lambda: datasets.load("nosuch-thing"), sorted(datasets.available())),
             ("backbone", lambda: nn.create("nosuch-thing", (3, 32, 32)),
              sorted(i.display_name for i in nn.available().values()))]
    for kind, call, expected in cases:
        with pytest.raises(Learn2HashError) as err:
            call()
        assert _known_in(str(err.value), kind) == expected


def test_a_close_name_is_suggested():
    with pytest.raises(Learn2HashError, match=r"unknown method 'itqq' \(did you mean itq\?\)"):
        methods.create("itqq")
    with pytest.raises(Learn2HashError, match=r"unknown dataset 'digit' \(did you mean digits"):
        datasets.load("digit")


@pytest.mark.parametrize("value", [0, 11, True, 2.0, "3", None])
def test_check_int_with_a_maximum_refuses_what_is_outside_or_not_an_integer(value):
    with pytest.raises(Learn2HashError, match=r"^x must be an integer in \[1, 10\], got "):
        check_int(value, "x", 1, 10)


def test_check_int_returns_a_python_int_and_says_what_was_expected():
    assert type(check_int(np.int64(7), "x", 0, 7)) is int
    with pytest.raises(Learn2HashError, match=r"^bits must be a positive integer, got -1$"):
        check_int(-1, "bits", 1, expected="a positive integer")
