"""CIFAR-10 from its published batch files (binary and python), the safe unpickler, the three protocols."""

from __future__ import annotations

import os
import pickle
import struct

import numpy as np
import pytest

from learn2hash import cli
from learn2hash.datasets import cifar, load
from learn2hash.errors import CorruptFileError, DatasetNotFoundError, Learn2HashError

PER_CLASS_TRAIN = 1  # images per class in each fixture "data batch" (6 per class in all)
PER_CLASS_TEST = 1


def fixture_pool() -> tuple[np.ndarray, np.ndarray]:
    """Six batches' worth of tiny CIFAR: image i has every pixel of its red plane = i % 256, green = class."""
    per_batch = [PER_CLASS_TRAIN] * 5 + [PER_CLASS_TEST]
    images, labels = [], []
    i = 0
    for n in per_batch:
        y = np.repeat(np.arange(10), n)
        np.random.default_rng(len(labels)).shuffle(y)
        x = np.zeros((len(y), 3, 32, 32), dtype=np.uint8)
        for j, c in enumerate(y):
            x[j, 0] = (i + j) % 256
            x[j, 1] = c
            x[j, 2, 0, :4] = [1, 2, 3, 4]  # row order within a plane
        i += len(y)
        images.append(x)
        labels.append(y)
    return images, labels


def write_binary(folder, images, labels):
    folder.mkdir(parents=True, exist_ok=True)
    for name, x, y in zip(cifar.BATCHES, images, labels):
        rec = np.concatenate([y.astype(np.uint8)[:, None], x.reshape(len(x), -1)], axis=1)
        rec.tofile(folder / f"{name}.bin")


