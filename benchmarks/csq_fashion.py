"""CSQ on Fashion-MNIST: train, encode query + database, evaluate; one JSON line per configuration.

    python benchmarks/csq_fashion.py                         # the defaults: standard protocol, 64 bits
    python benchmarks/csq_fashion.py '{"bits": 32}' '{"protocol": "full", "epochs": 15}'
    python benchmarks/csq_fashion.py --jobs 4 --out sweep.jsonl CONFIG ...   (configurations in parallel)

Each configuration is a JSON object of CSQ parameters plus ``protocol`` (standard/full),
``bits``, ``threads`` (torch threads) and ``seed``. Printed: mAP@1000 and mAP@all (ties="expected"),
training and encoding wall seconds, the process's CPU seconds, and the load average (the machine
is shared: a load above the core count inflates wall times).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time


def run_one(cfg: dict) -> dict:
    import torch

    from learn2hash import datasets
    from learn2hash.methods import create
    from learn2hash.metrics import evaluate

    cfg = dict(cfg)
    protocol = cfg.pop("protocol", "standard")
    bits = cfg.pop("bits", 64)
    seed = cfg.pop("seed", 0)
    tag = cfg.pop("tag", "")
    threads = cfg.pop("threads", None)
    if threads:
        torch.set_num_threads(int(threads))
    ds = datasets.load("fashion-mnist", protocol=protocol, seed=seed)
    hasher = create("csq", bits=bits, seed=seed, **cfg)
    c0, t0 = time.process_time(), time.perf_counter()
    hasher.fit(ds.train, progress=False)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    q, db = hasher.encode(ds.query.x), hasher.encode(ds.database.x)
    encode_s = time.perf_counter() - t1
    cpu_s = time.process_time() - c0
    res = {"tag": tag, "protocol": protocol, "bits": bits, "seed": seed, "params": cfg}
    for name, topk in (("map@1000", 1000), ("map@all", None)):
        r = evaluate(q, ds.query.labels, db, ds.database.labels, topk=topk, ties="expected")
        res[name] = round(float(r[name]), 4)
    res.update({"train_s": round(train_s, 1), "encode_s": round(encode_s, 1), "cpu_s": round(cpu_s, 1),
                "epochs": len(hasher.history_), "final_loss": round(hasher.history_[-1]["loss"], 5),
                "threads": torch.get_num_threads(), "load": round(os.getloadavg()[0], 1)})
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", help="JSON objects (default: one run with the defaults)")
    ap.add_argument("--jobs", type=int, default=1, help="configurations run at once, each in its own process")
    ap.add_argument("--out", help="append result lines to this file too")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one is not None:
        print(json.dumps(run_one(json.loads(args.one))), flush=True)
        return 0
    configs = args.configs or ["{}"]
    pending = list(configs)
    running: list[subprocess.Popen] = []
    out = open(args.out, "a") if args.out else None
    failed = 0

    def reap(p: subprocess.Popen) -> None:
        nonlocal failed
        stdout, _ = p.communicate()
        line = stdout.strip().splitlines()[-1] if stdout.strip() else ""
        if p.returncode != 0 or not line.startswith("{"):
            failed += 1
            line = json.dumps({"error": p.returncode, "config": p.args[-1]})
        print(line, flush=True)
        if out:
            out.write(line + "\n")
            out.flush()

    while pending or running:
        while pending and len(running) < max(1, args.jobs):
            running.append(subprocess.Popen([sys.executable, __file__, "--one", pending.pop(0)],
                                            stdout=subprocess.PIPE, text=True))
        time.sleep(0.5)
        for p in [p for p in running if p.poll() is not None]:
            running.remove(p)
            reap(p)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
