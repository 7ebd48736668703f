"""A small photo collection for the tests that serve one: 24 JPEGs of three colour classes in
``folder/photos/c0..c2``, a 16-bit CSQ run trained on them (one epoch, a tiny backbone) and a
collection of them in ``folder/coll``."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def photo_collection(folder: Path, seed: int):
    """Write the photos under ``folder`` (``seed`` draws their pixels), train the run and create the
    collection; returns the run."""
    from PIL import Image

    from learn2hash.collections import Collection
    from learn2hash.runs import train_run

    rng = np.random.default_rng(seed)
    for i in range(24):
        a = rng.integers(0, 90, (36, 48, 3)).astype(np.uint8)
        a[..., i % 3] += 120
        (folder / "photos" / f"c{i % 3}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(folder / "photos" / f"c{i % 3}" / f"{i:03d}.jpg", quality=90)
    run = train_run("csq", "image-folder", 16, folder / "run", progress=False,
                    params=dict(epochs=1, batch_size=8, backbone_options={"widths": [8, 16]}),
                    data_params={"path": str(folder / "photos"), "size": 16, "query_per_class": 2})
    Collection.create(folder / "coll", run.folder, folder / "photos")
    return run
