"""Backbones from the libraries people already use: torchvision, timm and OpenCLIP.

- torchvision: ``resnet18/34/50/101/152``, ``alexnet``, ``vgg11/13/16/19``, ``vit_b_16``,
  ``vit_b_32``, ``vit_l_16``, ``efficientnet_b0`` ... ``_b4``, ``convnext_tiny/small/base``.
  ``weights``: ``None`` (random init), a torchvision weights name of the architecture
  (``"IMAGENET1K_V2"``, ``"DEFAULT"`` ...; found under ``$TORCH_HOME/hub/checkpoints``, the cache
  torch.hub uses, or downloaded there when online), or the path of a state-dict file.
- ``timm:MODEL``: any timm model name (``timm:resnet50.a1_in1k``); ``pretrained=True`` loads timm's
  weights for it (found in the Hugging Face cache, or downloaded there when online),
  ``weights=PATH`` a local checkpoint.
- ``openclip:MODEL``: an OpenCLIP image tower (``openclip:ViT-B-32``); ``pretrained=TAG`` (e.g.
  ``"openai"``, ``"laion2b_s34b_b79k"``; Hugging Face cache as for timm) or ``weights=PATH`` (a
  full CLIP checkpoint or the tower's).

Each declares its :class:`~learn2hash.nn.registry.InputSpec` from the library's own metadata
(torchvision weights' transforms, timm's resolved data config, OpenCLIP's preprocess config) and
its ``out_dim`` (penultimate features: the classifier is removed), normalises inside ``forward``
and declares its stages for :meth:`~learn2hash.nn.registry.Backbone.freeze`. ``image_size``
overrides the input side where the network allows it.

Weight files are never unpickled: they are read with ``torch.load(weights_only=True)`` (or as
safetensors, preferred where the publisher provides them), by our code or by timm / OpenCLIP told
so. Named weights are looked up in the cache and downloaded by our code when missing
(:func:`url_weights_file`, :func:`hub_weights_file`); before a file is read, its sha256 is checked
against the one its publisher put in its name (torchvision's ``name-<sha256 prefix>.pth``, the
Hugging Face cache's ``blobs/<sha256>``), whether it was just downloaded or found in the cache. A
file that does not fit names its mismatching, missing and unexpected keys. Nothing is downloaded
unless a weights name / ``pretrained`` asks for it.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import os
import re
import secrets
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn

from learn2hash import _atomic
from learn2hash.errors import Learn2HashError, WeightsDownloadError
from learn2hash.nn._torchvision import import_torchvision
from learn2hash.nn.backbones import _PretrainedImageNet, image_spec, stages_by_boundaries
from learn2hash.nn import registry
from learn2hash.nn.registry import BackboneInfo, InputSpec

#: torchvision architectures registered under their own names
TORCHVISION_ARCHS = ("alexnet", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152", "vgg11", "vgg13", "vgg16",
                     "vgg19", "vit_b_16", "vit_b_32", "vit_l_16", "efficientnet_b0", "efficientnet_b1",
                     "efficientnet_b2", "efficientnet_b3", "efficientnet_b4", "convnext_tiny", "convnext_small",
                     "convnext_base")
_WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


# ----------------------------------------------------------------------------- weight files
@contextlib.contextmanager
def _quiet_libraries():
    """Silence what open_clip logs on the root logger ("no pretrained weights loaded", a failed
    download, which becomes our own error) and huggingface_hub's retry warnings meanwhile."""
    quiet = logging.Filter()
    quiet.filter = lambda record: record.levelno >= logging.CRITICAL  # type: ignore[method-assign]
    root, hub = logging.getLogger(), logging.getLogger("huggingface_hub")
    level = hub.level
    root.addFilter(quiet)
    hub.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        root.removeFilter(quiet)
        hub.setLevel(level)



