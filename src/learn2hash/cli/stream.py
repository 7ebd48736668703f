"""``learn2hash stream``: online cross-modal hashing on a stream of chunks."""

from __future__ import annotations

from learn2hash.cli._common import (_add_features_flags, _add_parser, _features_from_args, _log_line, _parse_assignments,
                                     _print_table, command)
from learn2hash.errors import Learn2HashError


@command
def _add_stream(sub) -> None:
    """Hold out the queries, feed the rest of the dataset in chunks, and after every round record the
    training seconds and the mAP of every cross-modal direction over the database seen so far (stream.json,
    stream.png in --out). Online methods (lemon) learn each chunk once and append its codes to the database;
    --retrain refits from scratch on everything seen, every round (the baseline; always so for offline
    methods such as cca-itq). Running again with the same settings continues an unfinished stream."""
    p = _add_parser(sub, "stream", _add_stream,
                    help="online cross-modal hashing on a stream of chunks, evaluated after every round")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="multi-modal dataset name (e.g. fashion-mnist-2view)")
    src.add_argument("--mat", metavar="FILE", help="your own .mat file (MATLAB v5 or v7.3); needs --mat-keys")
    p.add_argument("--mat-keys", metavar="ROLE=VAR,...",
                   help="variables of each modality and of the labels, e.g. image=I_tr,text=T_tr,labels=L_tr "
                        "('+' joins rows: image=I_tr+I_te)")
    p.add_argument("--method", default="lemon", help="hashing method (default lemon)")
    p.add_argument("--bits", type=int, default=32, help="code length K (default 32)")
    p.add_argument("--chunk", type=int, default=2000, help="items per round (default 2000)")
    p.add_argument("--queries", type=int, default=None, help="held-out queries (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run folder (created, or continued)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="method hyper-parameter")
    p.add_argument("--retrain", action="store_true", help="refit a fresh hasher on all data seen, every round")
    p.add_argument("--rounds", type=int, default=None, help="stop after this many more rounds")
    p.add_argument("--eval-every", type=int, default=1,
                   help="evaluate every N rounds (default 1; the last round always; 0: only the last)")
    p.add_argument("--quiet", action="store_true", help="no per-round lines on stderr")
    _add_features_flags(p, bad_image=False)
    p.set_defaults(func=_cmd_stream)


def _cmd_stream(args) -> int:
    from learn2hash.stream import run_stream

    data_params: dict = {}
    if args.queries is not None:
        data_params["queries"] = args.queries
    if args.mat:
        if not args.mat_keys:
            raise Learn2HashError("--mat needs --mat-keys, e.g. --mat-keys image=I_tr,text=T_tr,labels=L_tr")
        data_params.update(path=args.mat, keys=args.mat_keys)
    elif args.mat_keys:
        raise Learn2HashError("--mat-keys goes with --mat FILE")
    result = run_stream(args.method, args.dataset or "mat", args.bits, args.chunk, args.out, seed=args.seed,
                        params=_parse_assignments(args.param, "--param"), data_params=data_params,
                        retrain=args.retrain, max_rounds=args.rounds, evaluate_every=args.eval_every,
                        log=None if args.quiet else _log_line,
                        features=_features_from_args(args))
    rounds = result["rounds"]
    rows = [{"round": r["round"], "items": f"{r['n_seen']:,}", "train s": f"{r['train_seconds']:.3f}",
             **{f"mAP {d}": f"{r['map@all'][d]:.4f}" for d in result["directions"] if "map@all" in r}} for r in rounds]
    columns = ["round", "items", "train s"] + [f"mAP {d}" for d in result["directions"]]
    _print_table(rows, columns)
    status = "complete" if len(rounds) == result["total_rounds"] else f"{len(rounds)}/{result['total_rounds']} rounds"
    print(f"{result['method']}, {result['bits']} bits, {result['mode']}: {status} -> {args.out}")
    return 0
