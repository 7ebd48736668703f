"""Images per second through learn2hash's image pipeline against a plain torchvision loop.

1. Makes (once, reproducibly; cached under ``.cache/bench_pipeline/``, not in git) a folder of
   20,000 colour JPEGs of 320x256 pixels in ten class folders: Fashion-MNIST training items
   upscaled (bicubic) and coloured (a seeded foreground and background colour per item, blended
   by the item's grey level, plus seeded noise), JPEG quality 90.
2. Measures, with EfficientNet-Lite0 at 224 px (the same ``HashModel``, 64-bit head, same batch
   size and worker count on both sides, one process):

   - **training** (random-resized crop + flip, forward + backward + AdamW step):
     :func:`learn2hash.train.train` over the image-folder reader's lazy split, against a plain
     loop over ``torchvision.datasets.ImageFolder`` (``RandomResizedCrop(224)``,
     ``RandomHorizontalFlip``, ``ToTensor``) and a ``DataLoader``;
   - **encoding** (resize 256 + centre crop 224, forward in inference mode):
     :func:`learn2hash.train.encode_items` against ``ImageFolder`` (``Resize(256)``,
     ``CenterCrop(224)``, ``ToTensor``) and a ``DataLoader`` loop;
   - **decode-only** rates of both loaders (the same transforms, no model) and **model-only**
     rates (a batch already in memory; fp32 and bf16 autocast), so the reader sees which bounds
     the run.

   The network normalises inside ``forward`` in both loops (the plain loop does not add a
   ``Normalize``, which would normalise twice). Each timed part includes starting the loader's
   workers. Each round draws its own images (seeded) and reads them once beforehand, so both
   sides decode from the page cache. learn2hash and the plain loop alternate (``--repeats``
   rounds, the order swapped every round); the best round of each is reported along with every
   round.

Usage::

    python benchmarks/bench_pipeline.py                      # the RESULTS.md figures
    python benchmarks/bench_pipeline.py --train-images 64 --encode-images 64 --decode-images 256 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from multiprocessing import Pool
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from learn2hash import _atomic, datasets, images
from learn2hash.datasets.files import LazyImages
from learn2hash.nn import HashHead, HashModel, create_backbone
from learn2hash.nn._torchvision import import_torchvision
from learn2hash.train import ItemDataset, TrainConfig, encode_items, make_loader, train, unpack_batch

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO / ".cache" / "bench_pipeline" / "fmnist-color-320x256"
N_IMAGES = 20_000
WIDTH, HEIGHT = 320, 256
BITS = 64


# ----------------------------------------------------------------------------- the photographs
def _colour_chunk(args: tuple[int, np.ndarray, np.ndarray, str]) -> None:
    from PIL import Image

    start, x, y, root = args
    for k, (img, label) in enumerate(zip(x, y)):
        i = start + k
        rng = np.random.default_rng([20_000, i])
        fg, bg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        g = np.asarray(Image.fromarray(img).resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC), dtype=np.float32) / 255
        rgb = bg * (1 - g[..., None]) + fg * g[..., None] + rng.normal(0, 6, (HEIGHT, WIDTH, 1))
        out = Path(root) / f"class{int(label)}" / f"{i:05d}.jpg"
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(out, quality=90)


def make_photos(root: Path, n: int = N_IMAGES, processes: int = 2) -> Path:
    """The folder of ``n`` coloured, upscaled Fashion-MNIST JPEGs (made once; a manifest marks it done)."""
    manifest = root / "manifest.json"
    if manifest.exists() and _atomic.load_json(manifest).get("n") == n:
        return root
    ds = datasets.load("fashion-mnist", protocol="standard", seed=0)
    pool_x = np.concatenate([np.asarray(ds.database.x), np.asarray(ds.query.x)])[:, 0]
    pool_y = np.concatenate([ds.database.labels.argmax(1), ds.query.labels.argmax(1)])
    if len(pool_x) < n:
        raise SystemExit(f"Fashion-MNIST has {len(pool_x)} items here, fewer than {n}")
    for c in range(10):
        (root / f"class{c}").mkdir(parents=True, exist_ok=True)
    chunk = 500
    jobs = [(s, pool_x[s:s + chunk], pool_y[s:s + chunk], str(root)) for s in range(0, n, chunk)]
    t0 = time.perf_counter()
    with Pool(processes) as pool:
        for done, _ in enumerate(pool.imap_unordered(_colour_chunk, jobs), 1):
            print(f"\rmaking photographs: {min(n, done * chunk)}/{n}", end="", file=sys.stderr)
    print(f" ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    _atomic.save_json(manifest, {"n": n, "size": [WIDTH, HEIGHT], "source": "fashion-mnist standard database+query",
                                 "jpeg_quality": 90})
    return root


# ----------------------------------------------------------------------------- pieces
def new_model(seed: int = 0) -> HashModel:
    torch.manual_seed(seed)
    bb = create_backbone("efficientnet-lite0", (3, 224, 224), untrained=True)
    return HashModel(bb, HashHead(bb.out_dim, BITS))


class CenterTask:
    """CSQ's center loss against fixed random centers (what the loop computes is the same on both sides)."""

    def __init__(self, n_classes: int):
        self.centers = torch.randint(0, 2, (n_classes, BITS), generator=torch.Generator().manual_seed(0)).float()

    def loss(self, u, batch):
        return F.binary_cross_entropy_with_logits(2 * batch.logits, self.centers[batch.labels.float().argmax(1)]), {}

    def on_epoch_start(self, epoch, model):
        pass

    def on_epoch_end(self, epoch, model):
        pass

    def extra_state(self):
        return {}

    def load_extra_state(self, state):
        pass


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def plain_loader(tv, root: Path, indices: np.ndarray, train_mode: bool, batch: int, workers: int, seed: int):
    T = tv.transforms
    tf = (T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor()]) if train_mode
          else T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()]))
    folder = tv.datasets.ImageFolder(str(root), transform=tf)
    subset = torch.utils.data.Subset(folder, indices.tolist())
    return torch.utils.data.DataLoader(subset, batch_size=batch, shuffle=train_mode, num_workers=workers,
                                       generator=torch.Generator().manual_seed(seed), drop_last=False)


