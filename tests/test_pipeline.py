"""Feeding images to training and encoding: DataLoader workers, bad images, and one JPEG giving the
same tensor in the readers, the training loop's loader, the CLI and the service; encode --images."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from learn2hash import datasets, images
from learn2hash.cli import main
from learn2hash.errors import CorruptFileError, Learn2HashError
from learn2hash.train import ItemDataset, TrainConfig, encode_items, make_loader, unpack_batch

TINY_CSQ = dict(bits=16, epochs=1, batch_size=8, lr=1e-3, backbone_options={"widths": [8, 16]}, augment="flip")


def _write_folder(root: Path, classes: int = 3, per_class: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = rng.integers(0, 90, (20 + 2 * i, 24, 3)).astype(np.uint8)  # sizes differ
            a[..., c] += 150
            Image.fromarray(a).save(d / f"{i}.jpg", quality=90)
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _write_folder(tmp_path_factory.mktemp("photos") / "imgs")


@pytest.fixture(scope="module")
def run(folder, tmp_path_factory):
    from learn2hash.runs import train_run

    out = tmp_path_factory.mktemp("runs") / "csq"
    return train_run("csq", "image-folder", 16, out, params={k: v for k, v in TINY_CSQ.items() if k != "bits"},
                     data_params={"path": str(folder), "size": 16, "query_per_class": 2}, progress=False)


def _epoch_batches(x, workers, epochs=(0, 1), batch=5, seed=7):
    ds = ItemDataset(x, images.Geometry((16, 16)), train=True, seed=seed, flip=True)
    loader, batches = make_loader(ds, workers, torch.device("cpu"), seed, persistent=True)
    out = []
    for epoch in epochs:
        order = np.random.default_rng(epoch).permutation(len(x))
        batches.batches = [[(epoch, int(i)) for i in sorted(order[s:s + batch])] for s in range(0, len(x), batch)]
        for b in loader:
            idx, xb, skipped = unpack_batch(b, torch.device("cpu"), "items")
            assert not skipped and xb.is_contiguous(memory_format=torch.channels_last)
            out.append((epoch, idx.clone(), xb.clone()))
    return out


def test_two_workers_give_the_same_batches_as_none(folder):
    x = datasets.load("image-folder", path=str(folder), size=16).database.x
    assert images.image_paths(x) is not None
    zero, two = _epoch_batches(x, 0), _epoch_batches(x, 2)
    assert len(zero) == len(two) > 4
    for (e0, i0, x0), (e2, i2, x2) in zip(zero, two):
        assert e0 == e2 and torch.equal(i0, i2) and torch.equal(x0, x2)
    # the crops are random: epoch 0 and epoch 1 see different pixels of the same items
    first = {int(i): x[k] for _, idx, x in zero if _ == 0 for k, i in enumerate(idx)}
    second = {int(i): x[k] for e, idx, x in zero if e == 1 for k, i in enumerate(idx)}
    assert sum(not torch.equal(first[i], second[i]) for i in first) > len(first) // 2


@pytest.mark.slow
def test_training_with_two_workers_ends_with_the_same_weights(folder):
    from learn2hash.methods import create

    ds = datasets.load("image-folder", path=str(folder), size=16)
    weights = []
    for workers in (0, 2):
        h = create("csq", **TINY_CSQ, workers=workers, seed=3).fit(ds.train)
        weights.append({k: v.clone() for k, v in h.model_.state_dict().items()})
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_array_items_are_fed_as_before():
    """Arrays go through the loader by indexing: the batch is exactly x[idx] (no transform)."""
    x = np.random.default_rng(0).integers(0, 255, (20, 1, 8, 8), dtype=np.uint8)
    ds = ItemDataset(x)
    loader, batches = make_loader(ds, 0, torch.device("cpu"), 0)
    batches.batches = [[(0, 3), (0, 5), (0, 11)]]
    idx, xb, _ = unpack_batch(next(iter(loader)), torch.device("cpu"), "items")
    assert idx.tolist() == [3, 5, 11]
    assert torch.equal(xb, torch.from_numpy(x[[3, 5, 11]]).float().mul_(1.0 / 255.0))
    reversed_view = x[::-1]  # negative strides: indexed with numpy instead of a tensor view
    loader, batches = make_loader(ItemDataset(reversed_view), 0, torch.device("cpu"), 0)
    batches.batches = [[(0, 0), (0, 1)]]
    _, xb, _ = unpack_batch(next(iter(loader)), torch.device("cpu"), "items")
    assert torch.equal(xb, torch.from_numpy(x[[19, 18]]).float().mul_(1.0 / 255.0))


def test_one_jpeg_gives_the_same_tensor_everywhere(run, folder):
    from learn2hash.cli import _query_items
    from learn2hash.serve.service import SearchService

    ds = run.dataset()
    paths = images.image_paths(ds.database.x)
    pos = 4
    path = paths[pos]
    reader = np.asarray(ds.database.x[pos])                       # the image-folder reader
    loader = ItemDataset(ds.database.x, run.hasher().image_geometry()).__getitems__([(0, pos)])["x"][0].numpy()
    cli, _, _ = _query_items(run, str(path))                        # learn2hash search --query FILE
    service = SearchService(run).decode_image(path.read_bytes(), "image/jpeg")  # POST /search upload
    assert reader.shape == (3, 16, 16)
    for other in (loader, cli[0], service[0]):
        assert other.dtype == np.uint8 and np.array_equal(other, reader)
    # and so the same code: the CLI's query image is the database item
    assert np.array_equal(run.hasher().encode(cli).to_bits(), run.codes("database")[[pos]].to_bits())


def test_one_jpeg_same_tensor_for_a_backbone_with_its_own_input_size(folder):
    """A backbone declaring size 24 / resize 28: the loader, the reader's decoding and an upload agree."""
    from learn2hash.nn.registry import InputSpec

    geom = images.geometry(InputSpec(size=24, resize=28), (3, 16, 16))
    x = datasets.load("image-folder", path=str(folder), size=16).database.x
    path = images.image_paths(x)[2]
    batch = ItemDataset(x, geom).__getitems__([(0, 2)])["x"][0].numpy()
    assert batch.shape == (3, 24, 24)
    assert np.array_equal(batch, images.encode_image(path.read_bytes(), geom))
    assert np.array_equal(batch, images.encode_image(path, geom))


