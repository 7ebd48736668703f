"""Datasets: fashion-mnist and digits protocols, saved splits, the registry, and the generic loaders."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

from _fake_fashion import write_fake_fashion, write_idx
from learn2hash import cli
from learn2hash.datasets import fashion_mnist, load, registered
from learn2hash.datasets.base import LazyArray
from learn2hash.datasets.protocols import counter_integers, counter_uniform, random_protocol
from learn2hash.errors import CorruptFileError, DatasetNotFoundError, Learn2HashError

needs_fashion = pytest.mark.skipif(
    fashion_mnist.data_dir() is None,
    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); CI installs it",
)


def class_counts(split) -> np.ndarray:
    assert (split.labels.sum(axis=1) == 1).all()
    return split.labels.sum(axis=0)


# --------------------------------------------------------------------------- fashion-mnist
@needs_fashion
def test_fashion_standard_protocol():
    ds = load("fashion-mnist", protocol="standard", seed=0)
    pools = fashion_mnist.pools()
    assert (len(ds.query), len(ds.train), len(ds.database)) == (1000, 5000, 60000)
    np.testing.assert_array_equal(class_counts(ds.query), [100] * 10)
    np.testing.assert_array_equal(class_counts(ds.train), [500] * 10)
    assert (ds.query.source, ds.train.source, ds.database.source) == ("test", "train", "train")
    np.testing.assert_array_equal(ds.database.indices, np.arange(60000))
    for split, pool in ((ds.query, "test"), (ds.train, "train")):
        assert len(np.unique(split.indices)) == len(split)
        images, labels = pools[pool]
        np.testing.assert_array_equal(np.asarray(split.x), images[split.indices])
        np.testing.assert_array_equal(split.labels.argmax(axis=1), labels[split.indices])
    assert ds.query.x.shape == (1000, 1, 28, 28) and ds.query.x.dtype == np.uint8


@needs_fashion
def test_fashion_full_protocol():
    ds = load("fashion-mnist", protocol="full")
    assert (len(ds.query), len(ds.train), len(ds.database)) == (10000, 60000, 60000)
    np.testing.assert_array_equal(ds.query.indices, np.arange(10000))
    np.testing.assert_array_equal(ds.train.indices, ds.database.indices)
    np.testing.assert_array_equal(class_counts(ds.query), [1000] * 10)


@needs_fashion
def test_fashion_seeded_and_saved_splits_reload(tmp_path):
    a, b, c = (load("fashion-mnist", seed=s) for s in (0, 0, 1))
    for name in ("query", "train"):
        np.testing.assert_array_equal(getattr(a, name).indices, getattr(b, name).indices)
        assert not np.array_equal(getattr(a, name).indices, getattr(c, name).indices)
    c.save_splits(tmp_path)
    again = load("fashion-mnist", splits=tmp_path)
    assert (again.protocol, again.seed) == ("standard", 1)
    for name, split in c.splits.items():
        other = again.splits[name]
        assert other.source == split.source
        np.testing.assert_array_equal(other.indices, split.indices)
        np.testing.assert_array_equal(other.labels, split.labels)
    np.testing.assert_array_equal(np.asarray(again.query.x), np.asarray(c.query.x))


def test_saved_split_checksum_is_verified(tmp_path):
    ds = load("digits", seed=3)
    ds.save_splits(tmp_path)
    idx = np.load(tmp_path / "split_query.npy")
    idx[0] = (idx[0] + 1) % 1797
    np.save(tmp_path / "split_query.npy", idx)
    with pytest.raises(CorruptFileError, match="split_query.npy"):
        load("digits", splits=tmp_path)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_from_learn2hash_data_folder(tmp_path, monkeypatch, gz):
    pools = write_fake_fashion(tmp_path / "fm", n_train=40, n_test=20, gz=gz)
    monkeypatch.setenv("LEARN2HASH_DATA", str(tmp_path / "fm"))
    assert registered()["fashion-mnist"].present()
    ds = load("fashion-mnist", protocol="full")
    np.testing.assert_array_equal(np.asarray(ds.database.x)[:, 0], pools["train"][0])
    np.testing.assert_array_equal(np.asarray(ds.query.x)[:, 0], pools["test"][0])
    np.testing.assert_array_equal(ds.query.labels.argmax(axis=1), pools["test"][1])
    # the standard protocol needs 500 train items per class: a clear error, not a crash
    with pytest.raises(Learn2HashError, match="class 0 has 2 items, 100 are needed"):
        load("fashion-mnist", protocol="standard")


def test_fashion_found_under_learn2hash_data_subfolder(tmp_path, monkeypatch):
    write_fake_fashion(tmp_path / "fashion-mnist", n_train=20, n_test=10)
    monkeypatch.setenv("LEARN2HASH_DATA", str(tmp_path))
    assert len(load("fashion-mnist", protocol="full").train) == 20


def test_missing_fashion_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("LEARN2HASH_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "nowhere")
    assert not registered()["fashion-mnist"].present()
    with pytest.raises(DatasetNotFoundError) as err:
        load("fashion-mnist")
    assert "apt-get install dataset-fashion-mnist" in str(err.value)
    assert "LEARN2HASH_DATA" in str(err.value)


def test_unknown_dataset_suggests_names():
    with pytest.raises(Learn2HashError, match="did you mean fashion-mnist") as err:
        load("fashion-mnst")
    assert "known datasets" in str(err.value) and "digits" in str(err.value)


def test_unknown_protocol_and_parameter():
    with pytest.raises(Learn2HashError, match="no protocol 'tiny'; its protocols: standard"):
        load("digits", protocol="tiny")
    with pytest.raises(Learn2HashError, match="no parameter 'path'; it takes no parameters"):
        load("digits", path="x.npz")
    with pytest.raises(Learn2HashError, match="seed must be an integer"):
        load("digits", seed="1")


def _corrupt_header(path):
    path.write_bytes(b"\x01\x02\x08\x03" + b"\0" * 12)


def _corrupt_truncate(path):
    write_idx(path, np.zeros((5, 28, 28), np.uint8), gz=False)
    path.write_bytes(path.read_bytes()[:-10])


def _corrupt_gzip(path):
    (path.parent / (path.name + ".gz")).write_bytes(b"this is not gzip data")


def _corrupt_dtype(path):
    path.write_bytes(b"\0\0\x42\x01" + (3).to_bytes(4, "big") + b"abc")


@pytest.mark.parametrize("corrupt, message", [
    (_corrupt_header, "bad magic number"),
    (_corrupt_truncate, "header says"),
    (_corrupt_gzip, "cannot read IDX file"),
    (_corrupt_dtype, "unknown IDX element type"),
])
def test_corrupt_idx_files(tmp_path, monkeypatch, corrupt, message):
    folder = tmp_path / "fm"
    write_fake_fashion(folder, n_train=20, n_test=10, gz=False)
    target = folder / "train-images-idx3-ubyte"
    target.unlink()
    corrupt(target)
    monkeypatch.setenv("LEARN2HASH_DATA", str(folder))
    with pytest.raises(CorruptFileError, match=message):
        load("fashion-mnist", protocol="full")


def test_idx_with_wrong_image_shape_is_corrupt(tmp_path, monkeypatch):
    folder = tmp_path / "fm"
    write_fake_fashion(folder, n_train=20, n_test=10)
    write_idx(folder / "train-images-idx3-ubyte", np.zeros((20, 14, 14), np.uint8))
    monkeypatch.setenv("LEARN2HASH_DATA", str(folder))
    with pytest.raises(CorruptFileError, match="unexpected shapes"):
        load("fashion-mnist", protocol="full")


def test_read_idx_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "a", a)
    np.testing.assert_array_equal(fashion_mnist.read_idx(tmp_path / "a.gz"), a)
    with gzip.open(tmp_path / "a.gz") as fh:
        assert fh.read(4) == b"\0\0\x08\x03"


# --------------------------------------------------------------------------- digits
def test_digits_protocol():
    ds = load("digits", seed=0)
    assert (len(ds.query), len(ds.train), len(ds.database)) == (100, 500, 1697)
    np.testing.assert_array_equal(class_counts(ds.query), [10] * 10)
    np.testing.assert_array_equal(class_counts(ds.train), [50] * 10)
    assert not np.intersect1d(ds.query.indices, ds.database.indices).size
    assert np.isin(ds.train.indices, ds.database.indices).all()
    assert ds.query.x.shape == (100, 1, 8, 8) and ds.query.x.dtype == np.uint8
    other = load("digits", seed=1)
    assert not np.array_equal(ds.query.indices, other.query.indices)
    np.testing.assert_array_equal(ds.query.indices, load("digits", seed=0).query.indices)


# --------------------------------------------------------------------------- protocol helpers
def test_counter_uniform_depends_only_on_seed_purpose_and_id():
    ids = np.arange(20000)
    u = counter_uniform(5, ids, "cells")
    assert u.dtype == np.float64 and ((u >= 0) & (u < 1)).all()
    np.testing.assert_array_equal(counter_uniform(5, ids[[7, 3, 19999]], "cells"), u[[7, 3, 19999]])
    assert not np.allclose(counter_uniform(6, ids, "cells"), u)
    assert not np.allclose(counter_uniform(5, ids, "items"), u)
    # roughly uniform: each tenth holds ~2,000 draws (binomial sd ~42)
    assert np.abs(np.bincount((u * 10).astype(int), minlength=10) - 2000).max() < 250
    k = counter_integers(5, ids, 3, "k")
    assert set(np.unique(k)) == {0, 1, 2}


def test_random_protocol():
    p = random_protocol(100, seed=1)
    assert (len(p["query"]), len(p["database"]), len(p["train"])) == (10, 90, 90)
    assert not np.intersect1d(p["query"], p["database"]).size
    np.testing.assert_array_equal(np.union1d(p["query"], p["database"]), np.arange(100))
    p2 = random_protocol(100, seed=1, query_size=30, train_size=20)
    assert (len(p2["query"]), len(p2["train"])) == (30, 20) and np.isin(p2["train"], p2["database"]).all()
    assert not np.array_equal(random_protocol(100, seed=2)["query"], p["query"])
    with pytest.raises(Learn2HashError, match="query_size must be in"):
        random_protocol(100, seed=1, query_size=100)
    with pytest.raises(Learn2HashError, match="train_size must be in"):
        random_protocol(100, seed=1, query_size=10, train_size=91)


# --------------------------------------------------------------------------- LazyArray
class Squares(LazyArray):
    def __init__(self, n):
        super().__init__(n, (2,), np.int64, "squares")
        self.calls = []

    def _load(self, positions):
        self.calls.append(positions.copy())
        return np.stack([positions ** 2, -positions], axis=1)


def test_lazy_array_indexes_like_numpy():
    lazy, ref = Squares(10), np.stack([np.arange(10) ** 2, -np.arange(10)], axis=1)
    assert lazy.shape == (10, 2) and len(lazy) == 10 and lazy.ndim == 2
    for key in (3, -1, slice(2, 8, 3), [4, 1, 1], np.array([[0, 9], [2, 3]]), ref[:, 0] % 2 == 0,
                (slice(None), 1), (np.array([5, 6]), 0), (7, 1), slice(5, 5)):
        np.testing.assert_array_equal(lazy[key], ref[key])
    np.testing.assert_array_equal(np.asarray(lazy), ref)
    np.testing.assert_array_equal(np.stack(list(lazy)), ref)
    lazy.calls.clear()
    lazy[[2, 7]]
    assert [c.tolist() for c in lazy.calls] == [[2, 7]]  # only what was asked for is loaded
    with pytest.raises(IndexError):
        lazy[10]
    with pytest.raises(IndexError):
        lazy[np.array([0.5])]


# --------------------------------------------------------------------------- CLI
def test_cli_lists_datasets_and_how_to_get_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LEARN2HASH_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "nowhere")
    assert cli.main(["datasets"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("fashion-mnist "))
    assert "missing" in line and "apt-get install dataset-fashion-mnist" in line
    assert any(l.startswith("digits ") and "present" in l for l in out.splitlines())


def test_cli_unknown_dataset_is_one_line(capsys):
    assert cli.main(["datasets", "fashion-mnst"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean fashion-mnist" in err
