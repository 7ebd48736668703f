"""The streaming protocol: a database that arrives in chunks, evaluated after every round.

The dataset's query split is held out (the ``stream`` protocol of the multi-modal datasets
draws 2,000 seeded queries); its database split, in its arrival order, is cut into chunks of
``chunk`` items (``floor(n / chunk)`` chunks, the remainder joining the last one). Round ``t``
trains on chunk ``t`` (its wall-clock seconds are recorded), then ranks the database seen so
far for the queries in every cross-modal direction ``a->b`` (queries described by modality
``a``, database items by modality ``b``) and records mAP over that whole database
(``topk=None``; ties by their expected value, :func:`learn2hash.metrics.evaluate`).

Two training modes:

- **online** (an :class:`~learn2hash.methods.OnlineHasher` such as LEMON): ``partial_fit`` on the
  new chunk only. The database holds the hasher's unified codes ``codes_``; each round's new
  codes are written once to their own file and never rewritten.
- **retrain** (any multi-modal hasher, and the baseline for online methods): a fresh hasher is
  fitted on everything seen so far, every round. The database of direction ``a->b`` is the
  hasher's ``codes_`` when it has them (LEMON), else the items encoded from modality ``b``.

The run folder (``config.json`` is a run configuration, so :class:`learn2hash.runs.Run` opens it)::

    config.json, splits.json, split_*.npy      configuration and the exact splits (arrival order)
    hasher/                                    the hasher after the last completed round
    codes/database/chunk-NNNNN.npy (+ .json)    online: the codes of round NNNNN's chunk (Codes.save)
    codes/database/manifest.json               online: the chunk files in order, with sha256
    codes/query-MODALITY.npy (+ .json)         the queries' codes after the last evaluated round
    stream.json                                one record per completed round (the commit point)
    stream.png                                 mAP of each direction and training seconds per round
                                               (drawn at the end of each call)

Running again on the same folder with the same configuration continues after the last
completed round (``max_rounds`` bounds the rounds of one call), so a stream can stop and
resume; the hasher is restored from its saved state.
"""

from __future__ import annotations

import io
import os
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from learn2hash import _atomic
from learn2hash.codes import Codes
from learn2hash.datasets.base import Dataset, Split
from learn2hash.errors import CorruptFileError, Learn2HashError, check_int

STREAM_FORMAT = "learn2hash-stream"
STREAM_VERSION = 1
MANIFEST_FORMAT = "learn2hash-chunked-codes"
_CONFIG_KEYS = ("method", "bits", "params", "dataset", "protocol", "seed", "data_params", "stream", "features")


def with_view_features(ds: Dataset, features: dict[str, Any], log: Callable[[str], None]) -> Dataset:
    """``ds`` with every modality that holds images (``[n, C, H, W]`` or ``[n, H, W]``) replaced by a
    backbone's pooled features (:class:`~learn2hash.features.ImageFeatures` with ``features``, cached);
    the other modalities stay as they are."""
    import dataclasses

    from learn2hash.features import ImageFeatures

    stage = ImageFeatures(**features)
    stage.check()

    def is_images(view: Any) -> bool:
        shape = view.shape if hasattr(view, "shape") else np.shape(view)
        return len(shape) in (3, 4) and getattr(view, "dtype", None) == np.uint8

    names = [m for m, v in ds.database.views.items() if is_images(v)]
    if not names:
        raise Learn2HashError(f"--features: no modality of {ds.name} holds images (modalities: "
                              f"{', '.join(f'{m} {list(np.shape(v)[1:])}' for m, v in ds.database.views.items())})")
    log(f"{', '.join(names)}: {stage.backbone} features in place of the images")
    splits = {}
    for name, split in ds.splits.items():
        views = {m: (stage.transform(v) if m in names else v) for m, v in split.views.items()}
        splits[name] = dataclasses.replace(split, x=next(iter(views.values())), views=views)
    return dataclasses.replace(ds, **splits)


