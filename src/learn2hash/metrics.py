"""Exact retrieval metrics for binary codes: mAP@k, P@N, precision-recall per Hamming radius.

Everything here is computed from one pass per query over the database that counts, for every
Hamming distance ``d = 0..K``, how many database items lie at ``d`` (``total[q, d]``) and how
many of those are relevant (``relevant[q, d]``). Two items are relevant when they share at
least one label. Nothing of size queries x database is ever allocated, and no distance list is
sorted.

Ranking is by Hamming distance; items at equal distance form a *tie group*. The order inside
a tie group is a choice that changes mAP (more so with short codes and small cutoffs, where
tie groups are large), so it is explicit:

``ties="expected"`` (default)
    The exact expected value of each metric when every ordering of the items inside each tie
    group is equally likely. Deterministic and unbiased; computed in closed form from the
    per-distance counts (see :func:`evaluate` for the formulas).
``ties="index"``
    Items at equal distance are ranked by database position (what a stable sort does). A
    second pass per query walks the database in index order and places every item at its
    exact rank.

Per-query averages follow the ``zero_hits`` policy: a query with no relevant item in the
whole database counts as 0 (``"zero"``) or is left out of every average (``"exclude"``);
their number is reported either way.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from learn2hash._metrics_kernels import QUERY_BLOCK, count_kernel, expected_kernel, harmonic_table, index_kernel
from learn2hash.codes import Codes, as_codes, as_words
from learn2hash.datasets import as_multihot
from learn2hash.errors import Learn2HashError, check_int

TIES = ("expected", "index")
ZERO_HITS = ("zero", "exclude")
EMPTY_RADIUS = ("zero", "exclude")
DEFAULT_PRECISION_AT = (1, 10, 100, 1000)

_POLICIES = {
    "relevance": "two items are relevant when they share at least one label",
    "ranking": "by Hamming distance, ascending",
    "ties": {
        "expected": "exact expected value over all orderings of items at equal Hamming distance",
        "index": "items at equal Hamming distance ranked by database position (stable sort)",
    },
    "zero_hits": {
        "zero": "a query with no relevant item in the database counts as 0 in every average",
        "exclude": "a query with no relevant item in the database is left out of every average",
    },
    "empty_radius": {
        "zero": "a query that retrieves nothing within radius r has precision 0 at r",
        "exclude": "a query that retrieves nothing within radius r is left out of the precision average at r",
    },
    "average_precision": "AP@k = (1 / relevant items in the top k) * sum over relevant ranks r <= k of "
                         "precision@r; 0 when the top k holds no relevant item",
    "radius_metrics": "precision/recall within Hamming radius r ignore topk",
}


def _label_words(labels: np.ndarray) -> np.ndarray:
    """Multi-hot ``bool[n, c]`` -> bitsets ``uint64[n, max(1, ceil(c/64))]``."""
    n, c = labels.shape
    n_words = max(1, (c + 63) // 64)
    padded = np.zeros((n, n_words * 64), dtype=bool)
    padded[:, :c] = labels
    return np.ascontiguousarray(np.packbits(padded, axis=1, bitorder="little")).view(np.uint64)


def _code_words(codes: Codes) -> np.ndarray:
    return np.ascontiguousarray(as_words(np.ascontiguousarray(codes.packed)))


def _labels_pair(query_labels: Any, db_labels: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both label inputs as multi-hot with the same number of classes."""
    q = np.asarray(query_labels)
    db = np.asarray(db_labels)
    if q.ndim == 2 and db.ndim == 2:
        q = as_multihot(q, what="query labels")
        db = as_multihot(db, what="database labels")
        if q.shape[1] != db.shape[1]:
            raise Learn2HashError(
                f"query labels have {q.shape[1]} classes but database labels have {db.shape[1]}"
            )
        return q, db
    n_classes = None
    for a in (q, db):
        if a.ndim == 2:
            n_classes = a.shape[1]
    if n_classes is None and q.ndim == 1 and db.ndim == 1:
        # class ids on both sides: validated by as_multihot, sized by the larger id
        q1 = as_multihot(q, what="query labels")
        db1 = as_multihot(db, what="database labels")
        n_classes = max(q1.shape[1], db1.shape[1])
    return (as_multihot(q, n_classes, what="query labels"),
            as_multihot(db, n_classes, what="database labels"))


