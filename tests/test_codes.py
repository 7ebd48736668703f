import json

import numpy as np
import pytest

from learn2hash.codes import Codes, hamming_distances, iter_distance_blocks
from learn2hash.errors import CorruptFileError, Learn2HashError


def brute_hamming(a_signs, b_signs):
    return (a_signs[:, None, :] != b_signs[None, :, :]).sum(axis=2)


@pytest.mark.parametrize("bits", [1, 7, 8, 13, 64, 70, 128])
def test_round_trip_any_length(bits):
    rng = np.random.default_rng(bits)
    signs = rng.choice([-1.0, 1.0], size=(17, bits))
    codes = Codes.from_signs(signs)
    assert codes.bits == bits and len(codes) == 17
    assert codes.packed.shape == (17, (bits + 7) // 8) and codes.packed.dtype == np.uint8
    np.testing.assert_array_equal(codes.to_signs(), signs)
    assert Codes.from_bits(signs > 0) == codes


def test_bit_order_and_sign_convention():
    # first bit is the most significant bit of the first byte; value >= 0 -> bit 1
    codes = Codes.from_signs(np.array([[0.5, -2.0, 0.0, -0.1, -1, -1, -1, -1, 3.0]]))
    assert codes.packed.tolist() == [[0b10100000, 0b10000000]]


def test_padding_bits_must_be_zero():
    with pytest.raises(Learn2HashError, match="padding"):
        Codes.from_packed(np.array([[0xFF, 0xFF]], dtype=np.uint8), bits=9)


def test_nan_input_is_refused():
    x = np.zeros((3, 8))
    x[1, 4] = np.nan
    with pytest.raises(Learn2HashError, match="NaN.*row 1, column 4"):
        Codes.from_signs(x)


def test_wrong_shapes_are_refused():
    with pytest.raises(Learn2HashError, match="2-D"):
        Codes.from_signs(np.zeros(5))
    with pytest.raises(Learn2HashError, match="positive"):
        Codes.from_signs(np.zeros((4, 0)))
    with pytest.raises(Learn2HashError, match="shape"):
        Codes.from_packed(np.zeros((3, 2), np.uint8), bits=32)


def test_slicing_and_concatenation():
    rng = np.random.default_rng(0)
    signs = rng.choice([-1, 1], size=(10, 20)).astype(float)
    codes = Codes.from_signs(signs)
    np.testing.assert_array_equal(codes[2:5].to_signs(), signs[2:5])
    np.testing.assert_array_equal(codes[[7, 1]].to_signs(), signs[[7, 1]])
    assert len(codes[3]) == 1 and len(codes[-1]) == 1
    with pytest.raises(IndexError):
        codes[10]
    np.testing.assert_array_equal(codes[-1].to_signs(), signs[-1:])
    joined = Codes.concatenate([codes[:4], codes[4:]])
    assert joined == codes
    with pytest.raises(Learn2HashError, match="20 and 21 bits"):
        Codes.concatenate([codes, Codes.from_signs(np.ones((1, 21)))])


@pytest.mark.parametrize("bits", [5, 64, 100])
def test_distances_equal_brute_force(bits):
    rng = np.random.default_rng(1)
    a = rng.choice([-1, 1], size=(23, bits))
    b = rng.choice([-1, 1], size=(31, bits))
    expected = brute_hamming(a, b)
    got = hamming_distances(Codes.from_signs(a), Codes.from_signs(b))
    np.testing.assert_array_equal(got, expected)
    # tiny blocks: same result, and each block's rows are bounded
    blocks = list(iter_distance_blocks(Codes.from_signs(a), Codes.from_signs(b), block_bytes=1))
    assert len(blocks) == 23
    np.testing.assert_array_equal(np.concatenate([blk for _, blk in blocks]), expected)


def test_distance_bit_mismatch():
    with pytest.raises(Learn2HashError, match="16 bits but database codes have 24 bits"):
        hamming_distances(Codes.from_signs(np.ones((2, 16))), Codes.from_signs(np.ones((2, 24))))


def test_save_load_round_trip(tmp_path):
    codes = Codes.from_signs(np.random.default_rng(2).normal(size=(50, 13)))
    codes.save(tmp_path / "c.npy")
    assert Codes.load(tmp_path / "c.npy") == codes
    assert Codes.load(tmp_path / "c.npy", mmap=True) == codes
    # no pickle anywhere: the file is a plain uint8 .npy
    assert np.load(tmp_path / "c.npy", allow_pickle=False).dtype == np.uint8


def test_load_detects_corruption(tmp_path):
    codes = Codes.from_signs(np.random.default_rng(3).normal(size=(50, 16)))
    path = tmp_path / "c.npy"
    codes.save(path)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError, match="checksum"):
        Codes.load(path)
    codes.save(path)
    meta = json.loads((tmp_path / "c.npy.json").read_text())
    meta["version"] = 99
    (tmp_path / "c.npy.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptFileError, match="version"):
        Codes.load(path)
    with pytest.raises(Learn2HashError, match="does not exist"):
        Codes.load(tmp_path / "missing.npy")


def test_bit_balance():
    codes = Codes.from_bits(np.array([[1, 0, 1], [1, 1, 0], [1, 0, 0], [1, 0, 1]]))
    np.testing.assert_allclose(codes.bit_balance(), [1.0, 0.25, 0.5])


def test_damaged_npy_header_is_a_clear_error(tmp_path):
    codes = Codes.from_signs(np.random.default_rng(4).normal(size=(5, 16)))
    path = tmp_path / "c.npy"
    codes.save(path)
    raw = bytearray(path.read_bytes())
    raw[20:30] = b"((((((((((("[:10]  # inside the header's Python literal
    path.write_bytes(bytes(raw))
    import json as _json

    meta = _json.loads((tmp_path / "c.npy.json").read_text())
    del meta["sha256"]  # get past the checksum, to the parser
    (tmp_path / "c.npy.json").write_text(_json.dumps(meta))
    with pytest.raises(CorruptFileError, match="cannot be read as .npy"):
        Codes.load(path)


# --------------------------------------------------------------------------- NumPy habits
def _codes(n=6, bits=13, seed=0):
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n, bits))
    return Codes.from_signs(signs), signs