def test_corrupt_image_stops_training_naming_it_or_is_skipped_and_recorded(tmp_path):
    from learn2hash.methods import create
    from learn2hash.runs import train_run

    root = _write_folder(tmp_path / "imgs", per_class=6)
    data = {"path": str(root), "size": 16, "query_per_class": 1, "train_per_class": 5}
    ds = datasets.load("image-folder", **data)
    victim = images.image_paths(ds.train.x)[3]  # a training image (the readers decode nothing up front)
    victim.write_bytes(b"\xff\xd8\xff\xe0 truncated")
    name = victim.relative_to(root).as_posix()
    with pytest.raises(CorruptFileError, match=name):
        create("csq", **TINY_CSQ, workers=0).fit(ds.train)
    h = create("csq", **TINY_CSQ, workers=2, on_bad_image="skip").fit(ds.train)
    assert [Path(s["path"]).relative_to(root).as_posix() for s in h.skipped_images_] == [name]
    assert h.history_[0]["skipped_images"] == 1
    # a whole run: the skipped image is listed in the run folder, the run still finishes
    r = train_run("csq", "image-folder", 16, tmp_path / "run", params={**{k: v for k, v in TINY_CSQ.items()
                                                                         if k != "bits"}, "on_bad_image": "skip"},
                  data_params=data, progress=False)
    record = json.loads((r.folder / "skipped_images.json").read_text())
    assert record["count"] == 1 and record["images"][0]["path"] == str(victim)
    assert r.metrics()["skipped_images"] == 1
    assert len(r.codes("database")) == len(r.dataset().database)  # encoded as blank: still aligned


def test_encode_skip_leaves_out_and_lists_bad_images(tmp_path):
    from learn2hash.nn import HashHead, HashModel, create_backbone

    root = _write_folder(tmp_path / "imgs", classes=1, per_class=5)
    (root / "class0" / "2.jpg").write_bytes(b"nothing")
    files = sorted((root / "class0").iterdir())
    model = HashModel(create_backbone("smallcnn", (3, 16, 16), widths=(4,)), HashHead(4, 8))
    from learn2hash.datasets.files import LazyImages

    x = LazyImages(files, (16, 16), 3, "t")
    out, kept, skipped = encode_items(model, x, 2, "cpu", workers=0, on_bad_image="skip")
    assert kept.tolist() == [0, 1, 3, 4] and out.shape == (4, 8) and [s[0] for s in skipped] == [2]
    assert "2.jpg" in skipped[0][2]
    blank, kept, skipped = encode_items(model, x, 2, "cpu", workers=0, on_bad_image="blank")
    assert kept.tolist() == [0, 1, 2, 3, 4] and torch.equal(blank[[0, 1, 3, 4]], out)
    zero = model.eval()(torch.zeros(1, 3, 16, 16))
    assert torch.allclose(blank[2], zero[0])
    with pytest.raises(CorruptFileError, match="2.jpg"):
        encode_items(model, x, 2, "cpu", workers=2)  # raised from a worker: the same one-line error


