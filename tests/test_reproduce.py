"""`learn2hash reproduce`: the recipes, and quick end-to-end runs on tiny fixtures in the published formats."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from learn2hash import cli, recipes
from learn2hash.datasets import registered
from test_datasets_benchmarks import write_lists
from test_datasets_cifar import fixture_pool, write_binary


def csq_r():
    return recipes.recipe("csq", "imagenet-100")


def test_recipes_cover_the_papers_main_settings():
    assert set(recipes.RECIPES) == {("csq", "imagenet-100"), ("csq", "coco"), ("csq", "nus-wide-21"),
                                    ("dhn", "cifar10"), ("dhn", "nus-wide-21"), ("lemon", "mirflickr-25k-mat"),
                                    ("lemon", "nus-wide-mat"), ("orthohash", "imagenet-100"),
                                    *((m, d) for m in ("lsh", "itq", "sdh") for d in ("fashion-mnist", "cifar10"))}
    itq = recipes.recipe("itq", "fashion-mnist")  # the papers' baseline protocol: on a CNN's features
    assert itq.features == {"backbone": "efficientnet-lite0"} and itq.topk == 1000 and itq.params == {}
    assert recipes.features_of(itq, quick=True) == {"backbone": "smallcnn"}
    assert recipes.features_of(itq, weights="w.pt")["weights"] == "w.pt" and recipes.features_of(csq_r()) is None
    csq = recipes.recipe("csq", "imagenet-100")
    assert csq.params["backbone"] == "resnet50" and csq.params["backbone_options"] == {"weights": "IMAGENET1K_V1"}
    assert (csq.params["optimizer"], csq.params["lr"], csq.params["batch_size"], csq.params["lam"]) == \
        ("rmsprop", 1e-5, 64, 1e-4)
    assert csq.resize_crop == (256, 224) and csq.topk == 1000
    assert (recipes.figure(csq.paper, 64), recipes.figure(csq.reference, 64)) == ("0.873", "0.881")
    assert recipes.figure(csq.reference, 32) == "n/a"
    assert [recipes.figure(recipes.recipe("csq", d).reference, 64) for d in ("coco", "nus-wide-21")] == ["0.883", "0.844"]
    assert [recipes.figure(recipes.recipe("csq", d).paper, 64) for d in ("coco", "nus-wide-21")] == ["0.861", "0.839"]
    for r in recipes.RECIPES.values():
        info = registered()[r.dataset]
        assert r.protocol in info.protocols and r.estimate
        if r.chunk is None:  # the recipe's mAP cutoff is the dataset's default one
            assert r.topk == (info.topk if not isinstance(info.topk, dict) else info.topk[r.protocol])
    p, _ = recipes.resolved(csq, quick=True)
    assert p["backbone"] == "smallcnn" and not set(recipes.FINE_TUNING) & set(p)
    # OrthoHash: the reference code's main.py defaults (AlexNet, Adam 1e-4, backbone at 0.1x, batch 256, s 8, m 0.2)
    oh = recipes.recipe("orthohash", "imagenet-100")
    assert (oh.params["backbone"], oh.params["optimizer"], oh.params["lr"], oh.params["backbone_lr_mult"],
            oh.params["batch_size"], oh.params["epochs"], oh.params["scale"], oh.params["margin"],
            oh.params["center_method"]) == ("alexnet", "adam", 1e-4, 0.1, 256, 100, 8.0, 0.2, "bernoulli")
    assert (recipes.figure(oh.paper, 64), recipes.figure(oh.reference, 64), oh.topk) == ("0.711", "0.709", 1000)
    with pytest.raises(Exception, match="no recipe for csq on mnist; recipes: csq --dataset imagenet-100"):
        recipes.recipe("csq", "mnist")


def _table(out: str) -> dict[str, list[str]]:
    lines = out.strip().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("metric"))
    return {l.split()[0]: l.split() for l in lines[start + 2:] if l and not l.startswith("note")}


def test_reproduce_dhn_cifar10_quick(tmp_path, capsys):
    images, labels = fixture_pool()
    write_binary(tmp_path / "cifar", images, labels)
    code = cli.main(["reproduce", "dhn", "--dataset", "cifar10", "--bits", "48", "--quick", "--no-progress",
                     "--data-path", str(tmp_path / "cifar"), "--data-param", "query_per_class=1",
                     "--data-param", "train_per_class=2", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0, out
    row = _table(out)["mAP@all"]
    assert 0.0 <= float(row[1]) <= 1.0 and row[2:] == ["0.621", "0.781"]
    assert "quick run: not comparable" in out
    from learn2hash.runs import Run
    run = Run.open(tmp_path / "run")
    assert run.config["protocol"] == "cifar10" and run.config["sizes"] == {"train": 20, "query": 10, "database": 30}
    assert run.config["params"]["backbone"] == "smallcnn" and run.config["params"]["lam"] == 0.1


def test_reproduce_csq_imagenet_quick_and_unknown_recipe(tmp_path, capsys):
    write_lists(tmp_path / "in100", 100, {"train": 12, "query": 4, "database": 16})
    code = cli.main(["reproduce", "csq", "--dataset", "imagenet-100", "--quick", "--no-progress",
                     "--data-path", str(tmp_path / "in100"), "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0, out
    row = _table(out)["mAP@1000"]
    assert 0.0 <= float(row[1]) <= 1.0 and row[2:] == ["0.873", "0.881"]
    code = cli.main(["reproduce", "orthohash", "--dataset", "imagenet-100", "--quick", "--no-progress",
                     "--data-path", str(tmp_path / "in100"), "--out", str(tmp_path / "run-oh")])
    out = capsys.readouterr().out
    assert code == 0, out
    row = _table(out)["mAP@1000"]
    assert 0.0 <= float(row[1]) <= 1.0 and row[2:] == ["0.711", "0.709"]
    assert cli.main(["reproduce", "csq", "--dataset", "cifar10", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no recipe for csq on cifar10" in err


def test_reproduce_lemon_stream_on_a_lemon_mat(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n_tr, n_te = 40, 10
    lab = np.zeros((n_tr + n_te, 4), np.uint8)
    lab[np.arange(n_tr + n_te), rng.integers(0, 4, n_tr + n_te)] = 1
    feats = lab @ rng.standard_normal((4, 6)) + 0.1 * rng.standard_normal((n_tr + n_te, 6))
    text = lab @ rng.standard_normal((4, 5)) + 0.1 * rng.standard_normal((n_tr + n_te, 5))
    folder = tmp_path / "mir"
    folder.mkdir()
    scipy.io.savemat(folder / "MIRFLICKR.mat", {"I_tr": feats[:n_tr], "I_te": feats[n_tr:], "T_tr": text[:n_tr],
                                                "T_te": text[n_tr:], "L_tr": lab[:n_tr], "L_te": lab[n_tr:]})
    code = cli.main(["reproduce", "lemon", "--dataset", "mirflickr-25k-mat", "--bits", "16", "--data-path",
                     str(folder), "--data-param", "queries=10", "--chunk", "20", "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    lines = [l for l in out.splitlines() if l.startswith("mAP ")]
    assert len(lines) == 2 and {l.split()[1] for l in lines} == {"image->text", "text->image"}
    for l in lines:
        parts = l.split()
        assert "(all, round 2)" in l and parts[-2:] == ["n/a", "n/a"] and 0.5 < float(parts[-3]) <= 1.0


def _photo_lists(folder, n_labels, counts):
    """Published-style lists whose images are 40x64 (HxW) noise: not square, so that a crop from the
    original and a resize of the whole image differ."""
    from PIL import Image

    expected = write_lists(folder, n_labels, counts)
    rng = np.random.default_rng(3)
    for f in sorted((folder / "images").iterdir()):
        Image.fromarray(rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)).save(f)
    return expected


def _offline(monkeypatch, tmp_path):
    import urllib.error

    import torch

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)


def test_full_csq_recipe_resolves_resnet50_and_offline_says_how_to_pass_weights(tmp_path, monkeypatch, capsys):
    r = recipes.recipe("csq", "imagenet-100")
    p, dp = recipes.resolved(r)
    # the pipeline crops and flips image files; no pre-resize of the list images, no device shift on top
    assert p["backbone"] == "resnet50" and p["backbone_options"] == {"weights": "IMAGENET1K_V1"}
    assert p["augment"] == "flip" and "size" not in dp
    p2, _ = recipes.resolved(r, params={"backbone_options": {"image_size": 32}}, weights="/w/r50.pt")
    assert p2["backbone_options"] == {"image_size": 32, "weights": "/w/r50.pt"}
    with pytest.raises(Exception, match="runs no pretrained backbone with --quick"):
        recipes.resolved(r, quick=True, weights="/w/r50.pt")
    _offline(monkeypatch, tmp_path)
    _photo_lists(tmp_path / "in100", 100, {"train": 4, "query": 2, "database": 4})
    code = cli.main(["reproduce", "csq", "--dataset", "imagenet-100", "--no-progress", "--data-path",
                     str(tmp_path / "in100"), "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "Traceback" not in "\n".join(err)
    last = err[-1]
    assert last.startswith("learn2hash reproduce: error: cannot download the torchvision resnet50 IMAGENET1K_V1 "
                           "weights of the csq recipe (URLError")
    assert "download https://download.pytorch.org/models/resnet50-" in last and "--weights PATH" in last
    assert "resnet50" in err[0] and "augment=flip" in err[0]  # the recipe line, before the error


@pytest.mark.slow
def test_csq_recipe_with_local_weights_trains_on_the_pipelines_crops(tmp_path, monkeypatch, capsys):
    """The real recipe (ResNet-50 from a local state dict) scaled down by overrides: 1 epoch at 32 px. The
    batches the network sees are exactly the pipeline's: training a random-resized crop + flip of each
    original image, encoding the resize of the shorter side + centre crop, nothing added on top."""
    import torch

    from learn2hash import images
    from learn2hash.nn._torchvision import import_torchvision
    from learn2hash.nn.head import HashModel
    from learn2hash.runs import Run

    _offline(monkeypatch, tmp_path)
    models = import_torchvision().models
    torch.manual_seed(0)
    weights = tmp_path / "resnet50-0676ba61.pth"  # the name IMAGENET1K_V1 is published under: its resize 256
    torch.save(models.resnet50(weights=None).state_dict(), weights)
    folder = tmp_path / "in100"
    _photo_lists(folder, 100, {"train": 6, "query": 3, "database": 5})
    seen: list[tuple[bool, torch.Tensor]] = []
    forward = HashModel.forward

    def recording(self, x, return_logits=False):
        seen.append((self.training, torch.round(x.detach().float() * 255).to(torch.uint8).cpu()))
        return forward(self, x, return_logits)

    monkeypatch.setattr(HashModel, "forward", recording)
    code = cli.main(["reproduce", "csq", "--dataset", "imagenet-100", "--bits", "16", "--no-progress",
                     "--data-path", str(folder), "--out", str(tmp_path / "run"), "--weights", str(weights),
                     "--param", 'backbone_options={"image_size": 32}', "--param", "epochs=1",
                     "--param", "workers=0"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert _table(out)["mAP@1000"][2:] == ["0.851", "n/a"]  # 16 bits: the paper's figure, none from the code
    run = Run.open(tmp_path / "run")
    hasher = run.hasher()
    assert hasher.backbone == "resnet50" and hasher.backbone_options == {"image_size": 32, "weights": str(weights)}
    geom = hasher.image_geometry()
    assert geom == images.Geometry((32, 32), 3, resize=37)  # 32 / (224 / 256): the recipe's resize:crop ratio
    ds = run.dataset()
    train_paths, query_paths = images.image_paths(ds.train.x), images.image_paths(ds.query.x)
    trained = [x for training, x in seen if training]
    assert len(trained) == 1 and trained[0].shape == (6, 3, 32, 32)  # one batch of all 6 (batch 64), in order
    expect = np.stack([images.train_image(p, geom, images.item_rng(hasher.seed, 0, i), flip=True)
                       for i, p in enumerate(train_paths)])
    np.testing.assert_array_equal(trained[0].numpy(), expect)
    centre = np.stack([images.encode_image(p, geom) for p in train_paths])
    assert not np.array_equal(expect, centre)  # the training crops are random, not the encode crop
    encoded = [x for training, x in seen if not training]
    expect_q = np.stack([images.encode_image(p, geom) for p in query_paths])
    assert any(x.shape == expect_q.shape and np.array_equal(x.numpy(), expect_q) for x in encoded)
    # the encode crop keeps the aspect ratio: the 40x64 original scaled by 37/40 (shorter side 37), its
    # centre 32x32, i.e. the centre 34.59 px square of the original; not a squeeze of the whole image
    from PIL import Image

    side = 32 / (37 / 40)
    box = ((64 - side) / 2, (40 - side) / 2, (64 + side) / 2, (40 + side) / 2)
    with Image.open(query_paths[0]) as im:
        squeezed = np.asarray(im.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR)).transpose(2, 0, 1)
        cropped = np.asarray(im.convert("RGB").resize((32, 32), Image.Resampling.BILINEAR, box=box))
    assert not np.array_equal(expect_q[0], squeezed)
    np.testing.assert_array_equal(expect_q[0], cropped.transpose(2, 0, 1))
