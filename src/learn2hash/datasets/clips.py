"""Video clips: the synthetic ``moving-fashion`` set and ``clip-folder`` for users' own videos.

Clip splits have kind ``"clip"`` and ``x`` of ``uint8[n, T, C, H, W]`` (frames, channels,
height, width), a :class:`~learn2hash.datasets.base.LazyArray`: clips are made (or read and
resampled) only when indexed, and ``np.asarray(x)`` builds them all with a progress bar.
Models scale the bytes to [0, 1] as they do for images.

``moving-fashion``
    Clips of 16 frames of 64x64 in which one Fashion-MNIST item (or two, with probability
    ``two_item_fraction``, default 0.25) travels in a straight line at constant speed, to the
    right, left, down or up. Label ``4 * class + direction`` (40 labels); a two-item clip carries
    both items' labels. Along its travel axis an item covers positions ``start .. start+travel``
    (travel 20..36 pixels); across it, it keeps one lane. A left-moving item visits exactly the
    positions of the right-moving item with the same path, in reverse order, so a clip and its
    reversed-direction twin hold the same set of frames: their labels differ only in the order
    of the frames. A clip is a pure function of (seed, stream, clip id) (:func:`clip_specs`):
    the ``test`` stream draws items from the 10,000 test images only, the ``train`` stream from
    the 60,000 train images only. Protocol ``standard``: query = clips ``0 .. query_size-1``
    (default 1,000) of the test stream, database = clips ``0 .. database_size-1`` (10,000) and
    train = clips ``0 .. train_size-1`` (5,000) of the train stream (train is part of the
    database). Evaluate with mAP@:data:`DEFAULT_TOPK` as the paper's UCF101 protocol does.

``clip-folder``
    ``path`` holds one entry per clip: a sub-folder of frame images (taken in natural name
    order: ``f2.png`` before ``f10.png``) or a ``.npy`` array ``[T, H, W]`` / ``[T, H, W, C]``
    (``uint8``, or floats in [0, 1]). Labels come from a CSV (``labels=``, default
    ``path/labels.csv``) with a header: either ``clip,label`` (several labels of a clip joined
    by ``;``) or ``clip,CLASS_A,CLASS_B,...`` with 0/1 columns. The CSV lists the items. Every
    clip is resampled to ``frames`` frames (default 16) by uniform temporal sampling
    (:func:`resample_indices`) and its frames resized to ``size`` (default: the first clip's).
    Split: seeded, as for ``npz`` (``query_size``, ``train_size``).
"""

from __future__ import annotations

import csv
import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from learn2hash.datasets import fashion_mnist
from learn2hash.datasets.base import Dataset, LazyArray, Split, split_from_pool
from learn2hash.datasets.files import IMAGE_EXTENSIONS, channels_param, probe_image, read_image
from learn2hash.datasets.protocols import counter_integers, counter_uniform, random_protocol
from learn2hash.datasets.registry import DatasetInfo, float_param, int_param, path_param, register, register_loader, size_param
from learn2hash.errors import CorruptFileError, Learn2HashError

NAME = "moving-fashion"
DEFAULT_TOPK = 100
FRAMES = 16
SIZE = 64
ITEM = 28
ROOM = SIZE - ITEM  # positions 0..36 keep the item inside the frame
MIN_TRAVEL = 20
DIRECTIONS = ("right", "left", "down", "up")
REVERSE = np.array([1, 0, 3, 2])  # the direction that traverses the same path backwards
SLOTS = 2
DEFAULT_SIZES = {"query": 1000, "train": 5000, "database": 10000}
CLASS_NAMES = [f"{c} moving {d}" for c in fashion_mnist.CLASS_NAMES for d in DIRECTIONS]