class _Py2Pickler(pickle._Pickler):
    """Pickles bytes as Python 2 ``str`` (BINSTRING opcodes), as the published python batches are."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj):
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def write_python(folder, images, labels):
    folder.mkdir(parents=True, exist_ok=True)
    for name, x, y in zip(cifar.BATCHES, images, labels):
        batch = {b"batch_label": b"training batch", b"labels": [int(v) for v in y],
                 b"data": x.reshape(len(x), -1), b"filenames": [f"img_{k}.png".encode() for k in range(len(y))]}
        with open(folder / name, "wb") as fh:
            _Py2Pickler(fh, protocol=2).dump(batch)


@pytest.fixture()
def cifar_dirs(tmp_path):
    images, labels = fixture_pool()
    write_binary(tmp_path / "bin" / "cifar-10-batches-bin", images, labels)
    write_python(tmp_path / "py" / "cifar-10-batches-py", images, labels)
    return tmp_path, np.concatenate(images), np.concatenate(labels)


def test_binary_and_python_batches_read_identically(cifar_dirs):
    root, images, labels = cifar_dirs
    for sub in ("bin", "py"):
        x, y, folder = cifar.pool(root / sub)
        assert x.shape == (60, 3, 32, 32) and x.dtype == np.uint8
        np.testing.assert_array_equal(y, labels)
        np.testing.assert_array_equal(x, images)
        # pool order: the five data batches, then the test batch; the planes are red, green, blue
        np.testing.assert_array_equal(x[:, 0, 5, 7], np.arange(60) % 256)
        np.testing.assert_array_equal(x[:, 1, 0, 0], labels)
        np.testing.assert_array_equal(x[3, 2, 0, :5], [1, 2, 3, 4, 0])


def test_python_batch_is_a_real_py2_pickle(cifar_dirs):
    root, _, _ = cifar_dirs
    raw = (root / "py" / "cifar-10-batches-py" / "data_batch_1").read_bytes()
    # the keys are Python 2 strings, which only encoding="bytes" reads as bytes
    assert pickle.SHORT_BINSTRING + bytes([6]) + b"labels" in raw
    d = pickle.loads(raw, encoding="bytes")
    assert d[b"data"].shape == (10, 3072)


@pytest.mark.parametrize("protocol,sizes,db_per_class", [
    ("cifar10", (10, 20, 30), 3),    # query 1, train 2, database the other 3 per class
    ("cifar10-1", (10, 20, 50), 5),  # database = everything but the queries; train inside it
    ("cifar10-2", (10, 20, 20), 2),  # database = train
])
def test_protocols_draw_exact_per_class_counts(cifar_dirs, protocol, sizes, db_per_class):
    root, images, labels = cifar_dirs
    ds = load("cifar10", protocol=protocol, seed=3, path=str(root / "bin"), query_per_class=1, train_per_class=2)
    assert (len(ds.query), len(ds.train), len(ds.database)) == sizes
    np.testing.assert_array_equal(ds.query.labels.sum(0), [1] * 10)
    np.testing.assert_array_equal(ds.train.labels.sum(0), [2] * 10)
    np.testing.assert_array_equal(ds.database.labels.sum(0), [db_per_class] * 10)
    q, t, d = ds.query.indices, ds.train.indices, ds.database.indices
    assert not set(q) & set(t) and not set(q) & set(d)
    if protocol == "cifar10":
        assert not set(t) & set(d) and len(set(q) | set(t) | set(d)) == 60
    elif protocol == "cifar10-1":
        assert set(t) <= set(d) and set(d) == set(range(60)) - set(q)
    else:
        np.testing.assert_array_equal(t, d)
    np.testing.assert_array_equal(ds.database.labels.argmax(1), labels[d])
    np.testing.assert_array_equal(np.asarray(ds.query.x), images[q])


def test_protocol_counts_default_to_the_published_ones_and_too_few_is_clear(cifar_dirs):
    root, _, _ = cifar_dirs
    assert cifar.PROTOCOLS == {"cifar10": (100, 500), "cifar10-1": (100, 500), "cifar10-2": (1000, 5000)}
    with pytest.raises(Learn2HashError, match=r"class 0 \(airplane\) has 6 images; 100 query \+ 500 train"):
        load("cifar10", path=str(root / "bin"))
    # full-size labels: exactly 100/500/5400 per class under cifar10 (labels only, no pixels needed)
    labels = np.repeat(np.arange(10), 6000)
    idx = cifar.protocol_indices("cifar10", labels, 0, 100, 500)
    assert [len(idx[s]) for s in ("query", "train", "database")] == [1000, 5000, 54000]
    np.testing.assert_array_equal(np.bincount(labels[idx["database"]]), [5400] * 10)
    idx2 = cifar.protocol_indices("cifar10-2", labels, 0, 1000, 5000)
    assert [len(idx2[s]) for s in ("query", "train", "database")] == [10000, 50000, 50000]


def test_seeded_and_saved_with_the_run(cifar_dirs, tmp_path):
    root, _, _ = cifar_dirs
    kw = dict(path=str(root / "py"), query_per_class=1, train_per_class=2)
    a, b, c = (load("cifar10", protocol="cifar10-1", seed=s, **kw) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.query.indices, b.query.indices)
    np.testing.assert_array_equal(a.train.indices, b.train.indices)
    assert not np.array_equal(a.query.indices, c.query.indices)
    a.save_splits(tmp_path / "run")
    again = load("cifar10", splits=tmp_path / "run")
    assert again.protocol == "cifar10-1" and again.params["query_per_class"] == 1
    for s in ("query", "train", "database"):
        np.testing.assert_array_equal(getattr(again, s).indices, getattr(a, s).indices)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_python_batch_runs_nothing(cifar_dirs, tmp_path):
    root, _, _ = cifar_dirs
    folder = root / "py" / "cifar-10-batches-py"
    marker = tmp_path / "pwned"
    with open(folder / "data_batch_3", "wb") as fh:
        pickle.dump({b"data": _Evil(marker), b"labels": [0]}, fh, protocol=2)
    with pytest.raises(CorruptFileError, match=r"data_batch_3: the pickle asks for (posix|os)\.system; .*not loaded"):
        cifar.read_python_batch(folder / "data_batch_3")
    assert not marker.exists()
    # through the dataset and the command line: one clear line, exit 2, nothing run
    assert cli.main(["datasets", "cifar10", "--data-path", str(root / "py")]) == 2
    assert not marker.exists()
    # other callables are refused the same way (builtins.eval via a protocol-4 pickle)
    evil = b"\x80\x04cbuiltins\neval\n(X\x01\x00\x00\x001tR."
    with pytest.raises(CorruptFileError, match=r"builtins\.eval"):
        cifar.safe_unpickle(evil, "batch")
    with pytest.raises(CorruptFileError, match="not a readable pickle"):
        cifar.safe_unpickle(b"\x80\x02}q\x00", "batch")


def test_python_batch_with_wrong_content_is_refused(tmp_path):
    p = tmp_path / "data_batch_1"
    p.write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"labels": [0, 1]}, protocol=2))
    with pytest.raises(CorruptFileError, match=r"'data' must be a uint8 array \[n, 3072\]"):
        cifar.read_python_batch(p)
    p.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 11]}, protocol=2))
    with pytest.raises(CorruptFileError, match="labels must be 0..9"):
        cifar.read_python_batch(p)
    q = tmp_path / "x.bin"
    q.write_bytes(b"\x00" * 100)
    with pytest.raises(CorruptFileError, match="not a multiple of the 3073-byte record"):
        cifar.read_binary_batch(q)


def test_not_installed_names_the_folder_and_layout(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LEARN2HASH_DATA", str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match=rf"looked in {tmp_path / 'cifar10'}.*data_batch_1.bin"):
        load("cifar10")
    code = cli.main(["train", "--method", "csq", "--dataset", "cifar10", "--bits", "16", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert str(tmp_path / "cifar10") in err and "test_batch.bin" in err and "toronto" in err