def l2h_items(files: list[Path], geom: images.Geometry) -> LazyImages:
    return LazyImages(files, geom.size, geom.channels, "bench photos")


# ----------------------------------------------------------------------------- the measurements
def decode_l2h(files, geom, batch, workers) -> float:
    ds = ItemDataset(l2h_items(files, geom), geom, train=True, seed=0, flip=True)
    loader, batches = make_loader(ds, workers, torch.device("cpu"), 0)
    batches.batches = [[(0, i) for i in range(s, min(len(files), s + batch))] for s in range(0, len(files), batch)]

    def run():
        for b in loader:
            unpack_batch(b, torch.device("cpu"), "photos")

    return len(files) / timed(run)


def decode_plain(tv, root, idx, batch, workers) -> float:
    loader = plain_loader(tv, root, idx, True, batch, workers, 0)

    def run():
        for _x, _y in loader:
            pass

    return len(idx) / timed(run)


def model_only(batch: int, steps: int, amp: torch.dtype | None, channels_last: bool = True) -> tuple[float, float]:
    """(train images/s, encode images/s) on a batch already in memory (channels-last, as learn2hash
    feeds it, or plain contiguous NCHW, as ``ToTensor`` + ``default_collate`` give it)."""
    import contextlib

    model = new_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, 256, (batch, 3, 224, 224), dtype=torch.uint8).float().div_(255).contiguous(
        memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    target = torch.randint(0, 2, (batch, BITS)).float()
    ctx = (lambda: torch.autocast("cpu", dtype=amp)) if amp is not None else contextlib.nullcontext

    def train_step():
        with ctx():
            _, logits = model(x, return_logits=True)
        loss = F.binary_cross_entropy_with_logits(2 * logits.float(), target)
        opt.zero_grad()
        loss.backward()
        opt.step()

    model.train()
    train_step()  # warm-up
    t_train = timed(lambda: [train_step() for _ in range(steps)])
    model.eval()

    def encode_step():
        with torch.inference_mode(), ctx():
            model(x)

    encode_step()  # warm-up
    t_enc = timed(lambda: [encode_step() for _ in range(steps)])
    return batch * steps / t_train, batch * steps / t_enc


def train_l2h(files, labels, batch, workers) -> float:
    model = new_model()
    x = l2h_items(files, images.geometry(model.backbone.input_spec, (3, 224, 224)))
    config = TrainConfig(epochs=1, batch_size=batch, lr=1e-4, optimizer="adamw", schedule="none", augment="flip",
                         workers=workers, amp="off", seed=0, device="cpu")
    seconds = timed(lambda: train(model, x, labels, CenterTask(labels.shape[1]), config, progress=False))
    return len(files) / seconds


def train_plain(tv, root, idx, batch, workers) -> float:
    model = new_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = plain_loader(tv, root, idx, True, batch, workers, 0)
    centers = CenterTask(10).centers

    def run():
        model.train()
        for xb, yb in loader:
            _, logits = model(xb, return_logits=True)
            loss = F.binary_cross_entropy_with_logits(2 * logits, centers[yb])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    return len(idx) / timed(run)


def encode_l2h(files, batch, workers) -> float:
    model = new_model()
    x = l2h_items(files, images.geometry(model.backbone.input_spec, (3, 224, 224)))
    return len(files) / timed(lambda: encode_items(model, x, batch, "cpu", workers=workers, amp="off"))


def encode_plain(tv, root, idx, batch, workers) -> float:
    model = new_model().eval()
    loader = plain_loader(tv, root, idx, False, batch, workers, 0)

    def run():
        with torch.inference_mode():
            for xb, _ in loader:
                model(xb)

    return len(idx) / timed(run)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the photographs (made when missing)")
    p.add_argument("--images", type=int, default=N_IMAGES, help="photographs to make (default 20,000)")
    p.add_argument("--train-images", type=int, default=256)
    p.add_argument("--encode-images", type=int, default=512)
    p.add_argument("--decode-images", type=int, default=2000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--model-steps", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--parts", default="model,loops", help="what to measure: model (model-only rates), "
                                                          "loops (decode, train, encode side by side)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "bench-pipeline.json")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = make_photos(args.data, args.images)
    tv = import_torchvision()  # the CUDA torchvision build beside a CPU torch needs this
    folder = tv.datasets.ImageFolder(str(root))
    all_files = [Path(s[0]) for s in folder.samples]
    all_labels = np.asarray(folder.targets)
    rng = np.random.default_rng(0)

    def pick(n):
        idx = np.sort(rng.choice(len(all_files), n, replace=False))
        files = [all_files[i] for i in idx]
        for f in files:  # into the page cache, so that neither side pays the first read from disk
            f.read_bytes()
        return idx, files, np.eye(10, dtype=bool)[all_labels[idx]]

    geom = images.geometry(new_model().backbone.input_spec, (3, 224, 224))
    b, w = args.batch_size, args.workers
    rows: dict[str, dict[str, list[float]]] = {}

    def record(mode, who, value):
        rows.setdefault(mode, {}).setdefault(who, []).append(value)
        print(f"  {mode:<12} {who:<12} {value:8.1f} images/s", file=sys.stderr)

    parts = set(args.parts.split(","))
    if "model" in parts:
        print(f"model only (batch {b}, {args.model_steps} steps)", file=sys.stderr)
        for r in range(args.repeats):
            for name, dtype, cl in (("fp32", None, True), ("fp32-nchw", None, False), ("bf16", torch.bfloat16, True)):
                tr, en = model_only(b, args.model_steps, dtype, cl)
                record("model-train", name, tr)
                record("model-encode", name, en)
    for r in range(args.repeats if "loops" in parts else 0):
        order = ("learn2hash", "torchvision") if r % 2 == 0 else ("torchvision", "learn2hash")
        print(f"round {r + 1}", file=sys.stderr)
        idx, files, labels = pick(args.decode_images)
        for who in order:
            record("decode", who, decode_l2h(files, geom, b, w) if who == "learn2hash"
                   else decode_plain(tv, root, idx, b, w))
        idx, files, labels = pick(args.train_images)
        for who in order:
            record("train", who, train_l2h(files, labels, b, w) if who == "learn2hash"
                   else train_plain(tv, root, idx, b, w))
        idx, files, labels = pick(args.encode_images)
        for who in order:
            record("encode", who, encode_l2h(files, b, w) if who == "learn2hash"
                   else encode_plain(tv, root, idx, b, w))
    result = {"rates": rows, "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                          "threads": torch.get_num_threads(), "loadavg": os.getloadavg()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    _atomic.save_json(args.out, result)
    print("| mode | learn2hash img/s (best; all rounds) | torchvision img/s (best; all rounds) | ratio (best) |")
    print("|---|---|---|---|")
    for mode in ("decode", "train", "encode") if "loops" in parts else ():
        a, t = rows[mode]["learn2hash"], rows[mode]["torchvision"]
        print(f"| {mode} | {max(a):.1f} ({', '.join(f'{v:.1f}' for v in a)}) | {max(t):.1f} "
              f"({', '.join(f'{v:.1f}' for v in t)}) | {max(a) / max(t):.2f}x |")
    for mode in ("model-train", "model-encode") if "model" in parts else ():
        cells = "; ".join(f"{name} {max(v):.1f} ({', '.join(f'{x:.1f}' for x in v)})" for name, v in rows[mode].items())
        print(f"| {mode} | {cells} | bf16/fp32 {max(rows[mode]['bf16']) / max(rows[mode]['fp32']):.2f}x, "
              f"NCHW/channels-last {max(rows[mode]['fp32-nchw']) / max(rows[mode]['fp32']):.2f}x |")
    print(f"load average after the run: {os.getloadavg()}")
    return result


if __name__ == "__main__":
    main()