def _closest(word: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=3)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _listed(items: Sequence[str], limit: int = 6) -> str:
    items = list(items)
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def looks_like_path(value: str) -> bool:
    return os.sep in value or "/" in value or value.lower().endswith(_WEIGHT_SUFFIXES) or os.path.exists(value)


def read_state_dict(path: str | os.PathLike, what: str) -> dict[str, torch.Tensor]:
    """The tensors of a weights file (a state dict, or a checkpoint dict holding one under
    ``state_dict`` / ``model`` / ``module``; a ``module.`` prefix of DataParallel is removed)."""
    path = Path(path)
    if not path.is_file():
        raise Learn2HashError(f"{what} weights file {path} does not exist")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state: Any = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise Learn2HashError(f"cannot read {what} weights file {path}: {type(exc).__name__}: {exc}") from None
    while isinstance(state, dict):
        inner = next((state[k] for k in ("state_dict", "model", "module", "state_dict_ema")
                      if isinstance(state.get(k), dict)), None)
        if inner is None:
            break
        state = inner
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise Learn2HashError(f"{what} weights file {path} does not hold a state dict (name -> tensor)")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_state(module: nn.Module, state: dict[str, torch.Tensor], path: str | os.PathLike, what: str,
               ignore: Sequence[str] = ()) -> None:
    """Load ``state`` into ``module`` exactly (keys under an ``ignore`` prefix, e.g. a removed
    classifier, are dropped first), or raise naming the keys that do not fit."""
    state = {k: v for k, v in state.items() if not any(k == p or k.startswith(p + ".") for p in ignore)}
    expected = module.state_dict()
    shapes = [f"{k} {tuple(state[k].shape)} in the file, {tuple(v.shape)} here" for k, v in expected.items()
              if k in state and tuple(state[k].shape) != tuple(v.shape)]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if shapes or missing or unexpected:
        parts = [f"{label}: {_listed(keys)}" for label, keys in
                 (("mismatching shapes", shapes), ("missing keys", missing), ("unexpected keys", unexpected)) if keys]
        raise Learn2HashError(f"weights file {path} does not fit {what}: {'; '.join(parts)}")
    module.load_state_dict(state)


def _download_failed(what: str, exc: BaseException, how: str, source: str | None = None) -> WeightsDownloadError:
    reason = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
    return WeightsDownloadError(f"cannot download the {what} weights ({reason}); without a network, {how}",
                                what=what, source=source, reason=reason)


