"""Segments of a saved index at scale: what loading costs in memory, what an append rewrites, and
compaction under a concurrent reader. Used by ``bench_search.py --scaling`` for every database size
(10^6 .. 10^8 codes); run alone on an index folder it is the writer process of that measurement.

For a saved index of ``n`` codes (ids ``0 .. n-1``, one segment):

- **load memory**: a fresh process loads the folder memory-mapped (with and without sha256
  verification) and reports its resident memory before and after (``VmRSS``) and its peak
  (``VmHWM``), so one sees whether loading grows with the index;
- **append**: a writer process adds ``n / 100`` codes (ids ``n ..``) and saves; the old segment's
  files must keep their inode, size and modification time (nothing rewritten);
- **compaction under a reader**: the writer removes ``n / 1000`` items, saves, compacts and saves
  again, while this process loads the folder over and over and checks every load against the state
  it must be in (the ids in order, and the codes of sampled ids, appended ones included). A load
  that sees anything else, or a missing file, is a loss.

    python benchmarks/search_segments.py writer FOLDER BITS N   # the writer half (internal)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from learn2hash import Codes, HammingIndex


def appended_codes(ids: np.ndarray, bits: int) -> np.ndarray:
    """Packed codes of appended items, a fixed function of their ids (both processes compute them)."""
    words = (bits + 63) // 64
    x = (np.asarray(ids, np.uint64)[:, None] * np.uint64(words) + np.arange(words, dtype=np.uint64)[None, :])
    x = x * np.uint64(0x9E3779B97F4A7C15)
    x ^= x >> np.uint64(29)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(32)
    return np.ascontiguousarray(x.astype("<u8").view(np.uint8).reshape(len(ids), 8 * words)[:, : bits // 8])


def removed_ids(n: int) -> np.ndarray:
    """The ids the writer removes: every 1,000th original item, from the middle of the range."""
    return np.arange(n // 2000, n, 1000, dtype=np.int64)[: max(1, n // 1000)]


def _memory() -> dict:
    """This process's resident memory now and at its peak, MiB (Linux ``/proc/self/status``)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def _files(folder: Path) -> dict:
    return {p.name: (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()}


def load_memory(folder: Path, verify: bool) -> dict:
    """Run in a fresh process: resident memory around ``HammingIndex.load(mmap=True)``."""
    code = ("import json, sys, time\n"
            "from search_segments import _memory\n"
            "from learn2hash import HammingIndex\n"
            "before = _memory()\n"
            "t = time.perf_counter()\n"
            f"index = HammingIndex.load(sys.argv[1], mmap=True, verify={verify})\n"
            "t = time.perf_counter() - t\n"
            "after = _memory()\n"
            "print(json.dumps({'load_s': t, 'rss_before_mib': before['VmRSS'], 'rss_after_mib': after['VmRSS'],"
            " 'peak_mib': after['VmHWM'], 'items': len(index)}))\n")
    out = subprocess.run([sys.executable, "-c", code, str(folder)], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent)] + sys.path)})
    return json.loads(out.stdout.strip().splitlines()[-1])


def writer(folder: Path, bits: int, n: int) -> dict:
    """The writer process: append, remove, compact, saving after each; times and memory."""
    rec = {}
    index = HammingIndex.load(folder, mmap=True, verify=True, threads=1)
    before = _files(folder)
    new = np.arange(n, n + n // 100, dtype=np.int64)
    t = time.perf_counter()
    index.add(Codes.from_packed(appended_codes(new, bits), bits), ids=new)
    index.save()
    rec["append_s"] = time.perf_counter() - t
    after = _files(folder)
    rec["old_files_untouched"] = all(after.get(name) == stat for name, stat in before.items()
                                     if not name.startswith(("manifest", ".")))
    rec["segments_after_append"] = len(index._segments)
    t = time.perf_counter()
    index.remove(removed_ids(n))
    index.save()
    rec["remove_s"] = time.perf_counter() - t
    rss = _memory()["VmRSS"]
    t = time.perf_counter()
    dropped = index.compact()
    index.save()
    rec["compact_s"] = time.perf_counter() - t
    rec["compact_dropped"] = dropped
    rec["segments_after_compact"] = len(index._segments)
    rec["rss_before_compact_mib"] = rss
    rec["peak_mib"] = _memory()["VmHWM"]
    return rec


def _expected(state: int, n: int) -> np.ndarray:
    ids = np.arange(n if state == 0 else n + n // 100, dtype=np.int64)
    return ids if state < 2 else np.delete(ids, removed_ids(n))


def compaction_under_reader(folder: Path, bits: int, n: int, seed: int = 0) -> dict:
    """Start the writer, and load and check the folder until it is done."""
    rng = np.random.default_rng(seed)
    first = HammingIndex.load(folder, mmap=True, verify=False, threads=1)
    old_probe = np.sort(rng.choice(n, 200, replace=False))
    old_probe = np.setdiff1d(old_probe, removed_ids(n))
    old_codes = first.codes().packed[old_probe]
    first.close()
    del first
    new_probe = n + np.sort(rng.choice(n // 100, 50, replace=False))
    new_codes = appended_codes(new_probe, bits)
    expected = {s: _expected(s, n) for s in range(3)}
    proc = subprocess.Popen([sys.executable, __file__, "writer", str(folder), str(bits), str(n)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    loads, states, failures = 0, {}, []
    while True:
        done = proc.poll() is not None
        try:
            index = HammingIndex.load(folder, mmap=True, verify=False, threads=1)
            ids = index.ids
            state = next((s for s in (2, 1, 0) if ids.size == expected[s].size and np.array_equal(ids, expected[s])), None)
            if state is None:
                failures.append(f"load {loads}: {ids.size} ids, none of the states")
            else:
                states[state] = states.get(state, 0) + 1
                codes = index.codes().packed
                pos = np.searchsorted(ids, old_probe)
                if not np.array_equal(codes[pos], old_codes):
                    failures.append(f"load {loads}: codes of original items changed")
                if state > 0 and not np.array_equal(codes[np.searchsorted(ids, new_probe)], new_codes):
                    failures.append(f"load {loads}: codes of appended items wrong")
            index.close()
            del index, ids
        except Exception as exc:  # a load that fails is a loss too
            failures.append(f"load {loads}: {type(exc).__name__}: {exc}")
        loads += 1
        if done:
            break
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"segment writer failed: {err.strip()[-2000:]}")
    rec = json.loads(out.strip().splitlines()[-1])
    rec.update({"reader_loads": loads, "reader_states": {str(k): v for k, v in sorted(states.items())},
                "reader_failures": failures[:10], "reader_failure_count": len(failures)})
    return rec


def segments_case(folder: Path, bits: int, n: int) -> dict:
    """All three measurements on the saved index in ``folder`` (changed in place)."""
    rec = {"load_memory_verify": load_memory(folder, True), "load_memory_no_verify": load_memory(folder, False)}
    rec.update(compaction_under_reader(folder, bits, n))
    return rec


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "writer":
        print(json.dumps(writer(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))), flush=True)
    else:
        raise SystemExit(__doc__)
