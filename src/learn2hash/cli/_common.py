"""What every sub-command module of :mod:`learn2hash.cli` shares: the registry of sub-commands
(:func:`command`), printing (tables, one JSON document) and the options that several commands take."""

from __future__ import annotations

import inspect
import json
import sys
from typing import Callable, Sequence

from learn2hash.errors import Learn2HashError

_COMMANDS: list[Callable] = []


def command(add: Callable) -> Callable:
    """Decorator for ``_add_<name>(subparsers)``: registers a sub-command (in definition order)."""
    _COMMANDS.append(add)
    return add


def _add_parser(sub, name: str, add: Callable, help: str):
    """``sub.add_parser(name)``: ``help`` is its line in the parent's list of commands, and the docstring of
    ``add`` (the function that declares it), when it has one, is its ``--help`` description (argparse
    refills the text)."""
    doc = inspect.getdoc(add)
    return sub.add_parser(name, help=help, **({"description": doc} if doc else {}))


def _log_line(msg: str) -> None:
    """A progress line of the library (``log=`` of train, stream, reproduce) on stderr."""
    print(msg, file=sys.stderr)


def _print_json(doc) -> None:
    """One JSON document on stdout (numpy values and paths as JSON, as in every file we write)."""
    from learn2hash._atomic import json_default

    print(json.dumps(doc, indent=2, default=json_default))


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


def _add_data_options(p, path_help: str) -> None:
    """--data-path and --data-param KEY=VALUE: where a dataset is and its loader's parameters."""
    p.add_argument("--data-path", default=None, help=path_help)
    p.add_argument("--data-param", action="append", metavar="KEY=VALUE", help="dataset loader parameter")


def _data_params(args) -> dict:
    """The dataset loader's parameters of --data-param, with --data-path as ``path``."""
    params = _parse_assignments(args.data_param, "--data-param")
    if args.data_path:
        params["path"] = args.data_path
    return params


def _add_progress_flag(p) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _add_workers_option(p) -> None:
    p.add_argument("--workers", type=int, default=None, help="image decoding processes (default: one per core, <= 8)")


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
