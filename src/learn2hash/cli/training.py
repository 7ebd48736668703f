"""``learn2hash train``, ``encode``, ``compare`` and ``methods``: fit a hasher into a run folder, encode with it,
compare finished runs."""

from __future__ import annotations

from pathlib import Path

from learn2hash.cli._common import (_add_data_options, _add_features_flags, _add_json_flag, _add_parser,
                                     _add_progress_flag, _add_workers_option, _data_params, _features_from_args,
                                     _log_line, _parse_assignments, _print_json, _print_table, command)
from learn2hash.errors import Learn2HashError


def _print_metrics(metrics: dict, file=None) -> None:
    from learn2hash.metrics import map_key, metric_name

    rows = []
    topk = metrics.get("topk")
    keys = ([map_key(topk)] if topk else []) + ["map@all", "precision_at_radius2", "recall_at_radius2"]
    rows += [{"metric": metric_name(key), "value": f"{metrics[key]:.4f}"} for key in keys]
    for key in ("train_seconds", "encode_seconds", "evaluate_seconds"):
        if metrics.get(key) is not None:
            rows.append({"metric": metric_name(key), "value": f"{metrics[key]:.1f}"})
    rows.append({"metric": metric_name("ties"), "value": metrics.get("ties", "")})
    _print_table(rows, ["metric", "value"], file=file)
    best = metrics.get("best_of_evaluations")
    if best:
        print(f"best {metric_name(best['metric'])} of {best['evaluations']} evaluations (every {best['every']} "
              f"epochs): {best['value']:.4f} after epoch {best['epoch']} - {best['protocol']}", file=file)


@command
def _add_train(sub) -> None:
    """Train METHOD on DATASET and write a run folder (config, splits, weights, codes, metrics). Prints the
    evaluation table."""
    p = _add_parser(sub, "train", _add_train, help="train a hasher on a dataset, encode, evaluate; writes a run folder")
    p.add_argument("--method", required=True, help="hashing method (see `learn2hash methods`)")
    p.add_argument("--dataset", required=True, help="dataset name (see `learn2hash datasets`)")
    p.add_argument("--protocol", default=None, help="dataset protocol (default: the dataset's first)")
    p.add_argument("--bits", type=int, default=64, help="code length K (default 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="run folder to create")
    p.add_argument("--backbone", default=None, help="network backbone of deep methods")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="any other method hyper-parameter")
    _add_data_options(p, "path for the generic loaders (your own files)")
    p.add_argument("--topk", type=int, default=None, help="evaluate mAP@TOPK besides mAP@all (default per dataset)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder's configuration")
    _add_progress_flag(p)
    _add_features_flags(p)
    p.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="also evaluate on the query split after every N-th epoch and the last; the best of these "
                        "is reported as the reference code's protocol, beside the figure after the last epoch "
                        "(default 0: only the final evaluation)")
    _add_json_flag(p)
    p.set_defaults(func=_cmd_train)


def _cmd_train(args) -> int:
    from learn2hash.runs import train_run

    params = _parse_assignments(args.param, "--param")
    for key in ("backbone", "epochs", "lr", "batch_size"):
        if getattr(args, key) is not None:
            if key in params:
                raise Learn2HashError(f"{key} is given twice: as --{key.replace('_', '-')} and as --param {key}=...")
            params[key] = getattr(args, key)
    data_params = _data_params(args)
    features = _features_from_args(args)
    if args.backbone is not None:
        from learn2hash.methods import method_class

        if "backbone" not in method_class(args.method)._param_names():
            raise Learn2HashError(f"method {args.method!r} has no backbone; to hash a pretrained network's features "
                                  f"with it, give --features {args.backbone}")
    if features is None and args.on_bad_image is not None:
        if "on_bad_image" in params:
            raise Learn2HashError("on_bad_image is given twice: as --on-bad-image and as --param on_bad_image=...")
        params["on_bad_image"] = args.on_bad_image
    run = train_run(args.method, args.dataset, args.bits, args.out, protocol=args.protocol, seed=args.seed,
                    params=params, data_params=data_params, topk=args.topk if args.topk is not None else "default",
                    resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress,
                    log=_log_line, features=features, eval_every=args.eval_every)
    if run is None:  # a non-zero rank under torchrun
        return 0
    evaluated = (run.folder / "metrics.json").exists()
    if args.json:
        _print_json({"run": str(run.folder), "method": run.method, "bits": run.bits, "dataset": run.config["dataset"],
                     "protocol": run.config["protocol"], "seed": run.config.get("seed"),
                     "features": run.config.get("features"), "metrics": run.metrics() if evaluated else None})
        return 0
    stage = f" on {run.config['features']['backbone']} features" if run.config.get("features") else ""
    print(f"{run.method}, {run.bits} bits{stage}, {run.config['dataset']} [{run.config['protocol']}] -> {run.folder}")
    if evaluated:
        _print_metrics(run.metrics())
    return 0


