"""``DeepHasher``: the base class of deep hashing methods (a backbone + hash head trained end to end).

A subclass supplies its loss and, where it needs them, hooks; everything else (network, batches,
optimizer, schedule, augmentation, checkpoints, resume, torchrun data parallelism, encoding,
saving) is shared. A minimal method::

    @register
    class MyHash(DeepHasher):
        name = "myhash"

        shared_defaults = {"epochs": 20}           # method-specific defaults of shared params

        def __init__(self, bits: int = 64, alpha: float = 1.0, **deep):
            super().__init__(bits=bits, **deep)
            self.alpha = alpha

        def _prepare(self, task):                  # optional: before training, task.model exists
            task.scratch.targets = ...             # per-item targets from task.split.labels

        def loss(self, task, u, batch):            # u = tanh(batch.logits), [b, K] in (-1, 1)
            y = batch.labels.float()               # multi-hot [b, c]; batch.index: item positions
            loss = ...
            return loss, {"part": float(loss)}

Every fit makes one :class:`TrainingTask` and passes it as the first argument of every hook: it
holds what exists only while the hasher trains: ``split`` (the training split as given),
``train_split`` (what the loop trains on: ``split``, or the cached backbone features with
``frozen_features``), ``context`` (the run's :class:`~learn2hash.methods.base.FitContext`:
checkpoints, resume, progress, where plots go), ``model`` (the network being trained: backbone +
head, or the head alone with ``frozen_features``) and ``scratch``, a namespace for the method's
own per-fit state (targets, memory banks, discrete codes). Nothing of it is set on the hasher, so
after ``fit`` the hasher holds its parameters and learned state only (what ``save`` writes).

Optional hooks (defaults do nothing): ``on_epoch_start(task, epoch)`` (0-based; called again for
the epochs after a resume), ``on_epoch_end(task, epoch)`` (after the epoch's gradient steps,
before the checkpoint; e.g. EDDH's discrete steps, using :func:`learn2hash.train.encode_batches`
on ``task.train_split.x``), ``extra_state(task)`` / ``load_extra_state(task, state)`` (per-fit
state a resumed run needs, e.g. a memory bank, put in the training checkpoints), ``_finish(task)``
(after training: keep what the fit learned, e.g. EDDH's label transfer ``a_``), and
``_get_state`` / ``_set_state`` (call ``super()``) for learned arrays saved with the hasher.
Learned state that ``encode`` or ``save`` needs (CSQ's ``centers_``) is set on the hasher.

Default recipe. The training-loop defaults are the recipe chosen for the default backbone on a CPU
by a sweep on validation data carved from the training split (``benchmarks/sweep_defaults.py``;
the sweep's table is in ``benchmarks/RESULTS.md``, "Default recipes"): 30 epochs of batch 64,
AdamW at lr 2e-3 with weight decay 5e-4, a cosine schedule after one warm-up epoch, and
``augment="auto"``, which follows the data (:func:`learn2hash.nn.augment.resolve`: flips and
2-pixel shifts for datasets registered as clothes or photographs, shifts of 1/14 of the image side
for arrays of unknown origin, nothing for images under 14 pixels such as scikit-learn's 8x8 digits,
clips, feature vectors and frozen features; what it resolved to is saved with the hasher). Without
augmentation the small network memorises the 5,000 training images of Fashion-MNIST's standard
protocol and retrieval of unseen items suffers. The pairwise methods (DHN, HashNet, DCH) learn from
the rare similar pairs of a batch and train for 60 epochs (``shared_defaults = {"epochs": 60}``
on their class: +0.9 to +1.4 points on validation), and so does EDDH (+0.7 on Fashion-MNIST,
+1.6 on digits); CSQ keeps 30 (60 gave +0.6/+0.2/+0.8 points at 16/32/64 bits on Fashion-MNIST
validation but -0.4/-0.4/-2.0 on digits). Epochs stay epochs on small training sets:
stretching the recipe to its number of optimizer steps on 500 digits (300-600 epochs) lowered CSQ
and DCH on validation; what needed the steps was HashNet's per-step continuation, which its
``gamma="auto"`` now completes over any length of fit.

The signature. Every hyper-parameter is declared once. The training-loop settings a deep hasher
takes (``epochs`` ... ``on_bad_image``, the keys of :data:`RECIPE`) are fields of
:class:`learn2hash.train.TrainConfig`, which declares their types and constraints;
:data:`RECIPE` gives their defaults here. The other shared ones are written in
:meth:`DeepHasher.__init__`, whose signature is its own parameters, then the training settings,
keyword-only. A method writes only its own parameters in its ``__init__`` and passes the rest on as
``**deep``, and declares the shared defaults it changes in ``shared_defaults``. Its signature
(``inspect.signature(CSQ)``, what ``get_params``, ``clone`` and scikit-learn read) is made from the
two when the class is defined: its own parameters, then every shared one with the method's
default, keyword-only; a call fills in those defaults before the method's ``__init__`` runs. The
training settings are checked at ``fit`` with the constraints :class:`~learn2hash.train.TrainConfig`
declares (one error naming the method and the parameter).

Shared hyper-parameters (all JSON values, saved with the hasher): ``backbone`` (a name from
:mod:`learn2hash.nn`, ``"auto"`` = smallcnn for images, mlp for feature vectors),
``backbone_options`` (dict passed to the backbone), ``hidden`` and ``dropout`` (hash head),
``head_init`` (the hash layer's start: ``"default"``, PyTorch's initialisation, under which every
item starts with nearly the same code, or ``"standardized"``, :func:`learn2hash.nn.standardize_head`
on 256 training items: each bit's pre-activation at mean 0 and std 1; the default of DHN, whose
likelihood collapses from the shared code, and of CSQ, HashNet and EDDH), the training loop's
``epochs``, ``batch_size``, ``lr``, ``weight_decay``, ``optimizer``, ``momentum``,
``schedule``, ``warmup_epochs``, ``augment``, ``grad_clip``, and the settings that do not change
what is learned: ``device``, ``encode_batch_size``, ``workers`` (DataLoader processes decoding
image files; None: one per core up to 8 for files, 0 for arrays), ``amp`` (mixed precision,
:func:`learn2hash.train.amp_dtype`) and ``on_bad_image`` ("error" or "skip": a corrupt image
file in the training set stops the fit naming it, or is left out and listed in
``skipped_images_``; when encoding, "skip" gives such an item the code of a blank image, so codes
stay aligned with their items, and logs a warning naming the file).

Items may be arrays or image files (the image-list / image-folder readers): files are decoded by
:mod:`learn2hash.images` to the geometry the backbone declares (:meth:`DeepHasher.image_geometry`).

Fine-tuning a pretrained backbone: ``backbone_lr_mult`` (the backbone's parameters learn at
``lr * backbone_lr_mult``, the head at ``lr``: two optimizer parameter groups; 0 leaves the
backbone as it is), ``freeze`` (``"none"``, ``"all"``, or N: the backbone's first N stages, see
:meth:`learn2hash.nn.Backbone.stages`; frozen parameters get no gradient and frozen parts stay in
eval mode, so BatchNorm statistics do not move) and ``frozen_features`` (True: the whole backbone is
frozen, its features of the training items are computed once, cached on disk like EDDH's visual
features (:mod:`learn2hash.features`, keyed by the items' and the weights' checksums; image files by
their paths, sizes and modification times, decoded by the pipeline's encode transform), and only the
hash head trains on them; minutes on a CPU instead of hours. Augmentation cannot apply to fixed
features, so it needs ``augment="none"``. Encoding runs backbone + head as usual.

Saved state: ``hasher.json`` (params, item shape, history, the resolved backbone) and the
weights file it names, ``weights.<hash>.pt`` (``torch.save(model.state_dict())``, loaded with
``weights_only=True``); see :meth:`learn2hash.methods.base.Hasher.save`.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import torch

from learn2hash import _atomic, images
from learn2hash.codes import Codes
from learn2hash.datasets.base import Split
from learn2hash.errors import CorruptFileError, Learn2HashError
from learn2hash.features import BackboneExtractor, files_sha256, visual_features
from learn2hash.methods.base import FitContext, Hasher, as_items
from learn2hash.methods.validation import Dict, Interval, ListOf, Options, String, spell_out_signature
from learn2hash import nn as networks
from learn2hash.nn import HashHead, HashModel, standardize_head
from learn2hash.nn import augment as _augment
from learn2hash.nn.fixed_order import fixed_order
from learn2hash.nn.registry import plain_options
from learn2hash.train import (RUNTIME_SETTINGS, Batch, TrainConfig, amp_dtype, constraints, encode_items, read_items,
                              resolve_device, train, training_parameters)

log = logging.getLogger("learn2hash.methods")
WEIGHTS_NAME = "weights.pt"
#: the shared recipe (see "Default recipe" above): the training-loop settings a deep hasher takes, the
#: fields of :class:`~learn2hash.train.TrainConfig` named here (which declares their types and
#: constraints), with the deep hashers' defaults
RECIPE: dict[str, Any] = {
    "epochs": 30, "batch_size": 64, "lr": 2e-3, "weight_decay": 5e-4, "optimizer": "adamw", "momentum": 0.9,
    "schedule": "cosine", "warmup_epochs": 1.0, "augment": "auto", "grad_clip": None, "backbone_lr_mult": 1.0,
    "device": "auto", "workers": None, "amp": "auto", "on_bad_image": "error",
}
#: parameters that do not change what is learned (left out of the resume fingerprint): the training
#: loop's runtime settings and the encoding batch size
RUNTIME_PARAMS = RUNTIME_SETTINGS + ("encode_batch_size",)
#: ``head_init``: "default" (PyTorch's initialisation of the hash layer) or "standardized"
#: (:func:`learn2hash.nn.standardize_head` on a seeded sample of 256 training items)
HEAD_INITS = ("default", "standardized")
#: how many training items ``head_init="standardized"`` measures the pre-activations on
HEAD_INIT_SAMPLE = 256


def fit_context(context: FitContext | None, checkpoint_dir: str | os.PathLike | None, resume: bool,
             progress: bool | None) -> FitContext | None:
    """``context``, or the one that ``fit``'s shorthand keywords describe (not both)."""
    shorthand = checkpoint_dir is not None or resume or progress is not None
    if context is not None and shorthand:
        raise Learn2HashError("fit: give checkpoint_dir / resume / progress or context, not both")
    if context is None and shorthand:
        return FitContext(checkpoint_dir=None if checkpoint_dir is None else Path(checkpoint_dir), resume=bool(resume),
                          progress=progress)
    return context


