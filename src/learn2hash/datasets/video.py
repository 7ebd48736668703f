"""UCF101 and HMDB51: the video files themselves and their official split lists.

Videos are decoded with PyAV (``pip install 'learn2hash[video]'``) when a clip is indexed
(:class:`VideoClips`, a lazy ``uint8[n, 16, 3, H, W]``): every frame of the file is decoded at the
clip size, then 16 are kept by uniform temporal sampling
(:func:`learn2hash.datasets.clips.resample_indices`, the frame nearest the centre of each of 16
equal time bins), as the CSQ paper samples its clips. Frames are resized to ``size`` (default
112x112, the input of the 3-D networks of the video-hashing papers).

Folders (``--data-path``, else ``$LEARN2HASH_DATA/<name>``):

``ucf101`` (https://www.crcv.ucf.edu/data/UCF101.php)
    ``UCF-101/<Class>/v_<Class>_gXX_cYY.avi`` and the split lists ``ucfTrainTestlist/classInd.txt``
    (``1 ApplyEyeMakeup``), ``trainlistNN.txt`` (``ApplyEyeMakeup/v_..._g08_c01.avi 1``) and
    ``testlistNN.txt`` (``ApplyEyeMakeup/v_..._g01_c01.avi``); the two sub-folders may also be
    the folder itself. Protocols ``split1`` .. ``split3``: query = the test list (3.8k videos),
    train = database = the train list (9.5k). mAP@100.

``hmdb51`` (https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/)
    ``hmdb51/<class>/<video>.avi`` (each class's .rar unpacked) and the split lists
    ``testTrainMulti_7030_splits/<class>_test_splitN.txt`` (``<video>.avi 1``: 1 train, 2 test,
    0 unused). Protocols ``split1`` .. ``split3``: query = the test videos (30 per class),
    train = database = the training videos (70 per class). mAP@70.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from learn2hash.datasets.base import Dataset, LazyArray, split_from_pool
from learn2hash.datasets.clips import FRAMES, resample_indices
from learn2hash.datasets.registry import (DatasetInfo, dataset_folder, int_param, not_found, register,
                                          size_param)
from learn2hash.errors import CorruptFileError, Learn2HashError

DEFAULT_SIZE = 112
SPLITS = ("split1", "split2", "split3")


# --------------------------------------------------------------------------- decoding
def _av():
    try:
        import av
    except ImportError:  # depends on the installation
        raise Learn2HashError("reading video files needs PyAV: pip install 'learn2hash[video]' (or pip install av)") from None
    return av


def _decode(path: Path, size: tuple[int, int], keep: set[int] | None) -> tuple[list[np.ndarray], list[int], int]:
    """Decode every frame of ``path``; convert (RGB, ``size``) only the frames in ``keep`` (all when None).

    Returns the converted frames, their indices and the number of frames decoded.
    """
    av = _av()
    frames, kept, count = [], [], 0
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise CorruptFileError(f"video {path} has no video stream")
            for frame in container.decode(video=0):
                if keep is None or count in keep:
                    frames.append(frame.to_ndarray(width=size[1], height=size[0], format="rgb24"))
                    kept.append(count)
                count += 1
    except FileNotFoundError:
        raise Learn2HashError(f"video {path} does not exist") from None
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise CorruptFileError(f"cannot decode video {path}: {exc}") from None
    if count == 0:
        raise CorruptFileError(f"video {path} holds no decodable frame")
    return frames, kept, count


def _frame_count_hint(path: Path) -> int:
    """The frame count the container declares (0 when it declares none or cannot be opened)."""
    av = _av()
    try:
        with av.open(str(path)) as container:
            return int(container.streams.video[0].frames) if container.streams.video else 0
    except (av.error.FFmpegError, OSError, ValueError):
        return 0


def decode_frames(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Every frame of a video file as ``uint8[T, 3, H, W]`` (RGB, resized to ``size = (H, W)``)."""
    frames, _, _ = _decode(path, size, None)
    return np.stack(frames).transpose(0, 3, 1, 2)


def sample_clip(path: Path, frames: int, size: tuple[int, int]) -> np.ndarray:
    """``uint8[frames, 3, H, W]``: ``frames`` frames of the video by uniform temporal sampling.

    Every frame is decoded (the codecs need their predecessors), but only the sampled ones are
    converted when the container declares the frame count; if the count decoded differs from the
    declared one, the frames are sampled again from the true count.
    """
    hint = _frame_count_hint(path)
    if hint > 0:
        pick = resample_indices(hint, frames)
        got, kept, count = _decode(path, size, set(pick.tolist()))
        if count == hint:
            by_index = dict(zip(kept, got))
            return np.stack([by_index[i] for i in pick]).transpose(0, 3, 1, 2)
    all_frames = decode_frames(path, size)
    return all_frames[resample_indices(len(all_frames), frames)]


