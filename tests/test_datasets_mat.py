"""Cross-modal .mat releases: image arrays of any rank (v7.3 via h5py), features (v5), the file's own split."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from learn2hash import datasets
from learn2hash.datasets import matfile, multiview
from learn2hash.errors import DatasetNotFoundError, Learn2HashError


def write_v73(path, variables):
    """A MATLAB v7.3 file as MATLAB writes it: HDF5 after a 512-byte header, every array's axes reversed."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            value = np.asarray(value)
            ds = f.create_dataset(name, data=value.T)  # MATLAB view -> HDF5 order
            ds.attrs["MATLAB_class"] = np.bytes_("uint8" if value.dtype == np.uint8 else "double")
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, written by the learn2hash tests".ljust(116, b" "))


def image_stack(ids, h=6, w=5):
    """MATLAB view [h, w, 3, n] (height, width, channel, item): I(r, c, k, i) = 16*ids[i] + ... encodes all four."""
    n = len(ids)
    a = np.zeros((h, w, 3, n), dtype=np.uint8)
    for i, v in enumerate(ids):
        for k in range(3):
            a[:, :, k, i] = (v % 16) * 16 + k * 4
        a[:, :, 0, i] += (np.arange(h)[:, None] % 4).astype(np.uint8)  # the red plane encodes the row: orientation
    return a


