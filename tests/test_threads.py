"""A process started with OMP_NUM_THREADS=1 keeps one torch thread after numba's parallel kernels run."""

import os
import subprocess
import sys

import pytest

CODE = """
import torch
from learn2hash import datasets, methods
import learn2hash as l2h
before = torch.get_num_threads()
ds = datasets.load("digits")
h = methods.create("csq", bits=16, epochs=1, backbone_options={"widths": [8, 16]})
h.fit(ds.train)                                   # hash centers: numba parallel kernels
q, db = h.encode(ds.query.x), h.encode(ds.database.x)
l2h.evaluate(q, ds.query.labels, db, ds.database.labels, topk=10)   # metrics: numba parallel kernels
index = l2h.HammingIndex(16)
index.add(db)
index.search(q, k=5)
print(before, torch.get_num_threads())
"""


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to tell 1 thread from all")
def test_omp_num_threads_1_is_kept_after_numba_parallel_kernels():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_NUM_THREADS"}
    env["OMP_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["1", "1"], out.stdout