class VideoClips(LazyArray):
    """Video files as ``uint8[n, frames, 3, H, W]``, decoded and sampled when indexed."""

    chunk = 16

    def __init__(self, paths: list[Path], frames: int, size: tuple[int, int], what: str):
        super().__init__(len(paths), (frames, 3) + tuple(size), np.uint8, what)
        self.paths, self.frames, self.size = list(paths), frames, tuple(size)

    def _load(self, positions: np.ndarray) -> np.ndarray:
        out = np.empty((len(positions),) + self.item_shape, dtype=np.uint8)
        for j, i in enumerate(positions):
            out[j] = sample_clip(self.paths[i], self.frames, self.size)
        return out


# --------------------------------------------------------------------------- split lists
def _read_lines(path: Path) -> list[list[str]]:
    try:
        return [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise Learn2HashError(f"cannot read split list {path}: {exc}") from None


def _first_dir(candidates: list[Path], test) -> Path | None:
    return next((d for d in candidates if d.is_dir() and test(d)), None)


def ucf101_files(folder: Path, split: int) -> tuple[list[str], dict[str, list[str]]]:
    """Class names (``classInd.txt`` order) and ``{"train": [...], "test": [...]}`` relative video paths."""
    lists = _first_dir([folder / "ucfTrainTestlist", folder], lambda d: (d / "classInd.txt").is_file())
    if lists is None:
        raise not_found("ucf101", folder, UCF_LAYOUT, UCF_PUBLISHED, "no ucfTrainTestlist/classInd.txt")
    classes = {}
    for parts in _read_lines(lists / "classInd.txt"):
        if len(parts) != 2 or not parts[0].isdigit():
            raise Learn2HashError(f"{lists / 'classInd.txt'}: expected lines 'INDEX CLASS', got {' '.join(parts)!r}")
        classes[int(parts[0])] = parts[1]
    if sorted(classes) != list(range(1, len(classes) + 1)):
        raise Learn2HashError(f"{lists / 'classInd.txt'}: class indices must be 1..{len(classes)}")
    out = {}
    for part in ("train", "test"):
        f = lists / f"{part}list{split:02d}.txt"
        if not f.is_file():
            raise not_found("ucf101", folder, UCF_LAYOUT, UCF_PUBLISHED, f"no {f.name}")
        out[part] = [p[0] for p in _read_lines(f)]
    return [classes[i] for i in sorted(classes)], out


def hmdb51_files(folder: Path, split: int) -> tuple[list[str], dict[str, list[str]]]:
    """Class names (sorted) and ``{"train": [...], "test": [...]}`` relative video paths ``class/video.avi``."""
    pattern = f"_test_split{split}.txt"
    lists = _first_dir([folder / "testTrainMulti_7030_splits", folder / "splits", folder],
                       lambda d: any(d.glob(f"*{pattern}")))
    if lists is None:
        raise not_found("hmdb51", folder, HMDB_LAYOUT, HMDB_PUBLISHED, f"no *{pattern} lists")
    files = sorted(lists.glob(f"*{pattern}"))
    classes = [f.name[: -len(pattern)] for f in files]
    out: dict[str, list[str]] = {"train": [], "test": []}
    for cls, f in zip(classes, files):
        for parts in _read_lines(f):
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise Learn2HashError(f"{f}: expected lines 'VIDEO.avi 0|1|2', got {' '.join(parts)!r}")
            if parts[1] != "0":
                out["train" if parts[1] == "1" else "test"].append(f"{cls}/{parts[0]}")
    return classes, out


def _videos_root(folder: Path, candidates: list[str], first: str) -> Path:
    for c in candidates:
        d = folder / c if c else folder
        if (d / first).is_file():
            return d
    return folder / candidates[0]


UCF_PUBLISHED = "https://www.crcv.ucf.edu/data/UCF101.php (UCF101.rar and UCF101TrainTestSplits-RecognitionTask.zip)"
UCF_LAYOUT = ("UCF-101/<Class>/v_<Class>_gXX_cYY.avi and ucfTrainTestlist/classInd.txt, trainlist01..03.txt, "
              "testlist01..03.txt")
HMDB_PUBLISHED = ("https://serre-lab.clps.brown.edu/resource/hmdb-a-large-human-motion-database/ "
                  "(hmdb51_org.rar and test_train_splits.rar)")
HMDB_LAYOUT = "hmdb51/<class>/<video>.avi and testTrainMulti_7030_splits/<class>_test_split1..3.txt"


def _builder(name: str):
    def build(protocol: str, seed: int, indices=None, path: Any = None, frames: Any = FRAMES,
              size: Any = DEFAULT_SIZE) -> Dataset:
        folder = dataset_folder(name, path)
        layout, published = (UCF_LAYOUT, UCF_PUBLISHED) if name == "ucf101" else (HMDB_LAYOUT, HMDB_PUBLISHED)
        if folder is None or not folder.is_dir():
            raise not_found(name, folder, layout, published, "the folder does not exist" if folder else "")
        split = SPLITS.index(protocol) + 1
        classes, lists = (ucf101_files if name == "ucf101" else hmdb51_files)(folder, split)
        if not lists["train"] or not lists["test"]:
            raise Learn2HashError(f"{name}: the {protocol} lists in {folder} name no training or no test videos")
        col = {c.lower(): i for i, c in enumerate(classes)}
        root = _videos_root(folder, ["UCF-101", ""] if name == "ucf101" else ["hmdb51", "videos", ""],
                            lists["train"][0])
        n_frames = int_param(name, "frames", frames, minimum=1)
        hw = size_param(name, size)
        pools = {}
        for part, rel in lists.items():
            ids = []
            for r in rel:
                cls = r.replace("\\", "/").split("/")[0].lower()
                if cls not in col:
                    raise Learn2HashError(f"{name}: {r!r} in the {part} list is under no known class folder")
                ids.append(col[cls])
            paths = [root / r for r in rel]
            missing = [p for p in paths if not p.is_file()]
            if missing:
                raise not_found(name, folder, layout, published,
                                f"{len(missing)} listed video(s) missing, e.g. {missing[0]}")
            pools[part] = (VideoClips(paths, n_frames, hw, f"{name} {part}"),
                           np.eye(len(classes), dtype=bool)[np.asarray(ids, dtype=np.int64)])
        if indices is None:
            indices = {"query": ("test", np.arange(len(lists["test"]))),
                       "train": ("train", np.arange(len(lists["train"]))),
                       "database": ("train", np.arange(len(lists["train"])))}
        splits = {}
        for split_name, (source, positions) in indices.items():
            if source not in pools:
                raise Learn2HashError(f"{name}: saved split {split_name!r} comes from pool {source!r}; "
                                      "expected train or test")
            x, labels = pools[source]
            splits[split_name] = split_from_pool(x, labels, positions, split_name, source, "clip")
        params = {"path": str(folder), "frames": n_frames, "size": list(hw)}
        return Dataset(name, protocol, seed, class_names=classes, params=params, **splits)
    return build


def _present(name: str) -> bool:
    folder = dataset_folder(name)
    if folder is None or not folder.is_dir():
        return False
    if name == "ucf101":
        return any((d / "classInd.txt").is_file() for d in (folder / "ucfTrainTestlist", folder))
    return any(any(d.glob("*_test_split1.txt")) for d in (folder / "testTrainMulti_7030_splits", folder / "splits",
                                                          folder) if d.is_dir())


_PARAMS = {"frames": f"frames per clip by uniform temporal sampling (default {FRAMES})",
           "size": f"frames are resized to N, HxW or [H,W] (default {DEFAULT_SIZE})"}


def _register(name: str, description: str, topk: int, published: str, layout: str) -> None:
    register(DatasetInfo(
        name=name,
        description=description,
        protocols=SPLITS,
        builder=_builder(name),
        present=lambda: _present(name),
        how_to_get=f"unpack the videos and the split lists into $LEARN2HASH_DATA/{name}; from {published}",
        location=lambda: str(dataset_folder(name) or ""),
        topk=topk,
        published=published,
        layout=layout,
        params={"path": f"the folder (default $LEARN2HASH_DATA/{name})", **_PARAMS},
    ))


_register("ucf101", "UCF101, 13,320 action videos in 101 classes (official splits; 16-frame clips)", 100,
          UCF_PUBLISHED, UCF_LAYOUT)
_register("hmdb51", "HMDB51, 6,766 action videos in 51 classes (official 70/30 splits; 16-frame clips)", 70,
          HMDB_PUBLISHED, HMDB_LAYOUT)
