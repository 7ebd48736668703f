"""The field's image benchmarks as published list files plus their images.

The hashing literature compares methods on fixed splits distributed as three list files,
``train.txt``, ``test.txt`` (the queries) and ``database.txt``, one line per image: its path
relative to the image root and its 0/1 label vector (``images/0484_1544502940.jpg 1 0 0 1 ...``).
Each named set below reads them from its folder (``--data-path``, else
``$LEARN2HASH_DATA/<name>``); image paths are relative to that folder unless ``root=`` names
another. Lists and images are read by the ``image-list`` loader
(:func:`learn2hash.datasets.files.build_image_list`); images are decoded lazily. A deep hasher
decodes the original files itself (:mod:`learn2hash.images`, in DataLoader workers) to its
backbone's input spec: a random-resized crop and a flip for training, the resize of the shorter
side and the centre crop for encoding (ResNet-50 with ImageNet weights: resize 256, crop 224, as
the reference code), so ``size`` does not touch what it sees. ``size`` (default 256x256) is the
item shape a split declares: what array consumers get (shallow hashers over pixels, a backbone
that declares no input size such as ``smallcnn``), each image scaled to cover it and centre-cropped,
its aspect ratio kept.

Protocol ``standard``: the published lists as they are. Default mAP cutoffs are those of the
reference code (DeepHash-pytorch ``utils/tools.py``) and the CSQ paper: 5,000 for NUS-WIDE and
MS-COCO, 1,000 for ImageNet-100, the whole database for MIRFlickr-25K and VOC2012.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from learn2hash.datasets.base import Dataset
from learn2hash.datasets.files import build_image_list
from learn2hash.datasets.registry import DatasetInfo, dataset_folder, not_found, register
from learn2hash.errors import Learn2HashError

LISTS = {"train": "train.txt", "query": "test.txt", "database": "database.txt"}
DEFAULT_SIZE = 256
_LISTS_URL = "https://github.com/swuxyj/DeepHash-pytorch/tree/master/data"


@dataclass(frozen=True)
class Benchmark:
    name: str
    description: str
    n_labels: int
    topk: int | None
    published: str
    paths: str  # what the image paths in the lists look like


BENCHMARKS = [
    Benchmark("nus-wide-21", "NUS-WIDE, the images of the 21 most frequent concepts (multi-label)", 21, 5000,
              f"images: https://lms.comp.nus.edu.sg/wp-content/uploads/2019/research/nuswide/NUS-WIDE.html; "
              f"lists: {_LISTS_URL}/nuswide_21 (or nuswide_21_m, HashNet's NUS-WIDE-m)",
              "images/0484_1544502940.jpg; 2,100 test / 10,500 train lines"),
    Benchmark("nus-wide-81", "NUS-WIDE-m with all 81 concepts (multi-label), as HashNet splits it", 81, 5000,
              f"https://github.com/thuml/HashNet/tree/master/pytorch (images and lists); lists: {_LISTS_URL}/nuswide_81_m",
              "images/36051_1116992165_ab0704971e_m.jpg; 5,000 test / 10,000 train lines"),
    Benchmark("coco", "MS-COCO 2014, 80 object categories (multi-label), as HashNet splits it", 80, 5000,
              f"images: https://cocodataset.org (train2014, val2014); lists: https://github.com/thuml/HashNet/tree/master/pytorch "
              f"or {_LISTS_URL}/coco",
              "train2014/COCO_train2014_000000566612.jpg; 5,000 test / 10,000 train lines"),
    Benchmark("imagenet-100", "ImageNet (ILSVRC 2012), 100 classes, as HashNet splits it", 100, 1000,
              f"images: https://image-net.org (ILSVRC 2012 train and val); lists: "
              f"https://github.com/thuml/HashNet/tree/master/pytorch or {_LISTS_URL}/imagenet",
              "image/n02256656_13626.JPEG and val_image/ILSVRC2012_val_00000007.JPEG; 5,000 test / 128,495 "
              "database lines"),
    Benchmark("mirflickr-25k", "MIRFlickr-25K, 38 labels (multi-label), DeepHash-pytorch's split", 38, None,
              f"images: https://press.liacs.nl/mirflickr/mirdownload.html; lists: {_LISTS_URL}/mirflickr",
              "im17885.jpg; 1,000 test / 4,000 train / 20,000 database lines"),
    Benchmark("voc2012", "PASCAL VOC 2012, 20 object classes (multi-label), DeepHash-pytorch's split", 20, None,
              f"images: http://host.robots.ox.ac.uk/pascal/VOC/voc2012/; lists: {_LISTS_URL}/voc2012",
              "VOCdevkit/VOC2012/JPEGImages/2008_007742.jpg; 1,000 test / 4,000 train / 6,540 database lines"),
]


def layout(b: Benchmark) -> str:
    return (f"train.txt, test.txt and database.txt (lines 'PATH 0 1 0 ...' with {b.n_labels} labels; paths like "
            f"{b.paths}) and the images under the folder (or root=)")


def _lists_present(folder: Path | None) -> bool:
    return folder is not None and all((folder / f).is_file() for f in LISTS.values())


def _builder(b: Benchmark):
    def build(protocol: str, seed: int, indices=None, path: Any = None, root: Any = None, size: Any = DEFAULT_SIZE,
              channels: Any = 3, train: Any = None, query: Any = None, database: Any = None) -> Dataset:
        folder = dataset_folder(b.name, path)
        given = {"train": train, "query": query, "database": database}
        if None in given.values() and not _lists_present(folder):
            missing = [f for f in LISTS.values() if folder is None or not (folder / f).is_file()]
            problem = ("the folder does not exist" if folder is not None and not folder.exists()
                       else f"missing {', '.join(missing)}")
            raise not_found(b.name, folder, layout(b), b.published, problem if folder is not None else "")
        if root is None and folder is None:
            raise Learn2HashError(f"{b.name}: give root= (the image folder) with explicit list files")
        ds = build_image_list(protocol, seed, indices=indices, path=str(folder) if folder is not None else None,
                              root=root if root is not None else str(folder), size=size, channels=channels,
                              **{k: v for k, v in given.items() if v is not None})
        width = ds.train.labels.shape[1]
        if width != b.n_labels:
            raise Learn2HashError(f"{b.name}: the list files hold label vectors of length {width}; "
                                  f"{b.name} has {b.n_labels} labels (wrong lists in {folder}?)")
        ds.name = b.name
        return ds
    return build


for _b in BENCHMARKS:
    register(DatasetInfo(
        name=_b.name,
        description=_b.description,
    label_preserving=("flip",),  # photographs and clothes stay what they are when mirrored
        protocols=("standard",),
        builder=_builder(_b),
        present=(lambda b=_b: _lists_present(dataset_folder(b.name))),
        how_to_get=f"put the list files and the images in $LEARN2HASH_DATA/{_b.name} (or give --data-path); "
                   f"published: {_b.published}",
        location=(lambda b=_b: str(dataset_folder(b.name) or "")),
        topk=_b.topk,
        published=_b.published,
        layout=layout(_b),
        params={"path": f"the folder with the lists and images (default $LEARN2HASH_DATA/{_b.name})",
                "root": "the folder the image paths are relative to (default: path)",
                "size": f"the items' declared size N, HxW or [H,W] (default {DEFAULT_SIZE}; a backbone with an input "
                        f"size decodes the files to that instead)",
                "channels": "3 (RGB, default) or 1",
                "train": "another train list", "query": "another query (test) list",
                "database": "another database list"},
    ))