def labels_of(ids, c=4):
    out = np.zeros((len(ids), c), dtype=np.uint8)
    out[np.arange(len(ids)), np.asarray(ids) % c] = 1
    out[np.arange(len(ids)), (np.asarray(ids) // 2) % c] = 1
    return out


def text_of(ids, d=7):
    return (np.asarray(ids)[:, None] * 10 + np.arange(d)).astype(np.float64)


def split_file(path, sizes=(8, 3, 10)):
    """DJSRH-style raw file: I/T/L _tr, _te, _db; item ids 0.. in train, then 100.. query, 200.. database."""
    variables = {}
    for (suffix, n), base in zip(zip(("tr", "te", "db"), sizes), (0, 100, 200)):
        ids = np.arange(n) + base
        variables.update({f"I_{suffix}": image_stack(ids), f"T_{suffix}": text_of(ids), f"L_{suffix}": labels_of(ids)})
    write_v73(path, variables)


def test_v73_four_dimensional_images_and_the_files_own_split(tmp_path):
    path = tmp_path / "raw_mir.mat"
    split_file(path)
    ds = datasets.load("mat", path=str(path), protocol="file")
    assert (len(ds.train), len(ds.query), len(ds.database)) == (8, 3, 10)
    assert (ds.train.source, ds.query.source, ds.database.source) == ("tr", "te", "db")
    img = ds.query.views["image"]
    assert isinstance(img.base if hasattr(img, "base") else img, matfile.MatImages)  # read lazily
    x = np.asarray(img)
    assert x.shape == (3, 3, 6, 5) and x.dtype == np.uint8  # [n, C, H, W]
    ids = np.arange(3) + 100
    np.testing.assert_array_equal(x[:, 1, 0, 0], (ids % 16) * 16 + 4)  # green plane of each item
    np.testing.assert_array_equal(x[0, 0, :, 0], (ids[0] % 16) * 16 + np.arange(6) % 4)  # rows stay rows
    np.testing.assert_array_equal(ds.query.views["text"], text_of(ids).astype(np.float32))
    np.testing.assert_array_equal(ds.database.labels, labels_of(np.arange(10) + 200).astype(bool))
    # an item drawn out of order and twice reads the right items
    sub = np.asarray(ds.database.views["image"][np.array([7, 2, 7])])
    np.testing.assert_array_equal(sub[:, 2, 0, 0], ((np.array([207, 202, 207]) % 16) * 16 + 8))
    # the stream protocol pools queries and database (no item twice): 13 items
    st = datasets.load("mat", path=str(path), queries=4, seed=1)
    assert len(st.query) == 4 and len(st.database) == 9
    np.testing.assert_array_equal(np.sort(np.concatenate([st.query.indices, st.database.indices])), np.arange(13))
    pooled_ids = np.concatenate([np.arange(3) + 100, np.arange(10) + 200])
    np.testing.assert_array_equal(st.database.views["text"][:, 0], pooled_ids[st.database.indices] * 10)
    got = np.asarray(st.query.views["image"])[:, 1, 0, 0]
    np.testing.assert_array_equal(got, (pooled_ids[st.query.indices] % 16) * 16 + 4)


def test_dcmh_layout_in_three_files_with_iall_nchw_in_hdf5(tmp_path):
    """mirflickr25k-iall.mat holds IAll as HDF5 [n, 3, W, H] = MATLAB [H, W, 3, n]; YAll and LAll are v5."""
    ids = np.arange(12)
    write_v73(tmp_path / "mirflickr25k-iall.mat", {"IAll": image_stack(ids, h=4, w=9)})
    import h5py
    with h5py.File(tmp_path / "mirflickr25k-iall.mat", "r") as f:
        assert f["IAll"].shape == (12, 3, 9, 4)
    scipy.io.savemat(tmp_path / "mirflickr25k-yall.mat", {"YAll": text_of(ids)})
    scipy.io.savemat(tmp_path / "mirflickr25k-lall.mat", {"LAll": labels_of(ids)})
    views, labels = multiview.read_mat(tmp_path)
    assert np.asarray(views["image"]).shape == (12, 3, 4, 9)
    np.testing.assert_array_equal(np.asarray(views["image"])[:, 0, 3, 0], (ids % 16) * 16 + 3)
    np.testing.assert_array_equal(labels, labels_of(ids).astype(bool))
    with pytest.raises(Learn2HashError, match="holds no split of its own"):
        datasets.load("mat", path=str(tmp_path), protocol="file")
    # an explicit axis order wins over the guess (here: treat the stored [H, W, C, n] as such)
    views2, _ = multiview.read_mat(tmp_path, "image=IAll,labels=LAll", image_axes="HWCN")
    np.testing.assert_array_equal(np.asarray(views2["image"]), np.asarray(views["image"]))
    with pytest.raises(Learn2HashError, match="image_axes must order the letters NCHW"):
        multiview.read_mat(tmp_path, "image=IAll,labels=LAll", image_axes="HWC")


def test_v5_features_lemon_layout_named_set(tmp_path, monkeypatch):
    """LEMON's MIRFLICKR.mat: I_tr/I_te features, T_tr/T_te bag-of-words, L_tr/L_te labels (v5)."""
    rng = np.random.default_rng(0)
    tr, te = np.arange(30), np.arange(30, 40)
    variables = {"I_tr": rng.standard_normal((30, 5)), "I_te": rng.standard_normal((10, 5)),
                 "T_tr": text_of(tr), "T_te": text_of(te), "L_tr": labels_of(tr), "L_te": labels_of(te)}
    monkeypatch.setenv("LEARN2HASH_DATA", str(tmp_path))
    assert not datasets.registered()["mirflickr-25k-mat"].present()
    with pytest.raises(DatasetNotFoundError, match=rf"looked in {tmp_path / 'mirflickr-25k-mat'}.*I_tr/I_te"):
        datasets.load("mirflickr-25k-mat")
    (tmp_path / "mirflickr-25k-mat").mkdir()
    scipy.io.savemat(tmp_path / "mirflickr-25k-mat" / "MIRFLICKR.mat", variables)
    assert datasets.registered()["mirflickr-25k-mat"].present()
    own = datasets.load("mirflickr-25k-mat", protocol="file")
    assert (len(own.train), len(own.query), len(own.database)) == (30, 10, 30)  # no _db: database = train
    np.testing.assert_array_equal(own.query.views["image"], variables["I_te"].astype(np.float32))
    assert own.train.views["image"] is own.database.views["image"]
    # LEMON's protocol: [tr; te] pooled, 2,000 (here 6) random queries, the rest streamed
    st = datasets.load("mirflickr-25k-mat", queries=6, seed=2)
    assert st.protocol == "stream" and (len(st.query), len(st.database)) == (6, 34)
    pooled = np.concatenate([variables["I_tr"], variables["I_te"]]).astype(np.float32)
    np.testing.assert_array_equal(st.database.views["image"], pooled[st.database.indices])
    st.save_splits(tmp_path / "run")
    back = datasets.load("mirflickr-25k-mat", splits=tmp_path / "run")
    np.testing.assert_array_equal(back.query.indices, st.query.indices)
    assert datasets.registry.default_topk("mirflickr-25k-mat") is None


def test_unknown_layout_is_a_clear_error(tmp_path):
    scipy.io.savemat(tmp_path / "x.mat", {"A": np.zeros((3, 2)), "B": np.zeros((3, 1))})
    with pytest.raises(Learn2HashError, match=r"match no known cross-modal layout; expected I_tr/I_te"):
        datasets.load("mat", path=str(tmp_path / "x.mat"))