@command
def _add_encode(sub) -> None:
    """Encode a split of the run's dataset (--split), a .npy of items (--input), or image files (--images: a
    folder, searched recursively, or a list file of paths relative to it). For --images the codes go to
    --out and their ids (the images' paths relative to the folder or list) to OUT.ids.json."""
    p = _add_parser(sub, "encode", _add_encode,
                    help="encode a split of a run's dataset, a .npy of items, or your own images")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--split", choices=["train", "query", "database"], default=None)
    p.add_argument("--input", default=None, help=".npy of items to encode instead of a split")
    p.add_argument("--images", default=None, metavar="FOLDER|LIST", help="image files to encode")
    p.add_argument("--out", default=None, help="codes file to write (default: RUN/codes/SPLIT.npy; "
                                                "needed with --images)")
    p.add_argument("--on-bad-image", choices=["error", "skip"], default="error",
                   help="an unreadable image: stop (default) or leave it out and list it in OUT.ids.json")
    _add_workers_option(p)
    _add_progress_flag(p)
    _add_json_flag(p)
    p.set_defaults(func=_cmd_encode)


def _cmd_encode(args) -> int:
    from learn2hash._atomic import load_npy
    from learn2hash.runs import Run

    run = Run.open(args.run)
    if sum(v is not None for v in (args.split, args.input, args.images)) != 1:
        raise Learn2HashError("give exactly one of --split, --input or --images")
    if args.images is not None:
        from learn2hash.runs import encode_image_files

        if not args.out:
            raise Learn2HashError("--images needs --out CODES.npy (the ids go beside it)")
        result = encode_image_files(run, args.images, args.out, on_bad_image=args.on_bad_image,
                                    workers=args.workers, progress=not args.no_progress)
        if args.json:
            _print_json({**result, "out": str(args.out)})
            return 0
        skipped = f", {result['n_skipped']} unreadable skipped (listed in {result['ids_path']})" \
            if result["n_skipped"] else ""
        print(f"{result['n']} codes of {result['bits']} bits -> {args.out}, ids -> {result['ids_path']}{skipped}")
        return 0
    if args.split:
        codes = run.codes(args.split, recompute=True)
        where = run.codes_path(args.split)
        if args.out:
            codes.save(args.out)
            where = args.out
    else:
        try:
            x = load_npy(args.input)
        except (OSError, ValueError) as exc:
            raise Learn2HashError(f"cannot read --input {args.input}: {exc}") from None
        from learn2hash._atomic import sha256_file

        hasher = run.hasher()
        codes = hasher.encode(x).with_provenance(hasher.provenance("array", sha256_file(args.input)))
        where = args.out or (str(Path(args.input).with_suffix("")) + ".codes.npy")
        codes.save(where)
    if args.json:
        _print_json({"n": len(codes), "bits": codes.bits, "out": str(where)})
    else:
        print(f"{len(codes)} codes of {codes.bits} bits -> {where}")
    return 0


@command
def _add_compare(sub) -> None:
    p = sub.add_parser("compare", help="print the comparison table of finished runs")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.set_defaults(func=_cmd_compare)


def _cmd_compare(args) -> int:
    from learn2hash.runs import Run, summary_row

    rows = [summary_row(Run.open(d)) for d in args.runs]
    if any("features" in r for r in rows):  # which backbone's features each method hashed ("-": the items)
        def with_features_column(row: dict) -> dict:
            out = {}
            for key, value in row.items():
                if key != "features":
                    out[key] = value
                if key == "protocol":
                    out["features"] = row.get("features") or "-"
            return out

        rows = [with_features_column(r) for r in rows]
    columns = list(dict.fromkeys(k for r in rows for k in r))
    fmt = [{k: (f"{v:.4f}" if isinstance(v, float) and not k.endswith("s") else
                f"{v:.1f}" if isinstance(v, float) else ("" if v is None else v)) for k, v in r.items()} for r in rows]
    if args.markdown:
        print("| " + " | ".join(columns) + " |")
        print("|" + "---|" * len(columns))
        for r in fmt:
            print("| " + " | ".join(str(r.get(c, "")) for c in columns) + " |")
    else:
        _print_table(fmt, columns)
    return 0


@command
def _add_methods(sub) -> None:
    p = sub.add_parser("methods", help="list the hashing methods and their hyper-parameters")
    p.set_defaults(func=_cmd_methods)


def _cmd_methods(args) -> int:
    from learn2hash.methods import available

    rows = []
    for name, info in available().items():  # lazy: imports no method (the deep ones need torch)
        rows.append({"method": name, "input": info.input_kind, "supervised": "yes" if info.supervised else "no",
                     "description": info.summary})
    _print_table(rows, ["method", "input", "supervised", "description"])
    return 0
