"""Named weights are never unpickled, whatever sits in the caches we read.

A malicious file (a pickle whose loading would create a marker file) is planted at each cache
location learn2hash reads named weights from: torch.hub's ``$TORCH_HOME/hub/checkpoints`` for
torchvision, the Hugging Face cache for timm and OpenCLIP. The marker must never appear: a file
whose sha256 does not match the hash its publisher put in its name is refused before it is read,
and a file that passes the hash check is read with ``torch.load(weights_only=True)`` (or as
safetensors), which refuses the pickle. Nothing here touches the network.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.request

import pytest
import torch

from learn2hash import cli
from learn2hash.errors import Learn2HashError
from learn2hash.nn import create_backbone
from learn2hash.nn._torchvision import import_torchvision
from learn2hash.nn.pretrained import WeightsHashError, url_weights_file

import_torchvision()
from torchvision import models  # noqa: E402


class _Evil:
    """Unpickling this creates ``marker`` (what a malicious weights file could do: run any code)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def _evil_bytes(tmp_path, marker) -> bytes:
    path = tmp_path / "evil.tmp"
    torch.save({"state_dict": _Evil(marker)}, path)
    data = path.read_bytes()
    path.unlink()
    return data


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def offline(monkeypatch):
    """No network: any download attempt fails the test."""
    import huggingface_hub

    def refuse(*a, **k):
        raise AssertionError("nothing may be downloaded in this test")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)


def test_the_marker_pickle_runs_code_when_unpickled(tmp_path):
    """The planted files below are really harmful: loading one unsafely creates the marker."""
    marker = tmp_path / "marker"
    (tmp_path / "evil.pth").write_bytes(_evil_bytes(tmp_path, marker))
    torch.load(tmp_path / "evil.pth", weights_only=False)
    assert marker.exists()


# ----------------------------------------------------------------------------- torchvision
def test_torchvision_cache_file_with_a_wrong_hash_is_never_read(tmp_path, monkeypatch, offline):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    marker = tmp_path / "marker"
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet18-f37072fd.pth").write_bytes(_evil_bytes(tmp_path, marker))
    with pytest.raises(WeightsHashError) as refused:
        create_backbone("resnet18", (3, 32, 32), weights="IMAGENET1K_V1")
    assert not marker.exists()  # checked first: whatever the error, no code ran
    assert re.search(r"resnet18-f37072fd.pth does not match the sha256 f37072fd", str(refused.value))


def test_torchvision_through_the_cli_as_reported(tmp_path, monkeypatch, offline, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    marker = tmp_path / "marker"
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / "resnet18-f37072fd.pth").write_bytes(_evil_bytes(tmp_path, marker))
    rc = cli.main(["train", "--method", "csq", "--dataset", "digits", "--bits", "8", "--epochs", "1", "--no-progress",
                   "--out", str(tmp_path / "run"), "--backbone", "resnet18",
                   "--param", 'backbone_options={"weights": "IMAGENET1K_V1"}'])
    err = capsys.readouterr().err
    assert not marker.exists()
    errors = [line for line in err.splitlines() if line.startswith("learn2hash train: error: ")]
    assert rc == 2 and len(errors) == 1 and "does not match the sha256" in errors[0] and "Traceback" not in err


