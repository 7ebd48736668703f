"""Multi-modal datasets: the .mat loader (MATLAB v5 and v7.3), fashion-mnist-2view, its HOG cache.

The .mat files are written here, by scipy (v5) and by h5py the way MATLAB lays out v7.3 files
(column-major, so an n x d matrix is stored as d x n; sparse matrices as data/ir/jc groups),
and what the loader returns is compared with the arrays that went in.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import scipy.io
import scipy.sparse as sp

from _fake_fashion import write_fake_fashion
from learn2hash import cli, datasets
from learn2hash.datasets import multiview
from learn2hash.errors import CorruptFileError, Learn2HashError


def _arrays(n=50, seed=0):
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((n, 7)).astype(np.float32)
    text = (rng.random((n, 11)) < 0.2).astype(np.float64)
    labels = (rng.random((n, 4)) < 0.4).astype(np.uint8)
    labels[labels.sum(axis=1) == 0, 0] = 1
    return image, text, labels


def _write_v73(path, variables):
    """A MATLAB v7.3 file: HDF5 behind a 512-byte header, matrices transposed, sparse as groups."""
    import h5py

    with h5py.File(path, "w", userblock_size=512) as f:
        for name, value in variables.items():
            if sp.issparse(value):
                csc = sp.csc_matrix(value)
                g = f.create_group(name)
                g.attrs["MATLAB_class"] = np.bytes_("double")
                g.attrs["MATLAB_sparse"] = np.uint64(csc.shape[0])
                g["data"], g["ir"], g["jc"] = csc.data, csc.indices.astype(np.uint64), csc.indptr.astype(np.uint64)
            else:
                ds = f.create_dataset(name, data=np.asarray(value).T)
                ds.attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, written by the learn2hash tests".ljust(116, b" "))


@pytest.mark.parametrize("fmt", ["v5", "v7.3"])
def test_mat_loader_reads_both_formats(tmp_path, fmt):
    image, text, labels = _arrays()
    path = tmp_path / f"data-{fmt}.mat"
    variables = {"I_tr": image[:30], "I_te": image[30:], "T_all": sp.csr_matrix(text), "L": labels,
                 "ids": np.argmax(labels, axis=1)[None, :] + 0.0}
    if fmt == "v5":
        scipy.io.savemat(path, variables)
    else:
        _write_v73(path, variables)
    views, got = multiview.read_mat(path, "image=I_tr+I_te,text=T_all,labels=L")
    assert list(views) == ["image", "text"]
    np.testing.assert_array_equal(views["image"], image)
    np.testing.assert_array_equal(views["text"], text.astype(np.float32))
    assert got.dtype == bool and np.array_equal(got, labels.astype(bool))
    # a row vector of class ids is read as single labels
    _, ids = multiview.read_mat(path, {"image": "I_tr+I_te", "labels": "ids"})
    assert np.array_equal(np.argmax(ids, axis=1), np.argmax(labels, axis=1)) and ids.sum() == len(ids)


def test_mat_loader_errors(tmp_path):
    image, text, labels = _arrays()
    path = tmp_path / "d.mat"
    scipy.io.savemat(path, {"I": image, "T": text[:40], "L": labels, "name": "abc", "cube": np.zeros((50, 2, 2, 2, 2))})
    cases = [
        ("image=I,text=T,labels=L", "'text' .* has 40 rows but the labels .* have 50"),
        ("image=I,labels=X", "no variable 'X'; it holds"),
        ("image=name,labels=L", "not numeric"),
        ("image=cube,labels=L", "rank 3 or 4"),
        ("image=I", "labels variable"),
        ("labels=L", "at least one modality"),
        ("image I,labels=L", "ROLE=VARIABLE"),
        ("image=I,image=T,labels=L", "given twice"),
    ]
    for keys, message in cases:
        with pytest.raises(Learn2HashError, match=message):
            multiview.read_mat(path, keys)
    with pytest.raises(Learn2HashError, match="does not exist"):
        multiview.read_mat(tmp_path / "none.mat", "image=I,labels=L")
    bad = tmp_path / "bad.mat"
    bad.write_bytes(b"MATLAB 5.0 MAT-file" + b"\0" * 200)
    with pytest.raises(CorruptFileError):
        multiview.read_mat(bad, "image=I,labels=L")


def test_mat_dataset_stream_protocol_and_saved_splits(tmp_path):
    image, text, labels = _arrays(n=300)
    path = tmp_path / "d.mat"
    scipy.io.savemat(path, {"I": image, "T": text, "L": labels})
    ds = datasets.load("mat", path=str(path), keys="image=I,text=T,labels=L", queries=40, seed=3)
    assert ds.protocol == "stream" and (len(ds.query), len(ds.database)) == (40, 260)
    assert np.array_equal(np.sort(np.concatenate([ds.query.indices, ds.database.indices])), np.arange(300))
    assert not np.array_equal(ds.database.indices, np.sort(ds.database.indices))  # a shuffled arrival order
    assert np.array_equal(ds.train.indices, ds.database.indices) and ds.train.views["image"] is ds.database.views["image"]
    db = ds.database
    assert db.kind == "multiview" and np.array_equal(db.x, db.views["image"])
    np.testing.assert_array_equal(db.views["text"], text[db.indices].astype(np.float32))
    assert np.array_equal(db.labels, labels[db.indices].astype(bool))
    again = datasets.load("mat", path=str(path), keys="image=I,text=T,labels=L", queries=40, seed=3)
    assert np.array_equal(again.database.indices, db.indices)
    other = datasets.load("mat", path=str(path), keys="image=I,text=T,labels=L", queries=40, seed=4)
    assert not np.array_equal(other.query.indices, ds.query.indices)
    ds.save_splits(tmp_path / "splits")
    back = datasets.load("mat", splits=tmp_path / "splits")
    assert np.array_equal(back.database.indices, db.indices) and back.params["queries"] == 40
    with pytest.raises(Learn2HashError, match="queries must be in"):
        datasets.load("mat", path=str(path), keys="image=I,text=T,labels=L", queries=300)
    with pytest.raises(Learn2HashError, match="give path="):
        datasets.load("mat")


# --------------------------------------------------------------------------- fashion-mnist-2view
@pytest.fixture
def fake_fashion(tmp_path, monkeypatch):
    pools = write_fake_fashion(tmp_path / "fm", n_train=60, n_test=30)
    monkeypatch.setenv("LEARN2HASH_DATA", str(tmp_path / "fm"))
    monkeypatch.setenv("LEARN2HASH_CACHE", str(tmp_path / "cache"))
    multiview._fashion_pool.cache_clear()
    yield pools
    multiview._fashion_pool.cache_clear()


def test_fashion_2view_views_are_pixels_and_skimage_hog(fake_fashion):
    from skimage.feature import hog

    ds = datasets.load("fashion-mnist-2view", queries=20, seed=1)
    images = np.concatenate([fake_fashion["train"][0], fake_fashion["test"][0]])
    labels = np.concatenate([fake_fashion["train"][1], fake_fashion["test"][1]])
    assert (len(ds.query), len(ds.database), len(ds.train)) == (20, 70, 70)
    for split in (ds.query, ds.database):
        assert split.kind == "multiview" and list(split.views) == ["pixels", "hog"]
        assert split.views["pixels"].shape[1] == 784 and split.views["hog"].shape[1] == 324
        for row, src in enumerate(split.indices[:5]):
            assert np.array_equal(split.views["pixels"][row], images[src].reshape(-1))
            ref = hog(images[src], orientations=9, pixels_per_cell=(7, 7), cells_per_block=(2, 2),
                      block_norm="L2-Hys", feature_vector=True)
            np.testing.assert_allclose(split.views["hog"][row], ref, rtol=1e-6, atol=1e-7)
            assert split.labels[row, labels[src]] and split.labels[row].sum() == 1


def test_hog_is_cached_with_a_checksum(fake_fashion, tmp_path, monkeypatch):
    images = fake_fashion["train"][0][:12]
    first = multiview.cached_hog(images, "t")
    entries = list((tmp_path / "cache" / "t").glob("hog-*.npy"))
    assert len(entries) == 1

    def no_compute(_):
        raise AssertionError("recomputed although a valid cache entry exists")

    real = multiview.hog_features
    monkeypatch.setattr(multiview, "hog_features", no_compute)
    assert np.array_equal(multiview.cached_hog(images, "t"), first)
    entries[0].write_bytes(entries[0].read_bytes()[:-8] + b"\0" * 8)  # corrupt the cached values
    monkeypatch.setattr(multiview, "hog_features", real)
    assert np.array_equal(multiview.cached_hog(images, "t"), first)  # detected, recomputed, replaced
    monkeypatch.setattr(multiview, "hog_features", no_compute)
    assert np.array_equal(multiview.cached_hog(images, "t"), first)
    with pytest.raises(AssertionError, match="recomputed"):  # other images, other key
        multiview.cached_hog(images[::-1].copy(), "t")


def test_fashion_2view_standard_protocol(tmp_path, monkeypatch):
    write_fake_fashion(tmp_path / "fm", n_train=5000, n_test=1000)
    monkeypatch.setenv("LEARN2HASH_DATA", str(tmp_path / "fm"))
    monkeypatch.setenv("LEARN2HASH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(multiview, "hog_features", lambda im: im.reshape(len(im), -1)[:, :324].astype(np.float32))
    multiview._fashion_pool.cache_clear()
    try:
        ds = datasets.load("fashion-mnist-2view", protocol="standard")
    finally:
        multiview._fashion_pool.cache_clear()
    assert (len(ds.query), len(ds.train), len(ds.database)) == (1000, 5000, 5000)
    assert ds.query.indices.min() >= 5000  # queries are test images (after the train pool)
    assert np.all(ds.query.labels.sum(axis=0) == 100) and np.all(ds.train.labels.sum(axis=0) == 500)
    # test pixels are odd, train pixels even (see _fake_fashion): each split drew from the right pool
    assert np.all(ds.query.views["pixels"] % 2 == 1) and np.all(ds.database.views["pixels"] % 2 == 0)


def test_datasets_command_lists_the_multiview_datasets(capsys):
    assert cli.main(["datasets"]) == 0
    out = capsys.readouterr().out
    assert "fashion-mnist-2view" in out and "mat" in out


def test_hog_without_scikit_image_is_a_clear_error(monkeypatch):
    from learn2hash.datasets import multiview

    monkeypatch.setitem(sys.modules, "skimage", None)  # import skimage raises ImportError
    monkeypatch.setitem(sys.modules, "skimage.feature", None)
    with pytest.raises(Learn2HashError, match=r"scikit-image.*learn2hash\[multiview\]"):
        multiview.hog_features(np.zeros((2, 28, 28), np.uint8))
