"""``learn2hash report``, ``evaluate``, ``index`` and ``search``: what a run's codes retrieve."""

from __future__ import annotations

import sys
from pathlib import Path

from learn2hash.cli._common import _add_json_flag, _add_parser, _print_json, _print_table, command
from learn2hash.errors import Learn2HashError, check_int


@command
def _add_report(sub) -> None:
    """--run DIR writes PR and P@N curves, the center/code distance heat map, sample retrievals, the training
    curve and report.html into DIR/report; --compare DIR DIR ... overlays several runs and plots P@H<=2
    against bits."""
    p = _add_parser(sub, "report", _add_report,
                    help="plots and an HTML report of a run, or curves of several runs overlaid")
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


_EVALUATE_FILES = (("query_codes", "--query-codes"), ("query_labels", "--query-labels"),
                   ("db_codes", "--db-codes"), ("db_labels", "--db-labels"))


@command
def _add_evaluate(sub) -> None:
    """Rank database codes by Hamming distance to each query code and print mAP@k, precision@N and
    precision/recall within a Hamming radius. Items are relevant when they share a label. Codes files are
    those written by Codes.save (a .npy with its .json sidecar); label files are .npy arrays of class ids
    int[n] or 0/1 matrices [n, classes]."""
    p = _add_parser(sub, "evaluate", _add_evaluate,
                    help="exact retrieval metrics (mAP, P@N, P/R within a Hamming radius) of saved codes")
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
    """The integer ``option`` gives as ``text`` (:func:`~learn2hash.errors.check_int`'s error otherwise)."""
    try:
        value = int(text)
    except (TypeError, ValueError):
        value = text
    return check_int(value, option, minimum)


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
    _add_index_build(isub)


def _add_index_build(isub) -> None:
    """Encode the database split of a run (cached in RUN/codes) and save a HammingIndex of it in RUN/index;
    item ids are database positions."""
    b = _add_parser(isub, "build", _add_index_build,
                    help="encode the run's database split and save its index under RUN/index")
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
    """Encode the query with the run's hasher and print the k nearest database items: id (database
    position), Hamming distance, labels. An index built before the run was retrained, or of other codes, is
    refused (or rebuilt with --rebuild-index); ids appended to the index later have no labels."""
    p = _add_parser(sub, "search", _add_search, help="search a run's index: nearest database items of a query")
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
