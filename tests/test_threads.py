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


FIT = """
import hashlib, json, sys
from learn2hash import datasets, methods
ds = datasets.load("digits")
h = methods.create("csq", bits=16, epochs=2)          # defaults otherwise: smallcnn, standardized start
h.fit(ds.train)
print(json.dumps({"codes": hashlib.sha256(h.encode(ds.query.x).packed.tobytes()).hexdigest(),
                  "thread_invariant": h.thread_invariant_}))
"""


def fit_digest(threads: int) -> dict:
    """Digest of a CSQ hasher's query codes on digits, fitted in a fresh process at ``threads`` threads."""
    import json

    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_NUM_THREADS", "MKL_NUM_THREADS")}
    env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, "-c", FIT], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to run at 2 threads")
def test_csq_on_digits_gives_the_same_code_bytes_at_1_and_2_threads():
    # benchmarks/stress_threads.py repeats this 20 times (RESULTS.md, "Thread count")
    one, two = fit_digest(1), fit_digest(2)
    assert one["thread_invariant"] and two["thread_invariant"]
    assert one["codes"] == two["codes"]
