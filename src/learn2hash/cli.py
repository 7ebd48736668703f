"""The ``learn2hash`` command: thin. It parses arguments, calls the library, prints.

Every sub-command is a pair ``_add_<name>(subparsers)`` / ``_cmd_<name>(args)``. A user mistake
(a :class:`~learn2hash.errors.Learn2HashError`) becomes one line on stderr and exit status 2,
never a traceback. ``--json`` (train, encode, search, evaluate) prints one JSON document on stdout
instead of the tables; ``--log-level`` sets what the ``learn2hash`` loggers print on stderr
(``info`` shows e.g. one line per training epoch).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Sequence

from learn2hash import __version__
from learn2hash.errors import Learn2HashError

EXIT_USER_ERROR = 2
_COMMANDS: list[Callable] = []


def command(add: Callable) -> Callable:
    """Decorator for ``_add_<name>(subparsers)``: registers a sub-command (in definition order)."""
    _COMMANDS.append(add)
    return add


def _print_json(doc) -> None:
    """One JSON document on stdout (numpy values and paths as JSON, as in every file we write)."""
    from learn2hash._atomic import _json_default

    print(json.dumps(doc, indent=2, default=_json_default))


def _add_json_flag(p) -> None:
    p.add_argument("--json", action="store_true", help="print one JSON document on stdout instead of the tables")


def _print_table(rows: list[dict], columns: Sequence[str], file=None) -> None:
    file = file or sys.stdout
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths)), file=file)


# --------------------------------------------------------------------------- datasets
@command
def _add_datasets(sub) -> None:
    p = sub.add_parser(
        "datasets", help="list datasets, whether each is on this machine, and how to get it",
        description="Without NAME: list every dataset, whether it is found (in --data-path/NAME or "
                    "$LEARN2HASH_DATA/NAME), its protocols and mAP cutoff, where it is published and the file "
                    "layout it expects. "
                    "With NAME: load it under a protocol and print its splits (check your own files "
                    "with a generic loader, e.g. `learn2hash datasets npz --data-path feats.npz`).")
    p.add_argument("name", nargs="?", default=None, metavar="NAME", help="a dataset to load and describe")
    p.add_argument("--protocol", default=None, help="protocol (default: the dataset's first)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-path", default=None,
                   help="with NAME: the dataset's folder (or your file for a generic loader); without NAME: the "
                        "folder holding one sub-folder per dataset (instead of $LEARN2HASH_DATA)")
    p.add_argument("--data-param", action="append", metavar="KEY=VALUE", help="dataset loader parameter")
    p.add_argument("--save-splits", default=None, metavar="DIR", help="write the exact split to DIR")
    p.set_defaults(func=_cmd_datasets)


def _cmd_datasets(args) -> int:
    from learn2hash.datasets import info, load

    if args.name is None:
        _list_datasets(args.data_path)
        return 0
    d = info(args.name)
    params = _parse_assignments(args.data_param, "--data-param")
    if args.data_path:
        params["path"] = args.data_path
    ds = load(args.name, protocol=args.protocol, seed=args.seed, **params)
    print(ds.summary())
    rows = []
    for name, split in ds.splits.items():
        card = split.labels.sum(axis=1)
        rows.append({"split": name, "items": f"{len(split):,}", "kind": split.kind,
                     "item shape": "x".join(map(str, split.item_shape)),
                     "dtype": str(getattr(split.x, "dtype", "")), "source": split.source,
                     "labels/item": f"{card.mean():.2f}" if len(card) else "-"})
    _print_table(rows, ["split", "items", "kind", "item shape", "dtype", "source", "labels/item"])
    if d.params:
        print("parameters: " + "; ".join(f"{k}: {v}" for k, v in d.params.items()))
    if args.save_splits:
        ds.save_splits(args.save_splits)
        print(f"splits -> {args.save_splits}")
    return 0


def _list_datasets(root: str | None) -> None:
    """Every dataset: found or not, where it was looked for, its protocols and mAP cutoff; then, for the
    named benchmarks, where each is published and the file layout it expects. ``root`` (--data-path
    without a NAME) stands for $LEARN2HASH_DATA."""
    from learn2hash.datasets import registered
    from learn2hash.datasets.registry import dataset_folder, using_data_root

    rows, details = [], []
    with using_data_root(root):
        for name, d in sorted(registered().items()):
            topk = d.topk if not isinstance(d.topk, dict) else d.topk.get(d.protocols[0])
            if d.generic:
                status, where = "loader", "your own files (--data-path)"
            elif d.layout:
                folder = dataset_folder(name)
                status = "found" if d.present() else "not found"
                where = str(folder) if folder is not None else f"LEARN2HASH_DATA/{name} (not set; or --data-path)"
                details.append(f"{name}: published at {d.published}; expects {d.layout}")
            elif d.present():
                status, where = "found", d.location()
            else:
                status, where = "not found", d.how_to_get
            rows.append({"dataset": name, "status": status, "protocols": ",".join(d.protocols),
                         "mAP@": "-" if d.generic else (topk or "all"), "description": d.description,
                         "location / looked in": where})
    _print_table(rows, ["dataset", "status", "protocols", "mAP@", "location / looked in", "description"])
    if details:
        print()
        for line in details:
            print(line)


# --------------------------------------------------------------------------- train / encode / compare
def _parse_assignments(items: Sequence[str] | None, what: str) -> dict:
    """``key=value`` pairs; values are read as JSON when they parse (numbers, true/false, lists)."""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise Learn2HashError(f"{what} must look like key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key in out:
            raise Learn2HashError(f"{what} {key}=... is given twice")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
        except RecursionError:
            raise Learn2HashError(f"{what} {key}=...: the value is nested too deeply to read") from None
    return out


def _print_metrics(metrics: dict, file=None) -> None:
    from learn2hash.metrics import metric_name

    rows = []
    topk = metrics.get("topk")
    keys = ([f"map@{topk}"] if topk else []) + ["map@all", "precision_at_radius2", "recall_at_radius2"]
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
    p = sub.add_parser("train", help="train a hasher on a dataset, encode, evaluate; writes a run folder",
                       description="Train METHOD on DATASET and write a run folder (config, splits, weights, "
                                   "codes, metrics). Prints the evaluation table.")
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
    p.add_argument("--data-path", default=None, help="path for the generic loaders (your own files)")
    p.add_argument("--data-param", action="append", metavar="KEY=VALUE", help="dataset loader parameter")
    p.add_argument("--topk", type=int, default=None, help="evaluate mAP@TOPK besides mAP@all (default per dataset)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing run folder's configuration")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_features_flags(p)
    p.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="also evaluate on the query split after every N-th epoch and the last; the best of these "
                        "is reported as the reference code's protocol, beside the figure after the last epoch "
                        "(default 0: only the final evaluation)")
    _add_json_flag(p)
    p.set_defaults(func=_cmd_train)


def _add_features_flags(p, bad_image: bool = True) -> None:
    """The feature stage's options (train, stream): a pretrained backbone's features as the input;
    ``bad_image``: also ``--on-bad-image`` (for commands that read image files)."""
    p.add_argument("--features", default=None, metavar="BACKBONE",
                   help="put a registered backbone's pooled features (e.g. efficientnet-lite0, resnet50, "
                        "timm:MODEL; a wrong name lists them) in front of any method: shallow and multi-view "
                        "methods hash the features, deep methods train their head on the frozen backbone; "
                        "features are cached per backbone, weights, geometry and file content")
    p.add_argument("--features-weights", default=None, metavar="PATH",
                   help="a state-dict file of the --features backbone (default: its own pretrained weights)")
    p.add_argument("--features-size", type=int, default=None, metavar="N",
                   help="the side the --features backbone takes (default: 96 for images under 112 px where the "
                        "backbone allows it, else its own)")
    p.add_argument("--features-param", action="append", metavar="KEY=VALUE",
                   help="another option of the --features backbone (backbone_options), or batch_size, workers, device")
    if bad_image:
        p.add_argument("--on-bad-image", choices=["error", "skip"], default=None,
                       help="an unreadable training image: stop (default) or leave it out and list it")


def _features_from_args(args) -> dict | None:
    """ImageFeatures parameters from the --features flags (None without --features)."""
    extra = _parse_assignments(getattr(args, "features_param", None), "--features-param")
    given = any(getattr(args, k, None) is not None for k in ("features_weights", "features_size")) or extra
    if args.features is None:
        if given:
            raise Learn2HashError("--features-weights, --features-size and --features-param go with --features BACKBONE")
        return None
    out: dict = {"backbone": args.features}
    if args.features_weights is not None:
        out["weights"] = args.features_weights
    if args.features_size is not None:
        out["image_size"] = args.features_size
    for key in ("batch_size", "workers", "device"):
        if key in extra:
            out[key] = extra.pop(key)
    if extra:
        out["backbone_options"] = extra
    if getattr(args, "on_bad_image", None) is not None:
        out["on_bad_image"] = args.on_bad_image
    return out


def _cmd_train(args) -> int:
    from learn2hash.runs import train_run

    params = _parse_assignments(args.param, "--param")
    for key in ("backbone", "epochs", "lr", "batch_size"):
        if getattr(args, key) is not None:
            if key in params:
                raise Learn2HashError(f"{key} is given twice: as --{key.replace('_', '-')} and as --param {key}=...")
            params[key] = getattr(args, key)
    data_params = _parse_assignments(args.data_param, "--data-param")
    if args.data_path:
        data_params["path"] = args.data_path
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
                    log=lambda msg: print(msg, file=sys.stderr), features=features, eval_every=args.eval_every)
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
    p = sub.add_parser("encode", help="encode a split of a run's dataset, a .npy of items, or your own images",
                       description="Encode a split of the run's dataset (--split), a .npy of items (--input), or "
                                   "image files (--images: a folder, searched recursively, or a list file of "
                                   "paths relative to it). For --images the codes go to --out and their ids "
                                   "(the images' paths relative to the folder or list) to OUT.ids.json.")
    p.add_argument("--run", required=True, help="run folder")
    p.add_argument("--split", choices=["train", "query", "database"], default=None)
    p.add_argument("--input", default=None, help=".npy of items to encode instead of a split")
    p.add_argument("--images", default=None, metavar="FOLDER|LIST", help="image files to encode")
    p.add_argument("--out", default=None, help="codes file to write (default: RUN/codes/SPLIT.npy; "
                                                "needed with --images)")
    p.add_argument("--on-bad-image", choices=["error", "skip"], default="error",
                   help="an unreadable image: stop (default) or leave it out and list it in OUT.ids.json")
    p.add_argument("--workers", type=int, default=None, help="image decoding processes (default: one per core, <= 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
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


# --------------------------------------------------------------------------- report
@command
def _add_report(sub) -> None:
    p = sub.add_parser("report", help="plots and an HTML report of a run, or curves of several runs overlaid",
                       description="--run DIR writes PR and P@N curves, the center/code distance heat map, "
                                   "sample retrievals, the training curve and report.html into DIR/report; "
                                   "--compare DIR DIR ... overlays several runs and plots P@H<=2 against bits.")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--run", metavar="RUN_DIR", help="run folder to report on")
    what.add_argument("--compare", nargs="+", metavar="RUN_DIR", help="run folders to compare")
    p.add_argument("--out", default=None,
                   help="output folder (default: RUN_DIR/report, or report-compare for --compare)")
    p.add_argument("--queries", type=int, default=6, help="sample queries in the retrieval grid (default 6)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled queries and codes")
    p.set_defaults(func=_cmd_report)


def _cmd_report(args) -> int:
    from learn2hash.report import compare_runs, report_run

    if args.run:
        if not 1 <= args.queries <= 50:
            raise Learn2HashError(f"--queries must be between 1 and 50, got {args.queries}")
        written = report_run(args.run, out=args.out, n_queries=args.queries, seed=args.seed)
    else:
        written = compare_runs(args.compare, out=args.out or "report-compare")
    for name, path in written.items():
        print(f"{name:<24} {path}")
    return 0


# --------------------------------------------------------------------------- evaluate
_EVALUATE_FILES = (("query_codes", "--query-codes"), ("query_labels", "--query-labels"),
                   ("db_codes", "--db-codes"), ("db_labels", "--db-labels"))


@command
def _add_evaluate(sub) -> None:
    p = sub.add_parser(
        "evaluate", help="exact retrieval metrics (mAP, P@N, P/R within a Hamming radius) of saved codes",
        description="Rank database codes by Hamming distance to each query code and print mAP@k, precision@N "
                    "and precision/recall within a Hamming radius. Items are relevant when they share a label. "
                    "Codes files are those written by Codes.save (a .npy with its .json sidecar); label files "
                    "are .npy arrays of class ids int[n] or 0/1 matrices [n, classes].")
    p.add_argument("--run", metavar="DIR", help="evaluate a run folder's query codes against its database codes "
                                                "(instead of the four files)")
    p.add_argument("--query-codes", metavar="Q.npy", help="query codes")
    p.add_argument("--query-labels", metavar="QL.npy", help="query labels")
    p.add_argument("--db-codes", metavar="D.npy", help="database codes")
    p.add_argument("--db-labels", metavar="DL.npy", help="database labels")
    p.add_argument("--topk", default=None, metavar="N|all",
                   help="cutoff of mAP@k (default: with --run, the top-k registered for the run's dataset and "
                        "protocol, as the literature reports it; with files, all: the whole database)")
    p.add_argument("--ties", default="expected", metavar="expected|index",
                   help="order of items at equal distance: the exact expected value over all orderings "
                        "(default) or database position")
    p.add_argument("--radius", default="2", metavar="R", help="Hamming radius of precision/recall@H<=R (default 2)")
    p.add_argument("--zero-hits", default="zero", metavar="zero|exclude",
                   help="queries with no relevant item in the database count as 0 (default) or are left out")
    p.add_argument("--precision-at", default=None, metavar="N,N,...",
                   help="the N of precision@N (default 1,10,100,1000 up to the database size)")
    p.add_argument("--threads", default=None, metavar="T", help="threads (default: all cores)")
    p.add_argument("--json", nargs="?", const="-", default=None, metavar="OUT.json",
                   help="the full result (PR curve, per-query AP) as JSON: alone, one document on stdout instead "
                        "of the table; with a file name, also written to that file")
    p.add_argument("--strict", action="store_true",
                   help="refuse query and database codes that record different hashers (default: a warning on "
                        "stderr)")
    p.set_defaults(func=_cmd_evaluate)


def _int_option(text: str, option: str, minimum: int) -> int:
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = None
    if value is None or value < minimum:
        raise Learn2HashError(f"{option} must be an integer >= {minimum}, got {text!r}")
    return value


def _evaluate_inputs_from_files(args) -> tuple:
    """(query codes, query labels, database codes, database labels) from the four file options."""
    from learn2hash._atomic import load_npy
    from learn2hash.codes import Codes

    missing = [flag for attr, flag in _EVALUATE_FILES if not getattr(args, attr)]
    if missing:
        raise Learn2HashError(f"give the codes and labels files: missing {', '.join(missing)}")
    loaded = []
    for attr, flag in _EVALUATE_FILES:
        path = Path(getattr(args, attr))
        if attr.endswith("codes"):
            loaded.append(Codes.load(path))
            continue
        if not path.is_file():
            raise Learn2HashError(f"{flag} file {path} does not exist")
        try:
            loaded.append(load_npy(path))
        except (OSError, ValueError, EOFError) as exc:
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise Learn2HashError(f"{flag} file {path} cannot be read as .npy: {first_line}") from None
    return tuple(loaded)


def _evaluate_options(args) -> dict:
    """Keyword arguments of :func:`learn2hash.metrics.evaluate` from the command-line options."""
    options = {"ties": args.ties, "zero_hits": args.zero_hits, "radius": _int_option(args.radius, "--radius", 0),
               "topk": None if args.topk in (None, "all") else _int_option(args.topk, "--topk", 1)}
    if args.precision_at is not None:
        options["precision_at"] = [_int_option(n.strip(), "--precision-at", 1) for n in args.precision_at.split(",")]
    if args.threads is not None:
        options["threads"] = _int_option(args.threads, "--threads", 1)
    return options


def _print_evaluation(result: dict, file=None) -> None:
    from learn2hash.metrics import metric_name, summary

    s = result["settings"]
    print(f"{result['n_query']} queries ({result['n_queries_without_relevant']} without a relevant item) against "
          f"{result['n_database']} database codes of {result['bits']} bits; ties: {s['ties']}; "
          f"zero hits: {s['zero_hits']}", file=file)
    rows = [{"metric": metric_name(key), "value": f"{value:.4f}" if isinstance(value, float) else value}
            for key, value in summary(result).items() if key.startswith(("map", "precision", "recall"))]
    _print_table(rows, ["metric", "value"], file=file)


def _cmd_evaluate(args) -> int:
    from learn2hash import _atomic
    from learn2hash.metrics import evaluate

    if args.json not in (None, "-") and not Path(args.json).resolve().parent.is_dir():
        raise Learn2HashError(f"--json: the folder of {args.json} does not exist")
    if args.run:
        from learn2hash.runs import Run

        given = [flag for attr, flag in _EVALUATE_FILES if getattr(args, attr)]
        if given:
            raise Learn2HashError(f"give either --run or the codes and labels files, not both ({', '.join(given)})")
        from learn2hash.runs import default_topk

        run = Run.open(args.run)
        run.require_labels()
        ds = run.dataset()
        inputs = (run.codes("query"), ds.query.labels, run.codes("database"), ds.database.labels)
    else:
        inputs = _evaluate_inputs_from_files(args)
    from learn2hash.codes import hasher_mismatch

    mismatch = hasher_mismatch(inputs[0], inputs[2])
    if mismatch and args.strict:
        raise Learn2HashError(mismatch)
    if mismatch:
        print(f"learn2hash evaluate: warning: {mismatch} (--strict refuses them)", file=sys.stderr)
    options = _evaluate_options(args)
    if args.run and args.topk is None:
        name, protocol = run.config["dataset"], run.config.get("protocol")
        options["topk"] = default_topk(name, protocol)
        print(f"mAP cutoff: {'the whole database' if options['topk'] is None else options['topk']}, the top-k "
              f"registered for {name} [{protocol}] (--topk N|all for another)",
              file=sys.stderr if args.json == "-" else sys.stdout)
    result = evaluate(*inputs, **options)
    if args.json == "-":
        _print_json(result)
        return 0
    _print_evaluation(result)
    if args.json:
        try:
            _atomic.save_json(args.json, result)
        except OSError as exc:
            raise Learn2HashError(f"--json: cannot write {args.json}: {exc.strerror or exc}") from None
        print(f"full result -> {args.json}")
    return 0


# --------------------------------------------------------------------------- index / search
def _add_backend_options(p) -> None:
    p.add_argument("--backend", choices=["native", "faiss", "milvus"], default=None,
                   help="search engine (default: native for build, the saved one for search)")
    p.add_argument("--faiss-index", choices=["flat", "hash", "multihash"], default=None,
                   help="Faiss index type (backend faiss)")
    p.add_argument("--milvus-uri", default=None, help="Milvus Lite file or server URI (backend milvus)")
    p.add_argument("--threads", type=int, default=None, help="search threads (default: all cores)")


def _backend_options(args) -> dict:
    options = {}
    if args.faiss_index:
        options["faiss_index"] = args.faiss_index
    if args.milvus_uri:
        options["milvus_uri"] = args.milvus_uri
    return options


@command
def _add_index(sub) -> None:
    p = sub.add_parser("index", help="build the Hamming index of a run's database codes")
    isub = p.add_subparsers(dest="index_command", metavar="ACTION")
    isub.required = True
    b = isub.add_parser("build", help="encode the run's database split and save its index under RUN/index",
                        description="Encode the database split of a run (cached in RUN/codes) and save a "
                                    "HammingIndex of it in RUN/index; item ids are database positions.")
    b.add_argument("--run", required=True, help="run folder")
    _add_backend_options(b)
    b.set_defaults(func=_cmd_index_build)


def _cmd_index_build(args) -> int:
    import time

    from learn2hash.index.provenance import build_run_index
    from learn2hash.runs import Run

    run = Run.open(args.run)
    t0 = time.perf_counter()
    folder, n, bits = build_run_index(run, backend=args.backend or "native", threads=args.threads,
                                      **_backend_options(args))
    print(f"indexed {n} database codes of {bits} bits ({args.backend or 'native'} backend) "
          f"-> {folder} in {time.perf_counter() - t0:.1f} s")
    return 0


def _query_items(run, spec: str):
    """``(x, query_labels_or_None, description)`` for ``--query``: a query-split position, a .npy
    of features (one item or a batch), or an image file."""
    import numpy as np

    dataset = run.dataset()
    if spec.lstrip("-").isdigit():
        pos = int(spec)
        n = len(dataset.query)
        if not 0 <= pos < n:
            raise Learn2HashError(f"--query {pos} is not a query-split position (0 .. {n - 1})")
        return np.asarray(dataset.query.x[pos:pos + 1]), dataset.query.labels[pos:pos + 1], [f"query #{pos}"]
    path = Path(spec)
    if not path.exists():
        raise Learn2HashError(f"--query {spec!r} is neither a query-split position nor an existing file")
    if path.suffix == ".npy":
        from learn2hash._atomic import load_npy

        try:
            x = load_npy(path)
        except (OSError, ValueError) as exc:
            raise Learn2HashError(f"cannot read --query {path}: {exc}") from None
        shape = dataset.database.item_shape
        if x.shape == tuple(shape) or x.ndim == 1:  # one item (a 1-D array is one feature vector)
            x = x[None]
        return x, None, [f"{path.name}[{i}]" for i in range(len(x))]
    from learn2hash import images

    shape = dataset.database.item_shape
    if len(shape) != 3:
        raise Learn2HashError(f"the run's items are {dataset.database.kind} of shape {shape}, not images: give a .npy")
    arr = images.encode_image(path, images.geometry_for(run.hasher(), shape), what=f"--query image {path}")
    return np.ascontiguousarray(arr)[None], None, [path.name]


@command
def _add_search(sub) -> None:
    p = sub.add_parser("search", help="search a run's index: nearest database items of a query",
                       description="Encode the query with the run's hasher and print the k nearest database "
                                   "items: id (database position), Hamming distance, labels. An index built "
                                   "before the run was retrained, or of other codes, is refused (or rebuilt "
                                   "with --rebuild-index); ids appended to the index later have no labels.")
    p.add_argument("--run", default=None, help="run folder with an index (learn2hash index build)")
    p.add_argument("--collection", default=None, metavar="COLL",
                   help="search a collection (learn2hash collection create) instead of a run: --query is an image "
                        "file, results are the collection's paths (or external ids) and distances")
    p.add_argument("--query", required=True,
                   help="a query-split position, a .npy of features (one item or a batch), or an image file")
    p.add_argument("-k", type=int, default=10, help="number of results (default 10; at most the index size)")
    p.add_argument("--rebuild-index", action="store_true",
                   help="rebuild RUN/index first when it is missing or stale (built before the run was retrained)")
    _add_backend_options(p)
    _add_json_flag(p)
    p.set_defaults(func=_cmd_search)


def _cmd_search(args) -> int:
    from learn2hash.runs import Run
    from learn2hash.search import RunSearch

    if args.k < 1:
        raise Learn2HashError(f"-k must be at least 1, got {args.k}")
    if (args.run is None) == (args.collection is None):
        raise Learn2HashError("give --run RUN (a run's index) or --collection COLL (a collection), one of them")
    if args.collection is not None:
        return _search_collection(args)
    run = Run.open(args.run)
    x, query_labels, names = _query_items(run, args.query)
    codes = run.hasher().encode(x)
    with RunSearch(run, index="saved", rebuild=args.rebuild_index, backend=args.backend, threads=args.threads,
                   **_backend_options(args)) as searcher:
        n_indexed = len(searcher)
        k = min(args.k, max(n_indexed, 1))
        found = searcher.search(codes, k, query_labels=query_labels, names=names)
    n_database = searcher.n_database
    if args.json:
        _print_json({"k": int(k), "n_indexed": int(n_indexed), "n_database": n_database, "queries": [
            {"query": hits.query, "labels": hits.names(hits.labels),
             "results": [{"rank": rank, "id": h.id, "distance": h.distance, "labels": hits.names(h.labels),
                          "relevant": h.relevant} for rank, h in enumerate(hits, 1)]} for hits in found]})
        return 0
    text = lambda hits, labels: ",".join(map(str, hits.names(labels)))  # noqa: E731
    for hits in found:
        items = "database items" if n_indexed == n_database else "indexed items"
        header = f"{hits.query}: {k} nearest of {n_indexed} {items}"
        if hits.labels is not None:
            header += f" (query labels: {text(hits, hits.labels)})"
        print(header)
        rows = []
        for rank, h in enumerate(hits, 1):
            # ids beyond the database were appended to the index: no labels
            row = {"rank": rank, "id": h.id, "distance": h.distance,
                   "labels": text(hits, h.labels) if h.labels is not None else "-"}
            if hits.labels is not None:
                row["relevant"] = "-" if h.relevant is None else "yes" if h.relevant else "no"
            rows.append(row)
        _print_table(rows, ["rank", "id", "distance", "labels"] + (["relevant"] if hits.labels is not None else []))
    if any(h.id >= n_database for hits in found for h in hits):
        print(f"ids from {n_database} on were appended to the index after it was built: they have no labels")
    return 0


# --------------------------------------------------------------------------- collection
def _add_encoding_options(p) -> None:
    p.add_argument("--on-bad-image", choices=["error", "skip"], default="error",
                   help="an unreadable image: stop, naming it (default; run again once it is fixed: finished "
                        "shards are kept), or leave it out and list it")
    p.add_argument("--shard-size", type=int, default=None,
                   help="images per shard, the unit that a rerun after an interruption keeps (default 1024)")
    p.add_argument("--workers", type=int, default=None, help="image decoding processes (default: one per core, <= 8)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_json_flag(p)


@command
def _add_collection(sub) -> None:
    p = sub.add_parser(
        "collection", help="your own images, encoded by a run's hasher and indexed: create, add, remove, info, compact",
        description="A collection is a folder that holds the codes of your image files (or of items with an id of "
                    "yours), the Hamming index that searches them, and the identity of the run's hasher that "
                    "encoded them (a collection whose hasher changed is refused). Search it with `learn2hash "
                    "search --collection COLL --query photo.jpg`. Encoding is streamed in shards, resumable after "
                    "an interruption (run the same command again) and split across processes under torchrun "
                    "(torchrun --nproc_per_node=N -m learn2hash collection create ...).")
    csub = p.add_subparsers(dest="collection_command", metavar="ACTION")
    csub.required = True
    c = csub.add_parser("create", help="encode a folder or list of images with a run's hasher into a new collection",
                        description="Encode the images of --images (a folder, searched recursively, or a list file "
                                    "of paths relative to its folder) and index them in --out. Item paths are kept "
                                    "relative to that folder (the collection's root). Running the same command "
                                    "again continues an interrupted creation and adds nothing twice.")
    c.add_argument("--run", "--run-folder", dest="run", required=True,
                   help="run folder whose hasher takes image files (under torchrun write --run-folder: torchrun "
                        "reads --run as an abbreviation of its own --run-path)")
    c.add_argument("--images", required=True, metavar="DIR|LIST", help="a folder of images or a list file")
    c.add_argument("--out", required=True, metavar="COLL", help="collection folder to create")
    _add_encoding_options(c)
    c.set_defaults(func=_cmd_collection_create)
    a = csub.add_parser("add", help="encode and add more images (under the collection's root)",
                        description="Encode and add the images of --images (a folder or a list file, under the "
                                    "collection's root). Images whose path is already in the collection are left "
                                    "out, so adding a folder again adds only its new images.")
    a.add_argument("collection", metavar="COLL")
    a.add_argument("--images", required=True, metavar="DIR|LIST", help="a folder of images or a list file")
    _add_encoding_options(a)
    a.set_defaults(func=_cmd_collection_add)
    r = csub.add_parser("remove", help="remove items by id, path or external id",
                        description="Remove items: --ids (as search prints them), --paths (relative to the "
                                    "collection's root, as search prints them, or absolute paths of files under it) "
                                    "and --external-ids. Every one named must be in the collection, else nothing is "
                                    "removed.")
    r.add_argument("collection", metavar="COLL")
    r.add_argument("--ids", nargs="+", type=int, default=None, metavar="ID")
    r.add_argument("--paths", nargs="+", default=None, metavar="PATH")
    r.add_argument("--external-ids", nargs="+", default=None, metavar="XID")
    _add_json_flag(r)
    r.set_defaults(func=_cmd_collection_remove)
    i = csub.add_parser("info", help="what a collection holds")
    i.add_argument("collection", metavar="COLL")
    _add_json_flag(i)
    i.set_defaults(func=_cmd_collection_info)
    k = csub.add_parser("compact", help="rewrite the index's segments into one, dropping removed items",
                        description="Rewrite the collection index's segments into one and drop removed items for "
                                    "good, atomically: readers see the old segments or the new one, an interruption "
                                    "leaves the old ones. (Segments are also merged automatically as they pile up.)")
    k.add_argument("collection", metavar="COLL")
    _add_json_flag(k)
    k.set_defaults(func=_cmd_collection_compact)


def _encoding_options(args) -> dict:
    from learn2hash.collections import DEFAULT_SHARD_SIZE

    if args.shard_size is not None and args.shard_size < 1:
        raise Learn2HashError(f"--shard-size must be at least 1, got {args.shard_size}")
    if args.workers is not None and args.workers < 0:
        raise Learn2HashError(f"--workers must be >= 0, got {args.workers}")
    return {"on_bad_image": args.on_bad_image, "shard_size": args.shard_size or DEFAULT_SHARD_SIZE,
            "progress": not args.no_progress, "workers": args.workers}


def _is_rank_zero() -> bool:
    import os

    return int(os.environ.get("RANK", "0")) == 0


def _print_added(args, coll, ids, what: str) -> None:
    if not _is_rank_zero():  # under torchrun, rank 0 reports
        return
    skipped = coll.last_skipped
    if args.json:
        _print_json({"collection": str(coll.folder), "added": len(ids), "items": len(coll), "bits": coll.bits,
                     "first_id": int(ids[0]) if len(ids) else None, "last_id": int(ids[-1]) if len(ids) else None,
                     "skipped": skipped})
        return
    print(f"{what} {coll.folder}: {len(ids)} images added, {len(coll)} items of {coll.bits} bits"
          + (f"; {len(skipped)} unreadable images skipped:" if skipped else ""))
    for s in skipped:
        print(f"  skipped {s['path']}: {s['error']}")


def _cmd_collection_create(args) -> int:
    from learn2hash.collections import Collection

    coll = Collection.create(args.out, args.run, args.images, **_encoding_options(args))
    _print_added(args, coll, coll.last_added, "created")
    return 0


def _cmd_collection_add(args) -> int:
    from learn2hash.collections import Collection

    coll = Collection.open(args.collection)
    ids = coll.add_images(args.images, **_encoding_options(args))
    _print_added(args, coll, ids, "added to")
    return 0


def _cmd_collection_remove(args) -> int:
    from learn2hash.collections import Collection

    if not (args.ids or args.paths or args.external_ids):
        raise Learn2HashError("give the items to remove: --ids, --paths and/or --external-ids")
    coll = Collection.open(args.collection)
    n = coll.remove(ids=args.ids, paths=args.paths, external_ids=args.external_ids)
    if args.json:
        _print_json({"collection": str(coll.folder), "removed": n, "items": len(coll)})
    else:
        print(f"removed {n} items from {coll.folder}: {len(coll)} left")
    return 0


def _cmd_collection_info(args) -> int:
    from learn2hash.collections import Collection

    info = Collection.open(args.collection).info()
    if args.json:
        _print_json(info)
        return 0
    for key, value in info.items():
        print(f"{key:<24} {', '.join(value) if isinstance(value, list) else value}")
    return 0


def _cmd_collection_compact(args) -> int:
    import time

    from learn2hash.collections import Collection

    coll = Collection.open(args.collection)
    t0 = time.perf_counter()
    result = {**coll.compact(), "seconds": round(time.perf_counter() - t0, 3)}
    if args.json:
        _print_json({"collection": str(coll.folder), **result})
    else:
        print(f"compacted {coll.folder}: {result['segments_before']} segments -> {result['segments_after']}, "
              f"{result['dropped']} removed items dropped, in {result['seconds']:.2f} s")
    return 0


def _search_collection(args) -> int:
    """``search --collection``: the k nearest items of an image file, with their paths and distances."""
    from learn2hash.collections import Collection
    from learn2hash.search import search

    coll = Collection.open(args.collection)
    query = Path(args.query)
    if not query.is_file():
        raise Learn2HashError(f"--query {args.query!r}: with --collection, give an image file")
    hits = search(coll, args.k, items=query)[0]
    if args.json:
        _print_json({"collection": str(coll.folder), "root": coll.meta["root"], "k": args.k, "n_items": len(coll),
                     "queries": [{"query": str(query),
                                  "results": [{"rank": r, **h.as_dict()} for r, h in enumerate(hits, 1)]}]})
        return 0
    print(f"{query.name}: {len(hits)} nearest of {len(coll)} items in {coll.folder} (paths under {coll.meta['root']})")
    _print_table([{"rank": r, "id": h.id, "distance": h.distance,
                   "path": h.path if h.path is not None else f"[external id] {h.external_id}"}
                  for r, h in enumerate(hits, 1)], ["rank", "id", "distance", "path"])
    return 0


# --------------------------------------------------------------------------- serve
@command
def _add_serve(sub) -> None:
    p = sub.add_parser("serve", help="HTTP search service and web page over a run's or a collection's index",
                       description="Serve POST /search, item images, /health, OpenAPI docs at /docs and a web "
                                   "page at / for run DIR, or for collection COLL (thumbnails of its images; with an "
                                   "API key, POST /items and DELETE /items/{id} change it live). Binds 127.0.0.1 "
                                   "unless --host says otherwise.")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", metavar="RUN_DIR", help="run folder to serve (its dataset's database split)")
    which.add_argument("--collection", metavar="COLL", help="collection to serve (learn2hash collection create)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--max-upload-mb", type=float, default=5.0, help="largest accepted upload in MiB (default 5)")
    p.add_argument("--max-k", type=int, default=1000, help="most results one request may ask for (default 1000)")
    p.add_argument("--max-decode-mb", type=float, default=256.0,
                   help="memory for decoding uploads at once, in MiB: sets how many are decoded concurrently, "
                        "in two lanes by size so that small images never wait behind large ones (default 256: "
                        "a quarter for images up to 1 M pixels, five at a time; the rest for larger ones, one "
                        "maximum-size image at a time)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="a Host name the service answers to, besides the loopback names and the --host address "
                        "(repeatable; '*.example.org' for its subdomains, '*' for any)")
    p.add_argument("--api-key-file", metavar="FILE", default=None,
                   help="file holding the API key (else the environment variable LEARN2HASH_API_KEY): every "
                        "request then needs 'Authorization: Bearer <key>' (401 otherwise); without a key there are "
                        "no routes that write")
    p.add_argument("--public-read", action="store_true",
                   help="with a key, let anyone use the routes that only read (search, images, info)")
    p.add_argument("--read-timeout", type=float, default=5.0, metavar="SECONDS",
                   help="seconds a client has to send a request's headers, and its body (plus 1 s per 64 KiB "
                        "received); slower clients are answered 408 and disconnected (default 5)")
    p.set_defaults(func=_cmd_serve)


def _cmd_serve(args) -> int:
    from learn2hash.serve import Limits, load_api_key, serve

    if not 0 < args.read_timeout <= 3600:
        raise Learn2HashError(f"--read-timeout must be in (0, 3600] seconds, got {args.read_timeout}")
    if not 0 < args.max_upload_mb <= 1024:
        raise Learn2HashError(f"--max-upload-mb must be in (0, 1024], got {args.max_upload_mb}")
    if args.max_k < 1:
        raise Learn2HashError(f"--max-k must be at least 1, got {args.max_k}")
    if not 0 < args.max_decode_mb <= 1 << 20:
        raise Learn2HashError(f"--max-decode-mb must be in (0, 1048576], got {args.max_decode_mb}")
    _check_bind_address(args.host, args.port)
    serve(args.run, collection=args.collection, host=args.host, port=args.port, allowed_hosts=args.allowed_host,
          limits=Limits(max_upload_bytes=int(args.max_upload_mb * (1 << 20)), max_k=args.max_k,
                        max_decode_bytes=int(args.max_decode_mb * (1 << 20)), read_timeout=args.read_timeout),
          api_key=load_api_key(args.api_key_file), public_read=args.public_read)
    return 0


def _check_bind_address(host: str, port: int) -> None:
    """Refuse (one line) a --host that is no address of this machine's resolver or a --port out of range."""
    import ipaddress
    import socket

    if not 0 <= port <= 65535:
        raise Learn2HashError(f"--port must be in 0..65535, got {port}")
    parts = host.split(".")
    if len(parts) == 4 and all(p.isdigit() for p in parts):  # numbers: an IPv4 address, never a name to look up
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise Learn2HashError(f"--host {host!r} is not an IPv4 address (four numbers 0..255)") from None
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as exc:
        raise Learn2HashError(f"--host {host!r} is not an address or host name this machine can bind "
                              f"({getattr(exc, 'strerror', None) or exc})") from None


