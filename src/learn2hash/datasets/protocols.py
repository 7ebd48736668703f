"""Seeded, deterministic sampling of splits."""

from __future__ import annotations

import numpy as np

from learn2hash.errors import Learn2HashError


def rng_for(seed: int, *purpose: str) -> np.random.Generator:
    """An independent generator per (seed, purpose), so adding a split never shifts another."""
    words = [int(seed) & 0xFFFFFFFF] + [int.from_bytes(p.encode()[:8].ljust(8, b"\0"), "little") & 0xFFFFFFFF
                                         for p in purpose]
    return np.random.default_rng(np.random.SeedSequence(words))


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