# ----------------------------------------------------------------------------- named weights: cache, download, hash
#: the sha256 prefix a publisher puts in a weights file's name (torch.hub's convention, ``name-<hex>.ext``)
HASH_IN_NAME = re.compile(r"-([0-9a-f]{8,64})\.[A-Za-z0-9.]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class WeightsHashError(Learn2HashError):
    """A weights file whose content does not match the sha256 its publisher gave: never read."""


def check_weights_hash(path: Path, expected: str, what: str, where: str) -> None:
    """Raise :class:`WeightsHashError` unless the sha256 of ``path`` starts with ``expected``
    (``where`` says where that hash comes from, for the message)."""
    digest = _atomic.sha256_file(path)
    if not digest.startswith(expected):
        raise WeightsHashError(
            f"{what} weights file {path} does not match the sha256 {expected} of {where} (its own is "
            f"{digest[:len(expected)]}): damaged, truncated or not the published file, so it is not read; delete it "
            "(it is downloaded again when online)")


def torch_hub_checkpoints() -> Path:
    """The folder torch.hub caches weights in: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def url_weights_file(url: str, what: str, cache: Path | None = None, require_hash: bool = True) -> Path:
    """The weights file published at ``url``, with its sha256 checked against the prefix in its name.

    Looked up in ``cache`` (default :func:`torch_hub_checkpoints`) under the URL's file name, else
    downloaded there (urllib, into a temporary file renamed once its hash is checked). A file with
    no hash in its name is refused when ``require_hash``. Nothing here reads the file's content
    beyond hashing it."""
    name = Path(urllib.parse.urlparse(url).path).name
    m = HASH_IN_NAME.search(name)
    if m is None and require_hash:
        raise Learn2HashError(f"the {what} weights at {url} carry no sha256 in their file name; they cannot be "
                              "checked, so they are not used (pass weights=PATH to a file you trust)")
    cache = Path(cache) if cache is not None else torch_hub_checkpoints()
    target = cache / name
    if not target.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".{name}.{secrets.token_hex(6)}.partial"  # one per download: concurrent ones do not mix
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                _copy_with_progress(response, out, what)
            if m is not None:
                check_weights_hash(tmp, m.group(1), what, f"its published name {name}")
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
    elif m is not None:
        check_weights_hash(target, m.group(1), what, f"its published name {name}")
    return target


def _copy_with_progress(response: Any, out: Any, what: str) -> None:
    from tqdm.auto import tqdm

    total = response.headers.get("Content-Length") if getattr(response, "headers", None) else None
    with tqdm(total=int(total) if total and str(total).isdigit() else None, unit="B", unit_scale=True,
              desc=f"downloading {what}", leave=False, disable=None) as bar:
        for block in iter(lambda: response.read(1 << 20), b""):
            out.write(block)
            bar.update(len(block))


def hub_cache() -> Path:
    """The Hugging Face hub cache (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``),
    read from the environment at each call."""
    env = os.environ
    if env.get("HF_HUB_CACHE"):
        return Path(env["HF_HUB_CACHE"]).expanduser()
    home = env.get("HF_HOME") or os.path.join(env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(home).expanduser() / "hub"


def _safe_first(filenames: Sequence[str]) -> list[str]:
    """``filenames`` with their safetensors alternatives first (as timm and open_clip look for them)."""
    known = {"pytorch_model.bin": "model.safetensors", "open_clip_pytorch_model.bin": "open_clip_model.safetensors"}
    out: list[str] = []
    for name in filenames:
        if name in known:
            out.append(known[name])
        elif name.endswith((".bin", ".pth")):
            out.append(name[:-4] + ".safetensors")
    out += list(filenames)
    return list(dict.fromkeys(out))


def hub_weights_file(repo_id: str, filenames: Sequence[str], what: str) -> Path:
    """The first of ``filenames`` (safetensors alternatives tried first) of Hugging Face repository
    ``repo_id``: from the cache (:func:`hub_cache`), else downloaded there by huggingface_hub.

    Checked before anyone reads it: the cache stores a weights file (a Git LFS file) as
    ``blobs/<its sha256>``, and the file's content must have that sha256 (huggingface_hub checks
    a download against the hub's own record of it). This catches damaged and replaced files; a
    writer of the cache could still plant a file under its own hash, which is why the file is
    then read as safetensors or with ``weights_only=True`` and never unpickled."""
    try:
        from huggingface_hub import hf_hub_download, try_to_load_from_cache
    except ImportError:
        raise Learn2HashError(f"the {what} weights come from the Hugging Face hub: "
                              "pip install huggingface_hub") from None
    cache = hub_cache()
    candidates = _safe_first(filenames)
    found = None
    for name in candidates:
        hit = try_to_load_from_cache(repo_id, name, cache_dir=cache)
        if isinstance(hit, str):
            found = Path(hit)
            break
    if found is None:
        errors = []
        with _quiet_libraries():
            for name in candidates:
                try:
                    found = Path(hf_hub_download(repo_id, name, cache_dir=cache))
                    break
                except Exception as exc:  # not there (try the next name) or no network
                    errors.append(exc)
        if found is None:
            raise errors[-1]
    blob = Path(os.path.realpath(found))
    if not _SHA256.match(blob.name):
        raise WeightsHashError(f"{what} weights file {found} is not a file of the Hugging Face cache named by its "
                               f"sha256 ({blob}); it cannot be checked, so it is not read")
    check_weights_hash(blob, blob.name, what, f"its name in the Hugging Face cache ({found})")
    return found


# ----------------------------------------------------------------------------- torchvision
def _torchvision_head(arch: str, net: nn.Module) -> tuple[int, str, list[str]]:
    """Remove ``net``'s classifier; returns (feature size, the classifier's key prefix, stage boundaries)."""
    if arch.startswith("resnet"):
        out_dim = net.fc.in_features
        net.fc = nn.Identity()
        return out_dim, "fc", ["bn1", "layer1", "layer2", "layer3", "layer4"]
    if arch == "alexnet" or arch.startswith("vgg"):
        last = len(net.classifier) - 1
        out_dim = net.classifier[last].in_features
        net.classifier[last] = nn.Identity()  # fc7 features (after ReLU and dropout)
        pools = [f"features.{i}" for i, m in enumerate(net.features) if isinstance(m, nn.MaxPool2d)]
        return out_dim, f"classifier.{last}", pools + ["classifier"]
    if arch.startswith("vit_"):
        out_dim = net.hidden_dim
        net.heads = nn.Identity()  # the class token after the final LayerNorm
        layers = [f"encoder.layers.{name}" for name, _ in net.encoder.layers.named_children()]
        return out_dim, "heads", ["encoder.pos_embedding", *layers, "encoder.ln"]
    if arch.startswith("efficientnet_") or arch.startswith("convnext_"):
        last = len(net.classifier) - 1
        out_dim = net.classifier[last].in_features
        net.classifier[last] = nn.Identity()
        return out_dim, f"classifier.{last}", [f"features.{i}" for i in range(len(net.features))]
    raise Learn2HashError(f"torchvision architecture {arch!r} is not supported; known: {', '.join(TORCHVISION_ARCHS)}")


class TorchvisionNet(_PretrainedImageNet):
    """A torchvision classification network without its classifier (penultimate features: 512 /
    2,048 for ResNet-18 / 50, fc7's 4,096 for AlexNet and VGG, the class token for ViT, the pooled
    features for EfficientNet and ConvNeXt).

    ``weights``: ``None`` (random init), a weights name of ``arch`` (from torch.hub's cache, or
    downloaded there; hash checked: :func:`url_weights_file`), or a state-dict file (with or without
    the classifier). The input spec (size,
    resize, mean, std) is that of the named weights (also with ``untrained=True``, which reads no
    weights: a saved hasher's network, whose own weights are loaded next); for a file, that of the weights published under
    the file's name (``resnet50-0676ba61.pth``: IMAGENET1K_V1), else of the architecture's default weights.
    """

    def __init__(self, input_shape: tuple[int, ...], arch: str, weights: str | None = None,
                 image_size: int | None = None, untrained: bool = False):
        super().__init__()
        import_torchvision()
        from torchvision import models

        if arch not in TORCHVISION_ARCHS:
            raise Learn2HashError(f"unknown torchvision architecture {arch!r}{_closest(arch, TORCHVISION_ARCHS)}; "
                                  f"known: {', '.join(TORCHVISION_ARCHS)}")
        enum = models.get_model_weights(arch)
        member = None
        path = None
        if weights is not None:
            weights = str(weights)
            if weights in enum.__members__:
                member = enum[weights]
            elif looks_like_path(weights):
                path = weights
            else:
                names = list(enum.__members__)
                raise Learn2HashError(
                    f"unknown weights {weights!r} for torchvision {arch}{_closest(weights, names)}; known: "
                    f"{', '.join(names)}, or the path of a state-dict file")
        # a file saved under the name torchvision publishes it by (the weights URL's last part, as
        # torch.hub caches it) has that weights' preprocessing; any other file the default weights'
        by_file = [m for m in enum if path is not None and Path(m.url).name == Path(path).name]
        meta_weights = member or (by_file[0] if by_file else enum.DEFAULT)
        t = meta_weights.transforms()
        crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
        spec = image_spec(crop, t.mean, t.std, crop_fraction=crop / resize, image_size=image_size)
        self._set_input(input_shape, spec)
        kwargs: dict[str, Any] = {"image_size": spec.size} if arch.startswith("vit_") else {}
        net = getattr(models, arch)(weights=None, **kwargs)
        self.out_dim, head, bounds = _torchvision_head(arch, net)
        self._bounds = [f"net.{b}" for b in bounds]
        what = f"torchvision {arch}"
        if untrained:  # a saved hasher's network: its own weights come next; the input spec stays the weights'
            pass
        elif member is not None:
            try:
                file = url_weights_file(member.url, f"{what} {weights}")
            except Learn2HashError:
                raise
            except Exception as exc:
                cache = torch_hub_checkpoints()
                name = Path(member.url).name
                raise _download_failed(
                    f"{what} {weights}", exc,
                    f"fetch {member.url} elsewhere and pass weights=PATH, or put it in {cache} as {name} (its "
                    "sha256 is checked against the hash in that name)", member.url) from None
            load_state(net, read_state_dict(file, what), file, what, ignore=[head])
        elif path is not None:
            load_state(net, read_state_dict(path, what), path, what, ignore=[head])
        self.net = net
        self.channels_last = not arch.startswith("vit_")
        self._use_channels_last()

    def stages(self) -> list[list[str]]:
        return stages_by_boundaries(self, self._bounds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(x))


# ----------------------------------------------------------------------------- timm
def _import(name: str, extra: str = "vision"):
    import_torchvision()  # timm and open_clip import torchvision
    try:
        return __import__(name)
    except ImportError:
        raise Learn2HashError(f"this backbone needs the package {name}: pip install 'learn2hash[{extra}]'") from None


class TimmNet(_PretrainedImageNet):
    """Any timm model (``timm:MODEL``, e.g. ``timm:resnet50.a1_in1k``), classifier removed
    (``num_classes=0``: the pooled pre-logits features).

    ``pretrained=True``: timm's weights for the name (from the Hugging Face cache, or downloaded
    there; hash checked: :func:`hub_weights_file`); ``weights``:
    a local checkpoint (with or without the classifier). Input spec from
    ``timm.data.resolve_data_config``; stages from the model's ``feature_info``.
    """

    channels_last = False  # transformer towers reshape their patch grids

    def __init__(self, input_shape: tuple[int, ...], model: str, pretrained: bool = False,
                 weights: str | None = None, image_size: int | None = None):
        super().__init__()
        timm = _import("timm")
        arch = model.split(".")[0]
        if not timm.is_model(arch):
            raise Learn2HashError(f"unknown timm model {model!r}{_closest(arch, timm.list_models())}; "
                                  "list them with timm.list_models()")
        if pretrained and weights is not None:
            raise Learn2HashError("timm backbone: pass pretrained=True or weights=PATH, not both")
        what = f"timm {model}"
        overlay = None
        if pretrained:
            try:
                file, custom_load = _timm_weights_file(timm, model, what)
                overlay = {"file": str(file), "url": None, "hf_hub_id": None, "hf_hub_filename": None,
                           "state_dict": None, "source": None, "custom_load": custom_load}
            except Learn2HashError:
                raise
            except Exception as exc:
                raise _download_failed(
                    what, exc, f"pass weights=PATH to a checkpoint of {model} (timm's weights are looked up in the "
                    f"Hugging Face cache, {hub_cache()})") from None
        try:
            with _quiet_libraries():
                # a file we found and checked; timm reads it as safetensors or with torch.load(weights_only=True)
                net = timm.create_model(model, pretrained=bool(pretrained), num_classes=0,
                                        pretrained_cfg_overlay=overlay)
        except Exception as exc:
            raise Learn2HashError(f"cannot build {what}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") \
                from None
        if weights is not None:
            head = net.pretrained_cfg.get("classifier") or ()
            load_state(net, read_state_dict(weights, what), weights, what,
                       ignore=[head] if isinstance(head, str) else list(head))
        cfg = timm.data.resolve_data_config({}, model=net)
        size = int(cfg["input_size"][-1])
        if image_size is not None and image_size != size and net.pretrained_cfg.get("fixed_input_size"):
            raise Learn2HashError(f"{what} takes {size} px images only, got image_size={image_size!r}")
        self._set_input(input_shape, image_spec(size, cfg["mean"], cfg["std"], crop_fraction=float(cfg["crop_pct"]),
                                                image_size=image_size))
        self.out_dim = int(getattr(net, "head_hidden_size", None) or net.num_features)
        self._bounds = [f"net.{info['module']}" for info in getattr(net, "feature_info", []) or []]
        self.net = net

    def stages(self) -> list[list[str]]:
        return stages_by_boundaries(self, self._bounds) if self._bounds else super().stages()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(x))


def _timm_weights_file(timm: Any, model: str, what: str) -> tuple[Path, Any]:
    """The checked file of timm's pretrained weights for ``model`` (Hugging Face hub or URL), and how
    timm loads it (``custom_load``: numpy archives through the model's own loader)."""
    cfg = timm.models.get_pretrained_cfg(model)
    if cfg is None:
        raise Learn2HashError(f"timm publishes no pretrained weights for {model!r}")
    if cfg.hf_hub_id:
        return hub_weights_file(cfg.hf_hub_id, [cfg.hf_hub_filename or "pytorch_model.bin"], what), cfg.custom_load
    url = cfg.url[0] if isinstance(cfg.url, (tuple, list)) else cfg.url
    if url:
        return url_weights_file(url, what, require_hash=False), cfg.custom_load
    raise Learn2HashError(f"timm publishes no downloadable weights for {model!r}; pass weights=PATH")


# ----------------------------------------------------------------------------- OpenCLIP
class OpenCLIPNet(_PretrainedImageNet):
    """The image tower of an OpenCLIP model (``openclip:MODEL``, e.g. ``openclip:ViT-B-32``); its
    output (the projected image embedding) is the feature vector.

    ``pretrained``: an OpenCLIP tag of the model (``"openai"``, ``"laion2b_s34b_b79k"`` ...;
    from the Hugging Face cache, or downloaded there; hash checked); ``weights``: a local checkpoint
    of the whole CLIP model or of the image tower alone. Input spec from the model's preprocess config.
    """

    channels_last = False  # transformer towers reshape their patch grids

    def __init__(self, input_shape: tuple[int, ...], model: str, pretrained: str | None = None,
                 weights: str | None = None, image_size: int | None = None):
        super().__init__()
        open_clip = _import("open_clip")
        known = open_clip.list_models()
        if model not in known:
            raise Learn2HashError(f"unknown OpenCLIP model {model!r}{_closest(model, known)}; "
                                  "list them with open_clip.list_models()")
        if pretrained is not None and weights is not None:
            raise Learn2HashError("openclip backbone: pass pretrained=TAG or weights=PATH, not both")
        what = f"OpenCLIP {model}"
        if pretrained is not None:
            tags = open_clip.list_pretrained_tags_by_model(model)
            if pretrained not in tags:
                raise Learn2HashError(f"unknown pretrained tag {pretrained!r} for {what}{_closest(pretrained, tags)}; "
                                      f"known: {', '.join(tags) or 'none'}")
        file, preprocess = None, None
        if pretrained is not None:
            tag_cfg = open_clip.get_pretrained_cfg(model, pretrained)
            preprocess = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
            try:
                file = _openclip_weights_file(tag_cfg, f"{what} {pretrained}")
            except Learn2HashError:
                raise
            except Exception as exc:
                raise _download_failed(f"{what} {pretrained}", exc,
                                       f"pass weights=PATH to a checkpoint of {model} (OpenCLIP's weights are looked "
                                       f"up in the Hugging Face cache, {hub_cache()})") from None
        try:
            with _quiet_libraries():
                # no download by open_clip (nor of tower or text weights); the checked file is read below
                clip = open_clip.create_model(model, pretrained=None, force_image_size=image_size,
                                              pretrained_image=False, pretrained_text=False,
                                              force_preprocess_cfg=preprocess)
                if file is not None:  # safetensors, or torch.load(weights_only=True)
                    open_clip.load_checkpoint(clip, str(file), strict=True, weights_only=True)
        except Exception as exc:
            raise Learn2HashError(f"cannot build {what}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") \
                from None
        visual = clip.visual
        if weights is not None:
            state = read_state_dict(weights, what)
            if any(k.startswith("visual.") for k in state):
                state = {k[len("visual."):]: v for k, v in state.items() if k.startswith("visual.")}
            load_state(visual, state, weights, what)
        cfg = open_clip.get_model_preprocess_cfg(clip)
        size = cfg.get("size", 224)
        size = int(size if isinstance(size, int) else size[-1])
        self._set_input(input_shape, InputSpec(size=size, resize=size, mean=tuple(float(m) for m in cfg["mean"]),
                                               std=tuple(float(s) for s in cfg["std"]), channels=3))
        self.out_dim = int(visual.output_dim)
        if hasattr(visual, "transformer"):
            bounds = ["ln_pre", *[f"transformer.resblocks.{i}" for i in range(len(visual.transformer.resblocks))]]
        elif hasattr(visual, "layer1"):
            bounds = ["bn3", "layer1", "layer2", "layer3", "layer4"]
        elif hasattr(visual, "trunk"):
            bounds = [f"trunk.{info['module']}" for info in getattr(visual.trunk, "feature_info", []) or []]
        else:
            bounds = []
        self._bounds = [f"net.{b}" for b in bounds]
        self.net = visual

    def stages(self) -> list[list[str]]:
        return stages_by_boundaries(self, self._bounds) if self._bounds else super().stages()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(x))


