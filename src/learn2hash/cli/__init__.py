"""The ``learn2hash`` command: thin. It parses arguments, calls the library, prints.

Every sub-command is a pair ``_add_<name>(subparsers)`` / ``_cmd_<name>(args)`` in the module of its
group (:mod:`~learn2hash.cli.datasets`; :mod:`~learn2hash.cli.training`: train, encode, compare, methods;
:mod:`~learn2hash.cli.retrieval`: report, evaluate, index, search; :mod:`~learn2hash.cli.collection`;
:mod:`~learn2hash.cli.serve`; :mod:`~learn2hash.cli.stream`; :mod:`~learn2hash.cli.reproduce`), the options
and printing they share in :mod:`~learn2hash.cli._common`; the docstring of ``_add_<name>`` is the
command's ``--help`` description. A user mistake
(a :class:`~learn2hash.errors.Learn2HashError`) becomes one line on stderr and exit status 2,
never a traceback. ``--json`` (train, encode, search, evaluate) prints one JSON document on stdout
instead of the tables; ``--log-level`` sets what the ``learn2hash`` loggers print on stderr
(``info`` shows e.g. one line per training epoch).
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from learn2hash import __version__
# the sub-command modules register their commands on import, in this order (the order of --help)
from learn2hash.cli import datasets, training, retrieval, collection, serve, stream, reproduce  # noqa: F401
# every name of the commands' functions, importable from learn2hash.cli as before the package
from learn2hash.cli._common import (_COMMANDS, _add_features_flags, _add_json_flag, _features_from_args,  # noqa: F401
                                    _parse_assignments, _print_json, _print_table, command)
from learn2hash.cli.collection import (_add_collection, _add_encoding_options, _cmd_collection_add,  # noqa: F401
                                       _cmd_collection_compact, _cmd_collection_create, _cmd_collection_info,
                                       _cmd_collection_remove, _encoding_options, _is_rank_zero, _print_added)
from learn2hash.cli.datasets import _add_datasets, _cmd_datasets, _list_datasets  # noqa: F401
from learn2hash.cli.reproduce import _add_reproduce, _cmd_reproduce  # noqa: F401
from learn2hash.cli.retrieval import (_EVALUATE_FILES, _add_backend_options, _add_evaluate, _add_index,  # noqa: F401
                                      _add_report, _add_search, _backend_options, _cmd_evaluate, _cmd_index_build,
                                      _cmd_report, _cmd_search, _evaluate_inputs_from_files, _evaluate_options,
                                      _int_option, _print_evaluation, _query_items, _search_collection)
from learn2hash.cli.serve import _add_serve, _check_bind_address, _cmd_serve  # noqa: F401
from learn2hash.cli.stream import _add_stream, _cmd_stream  # noqa: F401
from learn2hash.cli.training import (_add_compare, _add_encode, _add_methods, _add_train, _cmd_compare,  # noqa: F401
                                     _cmd_encode, _cmd_methods, _cmd_train, _print_metrics)
from learn2hash.errors import Learn2HashError

EXIT_USER_ERROR = 2


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