def _check_choice(value: Any, what: str, choices: Sequence[str]) -> str:
    if value not in choices:
        raise Learn2HashError(f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # platforms without CPU affinity
        return max(1, os.cpu_count() or 1)


def _check_threads(threads: Any) -> int:
    return _default_threads() if threads is None else check_int(threads, "threads", 1)


def _over_queries(kernel: Callable[[int, int], None], n_queries: int, threads: int) -> None:
    """Run ``kernel(start, stop)`` over ``[0, n_queries)`` in chunks on ``threads`` threads.

    The kernels release the GIL and write disjoint rows of their outputs, so chunks run
    concurrently; chunk starts are multiples of the counting kernel's query block.
    """
    if threads == 1 or n_queries <= QUERY_BLOCK:
        kernel(0, n_queries)
        return
    n_chunks = min(4 * threads, -(-n_queries // QUERY_BLOCK))
    step = -(-n_queries // n_chunks)
    step = -(-step // QUERY_BLOCK) * QUERY_BLOCK
    bounds = [(start, min(start + step, n_queries)) for start in range(0, n_queries, step)]
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for future in [pool.submit(kernel, a, b) for a, b in bounds]:
            future.result()


def _mean(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else float("nan")


# --------------------------------------------------------------------------- public API
def evaluate(
    query_codes: Codes,
    query_labels: Any,
    db_codes: Codes,
    db_labels: Any,
    *,
    topk: int | None = None,
    ties: str = "expected",
    radius: int = 2,
    precision_at: Sequence[int] | None = None,
    zero_hits: str = "zero",
    empty_radius: str = "zero",
    threads: int | None = None,
    map_at: Sequence[int | None] = (),
) -> dict[str, Any]:
    """Retrieval quality of ``query_codes`` against ``db_codes``, ranked by Hamming distance.

    Parameters
    ----------
    query_codes, db_codes : Codes
        Codes of the same bit length ``K``.
    query_labels, db_labels :
        Class ids ``int[n]`` or multi-hot ``[n, c]`` (0/1 or bool), one row per code. Items are
        relevant when they share a label. Class ids on both sides use ``max id + 1`` classes.
    topk : int or None
        Cutoff of mAP@k; ``None`` (or any value >= the database size) ranks the whole database.
    ties : {"expected", "index"}
        Tie policy (module docstring).
    radius : int
        Radius ``r`` of ``precision_at_radiusR`` / ``recall_at_radiusR`` (items with distance ``<= r``).
    precision_at : sequence of int or None
        The ``N`` of P@N; each must be at most the database size. ``None`` means
        (1, 10, 100, 1000) without the values larger than the database.
    zero_hits : {"zero", "exclude"}
        Queries with no relevant item in the database count as 0, or are left out of every
        average (mAP, P@N, precision/recall at radius, PR curve).
    empty_radius : {"zero", "exclude"}
        Precision at radius ``r`` of a query that retrieves nothing within ``r``: 0, or left out
        of that radius's average.
    threads : int or None
        Threads for the passes over the database (``None``: one per available core).
    map_at : sequence of (int or None)
        More cutoffs of mAP, computed in the same passes over the database (``None``: the whole database).

    Returns
    -------
    dict with the mAP under ``map@all`` (``topk`` None) or ``map@K`` (:func:`map_key`), ``precision_at_n``
    ({N: value}), ``precision_at_radiusR`` and ``recall_at_radiusR`` for ``R = radius`` (:func:`radius_key`),
    ``pr_curve`` ({"radius", "precision", "recall"} arrays over
    r = 0..K), ``map_at`` ({cutoff: mAP} for ``topk`` and every ``map_at``), ``n_query``, ``n_database``,
    ``bits``, ``n_queries_without_relevant``,
    ``n_queries_evaluated``, ``per_query`` ({"ap", "n_relevant"}) and ``settings`` (every
    option used and the policies in words).

    Expected AP under ``ties="expected"``
    ---------------------------------------
    Walk the tie groups in order of distance. Before a group, ``T`` items (``R`` relevant)
    rank ahead of it; the group holds ``n`` items, ``m`` relevant. Write
    ``A(T, c) = sum_{j=1..c} 1/(T+j)`` and ``B(T, c) = sum_{j=1..c} (j-1)/(T+j) = c - (T+1) A``.

    *Whole group inside the top k.* The item at rank ``T+j`` is relevant with probability
    ``m/n``; given that, the ``j-1`` items before it in the group are a uniform draw from the
    other ``n-1``, of which ``m-1`` are relevant. So the expected sum of precisions over the
    group's relevant ranks is ``F_g = (m/n) * [(R+1) A(T, n) + (m-1)/(n-1) B(T, n)]``, and the
    number of relevant items in the top k is not random, so ``E[AP@k] = sum_g F_g / R_k``.

    *Cutoff inside a group* (``c = k - T`` with ``0 < c < n``). The number ``x`` of relevant
    items among the ``c`` that make the cut is hypergeometric,
    ``P(x) = C(m, x) C(n-m, c-x) / C(n, c)``; given ``x``, they sit at a uniform ``x``-subset of
    the ``c`` ranks, so their expected sum of precisions is
    ``S_x = (x/c) [(R+1) A(T, c) + (x-1)/(c-1) B(T, c)]``. The groups before it contribute
    ``F = sum F_g`` independently of ``x``, hence
    ``E[AP@k] = sum_x P(x) (F + S_x) / (R + x)`` (terms with ``R + x = 0`` are 0). ``P(x)`` is
    evaluated by the ratio recursion from its mode, so no factorial is formed.

    Expected P@N: ``(R + c m / n) / N`` for the group cut by ``N``. Radius metrics and the PR
    curve do not depend on the order within a group.
    """
    query_codes, ql, db_codes, dbl = _check_data(query_codes, query_labels, db_codes, db_labels)
    ties = _check_choice(ties, "ties", TIES)
    zero_hits = _check_choice(zero_hits, "zero_hits", ZERO_HITS)
    empty_radius = _check_choice(empty_radius, "empty_radius", EMPTY_RADIUS)
    radius = check_int(radius, "radius", 0)
    n_db, bits, nq = len(db_codes), db_codes.bits, len(query_codes)
    cutoffs = {c: n_db if c is None else min(c, n_db) for c in _cutoffs([topk, *map_at])}
    topk = _cutoffs([topk])[0]
    ns = _precision_at(precision_at, n_db)
    n_threads = _check_threads(threads)
    words = _words(query_codes, ql, db_codes, dbl)
    total, relevant = _count(words, nq, bits, n_threads)
    ap, hits = _rank(words, total, relevant, np.array(list(cutoffs.values()), np.int64), ns, ties, n_threads)
    n_relevant = relevant.sum(axis=1)
    has_relevant = n_relevant > 0
    counted = has_relevant if zero_hits == "exclude" else np.ones(nq, dtype=bool)
    pr_precision, pr_recall = _radius_curves(total, relevant, counted, empty_radius)
    r_eff = min(radius, bits)
    return {
        map_key(topk): _mean(ap[0], counted),
        "map_at": {c: _mean(ap[j], counted) for j, c in enumerate(cutoffs)},
        "precision_at_n": {int(n): _mean(hits[:, p] / n, counted) for p, n in enumerate(ns)},
        radius_key(radius): float(pr_precision[r_eff]),
        radius_key(radius, "recall"): float(pr_recall[r_eff]),
        "pr_curve": {"radius": np.arange(bits + 1), "precision": pr_precision, "recall": pr_recall},
        "n_query": nq,
        "n_database": n_db,
        "bits": bits,
        "n_queries_without_relevant": int((~has_relevant).sum()),
        "n_queries_evaluated": int(counted.sum()),
        "per_query": {"ap": ap[0], "n_relevant": n_relevant},
        "settings": _settings(topk, cutoffs[topk], ties, radius, ns, zero_hits, empty_radius, n_threads),
    }


def _check_data(query_codes: Any, query_labels: Any, db_codes: Any, db_labels: Any):
    """``(query codes, query labels, database codes, database labels)`` checked: codes of one bit length,
    labels multi-hot with one row per code."""
    query_codes = as_codes(query_codes, "query codes")
    db_codes = as_codes(db_codes, "database codes")
    if query_codes.bits != db_codes.bits:
        raise Learn2HashError(
            f"query codes have {query_codes.bits} bits but database codes have {db_codes.bits} bits"
        )
    if len(query_codes) == 0:
        raise Learn2HashError("query codes are empty: there is nothing to evaluate")
    if len(db_codes) == 0:
        raise Learn2HashError("database codes are empty: there is nothing to retrieve")
    if len(db_codes) >= 2**31:
        raise Learn2HashError(f"the database holds {len(db_codes)} codes; at most 2**31 - 1 are supported")
    ql, dbl = _labels_pair(query_labels, db_labels)
    for what, labels, codes in (("query", ql, query_codes), ("database", dbl, db_codes)):
        if labels.shape[0] != len(codes):
            raise Learn2HashError(f"{what} labels have {labels.shape[0]} rows but there are {len(codes)} {what} codes")
    return query_codes, ql, db_codes, dbl


def _cutoffs(values: Sequence[int | None]) -> list[int | None]:
    """The mAP cutoffs checked (None: the whole database), in order, each once."""
    return list(dict.fromkeys(None if v is None else check_int(v, "topk", 1) for v in values))


def _precision_at(precision_at: Any, n_db: int) -> np.ndarray:
    """The N of P@N, sorted, each at most the database size (default: :data:`DEFAULT_PRECISION_AT` that fit)."""
    if precision_at is None:
        ns_list = [n for n in DEFAULT_PRECISION_AT if n <= n_db]
    else:
        if isinstance(precision_at, (int, np.integer)):
            precision_at = [precision_at]
        ns_list = [check_int(n, "each precision_at value", 1) for n in precision_at]
        too_big = [n for n in ns_list if n > n_db]
        if too_big:
            raise Learn2HashError(f"precision_at value {too_big[0]} exceeds the database size {n_db}")
    return np.array(sorted(set(ns_list)), dtype=np.int64)


def _words(query_codes: Codes, ql: np.ndarray, db_codes: Codes, dbl: np.ndarray) -> tuple:
    """What the kernels read: codes as words, query labels as bitsets, the distinct database label sets
    and the set of each database item."""
    sets, sid = np.unique(_label_words(dbl), axis=0, return_inverse=True)
    return (_code_words(query_codes), _code_words(db_codes), _label_words(ql), np.ascontiguousarray(sets),
            np.ascontiguousarray(sid.reshape(-1), dtype=np.int32))


def _count(words: tuple, nq: int, bits: int, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """The first pass over the database: ``(total, relevant)``, ``int64[q, K + 1]`` items (relevant items)
    of each query at each Hamming distance."""
    packed = np.zeros((nq, bits + 1), np.int64)
    _over_queries(lambda a, b: count_kernel(*words, packed, a, b), nq, threads)
    return packed & np.int64(0xFFFFFFFF), packed >> np.int64(32)


def _rank(words: tuple, total: np.ndarray, relevant: np.ndarray, ks: np.ndarray, ns: np.ndarray, ties: str,
          threads: int) -> tuple[np.ndarray, np.ndarray]:
    """AP at every cutoff ``ks`` (``float64[len(ks), q]``) and relevant hits in the top N (``[q, len(ns)]``)
    under the tie policy: from the counts alone (``expected``), or in one second pass (``index``)."""
    nq = total.shape[0]
    ap = np.zeros((len(ks), nq), np.float64)
    if ties == "index":
        hits = np.zeros((nq, len(ns)), np.int64)
        _over_queries(lambda a, b: index_kernel(*words, total, relevant, ks, ns, ap, hits, a, b), nq, threads)
        return ap, hits
    hits = np.zeros((nq, len(ns)), np.float64)
    harmonic = harmonic_table(int(total[0].sum()))
    for c, k in enumerate(ks):  # P@N once, with the first cutoff
        expected_kernel(total, relevant, k, ns if c == 0 else ns[:0], harmonic, ap[c], hits, 0, nq)
    return ap, hits


def _radius_curves(total: np.ndarray, relevant: np.ndarray, counted: np.ndarray,
                   empty_radius: str) -> tuple[np.ndarray, np.ndarray]:
    """Mean precision and recall within each Hamming radius ``0..K`` over the ``counted`` queries."""
    n_relevant = relevant.sum(axis=1)
    cum_t = np.cumsum(total, axis=1)
    cum_r = np.cumsum(relevant, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec_r = np.where(cum_t > 0, cum_r / np.maximum(cum_t, 1), 0.0 if empty_radius == "zero" else np.nan)
        rec_r = np.where((n_relevant > 0)[:, None], cum_r / np.maximum(n_relevant, 1)[:, None], 0.0)
    prec_r = prec_r[counted]
    rec_r = rec_r[counted]
    valid = np.isfinite(prec_r)
    n_valid = valid.sum(axis=0)
    pr_precision = np.where(n_valid > 0, np.where(valid, prec_r, 0.0).sum(axis=0) / np.maximum(n_valid, 1), np.nan)
    pr_recall = rec_r.mean(axis=0) if rec_r.shape[0] else np.full(total.shape[1], np.nan)
    return pr_precision, pr_recall


def _settings(topk: int | None, k: int, ties: str, radius: int, ns: np.ndarray, zero_hits: str, empty_radius: str,
              threads: int) -> dict[str, Any]:
    """Every option of an evaluation, and its policies in words."""
    return {
        "topk": topk,
        "topk_effective": k,
        "ties": ties,
        "radius": radius,
        "precision_at": [int(n) for n in ns],
        "zero_hits": zero_hits,
        "empty_radius": empty_radius,
        "threads": threads,
        "policies": {
            "relevance": _POLICIES["relevance"],
            "ranking": _POLICIES["ranking"],
            "ties": _POLICIES["ties"][ties],
            "zero_hits": _POLICIES["zero_hits"][zero_hits],
            "empty_radius": _POLICIES["empty_radius"][empty_radius],
            "average_precision": _POLICIES["average_precision"],
            "radius_metrics": _POLICIES["radius_metrics"],
        },
    }


#: display names of the scalar results, keyed by the one spelling that :func:`summary`, ``metrics.json`` and
#: every table and :func:`evaluate`'s own result use: ``map@all`` / ``map@K`` (:func:`map_key`), ``precision@N``,
#: ``precision_at_radiusR`` / ``recall_at_radiusR`` (:func:`radius_key`), ``n_query``. Older spellings are still
#: read: :data:`OLD_KEYS`, and :func:`metric_name` shows them under the same names.
METRIC_NAMES: dict[str, str] = {
    "map@all": "mAP@all", "n_query": "queries", "n_database": "database items",
    "n_queries_without_relevant": "queries without a relevant item", "n_queries_evaluated": "queries evaluated",
    "ties": "tie policy", "epochs": "epochs", "train_seconds": "train seconds", "encode_seconds": "encode seconds",
    "evaluate_seconds": "evaluate seconds", "seconds_per_epoch": "seconds per epoch",
}
#: the spellings of older versions (metrics files, summaries) and the key each is now
OLD_KEYS: dict[str, str] = {"map": "map@all", "n_queries": "n_query"}
_PARAMETRISED_NAMES = [
    (re.compile(r"^map@(\w+)$"), "mAP@{}"),
    (re.compile(r"^(?:precision_at_radius|precision@H<=)(\d+)$"), "P@H<={}"),
    (re.compile(r"^(?:recall_at_radius|recall@H<=)(\d+)$"), "R@H<={}"),
    (re.compile(r"^precision@(\d+)$"), "P@{}"),
]
_OLD_RADIUS = re.compile(r"^(precision|recall)@H<=(\d+)$")


def map_key(topk: int | None) -> str:
    """The key of mAP at cut-off ``topk`` in :func:`evaluate`'s result, :func:`summary` and ``metrics.json``:
    ``"map@all"`` for ``None`` (the whole database), else ``"map@K"`` (``map_key(1000)`` -> ``"map@1000"``)."""
    return "map@all" if topk is None else f"map@{check_int(topk, 'topk', 1)}"


def radius_key(radius: int, which: str = "precision") -> str:
    """The key of precision (``which="precision"``) or recall (``which="recall"``) within Hamming radius
    ``radius`` in :func:`evaluate`'s result, :func:`summary` and ``metrics.json``
    (``radius_key(2)`` -> ``"precision_at_radius2"``, ``radius_key(2, "recall")`` -> ``"recall_at_radius2"``)."""
    which = _check_choice(which, "radius_key which", ("precision", "recall"))
    return f"{which}_at_radius{check_int(radius, 'radius', 0)}"


def current_key(key: str) -> str:
    """The one spelling of result key ``key``, given in any spelling this package ever wrote
    (``"map"`` -> ``"map@all"``, ``"n_queries"`` -> ``"n_query"``, ``"precision@H<=2"`` -> ``"precision_at_radius2"``)."""
    m = _OLD_RADIUS.match(key)
    return f"{m.group(1)}_at_radius{m.group(2)}" if m else OLD_KEYS.get(key, key)


def metric_name(key: str) -> str:
    """The display name of result key ``key`` (``"precision_at_radius2"`` -> ``"P@H<=2"``,
    ``"map@1000"`` -> ``"mAP@1000"``); a key without one is shown as it is."""
    key = current_key(key)
    if key in METRIC_NAMES:
        return METRIC_NAMES[key]
    for pattern, name in _PARAMETRISED_NAMES:
        m = pattern.match(key)
        if m:
            return name.format(m.group(1))
    return key


def summary(result: Mapping[str, Any]) -> dict[str, float | int]:
    """The scalar metrics of an :func:`evaluate` result, in display order, under their one spelling.

    Keys: ``map@all`` (or ``map@k``), ``precision@N`` for each N, ``precision_at_radiusR``,
    ``recall_at_radiusR``, ``n_query``, ``n_queries_without_relevant``, ``n_queries_evaluated``.
    """
    settings = result["settings"]
    mk = map_key(settings["topk"])
    out: dict[str, float | int] = {mk: result[mk]}
    for n, value in result["precision_at_n"].items():
        out[f"precision@{n}"] = value
    for which in ("precision", "recall"):
        key = radius_key(settings["radius"], which)
        out[key] = result[key]
    for key in ("n_query", "n_queries_without_relevant", "n_queries_evaluated"):
        out[key] = result[key]
    return out


class MapScorer:
    """A scikit-learn scorer (``scorer(estimator, X, y) -> float``): the mAP of a fitted hasher (or
    a ``Pipeline`` ending in one) on held-out items ``X`` with labels ``y``.

    The first ``query_fraction`` of the items (at least one) are the queries, the rest the
    database; codes come from ``estimator.encode(X)``, or the signs of ``estimator.transform(X)``
    for a ``Pipeline``; mAP@``topk`` (``None``: over the whole database) with the default tie
    and zero-hit policies of :func:`evaluate`. ``y``: class labels of any kind (their distinct
    values are the classes, :func:`learn2hash.datasets.base.class_labels`) or a multi-hot matrix.
    Made by :func:`map_scorer`.
    """

    def __init__(self, topk: int | None = None, query_fraction: float = 0.2):
        if topk is not None:
            check_int(topk, "map_scorer topk", 1)
        if isinstance(query_fraction, bool) or not isinstance(query_fraction, (int, float)) \
                or not 0 < query_fraction < 1:
            raise Learn2HashError(f"map_scorer query_fraction must be a number in (0, 1), got {query_fraction!r}")
        self.topk, self.query_fraction = topk, float(query_fraction)

    def __call__(self, estimator: Any, X: Any, y: Any) -> float:
        from learn2hash.datasets.base import class_labels

        if y is None:
            raise Learn2HashError("map_scorer needs labels y: items are relevant to a query when they share a label")
        encode = getattr(estimator, "encode", None)
        codes = encode(X) if callable(encode) else Codes.from_signs(np.asarray(estimator.transform(X)))
        labels = class_labels(y, len(codes), what="y")
        if len(codes) < 2:
            raise Learn2HashError(f"map_scorer needs at least 2 items (queries and a database), got {len(codes)}")
        q = min(len(codes) - 1, max(1, int(len(codes) * self.query_fraction)))
        return float(evaluate(codes[:q], labels[:q], codes[q:], labels[q:], topk=self.topk)[map_key(self.topk)])

    def __repr__(self) -> str:
        return f"map_scorer(topk={self.topk!r}, query_fraction={self.query_fraction!r})"


def map_scorer(topk: int | None = None, query_fraction: float = 0.2) -> MapScorer:
    """A scorer for ``GridSearchCV(..., scoring=map_scorer(topk=1000))``: the mAP@``topk`` of the
    first ``query_fraction`` of the held-out items against the rest (:class:`MapScorer`); a
    hasher's ``score(X, y)`` is ``map_scorer()``'s value."""
    return MapScorer(topk, query_fraction)
