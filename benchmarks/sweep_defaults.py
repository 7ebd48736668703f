"""Choose a deep method's default recipe on validation data carved from the training split.

The test queries are never looked at: the protocol's training split is cut into a *fit* part and
a *validation* part (``--val-per-class`` items of every class, seeded), each candidate recipe is
trained on the fit part, and the validation items are ranked as queries against the protocol's
database less the validation items (on ``fashion-mnist`` standard: 59,000 images of the training
pool, 4,000 of them the fit items, the rest never trained on), scored with the protocol's top-k.
So the validation mirrors the protocol, with queries drawn from the training side instead of the
test set. (Ranking the validation items against the fit items alone rewards memorising the
training items, whose codes a network separates perfectly, and favours recipes with no
augmentation and long training; the real database is mostly items the network never saw.)

Usage::

    python benchmarks/sweep_defaults.py --method dhn --bits 64 --grid '[{}, {"lam": 1.0}]' --results /tmp/sweep.jsonl
    python benchmarks/sweep_defaults.py --method hashnet --bits 64 --grid @grid.json --results /tmp/sweep.jsonl

Every grid entry is a dict of method parameters laid over the method's current defaults (``{}``
measures the defaults themselves). One JSON line per candidate is appended to ``--results``:
the parameters, the validation scores, the training seconds and epochs, the torch threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np


def carve(train, per_class: int, seed: int):
    """(fit, validation) parts of ``train``: ``per_class`` validation items of every class
    (single-label: by class; multi-label: ``per_class * n_classes`` items drawn uniformly)."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(train.labels, dtype=bool)
    if (labels.sum(axis=1) == 1).all():
        cls = labels.argmax(axis=1)
        val = np.concatenate([rng.choice(np.flatnonzero(cls == c), min(per_class, int((cls == c).sum()) // 2),
                                         replace=False) for c in range(labels.shape[1])])
    else:
        val = rng.choice(len(train), min(per_class * labels.shape[1], len(train) // 5), replace=False)
    val = np.sort(val)
    fit = np.setdiff1d(np.arange(len(train)), val)
    return train.subset(fit, "fit"), train.subset(val, "validation")


def validation_database(database, val):
    """The protocol's database less the validation items (matched by source and index)."""
    if database.indices is None or val.indices is None or database.source != val.source:
        raise SystemExit("the validation items cannot be matched in this dataset's database")
    keep = ~np.isin(np.asarray(database.indices), np.asarray(val.indices))
    return database.subset(np.flatnonzero(keep), "validation-database")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", required=True)
    ap.add_argument("--bits", type=int, default=64)
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--protocol", default=None)
    ap.add_argument("--seed", type=int, default=0, help="the protocol's draw and the training seed")
    ap.add_argument("--val-per-class", type=int, default=100)
    ap.add_argument("--grid", default="[{}]", help="JSON list of parameter dicts, or @FILE holding one")
    ap.add_argument("--results", required=True, help="JSON-lines file the candidates are appended to")
    ap.add_argument("--tag", default="", help="a label stored with every line (e.g. the sweep's stage)")
    args = ap.parse_args()

    import torch

    import learn2hash as l2h
    from learn2hash import datasets, methods

    grid = json.loads(Path(args.grid[1:]).read_text() if args.grid.startswith("@") else args.grid)
    ds = datasets.load(args.dataset, protocol=args.protocol, seed=args.seed)
    fit, val = carve(ds.train, args.val_per_class, args.seed)
    from learn2hash.datasets.registry import default_topk
    from learn2hash.metrics import map_key

    topk = default_topk(args.dataset, ds.protocol)
    database = validation_database(ds.database, val)
    for params in grid:
        t0 = time.perf_counter()
        h = methods.create(args.method, bits=args.bits, **params)
        h.fit(fit)
        train_s = time.perf_counter() - t0
        qv, dbv = h.encode(val.x), h.encode(database.x)
        r = l2h.evaluate(qv, val.labels, dbv, database.labels, topk=topk)
        r_all = l2h.evaluate(qv, val.labels, dbv, database.labels)
        line: dict[str, Any] = {
            "tag": args.tag, "method": args.method, "bits": args.bits, "dataset": args.dataset,
            "protocol": ds.protocol, "seed": args.seed, "params": params,
            "resolved": {**h.get_params(), **h.resolved_params(fit)},
            "n_fit": len(fit), "n_val": len(val), "n_database": len(database), "topk": topk,
            "val_map@k": round(float(r[map_key(topk)]), 4), "val_map@all": round(float(r_all["map@all"]), 4),
            "train_s": round(train_s, 1), "threads": torch.get_num_threads(), "host": platform.node(),
        }
        print(json.dumps({k: line[k] for k in ("method", "bits", "params", "val_map@k", "val_map@all", "train_s")}),
              flush=True)
        with open(args.results, "a") as f:
            f.write(json.dumps(line) + "\n")


if __name__ == "__main__":
    sys.exit(main())