def test_torchvision_file_passing_the_hash_check_is_still_not_unpickled(tmp_path, monkeypatch, offline):
    """A file named by its own hash passes the check; weights_only=True then refuses the pickle."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    marker = tmp_path / "marker"
    data = _evil_bytes(tmp_path, marker)
    name = f"resnet18-{_sha(data)[:8]}.pth"
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / name).write_bytes(data)
    member = models.ResNet18_Weights.IMAGENET1K_V1
    monkeypatch.setattr(member.value, "url", f"https://download.pytorch.org/models/{name}")
    with pytest.raises(Learn2HashError) as refused:
        create_backbone("resnet18", (3, 32, 32), weights="IMAGENET1K_V1")
    assert not marker.exists()  # checked first: whatever the error, no code ran
    assert re.search("cannot read torchvision resnet18 weights file", str(refused.value))


def test_download_checks_the_hash_before_the_file_enters_the_cache(tmp_path):
    """Downloads go through our own urllib code (a file:// URL here, no network)."""
    torch.manual_seed(0)
    good = tmp_path / "src" / "good.pth"
    good.parent.mkdir()
    torch.save(models.resnet18(weights=None).state_dict(), good)
    digest = _sha(good.read_bytes())
    published = tmp_path / "src" / f"resnet18-{digest[:10]}.pth"
    good.rename(published)
    cache = tmp_path / "cache"
    got = url_weights_file(published.as_uri(), "test weights", cache=cache)
    assert got == cache / published.name and _sha(got.read_bytes()) == digest
    # a download whose content does not match its name leaves nothing in the cache
    marker = tmp_path / "marker"
    lying = tmp_path / "src" / f"resnet18-{'0' * 8}.pth"
    lying.write_bytes(_evil_bytes(tmp_path, marker))
    with pytest.raises(WeightsHashError, match="does not match the sha256 00000000"):
        url_weights_file(lying.as_uri(), "test weights", cache=cache)
    assert sorted(p.name for p in cache.iterdir()) == [published.name]
    assert not marker.exists()
    # a name without a hash cannot be checked: refused
    with pytest.raises(Learn2HashError, match="carry no sha256 in their file name"):
        url_weights_file((tmp_path / "src" / "plain.pth").as_uri(), "test weights", cache=cache)


# ----------------------------------------------------------------------------- Hugging Face cache (timm, OpenCLIP)
def _plant_hub_file(cache, repo_id: str, filename: str, data: bytes, blob_name: str | None = None):
    """A file as huggingface_hub caches it: blobs/<sha256>, linked from snapshots/<commit>/<filename>."""
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = "a" * 40
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    blob = repo / "blobs" / (blob_name or _sha(data))
    blob.parent.mkdir(parents=True, exist_ok=True)
    blob.write_bytes(data)
    link = repo / "snapshots" / commit / filename
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(blob)
    return link


@pytest.mark.parametrize("blob", ["true", "wrong"])
def test_timm_hub_cache_pickle_is_never_unpickled(tmp_path, monkeypatch, offline, blob):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    marker = tmp_path / "marker"
    data = _evil_bytes(tmp_path, marker)
    _plant_hub_file(tmp_path / "hf", "timm/test_resnet.r160_in1k", "pytorch_model.bin", data,
                    blob_name=None if blob == "true" else "f" * 64)
    with pytest.raises(Learn2HashError) as refused:
        create_backbone("timm:test_resnet", (3, 32, 32), pretrained=True)
    assert not marker.exists()  # checked first: whatever the error, no code ran
    assert re.search("does not match the sha256" if blob == "wrong" else "cannot build timm", str(refused.value))


def test_timm_pretrained_weights_from_the_hub_cache(tmp_path, monkeypatch, offline):
    import timm
    from safetensors.torch import save_file

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    torch.manual_seed(4)
    ref = timm.create_model("test_resnet")
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "w.safetensors")
    _plant_hub_file(tmp_path / "hf", "timm/test_resnet.r160_in1k", "model.safetensors",
                    (tmp_path / "w.safetensors").read_bytes())
    bb = create_backbone("timm:test_resnet", (3, 32, 32), pretrained=True)
    assert torch.equal(bb.net.conv1[0].weight, ref.conv1[0].weight)


@pytest.fixture
def tiny_clip_tag(tmp_path, monkeypatch):
    """A tiny OpenCLIP model with a pretrained tag published (here) on the Hugging Face hub."""
    import open_clip
    import open_clip.pretrained as registry

    cfg = tmp_path / "l2h-tiny-clip2.json"
    cfg.write_text(json.dumps({
        "embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
        "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}))
    open_clip.add_model_config(cfg)
    monkeypatch.setitem(registry._PRETRAINED, "l2h-tiny-clip2", {"tiny": {
        "hf_hub": "l2h/tiny-clip/", "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    return "l2h-tiny-clip2", "l2h/tiny-clip"


@pytest.mark.parametrize("blob", ["true", "wrong"])
def test_openclip_hub_cache_pickle_is_never_unpickled(tmp_path, tiny_clip_tag, offline, blob):
    model, repo = tiny_clip_tag
    marker = tmp_path / "marker"
    _plant_hub_file(tmp_path / "hf", repo, "open_clip_pytorch_model.bin", _evil_bytes(tmp_path, marker),
                    blob_name=None if blob == "true" else "e" * 64)
    with pytest.raises(Learn2HashError) as refused:
        create_backbone(f"openclip:{model}", (3, 32, 32), pretrained="tiny")
    assert not marker.exists()  # checked first: whatever the error, no code ran
    assert re.search("does not match the sha256" if blob == "wrong" else "cannot build", str(refused.value))


def test_openclip_pretrained_tag_from_the_hub_cache(tmp_path, tiny_clip_tag, offline):
    import open_clip
    from safetensors.torch import save_file

    model, repo = tiny_clip_tag
    torch.manual_seed(5)
    clip = open_clip.create_model(model)
    save_file({k: v.contiguous() for k, v in clip.state_dict().items()}, tmp_path / "c.safetensors")
    _plant_hub_file(tmp_path / "hf", repo, "open_clip_model.safetensors", (tmp_path / "c.safetensors").read_bytes())
    bb = create_backbone(f"openclip:{model}", (3, 32, 32), pretrained="tiny")
    assert torch.equal(bb.net.conv1.weight, clip.visual.conv1.weight)
    assert bb.input_spec.mean == (0.5, 0.5, 0.5) and bb.input_spec.std == (0.25, 0.25, 0.25)  # the tag's