def directions(modalities: Sequence[str]) -> list[tuple[str, str]]:
    """Every ordered pair of distinct modalities ``(query modality, database modality)``."""
    return [(a, b) for a in modalities for b in modalities if a != b]


def direction_name(a: str, b: str) -> str:
    return f"{a}->{b}"


def chunk_bounds(n: int, chunk: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]``: ``max(1, n // chunk)`` chunks of ``chunk`` items, the remainder in the last."""
    chunk = check_int(chunk, "chunk", 1)
    if n < 1:
        raise Learn2HashError("the database to stream is empty")
    count = max(1, n // int(chunk))
    starts = [i * int(chunk) for i in range(count)]
    return [(s, starts[i + 1] if i + 1 < count else n) for i, s in enumerate(starts)]


# --------------------------------------------------------------------------- chunked database codes
def read_chunked_codes(folder: str | os.PathLike) -> Codes:
    """The database codes of an online stream: every chunk in the manifest, in order, checksums checked."""
    folder = Path(folder)
    manifest = _read_manifest(folder)
    if manifest is None:
        raise Learn2HashError(f"{folder} holds no chunked codes (no manifest.json)")
    parts = [_load_chunk(folder, entry) for entry in manifest["chunks"]]
    return Codes.concatenate(parts) if parts else Codes.empty(manifest["bits"])


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / "manifest.json"
    if not path.exists():
        return None
    manifest = _atomic.load_json(path, "chunked-codes manifest", format=MANIFEST_FORMAT,
                                 required={"bits": int, "chunks": list})
    for i, entry in enumerate(manifest["chunks"]):
        if not isinstance(entry, dict):
            raise CorruptFileError(f"chunked-codes manifest {path}: chunk {i} is {_atomic.json_type(entry)}, "
                                   "expected an object")
        _atomic.check_fields(entry, f"chunked-codes manifest {path}: chunk {i}", required={"file": str, "sha256": str})
        if Path(entry["file"]).name != entry["file"]:
            raise CorruptFileError(f"chunked-codes manifest {path}: chunk {i} names {entry['file']!r}, "
                                   "expected a file name in its folder")
    return manifest


def _load_chunk(folder: Path, entry: dict[str, Any]) -> Codes:
    path = folder / entry["file"]
    if not path.exists() or _atomic.sha256_file(path) != entry["sha256"]:
        raise CorruptFileError(f"database chunk {path} is missing or does not match the checksum in the manifest")
    return Codes.load(path)


# --------------------------------------------------------------------------- the stream
def _chunk_file(round_: int) -> str:
    return f"chunk-{round_:05d}.npy"


def _write_manifest(db_folder: Path, bits: int, chunks: list[dict[str, Any]]) -> None:
    _atomic.save_json(db_folder / "manifest.json", {"format": MANIFEST_FORMAT, "bits": bits, "chunks": chunks})


def _rows(x: Any, start: int, stop: int) -> np.ndarray:
    return np.asarray(x[start:stop])


def _split_rows(split: Split, stop: int) -> Split:
    """The first ``stop`` items of ``split``, materialised."""
    views = {k: _rows(v, 0, stop) for k, v in split.views.items()}
    x = views[next(iter(views))] if views else _rows(split.x, 0, stop)
    return Split(x=x, labels=split.labels[:stop], name=split.name, kind=split.kind, source=split.source,
                 indices=None if split.indices is None else split.indices[:stop], views=views)


def run_stream(method: str, dataset: str | Dataset, bits: int, chunk: int, out: str | os.PathLike, *,
               protocol: str | None = "stream", seed: int = 0, params: dict[str, Any] | None = None,
               data_params: dict[str, Any] | None = None, retrain: bool = False, max_rounds: int | None = None,
               evaluate_every: int = 1, log: Callable[[str], None] | None = None,
               features: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run (or continue) a stream; returns the content of ``stream.json``.

    ``features``: :class:`~learn2hash.features.ImageFeatures` parameters; every modality holding images
    is hashed through that backbone's features instead (:func:`with_view_features`).

    ``dataset`` is a registered name (loaded with ``protocol``, ``seed`` and ``data_params``) or
    a loaded :class:`Dataset` whose splits record their source indices. ``retrain``: fit a
    fresh hasher on everything seen, every round (forced for methods that are not online).
    ``max_rounds``: stop after this many more rounds. ``evaluate_every``: evaluate every that
    many rounds (and always after the last round of the stream; 0 only after the last).
    """
    from learn2hash.methods import OnlineHasher, create, method_class
    from learn2hash.runs.folder import RunFolder, make_config

    log = log or (lambda msg: None)
    out = Path(out)
    params = dict(params or {})
    data_params = dict(data_params or {})
    klass = method_class(method)
    online = issubclass(klass, OnlineHasher) and not retrain
    if "seed" in klass._param_names():
        params.setdefault("seed", seed)
    evaluate_every = check_int(evaluate_every, "evaluate_every", 0)
    if max_rounds is not None:
        max_rounds = check_int(max_rounds, "max_rounds", 1)

    template = create(method, bits=bits, **params)  # parameter errors before anything is written

    resuming = (out / "config.json").exists()
    ds = _stream_dataset(dataset, out, resuming, protocol, seed, data_params, features, log)
    db = ds.database
    modalities = list(db.views)
    if len(modalities) < 2:
        raise Learn2HashError(f"dataset {ds.name!r} has {len(modalities)} modality; a cross-modal stream needs at "
                              "least two (split.views)")
    bounds = chunk_bounds(len(db), int(chunk))
    config = make_config(method=method, bits=bits, params=template.get_params(), dataset=ds.name,
                         protocol=ds.protocol, seed=ds.seed, data_params=ds.params,
                         sizes={k: len(s) for k, s in ds.splits.items()},
                         stream={"chunk": int(chunk), "rounds": len(bounds), "mode": "online" if online else "retrain",
                                 "modalities": modalities})
    if features:
        config["features"] = dict(features)
    folder = RunFolder(out)
    if resuming:
        diff = folder.config_differences(config, _CONFIG_KEYS)
        if diff:
            raise Learn2HashError(f"{out} holds a stream with a different configuration ({', '.join(diff)}); "
                                  "choose another --out or repeat the original settings to continue it")
    state = _load_stream(out) if resuming else None
    records: list[dict[str, Any]] = state["rounds"] if state else []
    hasher, manifest = (_online_state(folder, out, len(records), template) if online else (None, []))
    if not resuming:
        out.mkdir(parents=True, exist_ok=True)
        folder.save_splits(ds)
        folder.write_config(config)
    stream_info = {"format": STREAM_FORMAT, "version": STREAM_VERSION, "method": method, "bits": int(bits),
                   "mode": config["stream"]["mode"], "chunk": int(chunk), "total_rounds": len(bounds),
                   "directions": [direction_name(a, b) for a, b in directions(modalities)]}
    if len(records) >= len(bounds):
        log(f"{out}: the stream is complete ({len(records)} rounds)")
        return {**stream_info, "rounds": records}

    rounds = _Rounds(method, bits, params, ds, modalities, bounds, folder, hasher, manifest, evaluate_every, log)
    last = len(bounds) if max_rounds is None else min(len(bounds), len(records) + max_rounds)
    for t in range(len(records), last):
        records.append(rounds.run(t, online))
        _atomic.save_json(out / "stream.json", {**stream_info, "rounds": records})
        folder.commit_hasher()
        rounds.report(records[-1])
    plot_stream(records, out / "stream.png", title=f"{method}, {bits} bits, {ds.name} ({config['stream']['mode']})")
    return {**stream_info, "rounds": records}


def _stream_dataset(dataset: str | Dataset, out: Path, resuming: bool, protocol: str | None, seed: int,
                    data_params: dict[str, Any], features: dict[str, Any] | None, log: Callable[[str], None]
                    ) -> Dataset:
    """The dataset to stream: as given, the splits of the stream in ``out`` (resuming) or freshly loaded;
    with the feature stage ``features`` in front of its image modalities."""
    from learn2hash import datasets

    if isinstance(dataset, Dataset):
        ds = dataset
    elif resuming:
        ds = datasets.load(dataset, splits=out, **data_params)
    else:
        ds = datasets.load(dataset, protocol=protocol, seed=seed, **data_params)
    return with_view_features(ds, features, log) if features else ds


def _online_state(folder: Any, out: Path, done: int, template: Any) -> tuple[Any, list[dict[str, Any]]]:
    """``(the online hasher, the manifest of its database chunks)`` after ``done`` completed rounds,
    checked against each other (``template`` when none is done)."""
    from learn2hash.methods import OnlineHasher

    if not done:
        return template, []
    db_folder = out / "codes" / "database"
    hasher = folder.recover_hasher(lambda h: isinstance(h, OnlineHasher) and h.rounds_ == done,
                                   f"has learned the {done} completed rounds of stream.json")
    found = _read_manifest(db_folder)
    manifest = (found or {"chunks": []})["chunks"][:done]
    if len(manifest) != done:
        raise CorruptFileError(f"{db_folder}: the manifest lists fewer chunks than the {done} completed rounds")
    on_disk = Codes.concatenate([_load_chunk(db_folder, e) for e in manifest])
    if on_disk != hasher.codes_:
        raise CorruptFileError(f"{out}: the database chunks on disk differ from the saved hasher's codes")
    return hasher, manifest


class _Rounds:
    """The rounds of one call of :func:`run_stream`: train on a chunk, evaluate when due, stage the hasher."""

    def __init__(self, method: str, bits: int, params: dict[str, Any], ds: Dataset, modalities: list[str],
                 bounds: list[tuple[int, int]], folder: Any, hasher: Any, manifest: list[dict[str, Any]],
                 evaluate_every: int, log: Callable[[str], None]):
        self.method, self.bits, self.params, self.ds, self.modalities = method, bits, params, ds, modalities
        self.bounds, self.folder, self.hasher, self.manifest = bounds, folder, hasher, manifest
        self.evaluate_every, self.log = evaluate_every, log
        self.out = Path(folder.path)
        self.db_folder = self.out / "codes" / "database"
        self.query_views = {m: np.asarray(ds.query.views[m]) for m in modalities}

    def run(self, t: int, online: bool) -> dict[str, Any]:
        """Round ``t`` (0-based): its record; the hasher is staged and the manifest written (the caller
        writes the record and commits)."""
        from learn2hash.methods import create

        db, (start, stop) = self.ds.database, self.bounds[t]
        if online:
            train_seconds = self._partial_fit(t, start, stop)
        else:
            seen = _split_rows(db, stop)
            self.hasher = create(self.method, bits=self.bits, **self.params)
            t0 = time.perf_counter()
            self.hasher.fit(seen)
            train_seconds = time.perf_counter() - t0
        record: dict[str, Any] = {"round": t + 1, "n_chunk": stop - start, "n_seen": stop,
                                  "train_seconds": train_seconds}
        if t + 1 == len(self.bounds) or (self.evaluate_every and (t + 1) % self.evaluate_every == 0):
            record.update(_evaluate_round(self.hasher, self.query_views, self.ds.query.labels, db, stop,
                                          self.modalities, self.out))
        self.folder.stage_hasher(self.hasher)
        if online:
            _write_manifest(self.db_folder, int(self.bits), self.manifest)
        return record

    def report(self, record: dict[str, Any]) -> None:
        """Log a committed round's record."""
        maps = ", ".join(f"{k} {v:.4f}" for k, v in record.get("map@all", {}).items())
        self.log(f"round {record['round']}/{len(self.bounds)}: {record['n_seen']:,} items, "
                 f"train {record['train_seconds']:.3f} s" + (f", mAP {maps}" if maps else ""))

    def _partial_fit(self, t: int, start: int, stop: int) -> float:
        """Learn chunk ``t`` online and write its codes to their own file; the training seconds."""
        chunk_views = {m: _rows(self.ds.database.views[m], start, stop) for m in self.modalities}
        t0 = time.perf_counter()
        self.hasher.partial_fit(chunk_views, self.ds.database.labels[start:stop])
        train_seconds = time.perf_counter() - t0
        entry_file = _chunk_file(t)
        self.hasher.codes_[start:stop].save(self.db_folder / entry_file)
        self.manifest.append({"file": entry_file, "start": start, "n": stop - start,
                              "sha256": _atomic.sha256_file(self.db_folder / entry_file)})
        return train_seconds


def _load_stream(out: Path) -> dict[str, Any] | None:
    """The content of ``out/stream.json`` (None when there is none), its round records under the keys of today
    (:func:`learn2hash.metrics.current_key`: the per-direction mAPs of older files, ``"map"``, are ``"map@all"``)."""
    from learn2hash.metrics import current_key

    path = out / "stream.json"
    if not path.exists():
        return None
    data = _atomic.load_json(path, "stream record", format=STREAM_FORMAT, versions=(STREAM_VERSION,),
                             required={"rounds": list})
    for i, record in enumerate(data["rounds"]):
        if not isinstance(record, dict):
            raise CorruptFileError(f"stream record {path}: round {i + 1} is {_atomic.json_type(record)}, "
                                   "expected an object")
    data["rounds"] = [{current_key(k): v for k, v in record.items()} for record in data["rounds"]]
    return data


def _evaluate_round(hasher: Any, query_views: dict[str, np.ndarray], query_labels: np.ndarray, db: Split,
                    stop: int, modalities: list[str], out: Path) -> dict[str, Any]:
    """mAP of every direction over the first ``stop`` database items; writes the query codes."""
    from learn2hash.methods import OnlineHasher
    from learn2hash.metrics import evaluate

    t0 = time.perf_counter()
    q_codes = {m: hasher.encode(query_views[m], modality=m) for m in modalities}
    unified = hasher.codes_ if isinstance(hasher, OnlineHasher) else None  # online hashers declare codes_
    db_codes = {m: unified if unified is not None else hasher.encode(_rows(db.views[m], 0, stop), modality=m)
                for m in modalities}
    encode_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    maps = {}
    for a, b in directions(modalities):
        result = evaluate(q_codes[a], query_labels, db_codes[b], db.labels[:stop], topk=None)
        maps[direction_name(a, b)] = float(result["map@all"])
    for m, codes in q_codes.items():
        codes.save(out / "codes" / f"query-{m}.npy")
    return {"map@all": maps, "encode_seconds": encode_seconds, "evaluate_seconds": time.perf_counter() - t0}


def plot_stream(records: Sequence[dict[str, Any]], path: str | os.PathLike, title: str = "",
                baselines: dict[str, Sequence[dict[str, Any]]] | None = None, label: str = "") -> None:
    """PNG with mAP of each direction per round (left) and training seconds per round (right).

    ``label`` names ``records`` in the legends; ``baselines`` adds other streams' records
    (label -> records) to both panels, dashed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_map, ax_time) = plt.subplots(1, 2, figsize=(11, 4))
    series = [(label, records, "-")] + [(name, recs, "--") for name, recs in (baselines or {}).items()]
    for name, recs, style in series:
        evaluated = [r for r in recs if "map@all" in r]
        for direction in (evaluated[0]["map@all"] if evaluated else {}):
            ax_map.plot([r["round"] for r in evaluated], [r["map@all"][direction] for r in evaluated], style,
                        marker="o", markersize=3, label=f"{name} {direction}".strip())
        ax_time.plot([r["round"] for r in recs], [r["train_seconds"] for r in recs], style, marker="o",
                     markersize=3, label=name or "this stream")
    ax_map.set_xlabel("round")
    ax_map.set_ylabel("mAP over the database so far")
    ax_map.grid(alpha=0.3)
    if ax_map.get_legend_handles_labels()[0]:
        ax_map.legend(fontsize=8)
    ax_time.set_xlabel("round")
    ax_time.set_ylabel("training seconds")
    ax_time.grid(alpha=0.3)
    ax_time.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    with _atomic.atomic_open(path, "wb") as fh:
        fh.write(buf.getvalue())