def _openclip_weights_file(tag_cfg: dict, what: str) -> Path:
    """The checked file of an OpenCLIP pretrained tag (its Hugging Face hub entry, else its URL)."""
    hub = tag_cfg.get("hf_hub")
    if hub:
        repo_id, filename = os.path.split(hub)
        return hub_weights_file(repo_id, [filename or "open_clip_pytorch_model.bin"], what)
    url = tag_cfg.get("url")
    if url:
        cache = Path(os.path.expanduser("~/.cache/clip"))
        parts = urllib.parse.urlparse(url).path.split("/")
        if "openaipublic" in url and len(parts) >= 2 and _SHA256.match(parts[-2]):  # .../<sha256>/NAME.pt
            path = url_weights_file(url, what, cache=cache, require_hash=False)
            check_weights_hash(path, parts[-2], what, f"its URL {url}")
            return path
        return url_weights_file(url, what, cache=cache)
    raise Learn2HashError(f"OpenCLIP publishes no downloadable weights for {what}; pass weights=PATH")


# ----------------------------------------------------------------------------- registration
for _arch in TORCHVISION_ARCHS:
    registry.register(BackboneInfo(
        _arch, ("image",), lambda shape, _a=_arch, **o: TorchvisionNet(shape, **{**o, "arch": _a}),
        f"torchvision {_arch}; weights=NAME (e.g. IMAGENET1K_V1, cached or downloaded, hash checked) "
        "or weights=PATH",
        untrained_options={"untrained": True}))
registry.register(BackboneInfo(
    "timm", ("image",), TimmNet, "any timm model (timm:MODEL); pretrained=True or weights=PATH",
    untrained_options={"pretrained": False, "weights": None}, family=True))
registry.register(BackboneInfo(
    "openclip", ("image",), OpenCLIPNet, "an OpenCLIP image tower (openclip:MODEL); pretrained=TAG or weights=PATH",
    untrained_options={"pretrained": None, "weights": None}, family=True))