@dataclasses.dataclass(eq=False)
class TrainingTask:
    """One fit of a :class:`DeepHasher`: what exists only while it trains (see the module docstring).

    It is the task :func:`learn2hash.train.train` runs: its ``loss``, ``on_epoch_start``,
    ``on_epoch_end``, ``extra_state`` and ``load_extra_state`` call the hasher's hooks of those
    names with the task as first argument.
    """

    hasher: "DeepHasher"
    split: Split
    context: FitContext
    model: HashModel
    train_split: Split
    scratch: SimpleNamespace = dataclasses.field(default_factory=SimpleNamespace)

    def device(self) -> torch.device:
        """Where :attr:`model` is now (the training loop moves it to its device after ``_prepare``)."""
        return next(self.model.parameters()).device

    # ------------------------------------------------------------------ learn2hash.train.TrainTask
    def loss(self, u: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        return self.hasher.loss(self, u, batch)

    def on_epoch_start(self, epoch: int, model: torch.nn.Module) -> None:
        self.hasher.on_epoch_start(self, epoch)

    def on_epoch_end(self, epoch: int, model: torch.nn.Module) -> None:
        self.hasher.on_epoch_end(self, epoch)

    def epoch_record(self, epoch: int, model: torch.nn.Module) -> dict[str, Any]:
        """What the context's ``evaluate`` gives after every ``evaluate_every``-th epoch and the last."""
        every, evaluate = int(self.context.evaluate_every or 0), self.context.evaluate
        last = epoch + 1 == int(self.hasher.epochs)
        if evaluate is None or every <= 0 or not ((epoch + 1) % every == 0 or last):
            return {}
        network = self.scratch.network  # the whole network (the head is shared with a frozen-feature model)
        hasher = self.hasher

        def encode(x: Any) -> Codes:
            u, _, _ = encode_items(network, x, int(hasher.encode_batch_size), self.device(),
                                   workers=hasher.workers, amp=hasher.amp, item_shape=hasher.input_shape_,
                                   on_bad_image="blank" if hasher.on_bad_image == "skip" else hasher.on_bad_image)
            return Codes.from_signs(u.numpy()) if len(u) else Codes.empty(hasher.bits)

        return {"evaluation": dict(evaluate(encode))}

    def extra_state(self) -> dict[str, Any]:
        return self.hasher.extra_state(self)

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.hasher.load_extra_state(self, state)


class DeepHasher(Hasher):
    """Backbone + hash head trained by :func:`learn2hash.train.train` with the subclass's ``loss``."""

    input_kind = "any"
    supervised = True
    #: parameters that do not change what is learned (a resumed run may change them)
    runtime_params = RUNTIME_PARAMS
    takes_image_files = True
    #: the hash layer ends in a BatchNorm1d over the K outputs (a method's choice, e.g. OrthoHash's)
    head_batch_norm = False
    #: the defaults of shared parameters (those of :meth:`__init__`) that a method changes; its
    #: signature shows them (see "The signature" in the module docstring)
    shared_defaults: ClassVar[dict[str, Any]] = {}
    #: the training settings' constraints are TrainConfig's (see "The signature" in the module docstring)
    _parameter_constraints = {
        "backbone": [String()], "backbone_options": [None, Dict()],
        "hidden": [ListOf(Interval("int", 1))], "dropout": [Interval("real", 0, 1, closed="left")],
        "encode_batch_size": [Interval("int", 1)], "head_init": [Options(HEAD_INITS)], **constraints(RECIPE),
    }

    def __init__(self, bits: int = 64, seed: int = 0, backbone: str = "auto",
                 backbone_options: dict[str, Any] | None = None, hidden: list[int] | tuple[int, ...] = (),
                 dropout: float = 0.0, freeze: str | int = "none", frozen_features: bool = False,
                 encode_batch_size: int = 1024, head_init: str = "default", **training: Any):
        """``training``: the training-loop settings of :data:`RECIPE` (the signature lists them)."""
        super().__init__(bits=bits, seed=seed)
        self.backbone = backbone
        self.backbone_options = backbone_options
        self.hidden = hidden
        self.dropout = dropout
        self.freeze = freeze
        self.frozen_features = frozen_features
        self.encode_batch_size = encode_batch_size
        self.head_init = head_init
        for name, value in training.items():
            setattr(self, name, value)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spell_out_signature(cls)

    def _n_features(self) -> int | None:
        shape = getattr(self, "input_shape_", None)
        return None if shape is None else int(np.prod(shape))

    # ------------------------------------------------------------------ subclass interface
    def loss(self, task: TrainingTask, u: torch.Tensor, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        """The training loss of one batch and its named parts (for the log)."""
        raise NotImplementedError(f"{type(self).__name__} must define loss(task, u, batch)")

    def _prepare(self, task: TrainingTask) -> None:
        """Called once per ``fit`` after the network is built, before the first epoch."""

    def on_epoch_start(self, task: TrainingTask, epoch: int) -> None:
        """Called before each epoch (0-based), also for the epochs after a resume."""

    def on_epoch_end(self, task: TrainingTask, epoch: int) -> None:
        """Called after each epoch's gradient steps, before the checkpoint is written."""

    def extra_state(self, task: TrainingTask) -> dict[str, Any]:
        """Per-fit state to put in training checkpoints (tensors, numbers, strings)."""
        return {}

    def load_extra_state(self, task: TrainingTask, state: dict[str, Any]) -> None:
        """Restore what :meth:`extra_state` returned, when resuming."""

    def _finish(self, task: TrainingTask) -> None:
        """Called once after training (``history_`` and ``model_`` set): keep what the fit learned."""

    # ------------------------------------------------------------------ building blocks
    def resolved_augment(self, split: Split | None = None) -> str:
        """The augmentation ``augment`` stands for when training on ``split`` (``"auto"`` resolved by
        :func:`learn2hash.nn.augment.resolve`; ``"none"`` with ``frozen_features``, whose fixed
        features cannot be augmented)."""
        if self.frozen_features is True and str(self.augment).strip().lower() == _augment.AUTO:
            return "none"
        return _augment.resolve(self.augment, split)

    def resolved_params(self, split: Split | None = None) -> dict[str, Any]:
        """The parameters whose value depends on the training data, as they resolve for ``split``."""
        return {"augment": self.resolved_augment(split)}

    def train_config(self, split: Split | None = None) -> TrainConfig:
        """The training-loop settings these hyper-parameters stand for on ``split`` (validated)."""
        settings = {name: getattr(self, name) for name in RECIPE}
        return TrainConfig(**{**settings, "augment": self.resolved_augment(split)}, seed=self.seed).validate()

    def _standardize_head(self, task: TrainingTask, config: TrainConfig) -> None:
        """``head_init="standardized"``: the hash layer's pre-activations start with mean 0 and
        standard deviation 1 in every bit over a seeded sample of the training items (the items as
        the loop reads them, unaugmented); resumed runs then load their checkpoint's weights."""
        x = task.train_split.x
        n = len(x)
        positions = np.sort(np.random.default_rng(int(self.seed)).choice(n, min(n, HEAD_INIT_SAMPLE), replace=False))
        device = resolve_device(config.device)
        task.model.to(device)
        xb = read_items(task.model, x, positions, device)
        if xb is None or len(xb) < 2:
            raise Learn2HashError("head_init='standardized' needs at least 2 readable training items")
        standardize_head(task.model, xb)

    def build_model(self, input_shape: tuple[int, ...], untrained: bool = False,
                    backbone: dict[str, Any] | None = None) -> HashModel:
        """A fresh network for items of ``input_shape`` (``untrained``: skip pretrained weights).

        ``backbone``: ``{"name", "options"}`` as recorded in a saved hasher (the backbone that was
        resolved at training time, every default spelled out); default: this hasher's parameters.
        """
        hidden = [int(h) for h in self.hidden or []]
        name, options = ((backbone["name"], backbone["options"]) if backbone is not None
                         else (self.backbone, self.backbone_options or {}))
        bb = networks.create(name, tuple(input_shape), untrained=untrained, **options)
        # batch norms and convolutions that train to the same bits at any CPU thread count
        head = HashHead(bb.out_dim, self.bits, hidden, self.dropout, batch_norm=self.head_batch_norm)
        return fixed_order(HashModel(bb, head))

    def identity(self) -> dict[str, Any]:
        """What enters the resume fingerprint besides the training-loop settings."""
        params = {k: v for k, v in self.get_params().items() if k not in RUNTIME_PARAMS}
        return {"method": self.name, "params": params}

    # ------------------------------------------------------------------ fit / encode
    def fit(self, X: Any, y: Any = None, *, context: FitContext | None = None,
            checkpoint_dir: str | os.PathLike | None = None, resume: bool = False,
            progress: bool | None = None) -> "DeepHasher":
        """Train on items ``X`` with labels ``y`` (or a :class:`Split` as ``X``).

        ``X``: images ``[n, H, W]`` (grey), ``[n, H, W, C]`` or ``[n, C, H, W]`` (``uint8`` 0..255 or
        floats), clips ``[n, T, C, H, W]`` or feature vectors ``[n, d]``; ``y``: class ids
        ``int[n]`` or multi-hot ``[n, c]``. ``transform`` / ``encode`` take the same layouts.

        ``checkpoint_dir``: where a checkpoint is written after every epoch; ``resume=True``
        continues from the checkpoint there (a checkpoint of another configuration is an error).
        ``progress``: show a progress bar (default: when stderr is a terminal). These three are
        shorthand for ``context=FitContext(checkpoint_dir=..., resume=..., progress=...)``
        (:class:`~learn2hash.methods.base.FitContext`, which ``learn2hash train`` passes); give
        one or the other.
        """
        return super().fit(as_items(X), y, context=fit_context(context, checkpoint_dir, resume, progress))

    def _fit(self, split: Split, context: FitContext) -> None:
        config = self.train_config(split)
        if not isinstance(self.frozen_features, (bool, np.bool_)):
            raise Learn2HashError(f"frozen_features must be true or false, got {self.frozen_features!r}")
        if self.frozen_features and config.augment != "none":
            raise Learn2HashError(
                f"frozen_features=True trains the hash head on fixed backbone features, which cannot be "
                f"augmented: pass augment='none' (augment is {config.augment!r})")
        self.augment_ = config.augment  # what ran, saved with the hasher
        shape = tuple(int(s) for s in split.item_shape)
        torch.manual_seed(int(self.seed))
        model = self.build_model(shape)
        model.backbone.freeze("all" if self.frozen_features else self.freeze)
        self.input_shape_ = shape
        if self.frozen_features:
            # the head trains on the cached features; it is the same module as model.head
            task = TrainingTask(self, split, context, HashModel(torch.nn.Identity(), model.head),
                                self._feature_split(model, split, context))
        else:
            task = TrainingTask(self, split, context, model, split)
        task.scratch.network = model
        self._prepare(task)
        if self.head_init == "standardized":
            self._standardize_head(task, config)
        skipped: list[tuple[int, str, str]] = []
        self.history_ = train(task.model, task.train_split.x, task.train_split.labels, task, config,
                              checkpoint_dir=context.checkpoints(), resume=context.resume, progress=context.progress,
                              identity=self.identity(), skipped=skipped)
        self.skipped_images_ = [{"position": i, "path": p, "error": m} for i, p, m in skipped]
        if self.frozen_features:
            model.scale = task.model.scale
            model.to(task.device())
        self.model_ = model.eval()
        # the same bits at any CPU thread count (learn2hash.nn.fixed_order); a GPU's kernels decide for themselves
        self.thread_invariant_ = task.device().type == "cpu" and amp_dtype(config.amp, task.device()) is None
        self._finish(task)

    def _feature_split(self, model: HashModel, split: Split, context: FitContext) -> Split:
        """``split`` with its items replaced by their (cached) features from ``model``'s frozen backbone."""
        shape = tuple(int(s) for s in split.item_shape)
        device = resolve_device(self.device)
        model.to(device)
        extractor = BackboneExtractor(model.backbone, device, batch_size=min(256, int(self.encode_batch_size)))
        files = {}
        paths = images.image_paths(split.x)
        if paths is not None:  # decoded by the pipeline's encode transform, keyed by the files as they are
            geom = images.geometry(model.backbone.input_spec, shape)
            policy = "blank" if self.on_bad_image == "skip" else self.on_bad_image

            def compute() -> np.ndarray:
                out, _, skipped = encode_items(
                    model, split.x, int(self.encode_batch_size), device, "features", workers=self.workers,
                    on_bad_image=policy, item_shape=shape, progress=bool(context.progress))
                for _, path, message in skipped:
                    log.warning("%s; its features are a blank image's (on_bad_image='skip')", message)
                return out.numpy()

            files = {"data_sha256": files_sha256(paths, dataclasses.asdict(geom)), "compute": compute}
        z = visual_features(split.x, extractor, progress=context.progress,
                            description=f"{model.backbone.registered_name} features", **files)
        return dataclasses.replace(split, x=z, kind="features", views={})

    def image_geometry(self) -> "images.Geometry":
        """The geometry image files and uploads are decoded to for this hasher (its backbone's input)."""
        self._check_fitted()
        return images.geometry(self.model_.backbone.input_spec, self.input_shape_)

    def _check_items(self, x: Any, what: str = "input") -> Any:
        if images.image_paths(x) is not None:
            return x  # image files: decoded to this network's geometry whatever size the reader states
        if hasattr(x, "detach"):
            x = x.detach().cpu().numpy()
        if not hasattr(x, "shape") or not hasattr(x, "__getitem__"):
            x = np.asarray(x)
        x = as_items(x, self.input_shape_)
        shape = tuple(int(s) for s in x.shape)
        accepted = {tuple(self.input_shape_)}
        if len(self.input_shape_) == 3:
            accepted.add(self.image_geometry().item_shape)  # what images.encode_image gives for it
        if len(shape) == 2 and len(self.input_shape_) == 1 and shape[1] != self.input_shape_[0]:
            raise Learn2HashError(f"X has {shape[1]} features, but {type(self).__name__} is expecting "
                                  f"{self.input_shape_[0]} features as input ({what} of shape {shape})")
        if len(shape) < 1 or shape[1:] not in accepted:
            raise Learn2HashError(
                f"{what} has shape {shape}; this {self.name} hasher was fitted on items of shape "
                f"{tuple(self.input_shape_)}, so expected [n, {', '.join(map(str, self.input_shape_))}]"
            )
        return x

    def _model_device(self) -> torch.device:
        return next(self.model_.parameters()).device

    def transform(self, x: Any) -> np.ndarray:
        """Continuous codes ``u = tanh(...)``, ``float32[n, K]`` (the signs are the bits)."""
        self._check_fitted()
        return self._encode_outputs(x, "u")

    def _encode_outputs(self, x: Any, output: str) -> np.ndarray:
        x = self._check_items(x)
        policy = "blank" if self.on_bad_image == "skip" else self.on_bad_image
        out, _, skipped = encode_items(self.model_, x, int(self.encode_batch_size), self._model_device(), output,
                                       workers=self.workers, amp=self.amp, on_bad_image=policy,
                                       item_shape=self.input_shape_)
        for _, path, message in skipped:
            log.warning("%s; encoded as a blank image (on_bad_image='skip')", message)
        return out.numpy()

    def features(self, x: Any) -> np.ndarray:
        """The backbone's features of ``x``, ``float32[n, out_dim]``."""
        self._check_fitted()
        return self._encode_outputs(x, "features")

    def encode_images(self, paths: list[Any], on_bad_image: str | None = None, progress: bool = False
                      ) -> tuple[Codes, np.ndarray, list[dict[str, Any]]]:
        """Codes of image files (decoded in ``workers`` processes to :meth:`image_geometry`).

        Returns ``(codes of the images kept, their positions in paths, skipped)``; with
        ``on_bad_image="skip"`` (default: this hasher's setting) an unreadable image is left out and
        listed in ``skipped`` (``position``, ``path``, ``error``), else it stops with an error naming it.
        """
        from learn2hash.datasets.files import LazyImages

        self._check_fitted()
        if len(self.input_shape_) != 3:
            raise Learn2HashError(f"this {self.name} hasher was fitted on items of shape {tuple(self.input_shape_)}, "
                                  "not images [C, H, W]; it cannot encode image files")
        geom = self.image_geometry()
        files = LazyImages([Path(p) for p in paths], geom.size, geom.channels, "images")
        u, kept, skipped = encode_items(self.model_, files, int(self.encode_batch_size), self._model_device(),
                                        workers=self.workers, amp=self.amp,
                                        on_bad_image=on_bad_image or self.on_bad_image,
                                        item_shape=self.input_shape_, progress=progress)
        codes = Codes.from_signs(u.numpy()) if len(u) else Codes.empty(self.bits)
        skipped = [{"position": i, "path": p, "error": m} for i, p, m in skipped]
        return codes.with_provenance(self.provenance()), kept, skipped

    def _encode(self, x: Any) -> Codes:
        u = self.transform(x)
        if len(u) == 0:
            return Codes.empty(self.bits)
        return Codes.from_signs(u)

    # ------------------------------------------------------------------ persistence
    def _weights_bytes(self) -> bytes:
        buf = io.BytesIO()
        torch.save({k: v.detach().cpu() for k, v in self.model_.state_dict().items()}, buf)
        return buf.getvalue()

    def _get_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        backbone = self.model_.backbone
        return ({"input_shape": list(self.input_shape_), "history": self.history_,
                 "augment": self.augment_, "thread_invariant": bool(getattr(self, "thread_invariant_", False)),
                 "backbone": {"name": backbone.registered_name, "options": backbone.resolved_options()}}, {})

    def _extra_files(self) -> dict[str, bytes]:
        return {WEIGHTS_NAME: self._weights_bytes()}

    def _probe_input(self) -> Any:
        return None  # the weights are checked against a network of ``bits`` outputs when loaded

    def _set_state(self, state: dict[str, Any], arrays: dict[str, np.ndarray], folder: Path,
                   files: dict[str, Path]) -> None:
        # version 2 folders name the weights file (checksum checked by Hasher.load); version 1: weights.pt
        path = files.get(WEIGHTS_NAME, folder / WEIGHTS_NAME)
        if not path.exists():
            raise CorruptFileError(f"saved {self.name} hasher in {folder} has no {WEIGHTS_NAME}")
        if "weights_sha256" in state and _atomic.sha256_file(path) != state["weights_sha256"]:
            raise CorruptFileError(f"{path} does not match the checksum recorded in {folder / 'hasher.json'}")
        self.input_shape_ = tuple(int(s) for s in state["input_shape"])
        self.history_ = state.get("history", [])
        self.augment_ = str(state.get("augment", self.augment))
        self.thread_invariant_ = bool(state.get("thread_invariant", False))
        recorded = state.get("backbone")
        if recorded is not None:
            given = self.backbone_options or {}
            if (self.backbone not in ("auto", recorded.get("name"))
                    or any(recorded.get("options", {}).get(k, object()) != v for k, v in plain_options(given).items())):
                raise CorruptFileError(
                    f"{folder / 'hasher.json'} is inconsistent: parameters backbone={self.backbone!r}, "
                    f"backbone_options={given!r}, but the network was recorded as {recorded!r}")
        model = self.build_model(self.input_shape_, untrained=True, backbone=recorded)
        try:
            weights = torch.load(path, map_location="cpu", weights_only=True)
            model.load_state_dict(weights)
        except RuntimeError as exc:
            raise CorruptFileError(
                f"{path} does not fit a {self.name} network of {self.bits} bits with these parameters: "
                f"{str(exc).splitlines()[0]}"
            ) from None
        except Exception as exc:
            raise CorruptFileError(f"{path} cannot be read: {type(exc).__name__}: {exc}") from None
        model.eval()
        self.model_ = model.to(resolve_device(self.device))


# DeepHasher's own signature: its parameters, then the training settings of RECIPE (keyword-only)
spell_out_signature(DeepHasher, training_parameters(RECIPE))
