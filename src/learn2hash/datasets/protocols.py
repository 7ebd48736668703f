"""Seeded, deterministic sampling of splits."""

from __future__ import annotations

import numpy as np

from learn2hash.errors import Learn2HashError


def rng_for(seed: int, *purpose: str) -> np.random.Generator:
    """An independent generator per (seed, purpose), so adding a split never shifts another.

    Every byte of every purpose enters the seed, so "cell0" and "cell1" draw independently.
    """
    return np.random.default_rng(np.random.SeedSequence(_purpose_words(seed, purpose)))


def per_class_sample(class_ids: np.ndarray, per_class: int, rng: np.random.Generator,
                     exclude: np.ndarray | None = None, what: str = "split") -> np.ndarray:
    """``per_class`` positions of each class, sorted; classes with too few items are an error."""
    class_ids = np.asarray(class_ids)
    mask = np.ones(len(class_ids), dtype=bool)
    if exclude is not None:
        mask[exclude] = False
    out = []
    for c in np.unique(class_ids):
        pool = np.flatnonzero((class_ids == c) & mask)
        if len(pool) < per_class:
            raise Learn2HashError(f"{what}: class {c} has {len(pool)} items, {per_class} are needed")
        out.append(rng.choice(pool, size=per_class, replace=False))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def _purpose_words(seed: int, purpose: tuple[str, ...]) -> list[int]:
    """32-bit words that encode the seed and every byte of every purpose (with its length)."""
    words = [int(seed) & 0xFFFFFFFF, (int(seed) >> 32) & 0xFFFFFFFF]
    for p in purpose:
        data = p.encode()
        words.append(len(data))
        words += np.frombuffer(data.ljust(-(-len(data) // 4) * 4, b"\0"), dtype="<u4").tolist()
    return words


def _splitmix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser on ``uint64`` arrays (wrapping arithmetic): a bijective bit mixer."""
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def counter_uniform(seed: int, ids: np.ndarray, *purpose: str) -> np.ndarray:
    """``float64[len(ids)]`` in [0, 1): a pseudo-random draw that is a pure function of (seed, purpose, id).

    Unlike a sequential generator, the draw for item ``id`` does not depend on which other ids
    are drawn, so a generated item (a canvas, a clip) can be rebuilt from its id alone.
    """
    key = np.random.SeedSequence(_purpose_words(seed, purpose)).generate_state(1, dtype=np.uint64)[0]
    ids = np.asarray(ids, dtype=np.int64).astype(np.uint64)
    with np.errstate(over="ignore"):
        z = _splitmix64(_splitmix64(ids + np.uint64(0x9E3779B97F4A7C15)) ^ key)
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def counter_integers(seed: int, ids: np.ndarray, high: int, *purpose: str) -> np.ndarray:
    """``int64[len(ids)]`` in [0, high): :func:`counter_uniform` scaled to integers."""
    return np.minimum((counter_uniform(seed, ids, *purpose) * high).astype(np.int64), high - 1)


def random_protocol(n: int, seed: int, query_size: int | None = None, train_size: int | None = None,
                    what: str = "dataset") -> dict[str, np.ndarray]:
    """Seeded split of a pool of ``n`` items: query (sampled), database (the rest), train (from the database).

    Defaults: ``query_size = min(1000, max(1, n // 10))`` and ``train_size = min(5000, n - query_size)``.
    Positions are sorted.
    """
    if n < 2:
        raise Learn2HashError(f"{what}: {n} item(s); at least 2 are needed (one query, one database item)")
    q = min(1000, max(1, n // 10)) if query_size is None else int(query_size)
    if not 1 <= q < n:
        raise Learn2HashError(f"{what}: query_size must be in [1, {n - 1}] for {n} items, got {q}")
    t = min(5000, n - q) if train_size is None else int(train_size)
    if not 1 <= t <= n - q:
        raise Learn2HashError(f"{what}: train_size must be in [1, {n - q}] (database items) for {n} items, got {t}")
    query = np.sort(rng_for(seed, "query").choice(n, size=q, replace=False))
    database = np.setdiff1d(np.arange(n), query)
    train = np.sort(rng_for(seed, "train").choice(database, size=t, replace=False))
    return {"train": train, "query": query, "database": database}


#: default sizes of the splits of an unlabelled collection (see :func:`unlabelled_protocol`)
UNLABELLED_QUERY = 100
UNLABELLED_TRAIN = 10000


def unlabelled_protocol(n: int, seed: int, query_size: int | None = None, train_size: int | None = None,
                        what: str = "dataset") -> dict[str, np.ndarray]:
    """Seeded split of ``n`` items without labels: the database is every item; train is every item, or a
    seeded sample of ``train_size`` (default ``min(n, 10000)``); query is a seeded sample of ``query_size``
    (default ``min(n, 100)``) of the items, kept in the database: with no labels nothing is evaluated,
    and the queries are examples to search with. Positions are sorted."""
    if n < 1:
        raise Learn2HashError(f"{what}: no items")
    q = min(UNLABELLED_QUERY, n) if query_size is None else int(query_size)
    if not 1 <= q <= n:
        raise Learn2HashError(f"{what}: query_size must be in [1, {n}] for {n} items, got {q}")
    t = min(UNLABELLED_TRAIN, n) if train_size is None else int(train_size)
    if not 1 <= t <= n:
        raise Learn2HashError(f"{what}: train_size must be in [1, {n}] for {n} items, got {t}")
    query = np.sort(rng_for(seed, "query").choice(n, size=q, replace=False))
    train = np.arange(n) if t == n else np.sort(rng_for(seed, "train").choice(n, size=t, replace=False))
    return {"train": train, "query": query, "database": np.arange(n)}
