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
    assert "not found" in line and "apt-get install dataset-fashion-mnist" in line
    assert any(l.startswith("digits ") and " found " in l for l in out.splitlines())


def test_cli_unknown_dataset_is_one_line(capsys):
    assert cli.main(["datasets", "fashion-mnst"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean fashion-mnist" in err


# --------------------------------------------------------------------------- generic: npz / npy
def write_pooled_npz(path, n=200, d=8, seed=0, **extra):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    y = rng.integers(0, 5, size=n)
    np.savez(path, x=x, labels=y, **extra)
    return x, y


def test_npz_pooled_protocol_seeded_and_reloadable(tmp_path):
    x, y = write_pooled_npz(tmp_path / "d.npz")
    ds = load("npz", path=tmp_path / "d.npz", seed=4)
    assert (len(ds.query), len(ds.train), len(ds.database)) == (20, 180, 180)
    assert ds.query.kind == "features" and ds.query.x.dtype == np.float32
    assert not np.intersect1d(ds.query.indices, ds.database.indices).size
    for split in ds.splits.values():
        np.testing.assert_allclose(split.x, x[split.indices].astype(np.float32))
        np.testing.assert_array_equal(split.labels, np.eye(5, dtype=bool)[y[split.indices]])
    again = load("npz", path=str(tmp_path / "d.npz"), seed=4)
    other = load("npz", path=tmp_path / "d.npz", seed=5)
    np.testing.assert_array_equal(again.query.indices, ds.query.indices)
    assert not np.array_equal(other.query.indices, ds.query.indices)
    ds.save_splits(tmp_path / "run")
    reloaded = load("npz", splits=tmp_path / "run")
    for name, split in ds.splits.items():
        np.testing.assert_array_equal(reloaded.splits[name].x, split.x)
    # sizes as they come from the command line (strings)
    small = load("npz", path=tmp_path / "d.npz", query_size="50", train_size="30")
    assert (len(small.query), len(small.train), len(small.database)) == (50, 30, 150)


def test_npz_key_aliases_multihot_and_images(tmp_path):
    rng = np.random.default_rng(1)
    feats, multi = rng.random((30, 4)), rng.integers(0, 2, size=(30, 6))
    np.savez(tmp_path / "f.npz", features=feats, y=multi)
    ds = load("npz", path=tmp_path / "f.npz")
    np.testing.assert_array_equal(ds.database.labels, multi[ds.database.indices].astype(bool))
    images = rng.integers(0, 256, size=(30, 5, 7), dtype=np.uint8)
    np.savez(tmp_path / "img.npz", x=images, labels=np.arange(30) % 3)
    ds = load("npz", path=tmp_path / "img.npz")
    assert ds.train.kind == "image" and ds.train.x.shape[1:] == (1, 5, 7) and ds.train.x.dtype == np.uint8
    np.testing.assert_array_equal(ds.train.x[:, 0], images[ds.train.indices])


def test_npy_pair(tmp_path):
    rng = np.random.default_rng(2)
    x, y = rng.random((40, 3)).astype(np.float32), rng.integers(0, 4, size=40)
    np.save(tmp_path / "features.npy", x)
    np.save(tmp_path / "labels.npy", y)
    ds = load("npz", path=tmp_path / "features.npy", labels=tmp_path / "labels.npy", query_size=10)
    assert len(ds.query) == 10 and len(ds.database) == 30
    np.testing.assert_array_equal(ds.query.x, x[ds.query.indices])
    # without labels=: an unlabelled collection (every item in the database, 0 label columns)
    bare = load("npz", path=tmp_path / "features.npy", query_size=10)
    assert bare.database.labels.shape == (40, 0) and len(bare.query) == 10 and len(bare.train) == 40
    np.testing.assert_array_equal(bare.database.x, x)
    assert set(bare.query.indices) <= set(bare.database.indices)


def test_npz_presplit(tmp_path):
    rng = np.random.default_rng(3)
    tr, te = rng.random((12, 3)), rng.random((5, 3))
    db = rng.random((20, 3))
    np.savez(tmp_path / "p.npz", train_x=tr, train_labels=np.arange(12) % 3, test_x=te,
             test_labels=np.array([0, 1, 2, 3, 4]), database_x=db, database_labels=np.arange(20) % 4)
    ds = load("npz", path=tmp_path / "p.npz")
    np.testing.assert_allclose(ds.train.x, tr.astype(np.float32))
    np.testing.assert_allclose(ds.query.x, te.astype(np.float32))
    np.testing.assert_allclose(ds.database.x, db.astype(np.float32))
    assert ds.n_classes == 5 and ds.query.labels.shape == (5, 5) and ds.query.labels[4, 4]
    assert (ds.query.source, ds.database.source) == ("query", "database")
    with pytest.raises(Learn2HashError, match="pre-split; query_size"):
        load("npz", path=tmp_path / "p.npz", query_size=2)
    np.savez(tmp_path / "q.npz", train_x=tr, train_labels=np.arange(12) % 3, query_x=te, query_labels=np.arange(5) % 3)
    ds = load("npz", path=tmp_path / "q.npz")
    np.testing.assert_allclose(ds.database.x, tr.astype(np.float32))  # no database arrays: the train arrays
    ds.save_splits(tmp_path / "s")
    np.testing.assert_array_equal(load("npz", splits=tmp_path / "s").query.x, ds.query.x)


@pytest.mark.parametrize("arrays, message", [
    ({"x": np.array([[0.0, np.nan]] * 4), "labels": np.arange(4)}, "NaN"),
    ({"x": np.zeros((4, 2)), "labels": np.arange(5)}, "4 items but 5 label rows"),
    ({"data": np.zeros((4, 2)), "target": np.arange(4)}, r"holds \['data', 'target'\]; expected 'x'"),
    ({"x": np.zeros((4, 2, 2, 2), np.float32), "labels": np.arange(4)}, "must be uint8"),
    ({"x": np.zeros((4, 2)), "features": np.zeros((4, 2)), "labels": np.arange(4)}, "both 'x' and 'features'"),
    ({"train_x": np.zeros((4, 2)), "train_labels": np.arange(4), "query_x": np.zeros((2, 2))}, "no query labels"),
    ({"x": np.zeros((4, 2)), "labels": np.array([0, 1, 2, -1])}, "must be >= 0"),
])
def test_npz_bad_content(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(Learn2HashError, match=message):
        load("npz", path=tmp_path / "bad.npz")


def test_npz_bad_files(tmp_path):
    with pytest.raises(Learn2HashError, match="does not exist"):
        load("npz", path=tmp_path / "nope.npz")
    with pytest.raises(Learn2HashError, match="give path="):
        load("npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(CorruptFileError, match="junk.npz"):
        load("npz", path=tmp_path / "junk.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([{"a": 1}] * 3, dtype=object), labels=np.arange(3))
    with pytest.raises(CorruptFileError, match="no pickled arrays"):
        load("npz", path=tmp_path / "obj.npz")
    (tmp_path / "d.txt").write_text("1 2 3")
    with pytest.raises(Learn2HashError, match="must be a .npz file or a .npy"):
        load("npz", path=tmp_path / "d.txt")
    with pytest.raises(Learn2HashError, match="has no parameter 'size'"):
        load("npz", path=tmp_path / "d.txt", size=3)


# --------------------------------------------------------------------------- generic: image lists
def save_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_image_list(folder, n_labels=4, sizes=(6, 6, 7)):
    """Solid-colour RGB images whose colour encodes (split, position); returns {split: (names, labels)}."""
    rng = np.random.default_rng(0)
    out = {}
    for s, (split, n) in enumerate(zip(("train", "test", "database"), sizes)):
        names, labels, lines = [], rng.integers(0, 2, size=(n, n_labels)), []
        for i in range(n):
            name = f"img/{split}_{i}.png"
            save_png(folder / name, np.full((5, 8, 3), (s * 40, i * 10, 200), np.uint8))
            names.append(name)
            lines.append(name + " " + " ".join(map(str, labels[i])))
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n")
        out[split] = (names, labels.astype(bool))
    return out


def test_image_list_lazy_images_and_labels(tmp_path):
    made = make_image_list(tmp_path)
    ds = load("image-list", path=tmp_path)
    assert (len(ds.train), len(ds.query), len(ds.database)) == (6, 6, 7)
    assert not isinstance(ds.train.x, np.ndarray)  # decoded when indexed
    assert ds.query.x.shape == (6, 3, 5, 8) and ds.query.x.dtype == np.uint8 and ds.query.kind == "image"
    for split, listname, s in (("train", "train", 0), ("query", "test", 1), ("database", "database", 2)):
        sp = ds.splits[split]
        np.testing.assert_array_equal(sp.labels, made[listname][1])
        x = np.asarray(sp.x)
        for i in range(len(sp)):
            assert (x[i, 0] == s * 40).all() and (x[i, 1] == i * 10).all() and (x[i, 2] == 200).all()
    one = ds.database.x[3]
    assert one.shape == (3, 5, 8) and (one[1] == 30).all()
    resized = load("image-list", path=tmp_path, size="4x3", channels=1)
    assert resized.train.x.shape == (6, 1, 4, 3)
    # a solid image stays solid after resizing; its gray level is the luminance of the colour
    gray = np.asarray(resized.train.x)[2, 0]
    assert (gray == gray[0, 0]).all() and abs(int(gray[0, 0]) - round(0.587 * 20 + 0.114 * 200)) <= 1
    ds.save_splits(tmp_path / "run")
    np.testing.assert_array_equal(np.asarray(load("image-list", splits=tmp_path / "run").query.x), np.asarray(ds.query.x))


def test_image_list_explicit_files_and_root(tmp_path):
    make_image_list(tmp_path / "data")
    lists = tmp_path / "lists"
    lists.mkdir()
    for name in ("train", "test", "database"):
        (lists / f"{name}_v2.txt").write_text((tmp_path / "data" / f"{name}.txt").read_text())
    ds = load("image-list", train=lists / "train_v2.txt", query=lists / "test_v2.txt",
              database=lists / "database_v2.txt", root=tmp_path / "data")
    assert len(ds.database) == 7 and np.asarray(ds.database.x)[6, 1, 0, 0] == 60


def test_image_list_errors(tmp_path):
    make_image_list(tmp_path)
    lines = (tmp_path / "database.txt").read_text().splitlines()
    (tmp_path / "database.txt").write_text("\n".join(lines[:2] + [lines[2] + " 1"] + lines[3:]))
    with pytest.raises(Learn2HashError, match=r"database.txt:3: a label vector of length 5, expected 4"):
        load("image-list", path=tmp_path)
    (tmp_path / "database.txt").write_text("\n".join(lines[:1] + [lines[1].replace(" 0", " 2", 1)] + lines[2:]))
    with pytest.raises(Learn2HashError, match=r"database.txt:2: labels must be 0 or 1"):
        load("image-list", path=tmp_path)
    (tmp_path / "database.txt").write_text("\n".join(lines + ["img/missing.png 0 0 1 1"]))
    with pytest.raises(Learn2HashError, match=r"1 image\(s\) listed do not exist: .*missing.png"):
        load("image-list", path=tmp_path)
    (tmp_path / "database.txt").unlink()
    with pytest.raises(Learn2HashError, match="no database list .*database.txt"):
        load("image-list", path=tmp_path)
    # one list file: a pooled collection (6 labelled lines: 2 queries, 4 in the database)
    one = load("image-list", path=tmp_path / "train.txt", query_size=2)
    assert (len(one.query), len(one.database), one.database.labels.shape[1]) == (2, 4, 4)
    bare = tmp_path / "bare.txt"  # without label columns: unlabelled, every item in the database
    bare.write_text("".join(line.split()[0] + "\n" for line in (tmp_path / "train.txt").read_text().splitlines()))
    ds = load("image-list", path=bare, query_size=3)
    assert (len(ds.query), len(ds.database), ds.database.labels.shape) == (3, 6, (6, 0))
    bare.write_text(bare.read_text() + (tmp_path / "train.txt").read_text().splitlines()[0] + "\n")
    with pytest.raises(Learn2HashError, match=r"bare.txt:7: a label vector, but line 1 has none"):
        load("image-list", path=bare)
    with pytest.raises(Learn2HashError, match="channels must be 1"):
        load("image-list", path=tmp_path, database=tmp_path / "train.txt", channels=2)


def test_image_list_undecodable_image_named_when_indexed(tmp_path):
    make_image_list(tmp_path)
    (tmp_path / "img" / "database_4.png").write_bytes(b"\x89PNG garbage")
    ds = load("image-list", path=tmp_path)  # lazy: nothing decoded but the first train image
    np.asarray(ds.database.x[:4])
    with pytest.raises(CorruptFileError, match="cannot decode image .*database_4.png"):
        ds.database.x[[2, 4]]


# --------------------------------------------------------------------------- generic: image folders
def make_image_folder(root, per_class=(12, 15, 13)):
    for c, n in enumerate(per_class):
        for i in range(n):
            save_png(root / f"class_{c}" / f"{i:03d}.png", np.full((6, 6), c * 50 + i, np.uint8))


def test_image_folder_per_class_split(tmp_path):
    make_image_folder(tmp_path)
    (tmp_path / "class_1" / "notes.txt").write_text("not an image")
    ds = load("image-folder", path=tmp_path, seed=2)
    assert ds.class_names == ["class_0", "class_1", "class_2"]
    np.testing.assert_array_equal(ds.query.labels.sum(axis=0), [1, 1, 1])  # min(100, 12 // 10)
    np.testing.assert_array_equal(ds.train.labels.sum(axis=0), [11, 11, 11])  # min(500, 12 - 1)
    assert len(ds.database) == 40 - 3 and not np.intersect1d(ds.query.indices, ds.database.indices).size
    assert np.isin(ds.train.indices, ds.database.indices).all()
    assert ds.database.x.shape == (37, 1, 6, 6)
    for split in ds.splits.values():  # pixel value c*50+i encodes the class folder
        np.testing.assert_array_equal(np.asarray(split.x)[:, 0, 0, 0] // 50, split.labels.argmax(axis=1))
    again, other = load("image-folder", path=tmp_path, seed=2), load("image-folder", path=tmp_path, seed=3)
    np.testing.assert_array_equal(again.train.indices, ds.train.indices)
    assert not np.array_equal(other.train.indices, ds.train.indices)
    custom = load("image-folder", path=tmp_path, query_per_class=3, train_per_class="4", size=[3, 4], channels=3)
    np.testing.assert_array_equal(custom.query.labels.sum(axis=0), [3, 3, 3])
    assert len(custom.train) == 12 and custom.train.x.shape == (12, 3, 3, 4)
    with pytest.raises(Learn2HashError, match="class 0 has 9 items, 10 are needed"):
        load("image-folder", path=tmp_path, query_per_class=3, train_per_class=10)


def test_image_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(Learn2HashError, match="holds no images .* and no class sub-folders"):
        load("image-folder", path=tmp_path / "empty")
    make_image_folder(tmp_path / "data", per_class=(3, 3))
    (tmp_path / "data" / "class_9").mkdir()
    with pytest.raises(Learn2HashError, match="class folder .*class_9 holds no images"):
        load("image-folder", path=tmp_path / "data")
    (tmp_path / "data" / "class_9" / "x.png").write_bytes(b"")
    with pytest.raises(Learn2HashError, match="class 'class_9' has 1 image"):
        load("image-folder", path=tmp_path / "data")


def test_cli_describes_and_saves_a_generic_dataset(tmp_path, capsys):
    write_pooled_npz(tmp_path / "d.npz", n=60)
    rc = cli.main(["datasets", "npz", "--data-path", str(tmp_path / "d.npz"), "--data-param", "query_size=5",
                   "--seed", "3", "--save-splits", str(tmp_path / "s")])
    out = capsys.readouterr().out
    assert rc == 0 and "npz [standard, seed 3]: train 55, query 5, database 55" in out
    assert load("npz", splits=tmp_path / "s").seed == 3
    assert cli.main(["datasets", "npz", "--data-path", str(tmp_path / "nope.npz")]) == 2
    assert "does not exist" in capsys.readouterr().err
