"""EDDH on Fashion-MNIST (protocol ``standard``): the weight sweep, the reported runs, ablations.

Every run is :func:`learn2hash.runs.train_run` with the deep recipe of ``benchmarks/reproduce.py``
(:data:`DEEP_RECIPE`: the one every deep method of the comparison table is trained with) plus
EDDH's own parameters, into ``OUT/NAME`` (a complete run folder: config, splits, hasher, codes,
metrics, history with the objective per outer iteration, ``similarity_fit.png``).

Usage::

    python benchmarks/bench_eddh.py sweep  --out /tmp/eddh --results sweep.json     # seed 1, 64 bits
    python benchmarks/bench_eddh.py final  --out /tmp/eddh --results final.json     # seed 0, 32 + 64 bits
    python benchmarks/bench_eddh.py ablate --out /tmp/eddh --results ablate.json    # seed 0, 64 bits

The sweep picks EDDH's weights on a different draw of the protocol (seed 1: other queries and
another training sample) so that the reported runs (seed 0, the seed of the comparison table) are
not tuned on their own queries. ``--set key=value`` overrides EDDH parameters of ``final``/``ablate``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from reproduce import DEEP_RECIPE  # noqa: E402

from learn2hash import _atomic  # noqa: E402
from learn2hash.runs import Run, train_run  # noqa: E402

#: (lam, gamma, rho) tried by the sweep
SWEEP = [(1.0, 1.0, 0.01), (0.25, 1.0, 0.01), (0.1, 1.0, 0.01), (1.0, 4.0, 0.01), (0.25, 0.25, 0.01),
         (0.25, 1.0, 0.1)]
#: ablations of the reported configuration at 64 bits: name -> EDDH parameters that change
ABLATIONS = {"features at 224 px": {"visual_image_size": 224}, "pixel features": {"visual": "flatten"}}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    import torch

    info["torch_threads"] = torch.get_num_threads()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_one(name: str, bits: int, seed: int, eddh: dict[str, Any], out: Path) -> dict[str, Any]:
    params = {**DEEP_RECIPE, **eddh}
    folder = out / name
    print(f"[{name}] eddh {bits} bits, seed {seed}, {eddh}", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    train_run("eddh", "fashion-mnist", bits, folder, protocol="standard", seed=seed, params=params, overwrite=True,
              progress=False)
    run = Run.open(folder)
    m, history = run.metrics(), run.history()
    state = _atomic.load_json(folder / "hasher" / "hasher.json")["state"]
    objective = [r["objective"] for r in state["objective_log"]]
    row = {"name": name, "bits": bits, "seed": seed, "params": eddh, "map@1000": m["map@1000"],
           "map@all": m["map@all"], "p@h<=2": m["precision_at_radius2"], "train_s": m["train_seconds"],
           "median_s_per_epoch": statistics.median(h["seconds"] for h in history), "epochs": len(history),
           "distance_fit": state["distance_fit"], "alpha": state["alpha"], "beta": state["beta"],
           "objective_first": objective[0], "objective_last": objective[-1],
           "objective_monotone": all(b < a for a, b in zip(objective, objective[1:])),
           "wall_s": time.perf_counter() - t0, "folder": str(folder)}
    print(f"[{name}] mAP@1000 {row['map@1000']:.4f}  mAP@all {row['map@all']:.4f}  objective "
          f"{row['objective_first']:.4g} -> {row['objective_last']:.4g} (monotone: {row['objective_monotone']})  "
          f"{row['wall_s']:.0f} s", file=sys.stderr, flush=True)
    return row


def parse_set(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["sweep", "final", "ablate"])
    ap.add_argument("--out", required=True, help="folder for the run folders")
    ap.add_argument("--results", required=True, help="JSON file for the rows")
    ap.add_argument("--set", action="append", metavar="KEY=VALUE", help="EDDH parameter of final/ablate")
    ap.add_argument("--bits", default=None, help="comma-separated code lengths (final: 32,64)")
    args = ap.parse_args()
    out = Path(args.out)
    chosen = parse_set(args.set)
    if args.what == "sweep":
        jobs = [(f"sweep-lam{lam}-gamma{gamma}-rho{rho}", 64, 1, {"lam": lam, "gamma": gamma, "rho": rho})
                for lam, gamma, rho in SWEEP]
    elif args.what == "final":
        jobs = [(f"eddh-{bits}", int(bits), 0, chosen) for bits in (args.bits or "32,64").split(",")]
    else:
        jobs = [("ablate-" + name.replace(" ", "-"), 64, 0, {**chosen, **change}) for name, change in ABLATIONS.items()]
    rows: list[dict[str, Any]] = []
    for job in jobs:  # the results file is rewritten after every run, so a cut-off invocation keeps its rows
        rows.append(run_one(*job, out))
        _atomic.save_json(args.results, {"what": args.what, "machine": machine(), "recipe": DEEP_RECIPE, "rows": rows})
    print("| run | bits | seed | lam | gamma | rho | mAP@1000 | mAP@all | s/epoch |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        p = r["params"]
        print(f"| {r['name']} | {r['bits']} | {r['seed']} | {p.get('lam', 1.0)} | {p.get('gamma', 1.0)} | "
              f"{p.get('rho', 0.01)} | {r['map@1000']:.4f} | {r['map@all']:.4f} | {r['median_s_per_epoch']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
