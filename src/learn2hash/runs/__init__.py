"""Run folders: train a hasher on a dataset, encode its splits, evaluate, and keep it all on disk.

A run folder holds everything needed to reproduce and reuse one experiment::

    config.json       method, bits, hyper-parameters, dataset, protocol, seed, package versions
    splits.json       exact split (source pool and positions of every item), with split_*.npy
    hasher/           the fitted hasher (Hasher.save)
    history.json      per-epoch log of deep methods (loss, seconds)
    checkpoints/      per-epoch training checkpoints of deep methods (resume)
    codes/            codes of the query and database splits (Codes.save)
    metrics.json      evaluation results plus training and encoding seconds
    index/            the Hamming index of the database codes (``learn2hash index build``)

:func:`train_run` writes one; :class:`Run` opens one. One process writes a run folder at a time
(``.lock``, taken by :func:`train_run`; a second writer gets a one-line error, readers never wait);
``overwrite`` deletes every derived artifact of the old run (:data:`DERIVED`) before the new
configuration is written. Everything is written through :class:`~learn2hash.runs.folder.RunFolder`
(also by :func:`learn2hash.stream.run_stream`). Every JSON file is read through :func:`learn2hash._atomic.load_json`,
so a damaged one is a :class:`~learn2hash.errors.CorruptFileError` that names it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable

from learn2hash import _atomic
from learn2hash.codes import Codes, Provenance
from learn2hash.errors import CorruptFileError, Learn2HashError
from learn2hash.runs.folder import (CONFIG_FIELDS, CONFIG_OPTIONAL, DERIVED, RUN_FORMAT, RUN_VERSION,  # noqa: F401
                                    RunFolder, is_main_process, make_config, package_versions, read_config)


_log = logging.getLogger(__name__)


def default_topk(dataset: str, protocol: str | None = None) -> int | None:
    """The mAP@k cutoff the literature uses for ``dataset`` (its registration says; None = mAP@all)."""
    from learn2hash.datasets.registry import default_topk as registered_topk

    return registered_topk(dataset, protocol)


#: what metrics.json must hold (Run.evaluate writes it)
METRICS_FIELDS = {"map@all": float, "precision_at_radius2": float, "recall_at_radius2": float, "n_query": int,
                  "n_database": int, "ties": str}
METRICS_OPTIONAL = {"topk": (int, type(None)), "pr_curve": dict, "precision_at_n": dict,
                    "n_queries_without_relevant": int, "evaluate_seconds": float, "train_seconds": (float, type(None)),
                    "encode_seconds": (float, type(None)), "epochs": (int, type(None)),
                    "seconds_per_epoch": (float, type(None))}
#: metrics.json keys that come from training, kept when a run is evaluated again
TRAINING_METRICS = ("train_seconds", "encode_seconds", "epochs", "seconds_per_epoch", "skipped_images",
                    "best_of_evaluations")
#: how ``best_of_evaluations`` is labelled: not the figure after the last epoch
REFERENCE_PROTOCOL = ("the reference code's protocol: the best of the evaluations on the query split made every "
                      "{every} epochs (the queries choose the epoch; the run's own figure is the one after the "
                      "last epoch)")


def best_of_evaluations(history: list[dict[str, Any]], every: int) -> dict[str, Any] | None:
    """The best figure of the per-epoch evaluations in ``history`` (``train --eval-every``), labelled as
    the reference code's protocol; None when no epoch was evaluated."""
    evaluated = [(r["epoch"], r["evaluation"]) for r in history if r.get("evaluation")]
    if not evaluated:
        return None
    metric = next(iter(evaluated[0][1]))
    epoch, best = max(((e, float(ev[metric])) for e, ev in evaluated), key=lambda t: (t[1], -t[0]))
    return {"metric": metric, "value": best, "epoch": epoch, "evaluations": len(evaluated), "every": int(every),
            "protocol": REFERENCE_PROTOCOL.format(every=int(every))}


