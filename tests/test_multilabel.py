"""fashion-mnist-multilabel: canvases of 2x2 Fashion-MNIST cells with multi-hot labels."""

from __future__ import annotations

import numpy as np
import pytest

from _fake_fashion import write_fake_fashion
from learn2hash.datasets import fashion_mnist, load
from learn2hash.datasets import multilabel
from learn2hash.errors import Learn2HashError

SMALL = {"query_size": 40, "train_size": 60, "database_size": 150}


@pytest.fixture
def fake(tmp_path, monkeypatch):
    pools = write_fake_fashion(tmp_path / "fm", n_train=80, n_test=40)
    monkeypatch.setenv("LEARN2HASH_DATA", str(tmp_path / "fm"))
    return pools


def identify_cells(canvas, lookup):
    """[(pool, class)] of the items on a canvas, found by exact pixel match; asserts empty cells are black."""
    found = []
    for r in range(2):
        for c in range(2):
            cell = canvas[0, 28 * r:28 * (r + 1), 28 * c:28 * (c + 1)]
            if not cell.any():
                continue
            assert cell.tobytes() in lookup, "a cell shows something that is not a pool image"
            found.append(lookup[cell.tobytes()])
    return found


def test_canvases_show_items_of_the_right_pool_and_labels_are_their_classes(fake):
    lookup = {img.tobytes(): (part, int(cls)) for part, (images, classes) in fake.items()
              for img, cls in zip(images, classes)}
    ds = load("fashion-mnist-multilabel", seed=3, **SMALL)
    assert (len(ds.query), len(ds.train), len(ds.database)) == (40, 60, 150)
    counts = []
    for name, split in ds.splits.items():
        assert split.x.shape == (len(split), 1, 56, 56) and split.x.dtype == np.uint8
        assert split.source == ("test" if name == "query" else "train")
        for canvas, labels in zip(split.x, split.labels):
            items = identify_cells(canvas, lookup)
            assert 1 <= len(items) <= 3
            assert {pool for pool, _ in items} == {split.source}  # test items only in query canvases
            np.testing.assert_array_equal(np.flatnonzero(labels), sorted({cls for _, cls in items}))
            counts.append(len(items))
    assert set(counts) == {1, 2, 3}
    # pixel parity tells the pools apart too: train images are even, test images odd
    assert (ds.database.x % 2 == 0).all() and (ds.train.x % 2 == 0).all()
    assert ((ds.query.x % 2 == 1) | (ds.query.x == 0)).all()


def test_canvases_are_a_function_of_seed_and_id(fake, tmp_path):
    a = load("fashion-mnist-multilabel", seed=1, **SMALL)
    b = load("fashion-mnist-multilabel", seed=1, **SMALL)
    c = load("fashion-mnist-multilabel", seed=2, **SMALL)
    for name in ("query", "train", "database"):
        np.testing.assert_array_equal(a.splits[name].x, b.splits[name].x)
        assert not np.array_equal(a.splits[name].x, c.splits[name].x)
    np.testing.assert_array_equal(a.train.indices, np.arange(60))
    # canvas id i is the same canvas whichever split or batch it is made in
    np.testing.assert_array_equal(a.train.x, a.database.x[:60])
    bigger = load("fashion-mnist-multilabel", seed=1, query_size=10, train_size=5, database_size=300)
    np.testing.assert_array_equal(bigger.database.x[:150], a.database.x)
    np.testing.assert_array_equal(bigger.query.x, a.query.x[:10])
    a.save_splits(tmp_path / "run")
    again = load("fashion-mnist-multilabel", splits=tmp_path / "run")
    assert again.seed == 1
    for name in ("query", "train", "database"):
        np.testing.assert_array_equal(again.splits[name].x, a.splits[name].x)
        np.testing.assert_array_equal(again.splits[name].labels, a.splits[name].labels)


def test_layout_statistics():
    layout = multilabel.canvas_layout(0, "train", np.arange(30000), pool_size=1000)
    k = (layout >= 0).sum(axis=1)
    # 1, 2 or 3 items, each a third of the time (binomial sd ~82 of 10,000)
    np.testing.assert_allclose(np.bincount(k, minlength=4)[1:], [10000] * 3, atol=400)
    # every cell is occupied with probability E[k] / 4 = 1/2
    np.testing.assert_allclose((layout >= 0).mean(axis=0), [0.5] * 4, atol=0.015)
    items = layout[layout >= 0]
    assert items.min() >= 0 and items.max() < 1000
    per_item = np.bincount(items, minlength=1000)  # ~60 draws each (sd ~7.7) if uniform over the pool
    assert per_item.min() > 25 and per_item.max() < 100
    one = multilabel.canvas_layout(0, "train", np.array([12345]), pool_size=1000)
    np.testing.assert_array_equal(one[0], layout[12345])
    assert not np.array_equal(multilabel.canvas_layout(0, "test", np.arange(100), 1000), layout[:100])


def test_labels_are_the_set_of_classes_by_hand():
    layout = np.array([[2, -1, 0, -1], [-1, 1, -1, -1], [0, 0, 3, -1]])
    classes = np.array([4, 7, 9, 4])
    expected = np.zeros((3, 10), dtype=bool)
    expected[0, [4, 9]] = expected[1, 7] = expected[2, 4] = True
    np.testing.assert_array_equal(multilabel.canvas_labels(layout, classes), expected)
    images = np.arange(4, dtype=np.uint8).reshape(4, 1, 1, 1) + np.zeros((4, 1, 28, 28), np.uint8) + 1
    canvas = multilabel.render_canvases(layout[:1], images)[0, 0]
    assert (canvas[:28, :28] == 3).all() and (canvas[28:, :28] == 1).all()
    assert not canvas[:, 28:].any()


def test_bad_sizes(fake):
    with pytest.raises(Learn2HashError, match="query_size must be >= 1"):
        load("fashion-mnist-multilabel", query_size=0)
    with pytest.raises(Learn2HashError, match="train_size must be an integer"):
        load("fashion-mnist-multilabel", train_size="many")
    with pytest.raises(Learn2HashError, match="no parameter 'canvas'"):
        load("fashion-mnist-multilabel", canvas=3)


@pytest.mark.skipif(fashion_mnist.data_dir() is None,
                    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); CI installs it")
def test_default_protocol_on_fashion_mnist():
    ds = load("fashion-mnist-multilabel")
    assert (len(ds.query), len(ds.train), len(ds.database)) == (1000, 5000, 20000)
    assert ds.database.x.shape == (20000, 1, 56, 56) and ds.n_classes == 10
    card = ds.database.labels.sum(axis=1)
    assert card.min() == 1 and card.max() == 3
    assert multilabel.DEFAULT_TOPK == 5000


def test_missing_fashion_mnist_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("LEARN2HASH_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "nowhere")
    with pytest.raises(Learn2HashError, match="apt-get install dataset-fashion-mnist"):
        load("fashion-mnist-multilabel")
