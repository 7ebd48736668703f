"""The backbone registry: ``create(name, input_shape, **options)``.

A backbone is a :class:`Backbone` module mapping a float batch ``[n, *input_shape]`` (images and
clips already scaled to [0, 1], feature vectors as they are) to features ``[n, out_dim]``. Each
is registered with the item kinds it accepts ("image", "features", "clip"); a module adding a
backbone (e.g. a 3-D CNN for clips) calls :func:`register` at import time. A *family*
(``BackboneInfo(family=True)``, e.g. ``timm``) stands for every name ``family:MODEL``; its factory
gets ``model=MODEL``.

Fine-tuning: a backbone declares its *stages* (:meth:`Backbone.stages`, parameter names in forward
order); :meth:`Backbone.freeze` ("none", "all" or the first N stages) turns off their gradients,
and a frozen part stays in eval mode (BatchNorm statistics, dropout) whatever ``train()`` says.
"""

from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from torch import nn

from learn2hash.errors import Learn2HashError, unknown_name


@dataclass(frozen=True)
class InputSpec:
    """What an image backbone wants to be fed, declared once so nothing else needs to know it.

    ``size``: the square side the network takes (``None``: items at their stored size, as
    ``smallcnn`` takes 28x28 Fashion-MNIST); ``resize``: the shorter side an image is resized to
    before the centre crop of ``size`` when encoding (``None``: straight to ``size``); ``mean`` /
    ``std``: the per-channel normalisation of pixels in [0, 1]; ``channels``: 1 or 3.

    The image pipeline (:mod:`learn2hash.images`) decodes, resizes and crops to ``size`` and hands
    the network ``uint8`` or [0, 1] float tensors; the backbone applies ``mean`` / ``std`` itself, on
    the training device, inside ``forward``.
    """

    size: int | None = None
    resize: int | None = None
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    channels: int = 3


