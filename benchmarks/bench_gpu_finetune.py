"""Fine-tuning pretrained backbones on a GPU: CSQ training throughput and accuracy.

Two measurements, both on one CUDA device:

1. ``throughput``: images per second of CSQ training steps (forward, loss, backward, optimiser)
   and of encoding with a ResNet-50 backbone at 224 px, in fp32, bf16 autocast and fp16 autocast
   (with a gradient scaler), channels-last, batch 64 (the CSQ reference code's batch; ``--batches``
   adds others). Inputs
   are ``uint8`` batches already on the device, so this is the model-bound rate (the data
   pipeline's own rate is measured by ``bench_pipeline.py``). The same through ``CSQ.fit``
   (learn2hash's loader and ``amp`` setting) on 2,048 in-memory images.
2. ``accuracy``: CSQ, 64 bits, on Fashion-MNIST (protocol ``standard``) with the pretrained
   EfficientNet-Lite0 fine-tuned end to end at 224 px. The learning rate is chosen on a
   validation split carved from the 5,000 training images (4,000 train / 1,000 validation
   queries, 100 per class, mAP@1000 against the 4,000), never on the test queries; the chosen
   rate is then trained on all 5,000 and evaluated on the standard protocol.

    python benchmarks/bench_gpu_finetune.py --out results.json            # both
    python benchmarks/bench_gpu_finetune.py --skip-accuracy               # throughput only
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from sweep_defaults import carve  # noqa: E402  (the one carve of validation from train)


def throughput(arch: str, batch: int, precision: str, steps: int, warmup: int) -> dict:
    from learn2hash.nn import HashHead, HashModel, create_backbone

    dev = torch.device("cuda")
    torch.manual_seed(0)
    bb = create_backbone(arch, (3, 224, 224), untrained=True)
    model = HashModel(bb, HashHead(bb.out_dim, 64)).to(dev).to(memory_format=torch.channels_last)
    # the CSQ reference recipe's optimiser
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-5, weight_decay=1e-5)
    x = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8, device=dev)
    x = x.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 2, (batch, 64), device=dev).float()
    dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    scaler = torch.amp.GradScaler("cuda", enabled=precision == "fp16")

    def step() -> None:
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            u, logits = model(x.float().div_(255), return_logits=True)
            loss = F.binary_cross_entropy_with_logits(2.0 * logits.float(), target) \
                + 1e-4 * torch.log(torch.cosh(u.float().abs() - 1)).mean()
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    model.train()
    for _ in range(warmup):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    train_ips = steps * batch / (time.perf_counter() - t0)

    model.eval()
    xe = torch.randint(0, 256, (256, 3, 224, 224), dtype=torch.uint8, device=dev)
    xe = xe.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
        for _ in range(3):
            model(xe.float().div_(255))
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(steps):
            model(xe.float().div_(255))
        torch.cuda.synchronize()
    encode_ips = steps * 256 / (time.perf_counter() - t0)
    return {"arch": arch, "batch": batch, "precision": precision, "train_images_per_s": round(train_ips, 1),
            "encode_images_per_s": round(encode_ips, 1), "max_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def library_throughput(batch: int, amp: str, n: int = 2048) -> dict:
    """Images per second of ``CSQ.fit`` itself (learn2hash's loader, channels-last uint8 batches,
    autocast per ``amp``) with a ResNet-50 at 224 px: the second of two epochs over ``n`` images."""
    from learn2hash import methods
    from learn2hash.datasets.base import Split

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (n, 3, 224, 224), dtype=np.uint8)
    labels = np.eye(10, dtype=bool)[rng.integers(0, 10, n)]
    h = methods.create("csq", bits=64, backbone="resnet50", epochs=2, batch_size=batch, optimizer="rmsprop",
                       lr=1e-5, weight_decay=1e-5, lam=1e-4, augment="none", amp=amp)
    h.fit(Split(x=x, labels=labels, name="synthetic"))
    seconds = h.history_[-1]["seconds"]
    return {"arch": "resnet50", "batch": batch, "amp": amp, "train_images_per_s": round(n / seconds, 1)}


def accuracy(lrs: list[float], epochs: int, mult: float | None) -> dict:
    import learn2hash as l2h
    from learn2hash import datasets, methods

    ds = datasets.load("fashion-mnist", protocol="standard", seed=0)
    train = ds.train
    # validation carved from the training split: 100 items per class
    fit_split, val_split = carve(train, 100, 0)

    def make(lr: float):
        params = dict(bits=64, backbone="efficientnet-lite0", epochs=epochs, lr=lr, batch_size=64,
                      optimizer="adamw", weight_decay=5e-4, schedule="cosine", warmup_epochs=1.0,
                      augment="flip,shift:2", encode_batch_size=512)
        if mult is not None:
            params["backbone_lr_mult"] = mult
        return methods.create("csq", **params)

    sweep = []
    for lr in lrs:
        t0 = time.perf_counter()
        h = make(lr).fit(fit_split)
        r = l2h.evaluate(h.encode(val_split.x), val_split.labels, h.encode(fit_split.x), fit_split.labels, topk=1000)
        sweep.append({"lr": lr, "validation_map@1000": round(float(r["map@1000"]), 4),
                      "seconds": round(time.perf_counter() - t0, 1)})
        print("sweep", sweep[-1], flush=True)
    best = max(sweep, key=lambda s: s["validation_map@1000"])
    t0 = time.perf_counter()
    h = make(best["lr"]).fit(train)
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    q, db = h.encode(ds.query.x), h.encode(ds.database.x)
    encode_s = time.perf_counter() - t0
    r = l2h.evaluate(q, ds.query.labels, db, ds.database.labels, topk=1000)
    r_all = l2h.evaluate(q, ds.query.labels, db, ds.database.labels)
    return {"dataset": "fashion-mnist", "protocol": "standard", "bits": 64, "backbone": "efficientnet-lite0 (ImageNet)",
            "epochs": epochs, "backbone_lr_mult": mult, "sweep": sweep, "chosen_lr": best["lr"],
            "map@1000": round(float(r["map@1000"]), 4), "map@all": round(float(r_all["map@all"]), 4),
            "train_seconds": round(train_s, 1), "encode_seconds": round(encode_s, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batches", default="64", help="training batch sizes of the throughput part, e.g. 64,256")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--lrs", default="1e-4,3e-4,1e-3")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--backbone-lr-mult", type=float, default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_gpu_finetune.py needs a CUDA device")
    torch.backends.cudnn.benchmark = True
    result = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "python": platform.python_version(),
              "throughput": []}
    for batch in (int(b) for b in args.batches.split(",")):
        for precision in ("fp32", "bf16", "fp16"):
            r = throughput("resnet50", batch, precision, args.steps, warmup=5)
            print("throughput", r, flush=True)
            result["throughput"].append(r)
    result["library"] = []
    for batch in (int(b) for b in args.batches.split(",")):
        for amp in ("off", "bf16", "fp16"):
            r = library_throughput(batch, amp)
            print("library", r, flush=True)
            result["library"].append(r)
    if not args.skip_accuracy:
        result["accuracy"] = accuracy([float(v) for v in args.lrs.split(",")], args.epochs, args.backbone_lr_mult)
        print("accuracy", result["accuracy"], flush=True)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