# --------------------------------------------------------------------------- moving-fashion
@dataclass
class ClipSpec:
    """What each clip shows, per clip and item slot (arrays ``int64[n, 2]``).

    ``item``: pool position of the item (``-1``: slot unused; slot 0 is always used);
    ``direction``: index into :data:`DIRECTIONS`; ``lane``: the coordinate across the travel
    axis; ``start``, ``travel``: the item covers ``start .. start + travel`` along the axis.
    """

    item: np.ndarray
    direction: np.ndarray
    lane: np.ndarray
    start: np.ndarray
    travel: np.ndarray

    def __len__(self) -> int:
        return len(self.item)

    def take(self, positions: np.ndarray) -> "ClipSpec":
        return ClipSpec(*(getattr(self, f)[positions] for f in ("item", "direction", "lane", "start", "travel")))


def clip_specs(seed: int, stream: str, ids: np.ndarray, pool_size: int, two_item_fraction: float) -> ClipSpec:
    """The :class:`ClipSpec` of clips ``ids``: every draw depends only on (seed, stream, id)."""
    ids = np.asarray(ids, dtype=np.int64)

    def draw(high: int, what: str, slot: int) -> np.ndarray:
        return counter_integers(seed, ids, high, "moving", stream, what, str(slot))

    two = counter_uniform(seed, ids, "moving", stream, "two items") < two_item_fraction
    cols = {f: [] for f in ("item", "direction", "lane", "start", "travel")}
    for slot in range(SLOTS):
        travel = MIN_TRAVEL + draw(ROOM - MIN_TRAVEL + 1, "travel", slot)
        cols["item"].append(np.where(two | (slot == 0), draw(pool_size, "item", slot), -1))
        cols["direction"].append(draw(len(DIRECTIONS), "direction", slot))
        cols["lane"].append(draw(ROOM + 1, "lane", slot))
        cols["travel"].append(travel)
        cols["start"].append(counter_integers(seed, ids, 1 << 30, "moving", stream, "start", str(slot))
                             % (ROOM - travel + 1))
    return ClipSpec(**{f: np.stack(v, axis=1) for f, v in cols.items()})


def trajectories(spec: ClipSpec, frames: int = FRAMES) -> tuple[np.ndarray, np.ndarray]:
    """Top-left corners ``(y, x)``, each ``int64[n, 2, frames]``, of every item in every frame.

    Along the axis: ``start + round(t * travel / (frames - 1))`` for right and down, the same
    positions in reverse order for left and up.
    """
    t = np.arange(frames)
    forward = spec.start[..., None] + (2 * t * spec.travel[..., None] + frames - 1) // (2 * (frames - 1))
    along = np.where((spec.direction % 2 == 1)[..., None], forward[..., ::-1], forward)
    lane = np.broadcast_to(spec.lane[..., None], along.shape)
    horizontal = (spec.direction < 2)[..., None]
    return np.where(horizontal, lane, along), np.where(horizontal, along, lane)


