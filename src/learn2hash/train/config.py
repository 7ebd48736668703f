"""What a training is told: :class:`TrainConfig` (the one declaration of the training-loop settings,
their types, defaults and constraints), the :class:`Batch` a loss sees and the :class:`TrainTask`
protocol a method implements.

Each field of :class:`TrainConfig` is declared with :func:`setting`: its default, the constraints
its value must meet (:mod:`learn2hash.methods.validation`) and whether it is a runtime setting (it
does not change what is learned, so it is left out of the resume fingerprint). The deep hashers
take the same fields as hyper-parameters: :func:`training_parameters` and :func:`constraints` give
their signature and their checks from here (see :mod:`learn2hash.methods.deep`).
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Protocol

from learn2hash.methods.validation import Interval, Options, String, validate_params

if TYPE_CHECKING:
    import torch
    from torch import nn

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("none", "cosine", "step")
AMP_MODES = ("auto", "off", "bf16", "fp16")
#: what becomes of an image file that cannot be read: "error" stops, naming it; "skip" leaves it
#: out (listed as skipped); "blank" puts an all-zero image in its place (listed as skipped), so
#: that encoded outputs stay aligned with the items (:class:`~learn2hash.train.data.ItemDataset`)
BAD_IMAGE_POLICIES = ("error", "skip", "blank")
#: the policies a training takes (a blank image would be trained on with the item's labels)
TRAINING_BAD_IMAGE_POLICIES = ("error", "skip")


def setting(default: Any, *constraints: Any, runtime: bool = False) -> Any:
    """A :class:`TrainConfig` field: its ``default``, the ``constraints`` a value must meet (any
    one of them; ``None`` accepts None) and whether it is a ``runtime`` setting."""
    return dataclasses.field(default=default, metadata={"constraints": list(constraints), "runtime": runtime})


@dataclass
class TrainConfig:
    """Hyper-parameters of the training loop (all but the runtime settings enter the resume fingerprint)."""

    epochs: int = setting(10, Interval("int", 1))
    batch_size: int = setting(64, Interval("int", 1))
    lr: float = setting(1e-3, Interval("real", 0, closed="neither"))
    weight_decay: float = setting(0.0, Interval("real", 0))
    optimizer: str = setting("adam", Options(OPTIMIZERS))
    momentum: float = setting(0.9, Interval("real", 0))
    #: "none", "cosine" (per step, to 0, after ``warmup_epochs`` of linear warm-up) or "step"
    #: (multiply by ``gamma`` every ``step_epochs`` epochs)
    schedule: str = setting("cosine", Options(SCHEDULES))
    warmup_epochs: float = setting(0.0, Interval("real", 0))
    step_epochs: int = setting(10, Interval("int", 1))
    gamma: float = setting(0.1, Interval("real", 0))
    #: augmentation spec, see :mod:`learn2hash.nn.augment` ("none", "flip,shift", ...; checked by its parser)
    augment: str = setting("none")
    grad_clip: float | None = setting(None, None, Interval("real", 0, closed="neither"))
    #: the backbone's parameters learn at ``lr * backbone_lr_mult`` (0: not updated), the rest at ``lr``
    backbone_lr_mult: float = setting(1.0, Interval("real", 0))
    seed: int = setting(0, Interval("int", 0))
    #: "auto" (cuda when available), "cpu", "cuda", "cuda:1" ...
    device: str = setting("auto", String(), runtime=True)
    #: DataLoader worker processes (None: 0 for arrays, :func:`~learn2hash.train.data.default_workers` for image files)
    workers: int | None = setting(None, None, Interval("int", 0), runtime=True)
    #: mixed precision: "auto" (bf16, or fp16 where the GPU lacks bf16, on CUDA; off on CPU), "off",
    #: "bf16" or "fp16"
    amp: str = setting("auto", Options(AMP_MODES), runtime=True)
    #: a corrupt or unreadable image file: "error" (stop, naming it) or "skip" (leave it out, count it)
    on_bad_image: str = setting("error", Options(TRAINING_BAD_IMAGE_POLICIES), runtime=True)

    def validate(self) -> "TrainConfig":
        """``self``, or one :class:`~learn2hash.errors.Learn2HashError` naming the first bad setting."""
        from learn2hash.nn import augment as _augment

        validate_params("training", constraints(), dataclasses.asdict(self))
        _augment.parse(self.augment)
        return self


#: the settings that do not change what is learned: left out of the resume fingerprint
RUNTIME_SETTINGS = tuple(f.name for f in dataclasses.fields(TrainConfig) if f.metadata["runtime"])


def constraints(names: Iterable[str] | None = None) -> dict[str, list]:
    """The declared constraints of the :class:`TrainConfig` fields ``names`` (default: all that have any)."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    chosen = fields if names is None else {name: fields[name] for name in names}
    return {name: f.metadata["constraints"] for name, f in chosen.items() if f.metadata["constraints"]}


def training_parameters(defaults: Mapping[str, Any]) -> list[inspect.Parameter]:
    """Keyword-only parameters for the :class:`TrainConfig` fields named in ``defaults``, in the
    order of the fields, with those defaults and the fields' annotations (a deep hasher's signature)."""
    unknown = sorted(set(defaults) - {f.name for f in dataclasses.fields(TrainConfig)})
    if unknown:
        raise TypeError(f"{', '.join(unknown)}: not TrainConfig fields")
    return [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=defaults[f.name], annotation=f.type)
            for f in dataclasses.fields(TrainConfig) if f.name in defaults]


def batches_per_epoch(n: int, batch_size: int) -> int:
    """Optimizer steps of one epoch over ``n`` items in batches of ``batch_size`` (per process): a
    last batch of fewer than 2 items, too small to train BatchNorm, is dropped unless it is the only one."""
    return max(1, n // batch_size if n % batch_size < 2 else n // batch_size + 1)


@dataclass
class Batch:
    """One mini-batch as the task's ``loss`` sees it (all tensors on the training device)."""

    x: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor
    epoch: int
    step: int
    logits: torch.Tensor | None = None


class TrainTask(Protocol):
    """What a method supplies to :func:`~learn2hash.train.train` (see the package docstring)."""

    def loss(self, u: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]: ...

    def on_epoch_start(self, epoch: int, model: nn.Module) -> None: ...

    def on_epoch_end(self, epoch: int, model: nn.Module) -> None: ...

    # optional: ``epoch_record(epoch, model) -> dict``, more entries for the epoch's history record
    # (on the main process only; e.g. an evaluation on the query split)

    def extra_state(self) -> dict[str, Any]: ...

    def load_extra_state(self, state: dict[str, Any]) -> None: ...
