"""``learn2hash datasets``: list the datasets, or load one and describe its splits."""

from __future__ import annotations

from learn2hash.cli._common import _add_data_options, _add_parser, _data_params, _print_table, command


@command
def _add_datasets(sub) -> None:
    """Without NAME: list every dataset, whether it is found (in --data-path/NAME or $LEARN2HASH_DATA/NAME),
    its protocols and mAP cutoff, where it is published and the file layout it expects. With NAME: load it
    under a protocol and print its splits (check your own files with a generic loader, e.g. `learn2hash
    datasets npz --data-path feats.npz`)."""
    p = _add_parser(sub, "datasets", _add_datasets,
                    help="list datasets, whether each is on this machine, and how to get it")
    p.add_argument("name", nargs="?", default=None, metavar="NAME", help="a dataset to load and describe")
    p.add_argument("--protocol", default=None, help="protocol (default: the dataset's first)")
    p.add_argument("--seed", type=int, default=0)
    _add_data_options(p, "with NAME: the dataset's folder (or your file for a generic loader); without NAME: the "
                         "folder holding one sub-folder per dataset (instead of $LEARN2HASH_DATA)")
    p.add_argument("--save-splits", default=None, metavar="DIR", help="write the exact split to DIR")
    p.set_defaults(func=_cmd_datasets)


def _cmd_datasets(args) -> int:
    from learn2hash.datasets import info, load

    if args.name is None:
        _list_datasets(args.data_path)
        return 0
    d = info(args.name)
    ds = load(args.name, protocol=args.protocol, seed=args.seed, **_data_params(args))
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
    from learn2hash.datasets import available
    from learn2hash.datasets.registry import dataset_folder, using_data_root

    rows, details = [], []
    with using_data_root(root):
        for name, d in sorted(available().items()):
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
