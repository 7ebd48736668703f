"""CSQ on video: a 3-D CNN (``c3d-small``) against frame pooling (``framepool-small``) on ``moving-fashion``.

On ``moving-fashion`` the label is 4 x class + direction of travel, and a clip and its
reversed-direction twin hold the same set of frames. A frame-pooling network computes a
symmetric function of the frames, so it cannot tell twins apart; a 3-D CNN can. This script:

1. computes two reference figures from the labels alone, with the codes CSQ aims at (each
   clip's hash center, centroid of its labels' centers): the **order-aware oracle** (centers of
   the 40 labels) and the **order-invariant oracle** (centers of the 20 labels class x axis, the
   direction folded away: the best an order-invariant network can hope for, because twins must
   share a code);
2. trains CSQ with each backbone through :func:`learn2hash.runs.train_run` (exactly what
   ``learn2hash train`` runs), one after the other with the same recipe, and reports mAP@100
   (the paper's UCF101 protocol), mAP over the whole database, wall seconds and process CPU
   seconds of training, and the load average sampled every 15 s while each one trained (the
   machine is shared: wall times depend on the load).

Results go to ``--out`` (run folders and ``bench-video.json``); a Markdown summary is printed.

Usage::

    python benchmarks/bench_video.py                                  # the RESULTS.md figures
    python benchmarks/bench_video.py --train-size 200 --epochs 1 --query-size 50 --database-size 200  # smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from learn2hash import _atomic, datasets
from learn2hash.centers import centroid_centers, hash_centers
from learn2hash.datasets import clips
from learn2hash.metrics import evaluate
from learn2hash.runs import train_run

DATASET = "moving-fashion"
TOPK = 100
BACKBONES = ("framepool-small", "c3d-small")


def fold_direction(labels: np.ndarray) -> np.ndarray:
    """``bool[n, 40]`` labels ``4 * class + direction`` -> ``bool[n, 20]`` labels ``2 * class + axis``
    (axis 0: right/left, 1: down/up), i.e. what an order-invariant model can know of a clip."""
    n_dir = len(clips.DIRECTIONS)
    rows, cols = np.nonzero(labels)
    out = np.zeros((len(labels), labels.shape[1] // 2), dtype=bool)
    out[rows, 2 * (cols // n_dir) + (cols % n_dir) // 2] = True
    return out


def oracle_maps(ds: datasets.Dataset, bits: int, seed: int) -> dict[str, dict[str, float]]:
    """mAP@100 and mAP@all of CSQ's target codes (hash centers) computed from the true labels."""
    q, db = ds.query.labels, ds.database.labels
    out = {}
    for name, fq, fdb in (("order-aware oracle", q, db), ("order-invariant oracle", fold_direction(q),
                                                          fold_direction(db))):
        centers = hash_centers(fq.shape[1], bits, seed=seed)
        cq, cdb = centroid_centers(fq, centers, seed=seed), centroid_centers(fdb, centers, seed=seed)
        out[name] = {f"map@{TOPK}": float(evaluate(cq, q, cdb, db, topk=TOPK)[f"map@{TOPK}"]),
                     "map@all": float(evaluate(cq, q, cdb, db)["map@all"])}
    return out


