"""The named list-file benchmarks (NUS-WIDE, COCO, ImageNet-100, MIRFlickr-25K, VOC2012)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from learn2hash import cli
from learn2hash.datasets import benchmarks, load, registered
from learn2hash.datasets.registry import default_topk
from learn2hash.errors import DatasetNotFoundError, Learn2HashError


def write_lists(folder, n_labels, counts, sub="images"):
    """Lists like the published ones: ``images/img_<split>_<i>.png`` + a label vector; image value = i."""
    expected = {}
    for split, fname in benchmarks.LISTS.items():
        lines, labels = [], []
        for i in range(counts[split]):
            rel = f"{sub}/img_{split}_{i}.png"
            (folder / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.full((12, 16, 3), 10 * i, np.uint8)).save(folder / rel)
            vec = np.zeros(n_labels, dtype=int)
            vec[[i % n_labels, (3 * i + 1) % n_labels]] = 1
            lines.append(rel + " " + " ".join(map(str, vec)))
            labels.append(vec.astype(bool))
        (folder / fname).write_text("\n".join(lines) + "\n")
        expected[split] = np.array(labels)
    return expected


@pytest.mark.parametrize("name,n_labels,topk", [
    ("nus-wide-21", 21, 5000), ("nus-wide-81", 81, 5000), ("coco", 80, 5000), ("imagenet-100", 100, 1000),
    ("mirflickr-25k", 38, None), ("voc2012", 20, None)])
def test_named_lists_read_with_their_top_k(tmp_path, monkeypatch, name, n_labels, topk):
    monkeypatch.setenv("LEARN2HASH_DATA", str(tmp_path))
    folder = tmp_path / name
    counts = {"train": 4, "query": 3, "database": 7}
    expected = write_lists(folder, n_labels, counts)
    assert registered()[name].present()
    ds = load(name)
    assert ds.name == name and ds.protocol == "standard"
    assert (len(ds.train), len(ds.query), len(ds.database)) == (4, 3, 7)
    for split in ("train", "query", "database"):
        np.testing.assert_array_equal(getattr(ds, split).labels, expected[split])
    x = np.asarray(ds.database.x)
    assert x.shape == (7, 3, 256, 256) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[:, 0, 100, 100], 10 * np.arange(7))
    assert default_topk(name) == topk


def test_data_path_root_and_size(tmp_path):
    lists = tmp_path / "lists"
    lists.mkdir()
    write_lists(lists, 20, {"train": 2, "query": 2, "database": 3})
    images = tmp_path / "elsewhere"
    images.mkdir()
    (lists / "images").rename(images / "images")
    ds = load("voc2012", path=str(lists), root=str(images), size=8)
    assert np.asarray(ds.query.x).shape == (2, 3, 8, 8)


def test_wrong_label_width_and_missing_lists(tmp_path, capsys):
    write_lists(tmp_path, 21, {"train": 1, "query": 1, "database": 1})
    with pytest.raises(Learn2HashError, match="label vectors of length 21; coco has 80 labels"):
        load("coco", path=str(tmp_path))
    (tmp_path / "database.txt").unlink()
    with pytest.raises(DatasetNotFoundError, match=rf"looked in {tmp_path}: missing database.txt\); expected train.txt"):
        load("nus-wide-21", path=str(tmp_path))
    code = cli.main(["train", "--method", "csq", "--dataset", "nus-wide-21", "--data-path", str(tmp_path),
                     "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(tmp_path) in err and "database.txt" in err


def test_cli_lists_named_sets_found_or_not_with_layout(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("LEARN2HASH_DATA", raising=False)
    write_lists(tmp_path / "voc2012", 20, {"train": 1, "query": 1, "database": 1})
    assert cli.main(["datasets", "--data-path", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    row = {l.split()[0]: l for l in out if l and not l.startswith(("-", "dataset"))}
    assert " found " in row["voc2012"] and str(tmp_path / "voc2012") in row["voc2012"]
    for name in ("cifar10", "coco", "nus-wide-21", "nus-wide-81", "imagenet-100", "mirflickr-25k", "ucf101",
                 "hmdb51", "mirflickr-25k-mat", "nus-wide-mat", "iapr-tc-12-mat"):
        assert "not found" in row[name] and str(tmp_path / name) in row[name]
        detail = next(l for l in out if l.startswith(f"{name}: published at "))
        assert "expects" in detail
    assert row["imagenet-100"].split()[4] == "1000" and row["cifar10"].split()[4] == "all"
    # the environment is left as it was
    import os
    assert "LEARN2HASH_DATA" not in os.environ
    assert cli.main(["datasets"]) == 0
    assert "LEARN2HASH_DATA/voc2012 (not set; or --data-path)" in capsys.readouterr().out