class Backbone(nn.Module):
    """Feature extractor with a fixed per-item input shape.

    Attributes: ``input_shape`` (per item, e.g. ``(1, 28, 28)`` or ``(512,)``), ``out_dim`` (features
    per item), ``kind`` (the item kind it accepts), and for image backbones ``input_spec``
    (:class:`InputSpec`: input size, resize, normalisation).
    """

    input_shape: tuple[int, ...]
    out_dim: int
    kind: str
    #: the registered name it was built under (set by :func:`create`)
    registered_name: str | None = None

    def __init__(self) -> None:
        super().__init__()
        #: the constructor's arguments, defaults included (recorded after the outermost subclass
        #: constructor, see ``__init_subclass__``; empty for a bare ``Backbone``)
        self.options_: dict[str, Any] = {}
        self._frozen_modules: list[str] = []  # set by freeze

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Record every constructor's arguments, defaults included, as ``options_`` (the outermost
        constructor of a subclass chain wins), so a saved network can be rebuilt exactly even after
        a default changes."""
        super().__init_subclass__(**kwargs)
        if "__init__" not in cls.__dict__:
            return
        init = cls.__dict__["__init__"]
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self, *args: Any, **kw: Any) -> None:
            init(self, *args, **kw)
            bound = signature.bind(self, *args, **kw)
            bound.apply_defaults()
            options: dict[str, Any] = {}
            for name, value in list(bound.arguments.items())[1:]:
                kind = signature.parameters[name].kind
                if kind is inspect.Parameter.VAR_KEYWORD:
                    options.update(value)
                elif kind is not inspect.Parameter.VAR_POSITIONAL and name not in ("input_shape", "untrained"):
                    options[name] = value
            self.options_ = plain_options(options)

        cls.__init__ = recording_init  # type: ignore[method-assign]

    @property
    def input_spec(self) -> InputSpec:
        """The input this backbone declares (default: items at their stored size, no normalisation)."""
        channels = int(self.input_shape[0]) if len(getattr(self, "input_shape", ())) == 3 else 3
        return InputSpec(channels=channels, mean=(0.0,) * channels, std=(1.0,) * channels)

    def stages(self) -> list[list[str]]:
        """Names of the parameters of each stage, in forward order (:meth:`freeze` of N freezes the
        first N). Default: the whole backbone is one stage."""
        return [[name for name, _ in self.named_parameters()]]

    def freeze(self, spec: str | int = "none") -> None:
        """Freeze ``"all"`` of the backbone, ``"none"``, or its first ``spec`` stages (an integer).

        Frozen parameters get ``requires_grad=False``; every submodule whose parameters are all
        frozen stays in eval mode from now on (BatchNorm keeps its running statistics).
        """
        stages = self.stages()
        if spec == "none" or spec == 0:
            frozen: set[str] = set()
        elif spec == "all":
            frozen = {name for name, _ in self.named_parameters()}
        elif isinstance(spec, (int, np.integer)) and not isinstance(spec, bool) and 0 < spec <= len(stages):
            frozen = {name for stage in stages[:int(spec)] for name in stage}
        else:
            raise Learn2HashError(
                f"freeze must be 'none', 'all' or a number of stages from 0 to {len(stages)} "
                f"(this {self.registered_name or type(self).__name__} backbone has {len(stages)}), got {spec!r}")
        for name, param in self.named_parameters():
            param.requires_grad_(name not in frozen)
        names = []
        for mod_name, module in self.named_modules():
            params = [f"{mod_name}.{n}" if mod_name else n for n, _ in module.named_parameters()]
            if params and all(p in frozen for p in params):
                names.append(mod_name)
        # keep the outermost frozen modules only
        outer = [n for n in names if not any(n != o and (o == "" or n.startswith(o + ".")) for o in names)]
        self._frozen_modules = outer
        self.train(self.training)

    def frozen_modules(self) -> list[str]:
        """Names of the outermost submodules that :meth:`freeze` froze (``""``: the whole backbone)."""
        return list(self._frozen_modules)

    def train(self, mode: bool = True) -> "Backbone":
        super().train(mode)
        if mode:
            for name in self.frozen_modules():
                self.get_submodule(name).eval()
        return self

    def resolved_options(self) -> dict[str, Any]:
        """Options that rebuild this architecture with :func:`create` (defaults spelled out)."""
        return dict(self.options_)

    def check_input_shape(self, shape: tuple[int, ...], what: str = "input") -> None:
        """Raise a clear error unless a batch of per-item ``shape`` fits this backbone."""
        shape = tuple(int(s) for s in shape)
        if shape != tuple(self.input_shape):
            raise Learn2HashError(
                f"{what} items have shape {shape}, but this {type(self).__name__} backbone expects "
                f"{tuple(self.input_shape)} ({self.kind})"
            )


@dataclass(frozen=True)
class BackboneInfo:
    """How to build one backbone: ``factory(input_shape, **options) -> Backbone``."""

    name: str
    kinds: tuple[str, ...]
    factory: Callable[..., Backbone]
    description: str
    #: item kinds for which this is the default backbone ("auto")
    default_for: tuple[str, ...] = field(default_factory=tuple)
    #: options that build the same architecture without reading pretrained weights (used when a
    #: saved hasher is loaded: its own weights replace them anyway)
    untrained_options: dict[str, Any] = field(default_factory=dict)
    #: a family ``NAME`` stands for every ``NAME:MODEL`` (the factory gets ``model=MODEL``)
    family: bool = False

    @property
    def display_name(self) -> str:
        return f"{self.name}:MODEL" if self.family else self.name


_BACKBONES: dict[str, BackboneInfo] = {}


def register(info: BackboneInfo) -> BackboneInfo:
    """Make ``info.name`` available to :func:`create`."""
    if info.name in _BACKBONES and _BACKBONES[info.name] is not info:
        raise RuntimeError(f"backbone {info.name!r} registered twice")
    _BACKBONES[info.name] = info
    return info


def available() -> dict[str, BackboneInfo]:
    return dict(sorted(_BACKBONES.items()))


def default_backbone(kind: str) -> str:
    """The backbone ``"auto"`` stands for, for items of ``kind``."""
    for info in _BACKBONES.values():
        if kind in info.default_for:
            return info.name
    raise Learn2HashError(f"no default backbone for {kind!r} items; name one of: "
                          f"{', '.join(sorted(i.display_name for i in _BACKBONES.values()))}")


def item_kind(input_shape: tuple[int, ...]) -> str:
    """The kind of items of per-item shape ``input_shape``: features [d], image [C,H,W], clip [T,C,H,W]."""
    return {1: "features", 3: "image", 4: "clip"}.get(len(input_shape), "unknown")


def create(name: str, input_shape: tuple[int, ...], untrained: bool = False, **options: Any) -> Backbone:
    """A freshly initialised backbone ``name`` (or ``"auto"``) for items of per-item ``input_shape``.

    ``untrained=True`` skips reading pretrained weights (for a network whose weights are loaded next).
    """
    input_shape = tuple(int(s) for s in input_shape)
    if any(s < 1 for s in input_shape):
        raise Learn2HashError(f"item shape {input_shape} has an empty dimension")
    kind = item_kind(input_shape)
    if name == "auto":
        name = default_backbone(kind)
    family, _, model = str(name).partition(":")
    if name in _BACKBONES:
        info = _BACKBONES[name]
    elif model and family in _BACKBONES and _BACKBONES[family].family:
        info = _BACKBONES[family]
        options = {**{k: v for k, v in options.items() if k != "model"}, "model": model}
    else:
        raise unknown_name("backbone", name, sorted(i.display_name for i in _BACKBONES.values()),
                           suggest=[i.name for i in _BACKBONES.values() if not i.family])
    if kind not in info.kinds:
        raise Learn2HashError(
            f"backbone {name!r} takes {' or '.join(info.kinds)} items, but the items have shape {input_shape} ({kind})"
        )
    if untrained:
        options = {**options, **info.untrained_options}
    if info.family and "model" not in options:
        raise Learn2HashError(f"backbone {name!r} needs a model name: {name}:MODEL")
    try:
        backbone = info.factory(input_shape, **options)
    except TypeError as exc:
        raise Learn2HashError(f"backbone {name!r}: bad options {sorted(options)}: {exc}") from None
    backbone.registered_name = name
    return backbone


def plain_options(value: Any) -> Any:
    """Options as JSON-friendly values (tuples become lists, numpy scalars Python numbers)."""
    if isinstance(value, dict):
        return {str(k): plain_options(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_options(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


# the former names, deprecated aliases kept for one release
register_backbone = register
available_backbones = available
create_backbone = create
