"""``learn2hash reproduce``: a paper's main setting beside its published figures."""

from __future__ import annotations

import sys

from learn2hash.cli._common import (_add_data_options, _add_parser, _add_progress_flag, _data_params, _log_line,
                                     _parse_assignments, _print_table, command)
from learn2hash.errors import Learn2HashError


@command
def _add_reproduce(sub) -> None:
    """Run the recipe of METHOD on --dataset (backbone, optimiser, schedule, protocol and mAP cutoff of the
    paper and its reference code) and print the result beside the paper's figure and the reference code's
    figure (n/a where none is published). Without METHOD: list the recipes. --quick swaps the pretrained
    backbone for smallcnn and trains one epoch: a smoke test whose figure is not comparable."""
    p = _add_parser(sub, "reproduce", _add_reproduce,
                    help="run a paper's main setting and print the result beside the published figures")
    p.add_argument("method", nargs="?", default=None, metavar="METHOD", help="csq, dhn or lemon")
    p.add_argument("--dataset", default=None, help="dataset of the recipe (see `learn2hash reproduce`)")
    p.add_argument("--bits", type=int, default=64, help="code length K (default 64)")
    p.add_argument("--out", default=None, help="run folder (default runs/reproduce-METHOD-DATASET-BITS)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smallcnn, one epoch, no pretrained weights (seconds)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="override a recipe hyper-parameter")
    _add_data_options(p, "the dataset's folder (default $LEARN2HASH_DATA/DATASET)")
    p.add_argument("--chunk", type=int, default=None, help="items per round of a streaming recipe (lemon)")
    p.add_argument("--weights", default=None, metavar="PATH",
                   help="a local state-dict file for the recipe's backbone instead of its named weights "
                        "(downloaded when online)")
    _add_progress_flag(p)
    p.set_defaults(func=_cmd_reproduce)


def _cmd_reproduce(args) -> int:
    from learn2hash import recipes

    if args.method is None:
        rows = [{"method": r.method, "dataset": r.dataset, "protocol": r.protocol,
                 "backbone": r.params.get("backbone") or (f"{r.features['backbone']} features" if r.features else "-"),
                 "mAP@": r.topk or "all", "paper": ", ".join(f"{b}: {v:.3f}" for b, v in sorted(r.paper.items())) or "n/a",
                 "reference code": ", ".join(f"{b}: {v:.3f}" for b, v in sorted(r.reference.items())) or "n/a",
                 "one GPU (estimate)": r.estimate} for r in recipes.RECIPES.values()]
        _print_table(rows, ["method", "dataset", "protocol", "backbone", "mAP@", "paper", "reference code",
                            "one GPU (estimate)"])
        return 0
    if args.dataset is None:
        raise Learn2HashError("give --dataset (see `learn2hash reproduce` for the recipes)")
    r = recipes.recipe(args.method, args.dataset)
    data_params, overrides = _data_params(args), _parse_assignments(args.param, "--param")
    params, dparams = recipes.resolved(r, args.quick, overrides, data_params, args.weights)
    shown = {k: v for k, v in params.items() if k not in ("backbone_options",)}
    stage = recipes.features_of(r, args.quick, args.weights)
    if stage:
        shown = {"features": stage["backbone"], **shown}
    print(f"recipe {r.method} on {r.dataset} [{r.protocol}], {args.bits} bits"
          + (f", resize {r.resize_crop[0]} / crop {r.resize_crop[1]}" if r.resize_crop else "")
          + (f", chunks of {args.chunk or r.chunk}" if r.chunk else "") + ": "
          + ", ".join(f"{k}={v}" for k, v in shown.items()), file=sys.stderr)
    result = recipes.reproduce(args.method, args.dataset, args.bits, args.out, seed=args.seed, quick=args.quick,
                               params=overrides, data_params=data_params, chunk=args.chunk,
                               progress=not args.no_progress, weights=args.weights, log=_log_line)
    print(f"{r.method}, {args.bits} bits, {r.dataset} [{r.protocol}] -> {result['run']}"
          + ("  (quick run: not comparable with the published figures)" if args.quick else ""))
    _print_table(result["rows"], ["metric", "this run", "paper", "reference code"])
    if any("-best-of-" in row["metric"] for row in result["rows"]):
        print(f"note: -best-of-N is the reference code's protocol: the best of the evaluations on the query split "
              f"every {r.eval_every} epochs (the queries choose the epoch); the first line is after the last epoch")
    if r.notes:
        print(f"note: {r.notes}")
    return 0
