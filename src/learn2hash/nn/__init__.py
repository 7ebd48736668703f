"""Neural networks for deep hashing: backbones, the hash head, input conversion, augmentation.

``create(name, input_shape, **options)`` builds a registered backbone (``smallcnn``,
``mlp``, ``efficientnet-lite0/1/2``; torchvision's ``resnet18`` ... ``convnext_tiny``, ``timm:MODEL``
and ``openclip:MODEL`` from :mod:`learn2hash.nn.pretrained`; ``c3d-small`` and ``framepool-small``
for clips; or ``"auto"`` for the default of the item kind); ``HashModel(backbone,
HashHead(backbone.out_dim, bits, hidden))`` is the network a deep hasher trains. Requires torch.

The backbone registry speaks the words of every registry of learn2hash: ``available()`` (every
backbone by name), ``create(name, input_shape, **options)``, ``register(BackboneInfo(...))``, and
the same error for an unknown name. ``available_backbones``, ``create_backbone`` and
``register_backbone`` are deprecated aliases of these, kept for one release.
"""

from learn2hash.nn import backbones as _backbones  # noqa: F401  (registers the built-in backbones)
from learn2hash.nn import pretrained as _pretrained  # noqa: F401  (registers torchvision, timm:, openclip:)
from learn2hash.nn import video as _video  # noqa: F401  (registers c3d-small and framepool-small)
from learn2hash.nn.head import HashHead, HashModel, standardize_head
from learn2hash.nn.inputs import as_input_tensor
from learn2hash.nn.registry import (Backbone, BackboneInfo, InputSpec, available, available_backbones, create,
                                    create_backbone, default_backbone, item_kind, register, register_backbone)


__all__ = ["Backbone", "BackboneInfo", "InputSpec", "HashHead", "HashModel", "standardize_head", "as_input_tensor", "available",
           "create", "register", "available_backbones", "create_backbone", "default_backbone", "item_kind", "register_backbone"]
