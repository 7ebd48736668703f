"""``learn2hash collection create|add|remove|info|compact``: your own images, encoded by a run's hasher and indexed."""

from __future__ import annotations

from learn2hash.cli._common import (_add_json_flag, _add_parser, _add_progress_flag, _add_workers_option, _print_json,
                                     command)
from learn2hash.errors import Learn2HashError, check_int


def _add_encoding_options(p) -> None:
    p.add_argument("--on-bad-image", choices=["error", "skip"], default="error",
                   help="an unreadable image: stop, naming it (default; run again once it is fixed: finished "
                        "shards are kept), or leave it out and list it")
    p.add_argument("--shard-size", type=int, default=None,
                   help="images per shard, the unit that a rerun after an interruption keeps (default 1024)")
    _add_workers_option(p)
    _add_progress_flag(p)
    _add_json_flag(p)


def _add_images_option(p) -> None:
    p.add_argument("--images", required=True, metavar="DIR|LIST", help="a folder of images or a list file")


@command
def _add_collection(sub) -> None:
    """A collection is a folder that holds the codes of your image files (or of items with an id of yours),
    the Hamming index that searches them, and the identity of the run's hasher that encoded them (a
    collection whose hasher changed is refused). Search it with `learn2hash search --collection COLL --query
    photo.jpg`. Encoding is streamed in shards, resumable after an interruption (run the same command again)
    and split across processes under torchrun (torchrun --nproc_per_node=N -m learn2hash collection create
    ...)."""
    p = _add_parser(sub, "collection", _add_collection,
                    help="your own images, encoded by a run's hasher and indexed: create, add, remove, info, compact")
    csub = p.add_subparsers(dest="collection_command", metavar="ACTION")
    csub.required = True
    for add in (_add_collection_create, _add_collection_add, _add_collection_remove, _add_collection_info,
                _add_collection_compact):
        add(csub)


def _collection_action(csub, name: str, add, help: str, func):
    """The parser of action ``name`` on an existing collection (COLL, its first argument), run by ``func``;
    ``add`` declares it (its docstring is the description)."""
    q = _add_parser(csub, name, add, help=help)
    q.add_argument("collection", metavar="COLL")
    q.set_defaults(func=func)
    return q


def _add_collection_create(csub) -> None:
    """Encode the images of --images (a folder, searched recursively, or a list file of paths relative to its
    folder) and index them in --out. Item paths are kept relative to that folder (the collection's root).
    Running the same command again continues an interrupted creation and adds nothing twice."""
    c = _add_parser(csub, "create", _add_collection_create,
                    help="encode a folder or list of images with a run's hasher into a new collection")
    c.add_argument("--run", "--run-folder", dest="run", required=True,
                   help="run folder whose hasher takes image files (under torchrun write --run-folder: torchrun "
                        "reads --run as an abbreviation of its own --run-path)")
    _add_images_option(c)
    c.add_argument("--out", required=True, metavar="COLL", help="collection folder to create")
    _add_encoding_options(c)
    c.set_defaults(func=_cmd_collection_create)


def _add_collection_add(csub) -> None:
    """Encode and add the images of --images (a folder or a list file, under the collection's root). Images
    whose path is already in the collection are left out, so adding a folder again adds only its new
    images."""
    a = _collection_action(csub, "add", _add_collection_add,
                           "encode and add more images (under the collection's root)", _cmd_collection_add)
    _add_images_option(a)
    _add_encoding_options(a)


def _add_collection_remove(csub) -> None:
    """Remove items: --ids (as search prints them), --paths (relative to the collection's root, as search
    prints them, or absolute paths of files under it) and --external-ids. Every one named must be in the
    collection, else nothing is removed."""
    r = _collection_action(csub, "remove", _add_collection_remove, "remove items by id, path or external id",
                           _cmd_collection_remove)
    r.add_argument("--ids", nargs="+", type=int, default=None, metavar="ID")
    r.add_argument("--paths", nargs="+", default=None, metavar="PATH")
    r.add_argument("--external-ids", nargs="+", default=None, metavar="XID")
    _add_json_flag(r)


def _add_collection_info(csub) -> None:
    # no docstring: `collection info --help` has no description
    _add_json_flag(_collection_action(csub, "info", _add_collection_info, "what a collection holds",
                                      _cmd_collection_info))


def _add_collection_compact(csub) -> None:
    """Rewrite the collection index's segments into one and drop removed items for good, atomically: readers
    see the old segments or the new one, an interruption leaves the old ones. (Segments are also merged
    automatically as they pile up.)"""
    _add_json_flag(_collection_action(csub, "compact", _add_collection_compact,
                                      "rewrite the index's segments into one, dropping removed items",
                                      _cmd_collection_compact))


def _encoding_options(args) -> dict:
    from learn2hash.collections import DEFAULT_SHARD_SIZE

    shard_size = DEFAULT_SHARD_SIZE if args.shard_size is None else check_int(args.shard_size, "--shard-size", 1)
    workers = None if args.workers is None else check_int(args.workers, "--workers", 0)
    return {"on_bad_image": args.on_bad_image, "shard_size": shard_size, "progress": not args.no_progress,
            "workers": workers}


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