def test_asarray_gives_faiss_packed_layout():
    codes, signs = _codes()
    a = np.asarray(codes)
    # the packed layout worked out independently: bit j of row i is byte j // 8, bit 7 - j % 8
    expected = np.zeros((6, 2), np.uint8)
    for i, j in zip(*np.nonzero(signs > 0)):
        expected[i, j // 8] |= 1 << (7 - j % 8)
    assert a.dtype == np.uint8 and a.shape == (6, 2)
    np.testing.assert_array_equal(a, expected)
    assert not a.flags.writeable  # no copy, read-only
    b = np.array(codes)  # a copy asked for: writable, and writing it leaves the codes alone
    assert b.flags.writeable
    b[:] = 0
    np.testing.assert_array_equal(np.asarray(codes), expected)
    assert np.asarray(codes, dtype=np.int32).dtype == np.int32
    with pytest.raises(ValueError, match="needs a copy"):
        codes.__array__(dtype=np.int32, copy=False)
    assert codes.__array__(copy=False) is codes.packed


def test_packed_is_read_only_and_the_padding_cannot_be_broken():
    codes, _ = _codes(bits=13)
    with pytest.raises(ValueError, match="read-only"):
        codes.packed[0, -1] = 0xFF
    with pytest.raises(ValueError, match="read-only"):
        np.asarray(codes)[0, -1] |= 1
    # an array handed in is copied: writing it afterwards does not reach the codes
    raw = np.array(codes)
    wrapped = Codes.from_packed(raw, 13)
    raw[0, -1] = 0xFF  # would break the zero padding of a shared array
    assert wrapped == codes and not np.any(wrapped.packed[:, -1] & 0b111)
    # a read-only view of a writable array is copied too
    view = raw.view()
    raw[0, -1] = 0
    view.flags.writeable = False
    held = Codes(view, 13)
    raw[1, -1] = 0xFF
    assert held.packed[1, -1] & 0b111 == 0
    # a read-only array owning its data is used as it is (no copy)
    frozen = np.array(codes)
    frozen.flags.writeable = False
    assert Codes.from_packed(frozen, 13).packed is frozen


def test_row_indexing_len_iteration():
    codes, signs = _codes()
    assert len(codes) == 6
    for key in (2, -1, slice(1, 4), [4, 0], np.array([True, False, True, False, False, True])):
        sub = codes[key]
        assert isinstance(sub, Codes) and sub.bits == 13
        rows = np.arange(6)[key]
        np.testing.assert_array_equal(sub.to_signs(), signs[np.atleast_1d(rows)])
        assert not sub.packed.flags.writeable
    rows = list(codes)
    assert len(rows) == 6 and all(isinstance(r, Codes) and len(r) == 1 for r in rows)
    assert Codes.concat(rows) == codes
    with pytest.raises(Learn2HashError, match=r"rows only.*np.asarray\(codes\)"):
        codes[0, 1]


def test_concat_and_numpy_concatenate():
    codes, signs = _codes()
    assert Codes.concat([codes[:2], codes[2:]]) == codes
    assert Codes.concatenate([codes[:2], codes[2:]]) == codes  # the earlier name
    joined = np.concatenate([codes, codes[:1]])
    assert isinstance(joined, Codes) and len(joined) == 7
    np.testing.assert_array_equal(joined.to_signs(), np.concatenate([signs, signs[:1]]))
    assert np.vstack([codes[:3], codes[3:]]) == codes
    with pytest.raises(Learn2HashError, match=r"Codes.concat"):
        np.concatenate([codes, codes], axis=1)
    with pytest.raises(Learn2HashError, match=r"Codes.from_packed"):
        np.concatenate([codes, np.asarray(codes)])
    with pytest.raises(Learn2HashError, match="13 and 14 bits"):
        Codes.concat([codes, Codes.from_signs(np.ones((1, 14)))])
    with pytest.raises(Learn2HashError, match="at least one"):
        Codes.concat([])


def test_equality_and_comparison_with_arrays():
    codes, signs = _codes()
    assert codes == Codes.from_signs(signs) and not codes != Codes.from_signs(signs)
    assert codes != codes[::-1]
    assert codes != Codes.from_signs(np.concatenate([signs, signs[:, :1]], axis=1))
    assert (codes == "x") is False
    assert np.array_equal(codes, Codes.from_signs(signs)) and np.array_equal(codes, np.asarray(codes))
    for compare in (lambda: codes == np.asarray(codes), lambda: np.asarray(codes) == codes,
                    lambda: codes != np.asarray(codes), lambda: np.equal(codes, np.asarray(codes))):
        with pytest.raises(Learn2HashError, match=r"np.array_equal\(np.asarray\(codes\), array\).*Codes.from_packed"):
            compare()


def test_other_numpy_functions_see_the_packed_bytes():
    codes, signs = _codes()
    # population count per row = number of +1 signs (the padding is zero)
    np.testing.assert_array_equal(np.bitwise_count(codes).sum(axis=1), (signs > 0).sum(axis=1))
    np.testing.assert_array_equal(np.bitwise_xor(codes, codes), np.zeros((6, 2), np.uint8))
    assert np.shape(codes) == (6, 2)
    with pytest.raises(Learn2HashError, match="read-only"):
        np.bitwise_xor(codes, codes, out=(codes,))


def test_provenance_survives_slicing_and_concat():
    from learn2hash.codes import Provenance

    codes, _ = _codes()
    p = Provenance("a" * 64, "array")
    tagged = codes.with_provenance(p)
    assert tagged[1:3].provenance == p and tagged[[0, 2]].provenance == p
    assert np.concatenate([tagged, tagged]).provenance == p
    assert Codes.concat([tagged, codes]).provenance is None
