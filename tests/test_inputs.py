"""Inputs as users hold them: image layouts and integer labels for deep hashers, plain uint8 codes
for the Hamming index (each converted once, at the boundary)."""

from __future__ import annotations

import numpy as np
import pytest

from learn2hash.codes import Codes
from learn2hash.errors import Learn2HashError
from learn2hash.methods.base import as_items

TINY = dict(epochs=1, batch_size=32, backbone_options={"widths": [4], "convs_per_stage": 1})


def test_as_items_layouts():
    rng = np.random.default_rng(0)
    chw = rng.integers(0, 256, (5, 3, 8, 6), dtype=np.uint8)
    hwc = np.ascontiguousarray(chw.transpose(0, 2, 3, 1))
    grey = chw[:, 0]
    assert as_items(chw) is chw
    np.testing.assert_array_equal(as_items(hwc), chw)
    np.testing.assert_array_equal(as_items(grey), chw[:, :1])
    feats = rng.standard_normal((5, 7))
    assert as_items(feats) is feats
    # a fitted shape decides where the guess could not: [n, 3, 3, 3] is channels-first, unless the
    # hasher was fitted on items whose layout says otherwise
    cube = rng.standard_normal((2, 3, 3, 1))
    np.testing.assert_array_equal(as_items(cube, (1, 3, 3)), cube.transpose(0, 3, 1, 2))
    assert as_items(cube, (3, 3, 1)) is cube


@pytest.mark.slow
def test_deep_hasher_takes_every_image_layout_and_integer_labels():
    from learn2hash.methods import create

    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 48)
    chw = rng.integers(0, 256, (48, 1, 10, 10), dtype=np.uint8)
    multi_hot = np.eye(3, dtype=bool)[y]
    ref = create("csq", bits=8, **TINY).fit(chw, multi_hot, progress=False)
    want = ref.encode(chw)
    for x, labels in [(chw[:, 0], y), (chw.transpose(0, 2, 3, 1), y), (chw, y), (chw[:, 0], multi_hot)]:
        h = create("csq", bits=8, **TINY).fit(x, labels, progress=False)
        assert h.input_shape_ == (1, 10, 10)
        # the same training (same seed, same items, same labels) gives the same network
        assert h.encode(x) == want and h.encode(chw) == want
        np.testing.assert_array_equal(h.transform(x), ref.transform(chw))
    with pytest.raises(Learn2HashError, match=r"shape \(3, 12, 12\)"):
        ref.encode(rng.integers(0, 256, (3, 12, 12), dtype=np.uint8))


def test_index_takes_plain_uint8_codes_as_faiss_users_hold_them():
    from learn2hash.index import HammingIndex

    rng = np.random.default_rng(1)
    bits = 20
    db = Codes.from_bits(rng.integers(0, 2, (300, bits)))
    q = Codes.from_bits(rng.integers(0, 2, (7, bits)))
    plain, typed = HammingIndex(bits), HammingIndex(bits)
    ids = plain.add(np.array(db.packed))  # a plain uint8[n, 3] array
    typed.add(db)
    np.testing.assert_array_equal(ids, np.arange(300))
    d_plain, i_plain = plain.search(np.array(q.packed), 5)
    d_typed, i_typed = typed.search(q, 5)
    np.testing.assert_array_equal(d_plain, d_typed)
    np.testing.assert_array_equal(i_plain, i_typed)
    # independent expectation: brute-force distances to the nearest items
    brute = (q.to_bits()[:, None, :] != db.to_bits()[None, :, :]).sum(-1)
    np.testing.assert_array_equal(d_plain, np.sort(brute, axis=1)[:, :5])
    with pytest.raises(Learn2HashError, match=r"codes to add: a plain array must hold packed codes, uint8\[n, 3\]"):
        plain.add(np.zeros((2, 3), np.int64))
    with pytest.raises(Learn2HashError, match=r"query codes: packed codes for 20 bits must have shape \[n, 3\]"):
        plain.search(np.zeros((2, 4), np.uint8), 1)
    with pytest.raises(Learn2HashError, match="non-zero padding"):
        plain.add(np.full((1, 3), 255, np.uint8))