class LoadSampler:
    """The 1-minute load average, sampled every ``every`` seconds in a background thread."""

    def __init__(self, every: float = 15.0):
        self.every, self.samples = every, [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> "LoadSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far (all its threads)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def cli_command(backbone: str, args: argparse.Namespace, out: Path) -> str:
    return (f"learn2hash train --method csq --dataset {DATASET} --backbone {backbone} --bits {args.bits} "
            f"--epochs {args.epochs} --batch-size {args.batch_size} --lr {args.lr} --seed {args.seed} "
            f"--data-param train_size={args.train_size} --data-param query_size={args.query_size} "
            f"--data-param database_size={args.database_size} --param device=cpu --out {out}")


def train_one(backbone: str, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    params = {"backbone": backbone, "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
              "device": "cpu"}
    data_params = {"train_size": args.train_size, "query_size": args.query_size,
                   "database_size": args.database_size}
    if out.exists():
        shutil.rmtree(out)
    c0, t0 = cpu_seconds(), time.perf_counter()
    with LoadSampler() as load:
        run = train_run("csq", DATASET, args.bits, out, seed=args.seed, params=params, data_params=data_params,
                        progress=False, log=lambda msg: print(msg, file=sys.stderr))
    m = run.metrics()
    history = run.history()
    return {"backbone": backbone, "command": cli_command(backbone, args, out),
            f"map@{TOPK}": m[f"map@{TOPK}"], "map@all": m["map@all"], "precision_at_radius2": m["precision_at_radius2"],
            "train_seconds": m["train_seconds"], "encode_seconds": m["encode_seconds"],
            "seconds_per_epoch": [round(h["seconds"], 1) for h in history],
            "loss_per_epoch": [round(h["loss"], 4) for h in history],
            "total_wall_seconds": time.perf_counter() - t0, "process_cpu_seconds": cpu_seconds() - c0,
            "load_mean": float(np.mean(load.samples)), "load_min": float(np.min(load.samples)),
            "load_max": float(np.max(load.samples)),
            "parameters": sum(p.numel() for p in run.hasher().model_.backbone.parameters())}


def markdown(result: dict[str, Any]) -> str:
    a = result["args"]
    lines = [f"Protocol: {DATASET}, seed {a['seed']}, train {a['train_size']:,} / query {a['query_size']:,} / "
             f"database {a['database_size']:,} clips, {a['bits']} bits; CSQ defaults (Hadamard centers, log cosh "
             f"quantization, lam 0.01), epochs {a['epochs']}, batch {a['batch_size']}, lr {a['lr']}. "
             f"Machine: {result['machine']}.", "",
             f"| codes | backbone params | mAP@{TOPK} | mAP@all | train wall s | train CPU s (process) | "
             "load avg (mean, min-max) |", "|---|---:|---:|---:|---:|---:|---|"]
    for name, m in result["oracles"].items():
        lines.append(f"| {name} (hash centers from the labels) | – | {m[f'map@{TOPK}']:.4f} | {m['map@all']:.4f} | – | – | – |")
    for r in result["runs"]:
        lines.append(f"| CSQ + {r['backbone']} | {r['parameters']:,} | {r[f'map@{TOPK}']:.4f} | {r['map@all']:.4f} | "
                     f"{r['train_seconds']:.0f} | {r['process_cpu_seconds']:.0f} | "
                     f"{r['load_mean']:.1f} ({r['load_min']:.1f}-{r['load_max']:.1f}) |")
    by = {r["backbone"]: r for r in result["runs"]}
    if set(BACKBONES) <= set(by):
        gap = by["c3d-small"][f"map@{TOPK}"] - by["framepool-small"][f"map@{TOPK}"]
        lines += ["", f"c3d-small - framepool-small: {gap:+.4f} mAP@{TOPK}; slowest training "
                      f"{max(r['train_seconds'] for r in result['runs']) / 60:.1f} min wall."]
    for r in result["runs"]:
        lines += ["", f"`{r['command']}`: seconds per epoch {r['seconds_per_epoch']}, loss {r['loss_per_epoch']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--train-size", type=int, default=2000)
    p.add_argument("--query-size", type=int, default=500)
    p.add_argument("--database-size", type=int, default=5000)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbones", default=",".join(BACKBONES), help="comma-separated (default: both)")
    p.add_argument("--out", default="/tmp/bench-video", help="folder for the run folders and bench-video.json")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = datasets.load(DATASET, seed=args.seed, train_size=args.train_size, query_size=args.query_size,
                       database_size=args.database_size)
    result: dict[str, Any] = {
        "args": vars(args), "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
                                      f"with {torch.get_num_threads()} threads, Python {platform.python_version()}",
        "oracles": oracle_maps(ds, args.bits, args.seed), "runs": []}
    for name, m in result["oracles"].items():
        print(f"{name}: mAP@{TOPK} {m[f'map@{TOPK}']:.4f}, mAP@all {m['map@all']:.4f}", flush=True)
    for backbone in args.backbones.split(","):
        r = train_one(backbone, args, out / backbone)
        result["runs"].append(r)
        print(f"{backbone}: mAP@{TOPK} {r[f'map@{TOPK}']:.4f}, train {r['train_seconds']:.0f} s wall, "
              f"{r['process_cpu_seconds']:.0f} s CPU, load {r['load_mean']:.1f}", flush=True)
        _atomic.save_json(out / "bench-video.json", result)
    print()
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
