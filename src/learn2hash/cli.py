"""The ``learn2hash`` command: thin. It parses arguments, calls the library, prints.

Every sub-command is a pair ``_add_<name>(subparsers)`` / ``_cmd_<name>(args)``. A user mistake
(a :class:`~learn2hash.errors.Learn2HashError`) becomes one line on stderr and exit status 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from learn2hash import __version__
from learn2hash.errors import Learn2HashError

EXIT_USER_ERROR = 2
_COMMANDS: list[Callable] = []


def command(add: Callable) -> Callable:
    """Decorator for ``_add_<name>(subparsers)``: registers a sub-command (in definition order)."""
    _COMMANDS.append(add)
    return add


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
    p = sub.add_parser("datasets", help="list datasets, whether each is on this machine, and how to get it")
    p.set_defaults(func=_cmd_datasets)


def _cmd_datasets(args) -> int:
    from learn2hash.datasets import registered

    rows = []
    for name, d in sorted(registered().items()):
        if d.generic:
            status, where = "loader", "your own files (--data-path)"
        elif d.present():
            status, where = "present", d.location()
        else:
            status, where = "missing", d.how_to_get
        rows.append({"dataset": name, "status": status, "protocols": ",".join(d.protocols),
                     "description": d.description, "location / how to get": where})
    _print_table(rows, ["dataset", "status", "protocols", "description", "location / how to get"])
    return 0


# --------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="learn2hash",
        description="Learning to hash: train hashers, index codes, evaluate retrieval.",
    )
    parser.add_argument("--version", action="version", version=f"learn2hash {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for add in _COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