class Run:
    """An existing run folder."""

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder)
        path = self.folder / "config.json"
        if not path.exists():
            raise Learn2HashError(f"{self.folder} is not a run folder (no config.json); create one with `learn2hash train`")
        self.config: dict[str, Any] = read_config(path)
        self._dataset = None
        self._hasher = None

    @classmethod
    def open(cls, folder: str | os.PathLike) -> "Run":
        return cls(folder)

    def __repr__(self) -> str:
        c = self.config
        return f"Run({str(self.folder)!r}: {c['method']} {c['bits']} bits on {c['dataset']} [{c['protocol']}])"

    @property
    def method(self) -> str:
        return self.config["method"]

    @property
    def bits(self) -> int:
        return int(self.config["bits"])

    def dataset(self):
        """The run's dataset with exactly the saved splits."""
        if self._dataset is None:
            from learn2hash import datasets

            # splits.json records the loader parameters as resolved (absolute paths, sizes)
            self._dataset = datasets.load(self.config["dataset"], splits=self.folder)
        return self._dataset

    def hasher(self):
        if self._hasher is None:
            from learn2hash.methods import Hasher

            if not (self.folder / "hasher" / "hasher.json").exists():
                raise Learn2HashError(f"run {self.folder} has no trained hasher yet (training did not finish?)")
            self._hasher = Hasher.load(self.folder / "hasher")
        return self._hasher

    def codes_path(self, split: str) -> Path:
        return self.folder / "codes" / f"{split}.npy"

    def hasher_checksum(self) -> str:
        """The identity of the run's hasher as saved now (:func:`learn2hash.methods.base.hasher_checksum`)."""
        from learn2hash.methods.base import hasher_checksum

        if not (self.folder / "hasher" / "hasher.json").exists():
            raise Learn2HashError(f"run {self.folder} has no trained hasher yet (training did not finish?)")
        return hasher_checksum(self.folder / "hasher")

    def source(self, split: str) -> tuple[str, str]:
        """What the codes of ``split`` are computed from: ``("split:NAME", checksum of the saved split)``."""
        from learn2hash.datasets.base import read_saved_splits, split_checksum

        return f"split:{split}", split_checksum(read_saved_splits(self.folder), split)

    def expected_provenance(self, split: str) -> Provenance:
        """The provenance the codes of ``split`` must record to be this run's: its hasher as saved now,
        the saved split."""
        return Provenance(self.hasher_checksum(), *self.source(split))

    def codes(self, split: str, recompute: bool = False) -> Codes:
        """Codes of ``split`` (``query``, ``database`` or ``train``), encoded once and cached.

        Cached codes are reused only when their provenance says they were computed by the run's
        hasher as saved now from the saved split; codes of another hasher (a retrained or replaced
        ``hasher/``, codes copied from another run) and codes saved without provenance (by an
        older learn2hash) are computed again (under the run's writer lock) and saved.
        """
        if split not in ("train", "query", "database"):
            raise Learn2HashError(f"split must be train, query or database, got {split!r}")
        path = self.codes_path(split)
        expected = self.expected_provenance(split)
        if Codes.exists(path) and not recompute:
            codes = Codes.load(path)
            if codes.bits != self.bits:
                raise Learn2HashError(f"cached codes {path} have {codes.bits} bits, the run has {self.bits}")
            if codes.provenance == expected:
                return codes
            _log.info("%s: recomputing the cached %s codes (%s)", self.folder, split,
                      "they record no provenance" if codes.provenance is None else
                      f"computed by {codes.provenance.describe()}, the run's hasher is {expected.hasher_sha256[:12]}")
        with self._writing():
            hasher = self.hasher()
            if hasher.checksum_ != expected.hasher_sha256:  # hasher/ was replaced since this Run loaded it
                self._hasher = None
                hasher = self.hasher()
            data = getattr(self.dataset(), split)
            codes = hasher.encode(data.x).with_provenance(Provenance(hasher.checksum_, *self.source(split)))
            codes.save(path)
        return codes

    def _writing(self):
        """The run folder's writer lock, held while this run's codes or metrics are written: a
        training, encode or evaluate of the same folder in another process makes it fail at once."""
        return RunFolder(self.folder).writer(
            busy=f"run folder {self.folder} is being written by another process (a training, encode or "
                 "evaluate of it); try again when that is done")

    def metrics(self) -> dict[str, Any]:
        path = self.folder / "metrics.json"
        if not path.exists():
            raise Learn2HashError(f"run {self.folder} has not been evaluated yet (no metrics.json)")
        metrics = _atomic.load_json(path, "run metrics", kind=dict)
        metrics = _current_keys(metrics)  # the spellings of older versions read as today's
        _atomic.check_fields(metrics, f"run metrics {path}", METRICS_FIELDS, METRICS_OPTIONAL)
        topk = metrics.get("topk")
        if topk is not None:
            _atomic.check_fields(metrics, f"run metrics {path}", required={f"map@{topk}": float})
        return metrics

    def history(self) -> list[dict[str, Any]]:
        path = self.folder / "history.json"
        if not path.exists():
            return []
        history = _atomic.load_json(path, "training history", kind=list)
        for i, record in enumerate(history):
            if not isinstance(record, dict):
                raise CorruptFileError(f"training history {path}: entry {i} is {_atomic.json_type(record)}, "
                                       "expected an object")
        return history

    def require_labels(self, what: str = "retrieval metrics") -> None:
        """Raise a one-line error when the run's data has no labels (an unlabelled collection)."""
        ds = self.dataset()
        if ds.query.labels.shape[1] == 0 or ds.database.labels.shape[1] == 0:
            raise Learn2HashError(f"run {self.folder} has no labels ({self.config['dataset']} is unlabelled here): "
                                  f"{what} need them; encode, index and search work without")

    def evaluate(self, topk: int | None | str = "default", ties: str = "expected", save: bool = True,
                 extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Evaluate query codes against database codes: mAP@topk, mAP@all, P@H<=2, PR curve."""
        self.require_labels()
        with self._writing() if save else contextlib.nullcontext():
            return self._evaluate(topk, ties, save, extra)

    def _evaluate(self, topk: int | None | str, ties: str, save: bool, extra: dict[str, Any] | None) -> dict[str, Any]:
        from learn2hash.metrics import evaluate, map_key

        ds = self.dataset()
        if topk == "default":
            topk = default_topk(self.config["dataset"], self.config.get("protocol"))
        q, db = self.codes("query"), self.codes("database")
        t0 = time.perf_counter()
        # one evaluation, both cut-offs: the database is scanned once (twice with ties="index")
        full = evaluate(q, ds.query.labels, db, ds.database.labels, topk=None, ties=ties, radius=2,
                        map_at=[] if topk is None else [topk])
        result: dict[str, Any] = {key: full[key] for key in (
            "map@all", "precision_at_radius2", "recall_at_radius2", "pr_curve", "precision_at_n",
            "n_queries_without_relevant")}
        result.update({"ties": ties, "n_query": len(q), "n_database": len(db)})
        if topk is not None:
            result[map_key(topk)] = full["map_at"][topk]
            result["topk"] = topk
        result["evaluate_seconds"] = time.perf_counter() - t0
        if save:
            # keep only what training recorded: results of an earlier evaluation (another topk) go
            previous: dict[str, Any] = {}
            if extra is None and (self.folder / "metrics.json").exists():
                previous = {k: v for k, v in self.metrics().items() if k in TRAINING_METRICS}
            RunFolder(self.folder).save_metrics({**previous, **(extra or {}), **result})
        return result


def _current_keys(metrics: dict[str, Any]) -> dict[str, Any]:
    """``metrics`` with every key in its one spelling (:func:`learn2hash.metrics.current_key`); a key in
    today's spelling wins over an older one."""
    from learn2hash.metrics import current_key

    out = {current_key(k): v for k, v in metrics.items() if current_key(k) != k}
    out.update({k: v for k, v in metrics.items() if current_key(k) == k})
    return out


#: what must match for ``train --resume`` to continue a run folder
_RESUME_KEYS = ("method", "bits", "params", "dataset", "protocol", "seed", "data_params", "features")


def with_features(method: str, hasher: Any, params: dict[str, Any], features: dict[str, Any] | None) -> Any:
    """``hasher`` with the feature stage ``features`` (:class:`~learn2hash.features.ImageFeatures`'s
    parameters) in front: deep methods train their hash head on the frozen backbone
    (``backbone=NAME, frozen_features=True``, the same cache), every other method is wrapped in a
    :class:`~learn2hash.features.FeatureHasher`. The backbone name and options are checked here, before
    any data is read."""
    if not features:
        return hasher
    from learn2hash.features import FeatureHasher, ImageFeatures

    stage = ImageFeatures(**features)
    stage.check()
    names = _param_names(method)
    if "frozen_features" in names:
        clash = sorted(set(params) & {"backbone", "frozen_features"})
        if clash:
            raise Learn2HashError(f"--features sets {method}'s {' and '.join(clash)}; give one or the other")
        if stage.weights is not None:
            raise Learn2HashError(f"--features-weights is for shallow methods; {method} takes a backbone's weights "
                                  "through --param backbone_options=...")
        options = dict(params.get("backbone_options") or {}, **(stage.backbone_options or {}))
        if stage.image_size not in (None, "auto"):
            options["image_size"] = int(stage.image_size)
        extra = {"backbone_options": options} if options else {}
        return hasher.set_params(backbone=stage.backbone, frozen_features=True, augment="none",
                                 on_bad_image=stage.on_bad_image, **extra)
    if hasher.input_kind == "any":
        raise Learn2HashError(f"--features cannot go in front of {method}: it takes raw items itself")
    return FeatureHasher(stage, hasher)


def train_run(method: str, dataset: str, bits: int, out: str | os.PathLike, protocol: str | None = None,
              seed: int = 0, params: dict[str, Any] | None = None, data_params: dict[str, Any] | None = None,
              topk: int | None | str = "default", resume: bool = False, overwrite: bool = False,
              progress: bool = True, log: Callable[[str], None] | None = None,
              features: dict[str, Any] | None = None, eval_every: int = 0) -> Run | None:
    """Train ``method`` on ``dataset``, save everything in run folder ``out``, evaluate, return the run.

    ``features``: parameters of an :class:`~learn2hash.features.ImageFeatures` stage in front of the
    method (``{"backbone": "efficientnet-lite0", ...}``, see :func:`with_features`); the saved hasher
    then encodes raw images itself. Data without labels (an unlabelled split) trains unsupervised
    methods; the evaluation, which needs labels, is skipped with a note (no ``metrics.json``), and a
    supervised method is refused before anything is written.

    ``eval_every``: N > 0 evaluates the query codes against the database codes (mAP at the run's
    cutoff) after every N-th epoch and after the last, records each figure in the history
    (``"evaluation"``) and their best in the metrics as ``best_of_evaluations``, labelled as the
    reference code's protocol; the run's figures stay those after the last epoch.

    Under ``torchrun`` every process trains its shard; only rank 0 writes the folder and returns the
    :class:`Run` (the others return ``None``).
    """
    from learn2hash import datasets
    from learn2hash.errors import check_int
    from learn2hash.methods.base import FitContext

    log = log or (lambda msg: None)
    out = Path(out)
    _check_out(out)
    if topk != "default" and topk is not None:
        topk = check_int(topk, "topk", 1)
    eval_every = check_int(eval_every, "eval_every", 0)
    params = dict(params or {})
    data_params = dict(data_params or {})
    hasher, inner = _make_hasher(method, bits, seed, params, features)
    ds = datasets.load(dataset, protocol=protocol, seed=seed, **data_params)
    unlabelled = ds.train.labels.shape[1] == 0
    if unlabelled and inner.supervised:
        raise Learn2HashError(f"{method} is supervised, but {dataset} has no labels here; train an unsupervised "
                              "method on it (lsh, itq) or give labelled data")
    config = make_config(method=method, bits=bits, params=inner.get_params(), dataset=dataset,
                         protocol=ds.protocol, seed=seed, data_params=data_params,
                         sizes={k: len(s) for k, s in ds.splits.items()})
    if features:
        config["features"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in features.items()}
    resolved = {} if inner is not hasher else hasher.resolved_params(ds.train)  # "auto" params on this data
    if resolved:
        config["resolved"] = resolved
    folder = RunFolder(out)
    with folder.writer():
        _start_folder(folder, config, ds, hasher.runtime_params, resume, overwrite, log)
        log(ds.summary())
        evaluation = None
        if eval_every:
            evaluation = _epoch_evaluation(ds, default_topk(dataset, ds.protocol) if topk == "default" else topk, log)
        t0 = time.perf_counter()
        hasher.fit(ds.train, context=FitContext(folder=out, resume=resume, progress=progress, log=log,
                                                evaluate_every=eval_every, evaluate=evaluation))
        train_seconds = time.perf_counter() - t0
        if not is_main_process():
            return None
        skipped = _save_training(folder, hasher, log)
        return _encode_and_evaluate(out, dataset, ds, hasher, topk, eval_every, train_seconds, skipped, log)


def _check_out(out: Path) -> None:
    """A clear error unless ``out`` can be a run folder (it is one, or can be made)."""
    if out.exists() and not out.is_dir():
        raise Learn2HashError(f"--out {out} is a file; a run folder is a folder: choose another --out")
    blocked = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
    if blocked is not None:
        raise Learn2HashError(f"--out {out}: {blocked} is a file, not a folder: choose another --out")


def _make_hasher(method: str, bits: int, seed: int, params: dict[str, Any], features: dict[str, Any] | None
                 ) -> tuple[Any, Any]:
    """``(the hasher to fit, the method's own hasher inside it)``: the same one without ``features``."""
    from learn2hash.methods import create

    for key in ("bits", "seed"):
        if key in params:
            raise Learn2HashError(f"{key} is given as a method parameter (--param {key}=...) besides its own "
                                  f"argument (--{key}); give it once, as --{key}")
    hasher = create(method, bits=bits, **({"seed": seed} if "seed" in _param_names(method) else {}), **params)
    hasher = with_features(method, hasher, params, features)
    inner = getattr(hasher, "hasher", None) if features else None
    return hasher, inner if inner is not None else hasher


def _start_folder(folder: RunFolder, config: dict[str, Any], ds: Any, runtime_params: Any, resume: bool,
                  overwrite: bool, log: Callable[[str], None]) -> None:
    """Check a run already in the folder against ``config`` (resume) or clear it (overwrite), then
    write the configuration and the splits (main process)."""
    out = folder.path
    if folder.has_config() and not overwrite:
        # settings that do not change what is learned (device, workers, amp ...) may differ on resume
        diff = folder.config_differences(config, _RESUME_KEYS, runtime_params)
        if not resume:
            raise Learn2HashError(f"run folder {out} already exists; pass --resume to continue it or choose another --out")
        if diff:
            raise Learn2HashError(f"cannot resume {out}: it was trained with a different configuration ({', '.join(diff)})")
    if is_main_process():
        folder.remove_leftovers()
        if overwrite and out.is_dir():
            # nothing of the old run may stay beside the new one: metrics, codes, index ...
            removed = folder.clear_derived()
            if removed:
                log(f"{out}: removed the previous run's {', '.join(removed)}")
        folder.write_config(config)
        folder.save_splits(ds)


def _epoch_evaluation(ds: Any, cut: int | None, log: Callable[[str], None]
                      ) -> Callable[[Callable[[Any], Any]], dict[str, float]]:
    """What ``--eval-every`` runs after an epoch: mAP at ``cut`` of the query codes against the database codes."""
    from learn2hash.metrics import evaluate as _evaluate, map_key

    key = map_key(cut)

    def evaluation(encode: Callable[[Any], Any]) -> dict[str, float]:
        q, db = encode(ds.query.x), encode(ds.database.x)
        value = _evaluate(q, ds.query.labels, db, ds.database.labels, topk=cut)[key]
        log(f"evaluation on the query split: {key} {value:.4f}")
        return {key: float(value)}

    return evaluation


def _save_training(folder: RunFolder, hasher: Any, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Save the fitted hasher, its history and the training images it skipped (returned)."""
    folder.save_hasher(hasher)
    if hasher.history_:  # methods without epochs have none
        folder.save_history(hasher.history_)
    skipped = hasher.skipped_images_
    if skipped:
        listed = folder.save_skipped_images(skipped)
        log(f"{len(skipped)} unreadable training image(s) skipped, listed in {listed}")
    return skipped


def _encode_and_evaluate(out: Path, dataset: str, ds: Any, hasher: Any, topk: Any, eval_every: int, train_seconds: float,
                         skipped: list[dict[str, Any]], log: Callable[[str], None]) -> Run:
    """Encode the query and database splits with the fitted hasher and evaluate the run (when labelled)."""
    run = Run(out)
    run._dataset, run._hasher = ds, hasher
    t0 = time.perf_counter()
    run.codes("query", recompute=True)
    run.codes("database", recompute=True)
    encode_seconds = time.perf_counter() - t0
    history = hasher.history_
    epochs = len(history) if history else None
    if ds.query.labels.shape[1] == 0 or ds.database.labels.shape[1] == 0:
        log(f"{dataset}: no labels, so no evaluation (mAP needs them); codes are in {out / 'codes'}")
        return run
    best = best_of_evaluations(history or [], eval_every) if eval_every else None
    run.evaluate(topk=topk, extra={"train_seconds": train_seconds, "encode_seconds": encode_seconds,
                                   **({"best_of_evaluations": best} if best else {}),
                                   "epochs": epochs, **({"skipped_images": len(skipped)} if skipped else {}),
                                   "seconds_per_epoch": (train_seconds / epochs) if epochs else None})
    return run


def _param_names(method: str) -> list[str]:
    from learn2hash.methods import method_class

    return method_class(method)._param_names()


def summary_row(run: Run) -> dict[str, Any]:
    """One row of the comparison table for a finished run (a run without labels has no metrics: blanks)."""
    unlabelled = False
    if not (run.folder / "metrics.json").exists():
        try:
            run.require_labels()
        except Learn2HashError:
            unlabelled = True
    m = {} if unlabelled else run.metrics()
    topk = m.get("topk")
    row = {"run": run.folder.name, "method": run.method, "bits": run.bits, "dataset": run.config["dataset"],
           "protocol": run.config["protocol"]}
    if run.config.get("features"):  # the feature stage the method hashed (absent: the items themselves)
        row["features"] = run.config["features"].get("backbone")
    from learn2hash.metrics import metric_name

    row[metric_name(f"map@{topk}") if topk else "mAP@k"] = m.get(f"map@{topk}") if topk else None
    row.update({metric_name(key): m.get(key) for key in ("map@all", "precision_at_radius2")})
    # timing columns keep their short names (benchmarks/reproduce.py and defaults.py read them)
    row.update({"train s": m.get("train_seconds"), "s/epoch": m.get("seconds_per_epoch")})
    return row



IMAGE_IDS_FORMAT = "learn2hash-image-ids"


def image_ids_path(out: str | os.PathLike) -> Path:
    """Where :func:`encode_image_files` writes the ids of the codes in ``out``: ``CODES.ids.json``."""
    out = Path(out)
    return out.with_name((out.name[:-4] if out.name.endswith(".npy") else out.name) + ".ids.json")


def encode_image_files(run: Run, source: str | os.PathLike, out: str | os.PathLike, on_bad_image: str = "error",
                       workers: int | None = None, progress: bool = False) -> dict[str, Any]:
    """Encode image files (a folder, searched recursively, or a list file) with the run's hasher.

    Writes the codes to ``out`` (:meth:`Codes.save`) and then, last, ``CODES.ids.json``: the images'
    paths relative to the folder or list (row ``i`` of the codes is ``ids[i]``), the root, the
    checksum of the codes file, and the skipped images with their errors (``on_bad_image="skip"``).
    Returns a summary (``n``, ``bits``, ``n_skipped``, ``ids_path``).
    """
    from learn2hash import images

    hasher = run.hasher()
    if not hasher.takes_image_files:
        raise Learn2HashError(f"run {run.folder} holds a {run.method} hasher, which does not take image files "
                              "(encode --images needs a deep hasher trained on images)")
    root, files = images.list_images(source)
    out = Path(out)
    if out.is_dir():
        raise Learn2HashError(f"--out {out} is a folder; give a codes file name such as {out / 'codes.npy'}")
    if not out.parent.is_dir():
        raise Learn2HashError(f"--out: the folder of {out} does not exist")
    ids = [p.relative_to(root).as_posix() if p.is_relative_to(root) else str(p) for p in files]
    if workers is not None:
        hasher.workers = workers  # a runtime parameter: what is learned stays the same
    codes, kept, skipped = hasher.encode_images(files, on_bad_image=on_bad_image, progress=progress)
    kept_ids = [ids[int(i)] for i in kept]
    listed = hashlib.sha256(json.dumps({"root": str(root.resolve()), "ids": kept_ids}).encode()).hexdigest()
    codes = codes.with_provenance(hasher.provenance("images", listed))
    codes.save(out)
    ids_path = image_ids_path(out)
    _atomic.save_json(ids_path, {
        "format": IMAGE_IDS_FORMAT, "version": 1, "run": str(run.folder.resolve()), "root": str(root.resolve()),
        "codes": out.name, "codes_sha256": _atomic.sha256_file(out), "bits": codes.bits,
        "ids": kept_ids,
        "skipped": [{"id": ids[s["position"]], "error": s["error"]} for s in skipped]})
    return {"n": len(codes), "bits": codes.bits, "n_skipped": len(skipped), "ids_path": ids_path}