# --------------------------------------------------------------------------- stream
@command
def _add_stream(sub) -> None:
    p = sub.add_parser(
        "stream", help="online cross-modal hashing on a stream of chunks, evaluated after every round",
        description="Hold out the queries, feed the rest of the dataset in chunks, and after every round record "
                    "the training seconds and the mAP of every cross-modal direction over the database seen so "
                    "far (stream.json, stream.png in --out). Online methods (lemon) learn each chunk once and "
                    "append its codes to the database; --retrain refits from scratch on everything seen, every "
                    "round (the baseline; always so for offline methods such as cca-itq). Running again with "
                    "the same settings continues an unfinished stream.")
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
                        log=None if args.quiet else (lambda msg: print(msg, file=sys.stderr)),
                        features=_features_from_args(args))
    rounds = result["rounds"]
    rows = [{"round": r["round"], "items": f"{r['n_seen']:,}", "train s": f"{r['train_seconds']:.3f}",
             **{f"mAP {d}": f"{r['map'][d]:.4f}" for d in result["directions"] if "map" in r}} for r in rounds]
    columns = ["round", "items", "train s"] + [f"mAP {d}" for d in result["directions"]]
    _print_table(rows, columns)
    status = "complete" if len(rounds) == result["total_rounds"] else f"{len(rounds)}/{result['total_rounds']} rounds"
    print(f"{result['method']}, {result['bits']} bits, {result['mode']}: {status} -> {args.out}")
    return 0


