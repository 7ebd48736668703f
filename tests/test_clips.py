"""Clip datasets: moving-fashion (synthetic, seeded) and clip-folder (users' own videos)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from _fake_fashion import write_fake_fashion
from learn2hash.datasets import clips, fashion_mnist, load
from learn2hash.errors import Learn2HashError

SMALL = {"query_size": 30, "train_size": 40, "database_size": 80}


@pytest.fixture
def fake(tmp_path, monkeypatch):
    pools = write_fake_fashion(tmp_path / "fm", n_train=80, n_test=40)
    monkeypatch.setenv("LEARN2HASH_DATA", str(tmp_path / "fm"))
    return pools


# --------------------------------------------------------------------------- moving-fashion
def test_clip_shapes_and_pools(fake):
    ds = load("moving-fashion", seed=1, **SMALL)
    assert (len(ds.query), len(ds.train), len(ds.database)) == (30, 40, 80)
    for name, split in ds.splits.items():
        assert split.kind == "clip" and split.x.shape == (len(split), 16, 1, 64, 64) and split.x.dtype == np.uint8
        assert split.labels.shape == (len(split), 40) and ds.n_classes == 40
        assert set(split.labels.sum(axis=1)) <= {1, 2}
        assert split.source == ("test" if name == "query" else "train")
    assert not isinstance(ds.database.x, np.ndarray)  # made when indexed
    assert ds.database.x[5].shape == (16, 1, 64, 64)
    # train images have even pixels and test images odd ones, also after max-blending two items:
    # test-split items never appear in train or database clips, and only they appear in query clips
    train, db, query = np.asarray(ds.train.x), np.asarray(ds.database.x), np.asarray(ds.query.x)
    assert (train % 2 == 0).all() and (db % 2 == 0).all()
    assert ((query % 2 == 1) | (query == 0)).all() and query.any()


def test_single_item_labels_match_what_the_frames_show(fake):
    lookup = {img.tobytes(): int(cls) for part in ("train", "test") for img, cls in zip(*fake[part])}
    ds = load("moving-fashion", seed=2, two_item_fraction=0.0, **SMALL)
    for split in ds.splits.values():
        for clip, labels in zip(np.asarray(split.x), split.labels):
            corners = []
            for frame in clip[[0, -1], 0]:
                ys, xs = np.nonzero(frame)
                y0, x0 = ys.min(), xs.min()
                assert (ys.max() - y0, xs.max() - x0) == (27, 27)
                corners.append((y0, x0))
                cls = lookup[frame[y0:y0 + 28, x0:x0 + 28].tobytes()]
            (ya, xa), (yb, xb) = corners
            assert (ya == yb) != (xa == xb)  # moves along one axis only ...
            assert max(abs(yb - ya), abs(xb - xa)) >= clips.MIN_TRAVEL  # ... and visibly
            direction = (0 if xb > xa else 1) if ya == yb else (2 if yb > ya else 3)
            assert np.flatnonzero(labels).tolist() == [4 * cls + direction]


def test_two_item_clips_carry_both_labels(fake):
    ds = load("moving-fashion", seed=0, two_item_fraction=1.0, **SMALL)
    spec = ds.database.x.spec
    assert (spec.item >= 0).all()
    images, classes = fake["train"][0][:, None], fake["train"][1]
    for i in range(len(ds.database)):
        expected = sorted({4 * int(classes[spec.item[i, s]]) + int(spec.direction[i, s]) for s in range(2)})
        assert np.flatnonzero(ds.database.labels[i]).tolist() == expected
        # the clip is the pixel-wise max of its two single-item clips
        singles = []
        for keep in range(2):
            one = spec.take(np.array([i]))
            one.item[0, 1 - keep] = -1
            singles.append(clips.render_clips(one, images)[0])
        np.testing.assert_array_equal(ds.database.x[i], np.maximum(*singles))


def test_clips_are_a_function_of_seed_and_id(fake, tmp_path):
    a = load("moving-fashion", seed=1, **SMALL)
    b = load("moving-fashion", seed=1, **SMALL)
    c = load("moving-fashion", seed=2, **SMALL)
    for name in ("query", "train", "database"):
        np.testing.assert_array_equal(np.asarray(a.splits[name].x), np.asarray(b.splits[name].x))
        np.testing.assert_array_equal(a.splits[name].labels, b.splits[name].labels)
        assert not np.array_equal(np.asarray(a.splits[name].x), np.asarray(c.splits[name].x))
    np.testing.assert_array_equal(np.asarray(a.train.x), np.asarray(a.database.x)[:40])
    np.testing.assert_array_equal(a.database.x[[70, 3]], np.asarray(a.database.x)[[70, 3]])
    bigger = load("moving-fashion", seed=1, query_size=5, train_size=5, database_size=120)
    np.testing.assert_array_equal(bigger.database.x[:80], np.asarray(a.database.x))
    a.save_splits(tmp_path / "run")
    again = load("moving-fashion", splits=tmp_path / "run")
    for name in ("query", "train", "database"):
        np.testing.assert_array_equal(np.asarray(again.splits[name].x), np.asarray(a.splits[name].x))
        np.testing.assert_array_equal(again.splits[name].labels, a.splits[name].labels)


def test_reversed_twin_has_the_same_set_of_frames(fake):
    images = fake["train"][0][:, None]
    spec = clips.clip_specs(7, "train", np.arange(60), len(images), two_item_fraction=0.5)
    twin = dataclasses.replace(spec, direction=clips.REVERSE[spec.direction])
    x, y = clips.render_clips(spec, images), clips.render_clips(twin, images)
    classes = fake["train"][1]
    for i in range(len(spec)):
        frames_x = sorted(f.tobytes() for f in x[i])
        frames_y = sorted(f.tobytes() for f in y[i])
        assert frames_x == frames_y  # the same unordered set of frames ...
        assert not np.array_equal(x[i], y[i])  # ... in another order ...
        np.testing.assert_array_equal(y[i], x[i][::-1])  # ... namely reversed
    # ... and the labels with every direction reversed: for one-item clips, other labels, so the
    # label is not a function of the set of frames
    labels, twin_labels = clips.clip_labels(spec, classes), clips.clip_labels(twin, classes)
    reverse_label = (4 * (np.arange(40) // 4) + clips.REVERSE[np.arange(40) % 4])
    np.testing.assert_array_equal(twin_labels, labels[:, reverse_label])
    single = spec.item[:, 1] < 0
    assert single.sum() > 10 and not (labels[single] & twin_labels[single]).any()


def test_trajectories_by_hand():
    spec = clips.ClipSpec(item=np.array([[0, -1]]), direction=np.array([[1, 2]]), lane=np.array([[5, 0]]),
                          start=np.array([[3, 0]]), travel=np.array([[30, 36]]))
    ys, xs = clips.trajectories(spec, frames=4)
    # left along x: forward positions 3 + round(t * 30 / 3) = 3, 13, 23, 33, reversed
    assert xs[0, 0].tolist() == [33, 23, 13, 3] and ys[0, 0].tolist() == [5] * 4
    # down along y: 0, 12, 24, 36 in that order, lane 0 for x
    assert ys[0, 1].tolist() == [0, 12, 24, 36] and xs[0, 1].tolist() == [0] * 4
    spec16 = clips.clip_specs(0, "train", np.arange(2000), 100, 0.25)
    ys, xs = clips.trajectories(spec16)
    assert ys.min() >= 0 and xs.min() >= 0 and ys.max() <= 36 and xs.max() <= 36
    assert set(np.unique(spec16.direction)) == {0, 1, 2, 3}
    assert 0.2 < (spec16.item[:, 1] >= 0).mean() < 0.3


def test_moving_fashion_bad_parameters(fake):
    with pytest.raises(Learn2HashError, match=r"two_item_fraction must be in \[0.0, 1.0\]"):
        load("moving-fashion", two_item_fraction=1.5)
    with pytest.raises(Learn2HashError, match="database_size must be >= 1"):
        load("moving-fashion", database_size=0)


@pytest.mark.skipif(fashion_mnist.data_dir() is None,
                    reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist); CI installs it")
def test_default_protocol_on_fashion_mnist():
    ds = load("moving-fashion")
    assert (len(ds.query), len(ds.train), len(ds.database)) == (1000, 5000, 10000)
    assert ds.database.x.shape == (10000, 16, 1, 64, 64) and clips.DEFAULT_TOPK == 100
    # every one of the 40 labels occurs in the database
    assert ds.database.labels.sum(axis=0).min() > 100
    assert ds.class_names[4 * 9 + 3] == "Ankle boot moving up"


# --------------------------------------------------------------------------- users' clips
def test_resample_indices_by_hand():
    assert clips.resample_indices(32, 16).tolist() == list(range(1, 32, 2))
    assert clips.resample_indices(8, 16).tolist() == [i // 2 for i in range(16)]
    assert clips.resample_indices(16, 16).tolist() == list(range(16))
    assert clips.resample_indices(5, 3).tolist() == [0, 2, 4]
    assert clips.resample_indices(1, 4).tolist() == [0, 0, 0, 0]


def save_png(path, array):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def make_clip_folder(root, lengths=(32, 8, 16, 5)):
    """Clip folders whose frame k is solid gray 5*k+1 (+100 for the odd clips); names frame_k.png."""
    for c, n in enumerate(lengths):
        for k in range(n):
            save_png(root / f"clip{c}" / f"frame_{k}.png", np.full((6, 10), 5 * k + 1 + 100 * (c % 2), np.uint8))
    rows = ["clip,label"] + [f"clip{c},{'walk' if c % 2 else 'run;jump'}" for c in range(len(lengths))]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")


def test_clip_folder_resamples_frames_in_natural_order(tmp_path):
    lengths = (32, 8, 16, 5)
    make_clip_folder(tmp_path, lengths)
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 256, size=(20, 6, 10), dtype=np.uint8)
    np.save(tmp_path / "clip4.npy", gray)
    colour = rng.random((12, 6, 10, 3))
    np.save(tmp_path / "clip5.npy", colour)
    with open(tmp_path / "labels.csv", "a") as fh:
        fh.write("clip4,walk\nclip5,7\n")
    ds = load("clip-folder", path=tmp_path, query_size=2, seed=0)
    assert ds.class_names == ["7", "jump", "run", "walk"]
    assert (len(ds.query), len(ds.database), len(ds.train)) == (2, 4, 4)
    pool = ds.database.x.base  # the lazy pool of all six clips
    assert pool.shape == (6, 16, 1, 6, 10) and pool.dtype == np.uint8
    x = np.asarray(pool)
    for c, n in enumerate(lengths):  # frame_10 after frame_9: the values follow the resampled order
        expected = 5 * clips.resample_indices(n, 16) + 1 + 100 * (c % 2)
        np.testing.assert_array_equal(x[c, :, 0, 0, 0], expected)
        assert (x[c] == x[c, :, :, :1, :1]).all()
    np.testing.assert_array_equal(x[4, :, 0], gray[clips.resample_indices(20, 16)])
    luminance = np.rint(255 * colour[clips.resample_indices(12, 16)] @ np.array([0.299, 0.587, 0.114]))
    assert np.abs(x[5, :, 0].astype(int) - luminance).max() <= 1
    all_labels = np.zeros((6, 4), dtype=bool)
    for split in (ds.query, ds.database):
        all_labels[split.indices] = split.labels
    assert [set(np.flatnonzero(row)) for row in all_labels] == [{1, 2}, {3}, {1, 2}, {3}, {3}, {0}]
    small = load("clip-folder", path=tmp_path, frames=4, size="3x5", channels=3, query_size=1, train_size=2)
    assert small.query.x.shape == (1, 4, 3, 3, 5) and len(small.train) == 2
    ds.save_splits(tmp_path / "run")
    again = load("clip-folder", splits=tmp_path / "run")
    np.testing.assert_array_equal(np.asarray(again.query.x), np.asarray(ds.query.x))


def test_clip_folder_multihot_csv(tmp_path):
    make_clip_folder(tmp_path, (3, 3, 3))
    (tmp_path / "labels.csv").write_text("clip,cat,dog,bird\nclip0,1,0,1\nclip1,0,1,0\nclip2,0,0,1\n")
    ds = load("clip-folder", path=tmp_path, query_size=1)
    assert ds.class_names == ["cat", "dog", "bird"]
    all_labels = np.zeros((3, 3), dtype=bool)
    for split in (ds.query, ds.database):
        all_labels[split.indices] = split.labels
    np.testing.assert_array_equal(all_labels, [[1, 0, 1], [0, 1, 0], [0, 0, 1]])


def test_clip_folder_bad_input_names_the_clip(tmp_path):
    make_clip_folder(tmp_path, (3, 3, 3))
    (tmp_path / "clip1" / "frame_0.png").unlink()
    (tmp_path / "clip1" / "frame_1.png").unlink()
    (tmp_path / "clip1" / "frame_2.png").unlink()
    (tmp_path / "clip1" / "notes.txt").write_text("no frames here")
    with pytest.raises(Learn2HashError, match="clip 'clip1': folder .* holds no frames"):
        load("clip-folder", path=tmp_path)
    save_png(tmp_path / "clip1" / "a.png", np.zeros((6, 10), np.uint8))
    save_png(tmp_path / "clip1" / "b.png", np.zeros((7, 10), np.uint8))
    with pytest.raises(Learn2HashError, match="clip 'clip1': frames of different sizes .*6x10.*7x10"):
        load("clip-folder", path=tmp_path)
    (tmp_path / "clip1" / "b.png").unlink()
    with open(tmp_path / "labels.csv", "a") as fh:
        fh.write("clip9,walk\n")
    with pytest.raises(Learn2HashError, match="clip 'clip9' named in .*labels.csv does not exist"):
        load("clip-folder", path=tmp_path)
    (tmp_path / "labels.csv").write_text("clip,a,b\nclip0,1,0\nclip1,1,2\n")
    with pytest.raises(Learn2HashError, match=r"labels.csv:3: column 'b' must be 0 or 1"):
        load("clip-folder", path=tmp_path)
    (tmp_path / "labels.csv").write_text("clip,label\nclip0,a\nclip1\n")
    with pytest.raises(Learn2HashError, match=r"labels.csv:3: 1 columns"):
        load("clip-folder", path=tmp_path)
    (tmp_path / "labels.csv").write_text("clip,label\nclip0,a\nclip0,b\n")
    with pytest.raises(Learn2HashError, match="clip 'clip0' is listed twice"):
        load("clip-folder", path=tmp_path)
    np.save(tmp_path / "clip7.npy", np.zeros((4, 5), np.uint8))
    (tmp_path / "labels.csv").write_text("clip,label\nclip0,a\nclip7,b\n")
    with pytest.raises(Learn2HashError, match=r"clip 'clip7': clip7.npy must be \[T, H, W\]"):
        load("clip-folder", path=tmp_path)
    (tmp_path / "labels.csv").unlink()
    with pytest.raises(Learn2HashError, match="labels.csv.* does not exist"):
        load("clip-folder", path=tmp_path)


def test_moving_fashion_without_fashion_mnist_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.delenv("LEARN2HASH_DATA", raising=False)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "nowhere")
    with pytest.raises(Learn2HashError, match="apt-get install dataset-fashion-mnist"):
        load("moving-fashion")