def _paste_items(out: np.ndarray, images: np.ndarray, items: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> None:
    """Max-blend ``images[items[j, s], 0]`` into frame ``t`` of clip ``j`` at ``(ys, xs)[j, s, t]``."""
    h, w = images.shape[2], images.shape[3]
    for j in range(out.shape[0]):
        for s in range(items.shape[1]):
            item = items[j, s]
            if item < 0:
                continue
            for t in range(out.shape[1]):
                y0, x0 = ys[j, s, t], xs[j, s, t]
                for r in range(h):
                    for c in range(w):
                        v = images[item, 0, r, c]
                        if v > out[j, t, 0, y0 + r, x0 + c]:
                            out[j, t, 0, y0 + r, x0 + c] = v


@functools.lru_cache(maxsize=1)
def _paste_kernel():
    import numba

    return numba.njit(cache=True, nogil=True)(_paste_items)


def render_clips(spec: ClipSpec, images: np.ndarray, frames: int = FRAMES) -> np.ndarray:
    """``uint8[n, frames, 1, 64, 64]``; overlapping items combine by the pixel-wise maximum."""
    out = np.zeros((len(spec), frames, 1, SIZE, SIZE), dtype=np.uint8)
    ys, xs = trajectories(spec, frames)
    _paste_kernel()(out, np.ascontiguousarray(images), np.ascontiguousarray(spec.item), ys, xs)
    return out


def clip_labels(spec: ClipSpec, class_ids: np.ndarray) -> np.ndarray:
    """``bool[n, 40]``: label ``4 * class + direction`` of every item in the clip."""
    out = np.zeros((len(spec), len(CLASS_NAMES)), dtype=bool)
    rows, slots = np.nonzero(spec.item >= 0)
    out[rows, len(DIRECTIONS) * class_ids[spec.item[rows, slots]] + spec.direction[rows, slots]] = True
    return out


class MovingClips(LazyArray):
    """Clips of a :class:`ClipSpec` as ``uint8[n, 16, 1, 64, 64]``, rendered when indexed."""

    chunk = 128

    def __init__(self, spec: ClipSpec, images: np.ndarray, what: str):
        super().__init__(len(spec), (FRAMES, 1, SIZE, SIZE), np.uint8, what)
        self.spec = spec
        self.images = images

    def _load(self, positions: np.ndarray) -> np.ndarray:
        return render_clips(self.spec.take(positions), self.images)


def build_moving(protocol: str, seed: int, indices=None, query_size: Any = None, train_size: Any = None,
                 database_size: Any = None, two_item_fraction: Any = 0.25) -> Dataset:
    fraction = float_param(NAME, "two_item_fraction", two_item_fraction, 0.0, 1.0)

    def make_split(name, stream, ids, images, class_ids):
        spec = clip_specs(seed, stream, ids, len(images), fraction)
        return Split(x=MovingClips(spec, images, f"{NAME} {name}"), labels=clip_labels(spec, class_ids),
                     name=name, kind="clip", source=stream, indices=ids)

    given = {"query": query_size, "train": train_size, "database": database_size}
    splits = fashion_mnist.derived_splits(NAME, "clip", DEFAULT_SIZES, indices, given, make_split)
    params = {**{f"{s}_size": len(splits[s]) for s in ("train", "query", "database")}, "two_item_fraction": fraction}
    return Dataset(NAME, protocol, seed, class_names=list(CLASS_NAMES), params=params, **splits)


# --------------------------------------------------------------------------- users' clips
def resample_indices(n_frames: int, frames: int) -> np.ndarray:
    """Uniform temporal sampling: the frame nearest the centre of each of ``frames`` equal time bins.

    ``floor((2i + 1) * n / (2 * frames))``: every other frame of a clip twice as long, each frame
    twice for a clip half as long, the identity for equal lengths.
    """
    i = np.arange(frames)
    return np.minimum((2 * i + 1) * n_frames // (2 * frames), n_frames - 1)


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def read_label_csv(path: Path) -> tuple[list[str], np.ndarray, list[str]]:
    """Clip names, ``bool[n, c]`` labels and class names from a ``clip,label`` or multi-hot CSV."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = [[c.strip() for c in r] for r in csv.reader(fh) if any(c.strip() for c in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise Learn2HashError(f"clip-folder: cannot read label CSV {path}: {exc}") from None
    if len(rows) < 2 or len(rows[0]) < 2:
        raise Learn2HashError(f"clip-folder: label CSV {path} needs a header (clip,label or clip,CLASS,...) "
                              "and one row per clip")
    header, body = rows[0], rows[1:]
    for lineno, row in enumerate(body, 2):
        if len(row) != len(header):
            raise Learn2HashError(f"clip-folder: {path}:{lineno}: {len(row)} columns, the header has {len(header)}")
    names = [r[0] for r in body]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise Learn2HashError(f"clip-folder: {path}: clip {name!r} is listed twice")
        seen.add(name)
    if len(header) == 2 and header[1].lower() in ("label", "labels", "class"):
        sets = [[v.strip() for v in r[1].split(";") if v.strip()] for r in body]
        classes = sorted({v for s in sets for v in s}, key=lambda v: (0, int(v), v) if v.isdigit() else (1, 0, v))
        col = {c: j for j, c in enumerate(classes)}
        labels = np.zeros((len(body), len(classes)), dtype=bool)
        for i, s in enumerate(sets):
            labels[i, [col[v] for v in s]] = True
        return names, labels, classes
    values = np.array([r[1:] for r in body])
    bad = ~np.isin(values, ("0", "1"))
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise Learn2HashError(f"clip-folder: {path}:{i + 2}: column {header[j + 1]!r} must be 0 or 1, "
                              f"found {values[i, j]!r}")
    return names, values == "1", header[1:]


@dataclass
class _ClipSource:
    name: str
    frames: list[Path] | None  # frame image files, or None for a .npy clip
    npy: Path | None
    size: tuple[int, int]
    channels: int


def _locate_clip(root: Path, name: str, csv_path: Path) -> _ClipSource:
    folder, npy = root / name, (root / name if name.endswith(".npy") else root / f"{name}.npy")
    if folder.is_dir():
        frames = sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()
                         and not p.name.startswith(".")), key=_natural_key)
        if not frames:
            raise Learn2HashError(f"clip-folder: clip {name!r}: folder {folder} holds no frames "
                                  f"(image files: {', '.join(sorted(IMAGE_EXTENSIONS))})")
        size, channels = probe_image(frames[0])
        for f in frames[1:]:
            other = probe_image(f)[0]
            if other != size:
                raise Learn2HashError(f"clip-folder: clip {name!r}: frames of different sizes in one clip: "
                                      f"{frames[0].name} is {size[0]}x{size[1]}, {f.name} is {other[0]}x{other[1]}")
        return _ClipSource(name, frames, None, size, channels)
    if npy.is_file():
        try:
            a = np.load(npy, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CorruptFileError(f"clip-folder: clip {name!r}: cannot read {npy}: {exc}") from None
        if a.ndim not in (3, 4) or a.shape[0] < 1 or (a.ndim == 4 and a.shape[3] not in (1, 3)):
            raise Learn2HashError(f"clip-folder: clip {name!r}: {npy.name} must be [T, H, W] or [T, H, W, C] "
                                  f"with C 1 or 3 and T >= 1, got shape {a.shape}")
        if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating)):
            raise Learn2HashError(f"clip-folder: clip {name!r}: {npy.name} has dtype {a.dtype}, expected uint8 or float")
        return _ClipSource(name, None, npy, (a.shape[1], a.shape[2]), 1 if a.ndim == 3 else a.shape[3])
    raise Learn2HashError(f"clip-folder: clip {name!r} named in {csv_path} does not exist "
                          f"(expected a folder {folder} or a file {npy})")


def _npy_frames(src: _ClipSource, positions: np.ndarray, size: tuple[int, int], channels: int) -> np.ndarray:
    from PIL import Image

    a = np.load(src.npy, mmap_mode="r", allow_pickle=False)
    a = np.asarray(a[positions])
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise Learn2HashError(f"clip-folder: clip {src.name!r}: {src.npy.name} contains NaN or infinite values")
        a = a * 255.0 if a.size and a.max() <= 1.0 else a
    a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    out = np.empty((len(a), channels) + tuple(size), dtype=np.uint8)
    for t, frame in enumerate(a):
        im = Image.fromarray(frame[..., 0] if frame.ndim == 3 and frame.shape[2] == 1 else frame)
        im = im.convert("L" if channels == 1 else "RGB")
        if (im.height, im.width) != tuple(size):
            im = im.resize((size[1], size[0]), Image.BILINEAR)
        f = np.asarray(im)
        out[t] = f[None] if f.ndim == 2 else f.transpose(2, 0, 1)
    return out


class ClipFolder(LazyArray):
    """Users' clips as ``uint8[n, frames, C, H, W]``, read and resampled when indexed."""

    chunk = 32

    def __init__(self, sources: list[_ClipSource], frames: int, size: tuple[int, int], channels: int, what: str):
        super().__init__(len(sources), (frames, channels) + tuple(size), np.uint8, what)
        self.sources = sources
        self.frames = frames
        self.size = tuple(size)
        self.channels = channels

    def n_frames(self, i: int) -> int:
        src = self.sources[i]
        return len(src.frames) if src.frames is not None else int(np.load(src.npy, mmap_mode="r").shape[0])

    def _load(self, positions: np.ndarray) -> np.ndarray:
        out = np.empty((len(positions),) + self.item_shape, dtype=np.uint8)
        for j, i in enumerate(positions):
            src = self.sources[i]
            pick = resample_indices(self.n_frames(i), self.frames)
            if src.frames is not None:
                for t, k in enumerate(pick):
                    out[j, t] = read_image(src.frames[k], self.size, self.channels)
            else:
                out[j] = _npy_frames(src, pick, self.size, self.channels)
        return out


def build_clip_folder(protocol: str, seed: int, indices=None, path: Any = None, labels: Any = None,
                      frames: Any = FRAMES, size: Any = None, channels: Any = None, query_size: Any = None,
                      train_size: Any = None) -> Dataset:
    root = path_param("clip-folder", path)
    if not root.is_dir():
        raise Learn2HashError(f"clip-folder: path must be a folder with one sub-folder or .npy per clip, got {root}")
    csv_path = path_param("clip-folder", labels if labels is not None else root / "labels.csv", "labels")
    names, multihot, classes = read_label_csv(csv_path)
    n_out = int_param("clip-folder", "frames", frames, minimum=1)
    sources = [_locate_clip(root, name, csv_path) for name in names]
    hw = size_param("clip-folder", size) or sources[0].size
    ch = channels_param("clip-folder", channels) or sources[0].channels
    pool = ClipFolder(sources, n_out, hw, ch, f"clip-folder {root.name}")
    if indices is None:
        qs = None if query_size is None else int_param("clip-folder", "query_size", query_size, 1)
        ts = None if train_size is None else int_param("clip-folder", "train_size", train_size, 1)
        pos = random_protocol(len(names), seed, qs, ts, what=f"clip-folder {root}")
        indices = {s: ("all", pos[s]) for s in ("train", "query", "database")}
    splits = {}
    for name, (source, positions) in indices.items():
        if source != "all":
            raise Learn2HashError(f"clip-folder: saved split {name!r} comes from pool {source!r}; expected 'all'")
        splits[name] = split_from_pool(pool, multihot, positions, name, source, "clip")
    params = {"path": str(root), "labels": str(csv_path), "frames": n_out, "size": list(hw), "channels": ch}
    return Dataset("clip-folder", protocol, seed, class_names=classes, params=params, **splits)


register(DatasetInfo(
    name=NAME,
    description="16-frame 64x64 clips of 1-2 Fashion-MNIST items moving right/left/down/up; 40 labels (mAP@100)",
    protocols=("standard",),
    builder=build_moving,
    topk=DEFAULT_TOPK,
    **fashion_mnist.generated_from(),
    params={**{f"{s}_size": f"number of {s} clips (default {n:,})" for s, n in DEFAULT_SIZES.items()},
            "two_item_fraction": "share of clips with two moving items (default 0.25)"},
))


register_loader(
    "clip-folder",
    "your clips: one sub-folder of frames (or a .npy [T,H,W(,C)]) per clip, labels from a CSV",
    build_clip_folder,
    {"path": "folder with one sub-folder of frame images or one .npy per clip",
     "labels": "label CSV: clip,label (a;b for several) or clip,CLASS,... 0/1 (default path/labels.csv)",
     "frames": "frames per clip after uniform temporal resampling (default 16)",
     "size": "frames are resized to N, HxW or [H,W] (default: the first clip's)",
     "channels": "1 (grayscale) or 3 (RGB) (default: from the first clip)",
     "query_size": "query clips (default min(1000, n/10))",
     "train_size": "training clips drawn from the database (default min(5000, rest))"},
)
