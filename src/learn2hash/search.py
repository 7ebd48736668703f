"""The one search of a run or a collection: the ``k`` nearest items of queries, labelled, as :class:`Hits`.

Every front end searches through here: ``learn2hash search`` (the CLI), the HTTP service
(:mod:`learn2hash.serve.service`) and the report's retrieval grid (:func:`learn2hash.report.top_results`).

- :class:`RunSearch` opens a run's database for searching: its Hamming index (``RUN/index`` checked
  against the run by :func:`learn2hash.index.provenance.open_run_index`, or built in memory from the
  database codes), the database labels and the class names. Ids are database positions; ids appended
  to a saved index later (``>= n``) have no labels.
- :class:`CollectionSearch` does the same for a :class:`~learn2hash.collections.Collection`: ids are
  the collection's, each hit carries its source (a path under the root, or an external id).
- :func:`search` opens either, searches and closes; :meth:`RunSearch.search` and
  :meth:`CollectionSearch.search` search an opened one (what a server holds).

Results are ranked by Hamming distance, ties by id (database position, or insertion order in a
collection), as :class:`~learn2hash.HammingIndex` breaks them. Also here: :func:`item_image`, an
item as a displayable image (no plotting library needed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from learn2hash.codes import Codes
from learn2hash.errors import Learn2HashError

#: how :class:`RunSearch` finds a run's index: ``RUN/index`` only, ``RUN/index`` when present (else built
#: in memory), or always built in memory from the database codes
INDEX_MODES = ("saved", "auto", "memory")


@dataclass(frozen=True)
class Hit:
    """One item found: its ``id``, its Hamming ``distance`` to the query and what is known of it.

    ``labels``: the item's class ids (a run's database item; None when unknown: a collection's item, an
    id appended to a run's index later); ``relevant``: whether it shares a label with the query (None
    when either has no labels); ``path`` / ``external_id``: a collection item's source (the other None).
    """

    id: int
    distance: int
    labels: tuple[int, ...] | None = None
    relevant: bool | None = None
    path: str | None = None
    external_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The item's reference: ``{"id", "distance", "path", "external_id"}`` (a collection's record)."""
        return {"id": self.id, "distance": self.distance, "path": self.path, "external_id": self.external_id}


@dataclass(frozen=True)
class Hits:
    """The nearest items of one query, nearest first: a sequence of :class:`Hit`.

    ``query``: what the query was (``"query #3"``, a file name); ``labels``: the query's class ids when
    known; ``class_names``: names of the class ids (None: the ids are the names).
    """

    query: str
    hits: tuple[Hit, ...]
    labels: tuple[int, ...] | None = None
    class_names: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.hits)

    def __iter__(self) -> Iterator[Hit]:
        return iter(self.hits)

    def __getitem__(self, i: int) -> Hit:
        return self.hits[i]

    @property
    def ids(self) -> np.ndarray:
        return np.array([h.id for h in self.hits], dtype=np.int64)

    @property
    def distances(self) -> np.ndarray:
        return np.array([h.distance for h in self.hits], dtype=np.int64)

    @property
    def relevant(self) -> np.ndarray | None:
        """``bool[m]``: whether each hit shares a label with the query (None when the query has no labels)."""
        if self.labels is None:
            return None
        return np.array([bool(h.relevant) for h in self.hits], dtype=bool)

    def names(self, labels: Sequence[int] | None) -> list[str | int] | None:
        """Class ids as their names (the ids themselves when the classes have no names); None stays None."""
        if labels is None:
            return None
        return [self.class_names[c] if self.class_names else int(c) for c in labels]


def _class_ids(row: np.ndarray) -> tuple[int, ...]:
    return tuple(int(c) for c in np.flatnonzero(row))