# --------------------------------------------------------------------------- reproduce
@command
def _add_reproduce(sub) -> None:
    p = sub.add_parser(
        "reproduce", help="run a paper's main setting and print the result beside the published figures",
        description="Run the recipe of METHOD on --dataset (backbone, optimiser, schedule, protocol and mAP "
                    "cutoff of the paper and its reference code) and print the result beside the paper's figure "
                    "and the reference code's figure (n/a where none is published). Without METHOD: list the "
                    "recipes. --quick swaps the pretrained backbone for smallcnn and trains one epoch: a smoke "
                    "test whose figure is not comparable.")
    p.add_argument("method", nargs="?", default=None, metavar="METHOD", help="csq, dhn or lemon")
    p.add_argument("--dataset", default=None, help="dataset of the recipe (see `learn2hash reproduce`)")
    p.add_argument("--bits", type=int, default=64, help="code length K (default 64)")
    p.add_argument("--out", default=None, help="run folder (default runs/reproduce-METHOD-DATASET-BITS)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smallcnn, one epoch, no pretrained weights (seconds)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="override a recipe hyper-parameter")
    p.add_argument("--data-path", default=None, help="the dataset's folder (default $LEARN2HASH_DATA/DATASET)")
    p.add_argument("--data-param", action="append", metavar="KEY=VALUE", help="dataset loader parameter")
    p.add_argument("--chunk", type=int, default=None, help="items per round of a streaming recipe (lemon)")
    p.add_argument("--weights", default=None, metavar="PATH",
                   help="a local state-dict file for the recipe's backbone instead of its named weights "
                        "(downloaded when online)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
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
    data_params = _parse_assignments(args.data_param, "--data-param")
    if args.data_path:
        data_params["path"] = args.data_path
    params, dparams = recipes.resolved(r, args.quick, _parse_assignments(args.param, "--param"), data_params,
                                       args.weights)
    shown = {k: v for k, v in params.items() if k not in ("backbone_options",)}
    stage = recipes.features_of(r, args.quick, args.weights)
    if stage:
        shown = {"features": stage["backbone"], **shown}
    print(f"recipe {r.method} on {r.dataset} [{r.protocol}], {args.bits} bits"
          + (f", resize {r.resize_crop[0]} / crop {r.resize_crop[1]}" if r.resize_crop else "")
          + (f", chunks of {args.chunk or r.chunk}" if r.chunk else "") + ": "
          + ", ".join(f"{k}={v}" for k, v in shown.items()), file=sys.stderr)
    result = recipes.reproduce(args.method, args.dataset, args.bits, args.out, seed=args.seed, quick=args.quick,
                               params=_parse_assignments(args.param, "--param"), data_params=data_params,
                               chunk=args.chunk, progress=not args.no_progress, weights=args.weights,
                               log=lambda msg: print(msg, file=sys.stderr))
    print(f"{r.method}, {args.bits} bits, {r.dataset} [{r.protocol}] -> {result['run']}"
          + ("  (quick run: not comparable with the published figures)" if args.quick else ""))
    _print_table(result["rows"], ["metric", "this run", "paper", "reference code"])
    if any("-best-of-" in row["metric"] for row in result["rows"]):
        print(f"note: -best-of-N is the reference code's protocol: the best of the evaluations on the query split "
              f"every {r.eval_every} epochs (the queries choose the epoch); the first line is after the last epoch")
    if r.notes:
        print(f"note: {r.notes}")
    return 0


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="learn2hash",
        description="Learning to hash: train hashers, index codes, evaluate retrieval.",
    )
    parser.add_argument("--version", action="version", version=f"learn2hash {__version__}")
    log_help = "what the learn2hash loggers print on stderr (default warning; info: e.g. one line per epoch)"
    parser.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, default="warning", help=log_help)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _COMMANDS:
        add(sub)
    for p in sub.choices.values():  # also accepted after the command's name
        p.add_argument("--log-level", type=str.lower, choices=LOG_LEVELS, default=argparse.SUPPRESS, help=log_help)
    return parser


LOG_LEVELS = ("debug", "info", "warning", "error")
_log_handler: logging.Handler | None = None


def configure_logging(level: str) -> None:
    """Send the ``learn2hash`` loggers' records of ``level`` and above to the current stderr (once:
    calling it again replaces the handler it installed)."""
    global _log_handler
    logger = logging.getLogger("learn2hash")
    if _log_handler is not None:
        logger.removeHandler(_log_handler)
    _log_handler = logging.StreamHandler(sys.stderr)
    _log_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    logger.addHandler(_log_handler)
    logger.setLevel(level.upper())


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.log_level)
    try:
        return int(args.func(args) or 0)
    except Learn2HashError as exc:
        print(f"learn2hash {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(f"learn2hash {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # a path the user gave that cannot be read or written: one line naming it
        print(f"learn2hash {args.command}: error: {_os_error_text(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR


def _os_error_text(exc: OSError) -> str:
    """``PATH: reason`` (both paths of a rename or link) for an :class:`OSError`, on one line."""
    reason = exc.strerror or " ".join(str(exc).split()) or type(exc).__name__
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    if not paths:
        return f"{reason} ({type(exc).__name__})"
    return f"{' -> '.join(paths)}: {reason}"


if __name__ == "__main__":
    sys.exit(main())
