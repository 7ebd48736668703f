"""UCF101 and HMDB51 from video files written with PyAV and the official split lists."""

from __future__ import annotations

import numpy as np
import pytest

from learn2hash import datasets
from learn2hash.datasets import video
from learn2hash.errors import CorruptFileError, DatasetNotFoundError

av = pytest.importorskip("av")


def write_video(path, n_frames, shade=0):
    """An .avi (MPEG-4 part 2, as UCF101's XviD) whose frame t is flat grey 8*t; the green plane carries ``shade``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=25)
        s.width, s.height, s.pix_fmt = 32, 24, "yuv420p"
        for t in range(n_frames):
            a = np.full((24, 32, 3), 8 * t, np.uint8)
            f = av.VideoFrame.from_ndarray(a, format="rgb24")
            for p in s.encode(f):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def frame_ids(clip):
    """The source frame index of each frame of a decoded clip ``[T, 3, H, W]`` (grey level 8*t, codec noise)."""
    h, w = clip.shape[2] // 2, clip.shape[3] // 2
    return np.rint(clip[:, :, h, w].mean(axis=1) / 8).astype(int)


UCF_CLASSES = ["ApplyEyeMakeup", "Basketball", "YoYo"]
LENGTHS = {"g01": 30, "g02": 20, "g08": 10}


def write_ucf(folder):
    lists = folder / "ucfTrainTestlist"
    lists.mkdir(parents=True)
    (lists / "classInd.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(UCF_CLASSES, 1)))
    train, test = [], []
    for i, c in enumerate(UCF_CLASSES, 1):
        for g, n in LENGTHS.items():
            rel = f"{c}/v_{c}_{g}_c01.avi"
            write_video(folder / "UCF-101" / rel, n)
            (test if g == "g01" else train).append(rel)
    (lists / "trainlist01.txt").write_text("".join(f"{r} {UCF_CLASSES.index(r.split('/')[0]) + 1}\n" for r in train))
    (lists / "testlist01.txt").write_text("".join(f"{r}\n" for r in test))
    return train, test


def test_ucf101_split_lists_and_uniform_sampling(tmp_path, monkeypatch):
    monkeypatch.setenv("LEARN2HASH_DATA", str(tmp_path))
    assert not datasets.registered()["ucf101"].present()
    train, test = write_ucf(tmp_path / "ucf101")
    assert datasets.registered()["ucf101"].present()
    ds = datasets.load("ucf101", size="12x16")
    assert ds.protocol == "split1" and datasets.registry.default_topk("ucf101") == 100
    assert (len(ds.query), len(ds.train), len(ds.database)) == (3, 6, 6)
    assert ds.query.kind == "clip" and ds.query.x.shape == (3, 16, 3, 12, 16)
    np.testing.assert_array_equal(ds.query.labels, np.eye(3, dtype=bool))  # one test video per class
    np.testing.assert_array_equal(ds.train.labels.argmax(1), [0, 0, 1, 1, 2, 2])
    clips = np.asarray(ds.database.x)
    assert clips.dtype == np.uint8
    # 20 frames -> every frame nearest the centre of 16 equal bins: floor((2i+1)*20/32)
    expected20 = [(2 * i + 1) * 20 // 32 for i in range(16)]
    assert expected20 == [0, 1, 3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16, 18, 19]
    np.testing.assert_array_equal(frame_ids(clips[0]), expected20)
    # 10 frames -> floor((2i+1)*10/32): six frames once, the others twice, in order
    np.testing.assert_array_equal(frame_ids(clips[1]), [0, 0, 1, 2, 2, 3, 4, 4, 5, 5, 6, 7, 7, 8, 9, 9])
    # 30 frames (a query) -> floor((2i+1)*30/32)
    np.testing.assert_array_equal(frame_ids(np.asarray(ds.query.x[1])), [(2 * i + 1) * 30 // 32 for i in range(16)])


def test_hmdb51_split_ids(tmp_path):
    root = tmp_path / "h"
    rows = {"brush_hair": [("a.avi", "1"), ("b.avi", "2"), ("c.avi", "0"), ("d.avi", "1")],
            "cartwheel": [("e.avi", "2"), ("f.avi", "1")]}
    for cls, vids in rows.items():
        for name, _ in vids:
            write_video(root / "hmdb51" / cls / name, 12)
        (root / "testTrainMulti_7030_splits").mkdir(parents=True, exist_ok=True)
        (root / "testTrainMulti_7030_splits" / f"{cls}_test_split1.txt").write_text(
            "".join(f"{n} {i} \n" for n, i in vids))
    ds = datasets.load("hmdb51", path=str(root), frames=4, size=8)
    assert (len(ds.query), len(ds.train)) == (2, 3)  # id 2 -> test, id 1 -> train, id 0 -> unused
    np.testing.assert_array_equal(ds.train.labels.argmax(1), [0, 0, 1])
    np.testing.assert_array_equal(ds.query.labels.argmax(1), [0, 1])
    clip = np.asarray(ds.query.x[0])
    assert clip.shape == (4, 3, 8, 8)
    np.testing.assert_array_equal(frame_ids(clip), [1, 4, 7, 10])  # floor((2i+1)*12/8)
    ds.save_splits(tmp_path / "run")
    again = datasets.load("hmdb51", splits=tmp_path / "run")
    assert again.params["frames"] == 4 and np.array_equal(again.train.indices, ds.train.indices)
    with pytest.raises(DatasetNotFoundError, match=r"no \*_test_split2.txt lists"):
        datasets.load("hmdb51", protocol="split2", path=str(root))


@pytest.mark.parametrize("ext,declares", [("avi", True), ("mkv", False)])
def test_declared_and_undeclared_frame_counts_sample_the_same(tmp_path, ext, declares):
    path = tmp_path / f"v.{ext}"
    write_video(path, 27)
    assert (video._frame_count_hint(path) == 27) == declares
    clip = video.sample_clip(path, 16, (8, 8))
    full = video.decode_frames(path, (8, 8))
    assert len(full) == 27 and clip.shape == (16, 3, 8, 8)
    np.testing.assert_array_equal(clip, full[[(2 * i + 1) * 27 // 32 for i in range(16)]])
    np.testing.assert_array_equal(frame_ids(clip), [(2 * i + 1) * 27 // 32 for i in range(16)])


def test_a_wrong_declared_frame_count_falls_back_to_the_true_one(tmp_path, monkeypatch):
    path = tmp_path / "v.avi"
    write_video(path, 27)
    monkeypatch.setattr(video, "_frame_count_hint", lambda p: 40)
    np.testing.assert_array_equal(frame_ids(video.sample_clip(path, 16, (8, 8))),
                                  [(2 * i + 1) * 27 // 32 for i in range(16)])


def test_missing_and_corrupt_videos(tmp_path):
    root = tmp_path / "u"
    train, _ = write_ucf(root)
    (root / "UCF-101" / train[0]).write_bytes(b"not a video")
    ds = datasets.load("ucf101", path=str(root), size=8)
    with pytest.raises(CorruptFileError, match="cannot decode video"):
        ds.train.x[0]
    (root / "UCF-101" / train[1]).unlink()
    with pytest.raises(DatasetNotFoundError, match=r"1 listed video\(s\) missing"):
        datasets.load("ucf101", path=str(root))