class RunSearch:
    """A run's database opened for searching (see the module docstring).

    ``index``: one of :data:`INDEX_MODES`; ``rebuild``: with ``"saved"``, a missing or stale ``RUN/index``
    is rebuilt instead of refused; ``database_only``: refuse a saved index that holds anything but the
    database items under their positions (ids appended later). ``load_options`` go to
    :meth:`HammingIndex.load`. Searches are safe from several threads (the index is).
    """

    def __init__(self, run: Any, index: str = "auto", rebuild: bool = False, database_only: bool = False,
                 **load_options: Any):
        from learn2hash.runs import Run

        if index not in INDEX_MODES:
            raise Learn2HashError(f"index must be one of {', '.join(INDEX_MODES)}, got {index!r}")
        self.run = run if isinstance(run, Run) else Run.open(run)
        dataset = self.run.dataset()
        self.db_labels = np.asarray(dataset.database.labels)
        self.n_database = len(self.db_labels)
        names = dataset.class_names
        self.class_names = tuple(names) if names else None
        self.index, self.index_source = self._open(index, rebuild, load_options)
        if database_only:
            self._check_database_only()

    def _open(self, mode: str, rebuild: bool, load_options: dict[str, Any]):
        from learn2hash.index import HammingIndex
        from learn2hash.index.provenance import index_folder, open_run_index

        folder = index_folder(self.run)
        if mode == "saved" or (mode == "auto" and folder.is_dir()):
            # refuses an index that is stale or not of this run's codes (or rebuilds it when asked)
            return open_run_index(self.run, rebuild=rebuild, **load_options), f"loaded from {folder}"
        index = HammingIndex(self.run.bits, **{k: v for k, v in load_options.items() if v is not None})
        index.add(self.run.codes("database"))
        return index, "built in memory from the database codes"

    def _check_database_only(self) -> None:
        n = self.n_database
        if len(self.index) != n or not np.array_equal(self.index.ids, np.arange(n)):
            raise Learn2HashError(f"index {self.run.folder / 'index'} holds {len(self.index)} codes that are not the "
                                  f"run's {n} database items under their positions as ids; rebuild it with "
                                  "`learn2hash index build`")

    def __len__(self) -> int:
        return len(self.index)

    def close(self) -> None:
        self.index.close()

    def __enter__(self) -> "RunSearch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def encode(self, items: Any) -> Codes:
        """Codes of items (an array of the run's item shape, batched) under the run's hasher."""
        return self.run.hasher().encode(items)

    def query_codes(self, positions: Sequence[int]) -> tuple[Codes, np.ndarray]:
        """The run's codes of query-split items at ``positions``, and their labels."""
        positions = np.asarray(positions, dtype=np.int64).reshape(-1)
        labels = self.run.dataset().query.labels
        if positions.size and (positions.min() < 0 or positions.max() >= len(labels)):
            raise Learn2HashError(f"query positions must be in 0 .. {len(labels) - 1}, got {positions.tolist()}")
        return self.run.codes("query")[positions], np.asarray(labels)[positions]

    def search(self, codes: Codes, k: int, query_labels: Any = None, names: Sequence[str] | None = None) -> list[Hits]:
        """The ``k`` nearest items of each query code (fewer when the index holds fewer), labelled.

        ``query_labels``: multi-hot rows of the queries (relevance is then known); ``names``: what each
        query was (default ``"query 0"``, ...).
        """
        _check_k(k)
        if query_labels is not None:
            query_labels = np.asarray(query_labels)
            if query_labels.ndim != 2 or query_labels.shape[1] == 0:
                query_labels = None  # unlabelled data: nothing is relevant or not
        k = min(int(k), max(len(self.index), 1))
        dist, ids = self.index.search(codes, k)
        out = []
        for qi in range(len(codes)):
            qlab = None if query_labels is None else query_labels[qi]
            row = []
            for d, i in zip(dist[qi].tolist(), ids[qi].tolist()):
                if i < 0:
                    break
                labelled = i < self.n_database
                row.append(Hit(int(i), int(d), labels=_class_ids(self.db_labels[i]) if labelled else None,
                               relevant=(bool((self.db_labels[i] & qlab).any())
                                         if labelled and qlab is not None else None)))
            out.append(Hits(names[qi] if names is not None else f"query {qi}", tuple(row),
                            labels=None if qlab is None else _class_ids(qlab), class_names=self.class_names))
        return out