def test_encode_images_end_to_end(run, folder, tmp_path, capsys):
    out = tmp_path / "codes.npy"
    assert main(["encode", "--run", str(run.folder), "--images", str(folder), "--out", str(out),
                 "--workers", "2", "--no-progress"]) == 0
    from learn2hash.codes import Codes

    codes = Codes.load(out)
    ids = json.loads((tmp_path / "codes.ids.json").read_text())
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.jpg"))
    assert ids["ids"] == files and len(codes) == len(files) and ids["skipped"] == []
    # independent check: each image's code is the run's code of that database item
    db_paths = [p.relative_to(folder).as_posix() for p in images.image_paths(run.dataset().database.x)]
    db_codes = run.codes("database").to_bits()
    for i, name in enumerate(ids["ids"]):
        if name in db_paths:
            assert np.array_equal(codes.to_bits()[i], db_codes[db_paths.index(name)])
    # a list file (paths relative to it, labels after the path ignored), one of them unreadable
    (folder.parent / "bad.jpg").write_bytes(b"junk")
    listing = folder.parent / "list.txt"
    listing.write_text("imgs/class0/1.jpg 1 0 0\n# comment\nbad.jpg\nimgs/class2/0.jpg\n")
    capsys.readouterr()
    assert main(["encode", "--run", str(run.folder), "--images", str(listing), "--out", str(out),
                 "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "bad.jpg" in err and len(err.strip().splitlines()) == 1
    assert main(["encode", "--run", str(run.folder), "--images", str(listing), "--out", str(out),
                 "--on-bad-image", "skip", "--no-progress"]) == 0
    ids = json.loads((tmp_path / "codes.ids.json").read_text())
    assert ids["ids"] == ["imgs/class0/1.jpg", "imgs/class2/0.jpg"] and [s["id"] for s in ids["skipped"]] == ["bad.jpg"]
    assert len(Codes.load(out)) == 2
    assert main(["encode", "--run", str(run.folder), "--images", str(folder), "--no-progress"]) == 2


def test_runtime_settings_are_checked():
    for bad in (dict(workers=-1), dict(amp="fp8"), dict(on_bad_image="ignore"), dict(workers=True)):
        with pytest.raises(Learn2HashError):
            TrainConfig(**bad).validate()


def test_bf16_autocast_trains_and_encodes_on_cpu():
    from learn2hash.methods import create

    ds = datasets.load("digits", seed=0)
    small = ds.train.subset(np.arange(64))
    h = create("csq", bits=16, epochs=1, batch_size=32, backbone_options={"widths": [4, 8]}, augment="none",
               amp="bf16").fit(small)
    assert np.isfinite(h.history_[0]["loss"])
    assert h.thread_invariant_ is False  # mixed precision runs PyTorch's own kernels (learn2hash.nn.fixed_order)
    u_bf16 = h.transform(ds.query.x[:64])
    h.amp = "off"
    u_fp32 = h.transform(ds.query.x[:64])
    assert u_bf16.dtype == np.float32 and np.abs(u_bf16 - u_fp32).max() < 0.05


def test_resume_may_change_runtime_settings_only(run, folder):
    from learn2hash.runs import train_run

    params = {k: v for k, v in TINY_CSQ.items() if k != "bits"}
    data = {"path": str(folder), "size": 16, "query_per_class": 2}
    before = run.codes("database").to_bits()
    again = train_run("csq", "image-folder", 16, run.folder, params={**params, "workers": 1, "amp": "off"},
                      data_params=data, resume=True, progress=False)
    assert np.array_equal(again.codes("database").to_bits(), before)
    with pytest.raises(Learn2HashError, match="params"):
        train_run("csq", "image-folder", 16, run.folder, params={**params, "lr": 0.5}, data_params=data,
                  resume=True, progress=False)
