"""ITQ on wide inputs: 10,000 raw colour photographs of 120x160 (57,600 values each), peak memory.

The items are written once as a ``uint8`` ``.npy`` (576 MB) and memory-mapped by the fitting process,
as a lazily read image split would be. Each fit runs in a fresh subprocess that reports its peak
resident memory (``VmHWM``: the items' pages it read count too) and its wall time:

- ``itq``: ``create("itq", bits=64).fit(x)``; at this size ``pca="auto"`` takes the randomized path
  (:mod:`learn2hash.methods.pca`), reading the items in blocks of rows;
- ``itq-covariance``: the exact ``d x d`` path, which is refused up front (53 GiB) in one line;
- ``peer`` (``--peer``): scikit-learn's ``PCA(64, svd_solver="randomized")`` on the same items as
  float32 in [0, 1] (the array it needs in memory), the PCA step alone.

Target: peak < 2 GiB for ``itq``. Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_wide_itq.py [--n 10000] [--peer] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

H, W, C = 120, 160, 3

CHILD = r"""
import json, sys, time
import numpy as np
path, mode = sys.argv[1], sys.argv[2]
x = np.load(path, mmap_mode="r", allow_pickle=False)
t0 = time.perf_counter()
out = {"mode": mode}
if mode in ("itq", "itq-covariance"):
    from learn2hash.errors import Learn2HashError
    from learn2hash.methods import create
    try:
        itq = create("itq", bits=64, pca="auto" if mode == "itq" else "covariance").fit(x)
        out.update(pca=itq.pca_method_, loss_first=itq.loss_history_[0], loss_last=itq.loss_history_[-1])
    except Learn2HashError as exc:
        out["refused"] = str(exc)
    out["torch_imported"] = "torch" in sys.modules
else:
    from sklearn.decomposition import PCA
    xf = np.asarray(x, dtype=np.float32).reshape(len(x), -1) / np.float32(255)
    PCA(64, svd_solver="randomized", random_state=0).fit(xf)
out["seconds"] = time.perf_counter() - t0
# VmHWM: the peak resident memory of this process image (ru_maxrss would also carry the parent's
# resident size at fork, which Linux keeps across exec)
with open("/proc/self/status") as fh:
    out["peak_rss_bytes"] = next(int(l.split()[1]) * 1024 for l in fh if l.startswith("VmHWM:"))
print(json.dumps(out))
"""


def make_items(path: Path, n: int, seed: int = 0) -> None:
    """``n`` photographs ``uint8[n, 3, 120, 160]``: smooth low-rank scenes (a few blurred random
    patterns mixed per image) plus pixel noise, written block by block."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W] / np.array([H, W])[:, None, None]
    patterns = np.stack([np.sin(2 * np.pi * (a * xx + b * yy) + p)
                         for a, b, p in rng.uniform(0, 3, (24, 3))])  # [24, H, W]
    colours = rng.uniform(0, 1, (24, C))
    basis = (colours[:, :, None, None] * patterns[:, None]).reshape(24, -1).astype(np.float32)  # [24, C*H*W]
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(n, C, H, W))
    for s in range(0, n, 500):
        m = min(500, n - s)
        img = (rng.standard_normal((m, 24), dtype=np.float32) @ basis) * 30 + 128
        img += rng.standard_normal(img.shape, dtype=np.float32) * 8
        out[s:s + m] = np.clip(img, 0, 255).astype(np.uint8).reshape(m, C, H, W)
    out.flush()
    del out


def run_child(path: Path, mode: str) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "src"),
                                                         os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", CHILD, str(path), mode], capture_output=True, text=True, env=env,
                       timeout=3600)
    if r.returncode != 0:
        raise SystemExit(f"{mode} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--peer", action="store_true", help="also measure scikit-learn's randomized PCA")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-wide-itq-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"photos-{args.n}.npy"
    if not path.exists():
        t0 = time.perf_counter()
        make_items(path, args.n)
        print(f"wrote {args.n:,} x {C * H * W:,} uint8 items ({path.stat().st_size / 2**20:.0f} MiB) in "
              f"{time.perf_counter() - t0:.1f} s", file=sys.stderr)
    rows = [run_child(path, "itq"), run_child(path, "itq-covariance")]
    if args.peer:
        rows.append(run_child(path, "peer"))
    print(f"| what | n x d | PCA path | peak RSS (GiB) | wall s | note |\n|---|---|---|---|---|---|")
    for r in rows:
        note = r.get("refused", "") or (f"quantization loss {r['loss_first']:.0f} -> {r['loss_last']:.0f}"
                                         if "loss_first" in r else "")
        print(f"| {r['mode']} | {args.n:,} x {C * H * W:,} | {r.get('pca', 'refused' if 'refused' in r else 'randomized (sklearn)')} | "
              f"{r['peak_rss_bytes'] / 2**30:.2f} | {r['seconds']:.1f} | {note} |")
    itq = rows[0]
    ok = itq["peak_rss_bytes"] < 2 * 2**30 and "refused" not in itq and not itq["torch_imported"]
    print(f"target peak < 2 GiB: {'met' if ok else 'NOT met'}", file=sys.stderr)


if __name__ == "__main__":
    main()