class CollectionSearch:
    """A :class:`~learn2hash.collections.Collection` opened for searching; every search reads its latest
    committed version. Safe to share between threads."""

    def __init__(self, collection: Any):
        from learn2hash.collections import Collection

        self.collection = collection if isinstance(collection, Collection) else Collection.open(collection)

    def __len__(self) -> int:
        return len(self.collection)

    def close(self) -> None:
        pass

    def __enter__(self) -> "CollectionSearch":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def encode(self, items: Any) -> Codes:
        """Codes of images (anything :meth:`Collection.encode` takes) under the collection's hasher."""
        return self.collection.encode(items)

    def search(self, codes: Codes, k: int, query_labels: Any = None, names: Sequence[str] | None = None) -> list[Hits]:
        """The ``k`` nearest items of each query code with their sources (``query_labels`` is ignored:
        a collection's items have no labels)."""
        _check_k(k)
        rows = self.collection.search(codes, k=int(k))
        return [Hits(names[qi] if names is not None else f"query {qi}",
                     tuple(Hit(h.id, h.distance, path=h.path, external_id=h.external_id) for h in row))
                for qi, row in enumerate(rows)]


def _check_k(k: Any) -> None:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise Learn2HashError(f"k must be an integer >= 1, got {k!r}")


def open_search(source: Any, **options: Any) -> RunSearch | CollectionSearch:
    """``source`` opened for searching: a :class:`CollectionSearch` for a collection (or its folder, which
    holds ``collection.json``), else a :class:`RunSearch` of a run (or its folder) with ``options``."""
    from learn2hash.collections import META, Collection

    if isinstance(source, (RunSearch, CollectionSearch)):
        return source
    if isinstance(source, Collection) or (isinstance(source, (str, os.PathLike))
                                          and os.path.isfile(os.path.join(source, META))):
        if options:
            raise Learn2HashError(f"a collection is searched without index options, got {sorted(options)}")
        return CollectionSearch(source)
    return RunSearch(source, **options)


def search(source: Any, k: int = 10, *, codes: Codes | None = None, items: Any = None,
           positions: Sequence[int] | None = None, query_labels: Any = None, names: Sequence[str] | None = None,
           **options: Any) -> list[Hits]:
    """The ``k`` nearest items of each query in ``source``, one :class:`Hits` per query.

    ``source``: a run, a collection, their folders, or an opened :class:`RunSearch` /
    :class:`CollectionSearch` (kept open; anything else is opened with ``options``, see
    :class:`RunSearch`, and closed). The queries are exactly one of ``codes``; ``items`` (encoded by the
    source's hasher: arrays of a run's items, images for a collection); or ``positions`` in a run's
    query split (their saved codes, with their labels). ``query_labels``: multi-hot labels of ``codes``
    or ``items`` (relevance of each hit); ``names``: what each query was.
    """
    given = [n for n, v in (("codes", codes), ("items", items), ("positions", positions)) if v is not None]
    if len(given) != 1:
        raise Learn2HashError(f"search needs exactly one of codes, items or positions, got {given or 'none'}")
    searcher = open_search(source, **options)
    try:
        if positions is not None:
            if not isinstance(searcher, RunSearch):
                raise Learn2HashError("positions name items of a run's query split: a collection takes codes or items")
            codes, query_labels = searcher.query_codes(positions)
            names = names or [f"query #{int(p)}" for p in np.asarray(positions).reshape(-1)]
        elif items is not None:
            codes = searcher.encode(items)
        return searcher.search(codes, k, query_labels=query_labels, names=names)
    finally:
        if searcher is not source:
            searcher.close()


def item_image(x: Any) -> np.ndarray | None:
    """An item as a displayable ``uint8`` image ``[H, W]`` or ``[H, W, 3]``; ``None`` for feature vectors.

    Images are ``[C, H, W]``; a clip ``[T, C, H, W]`` shows its middle frame.
    """
    a = np.asarray(x)
    if a.ndim == 4:
        a = a[a.shape[0] // 2]
    if a.ndim != 3:
        return None
    if a.dtype != np.uint8:
        a = np.clip(a * (255.0 if a.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8)
    if a.shape[0] == 1:
        return a[0]
    if a.shape[0] >= 3:
        return np.ascontiguousarray(np.moveaxis(a[:3], 0, -1))
    return a[0]
