"""A saved index loads memory-mapped without reading its codes or ids into this process's memory;
the first search then answers exactly from the mapped codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np

from learn2hash import HammingIndex

CHILD = textwrap.dedent("""
    import json, sys
    import numpy as np
    from learn2hash import HammingIndex
    import learn2hash.index.native  # every module the load needs, imported before the baseline

    def status():
        fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
        return {k: int(fields[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM", "RssAnon", "RssFile")}

    before = status()
    index = HammingIndex.load(sys.argv[1], mmap=True, verify=sys.argv[2] == "1")
    after = status()
    d, i = index.search(np.load(sys.argv[3]), 3, method="scan")
    searched = status()
    print(json.dumps({"before": before, "after": after, "searched": searched, "n": len(index),
                      "d": d.tolist(), "i": i.tolist()}))
""")


def test_load_of_a_million_codes_reads_neither_codes_nor_ids(tmp_path):
    n, bits = 1_000_000, 256
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (n, bits // 8), dtype=np.uint8)
    ids = rng.permutation(2 * n)[:n].astype(np.int64)
    index = HammingIndex(bits, threads=1)
    index.add(codes, ids=ids)
    index.save(tmp_path / "idx")
    del index
    probe = np.array([0, 123_456, n - 1])
    np.save(tmp_path / "q.npy", codes[probe])
    size = codes.nbytes + ids.nbytes  # 40 MB on disk
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    for verify in ("0", "1"):
        out = subprocess.run([sys.executable, str(script), str(tmp_path / "idx"), verify, str(tmp_path / "q.npy")],
                             env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
        r = json.loads(out.stdout)
        grown = r["after"]["VmRSS"] - r["before"]["VmRSS"]
        peak = r["after"]["VmHWM"] - r["before"]["VmRSS"]
        # Loading maps the files: neither the codes (32 MB) nor the ids (8 MB) come into memory,
        # not even for a moment (the peak), also when every file's checksum is verified (read in
        # 1 MiB chunks: about 2 MB at the peak).
        bound = 6 * 2**20
        assert bound < size // 6
        assert grown < bound and peak < bound, (verify, r)
        assert r["n"] == n
        # The search answers from the mapped codes: each probe finds itself at distance 0.
        assert [row[0] for row in r["d"]] == [0, 0, 0] and [row[0] for row in r["i"]] == ids[probe].tolist()
        # ... and then holds the bit planes (about 1.25 times the codes) it built for the scan.
        assert r["searched"]["RssAnon"] - r["after"]["RssAnon"] > codes.nbytes


def test_first_searches_from_many_threads_build_the_planes_once_and_agree(tmp_path):
    # After a load (or an add) the words are joined and the bit planes built by whichever search
    # comes first; concurrent first searches must all see complete planes.
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    n, bits = 20_000, 128
    codes = rng.integers(0, 256, (n, bits // 8), dtype=np.uint8)
    saved = HammingIndex(bits, threads=1)
    saved.add(codes[:7_000])
    saved.save(tmp_path / "idx")
    saved.add(codes[7_000:])  # a second segment: the load joins two parts
    saved.save()
    queries = codes[rng.integers(0, n, 8)] ^ rng.integers(0, 2, (8, bits // 8), dtype=np.uint8)
    dist = np.unpackbits(queries[:, None, :] ^ codes[None, :, :], axis=2).sum(axis=2)
    want = np.stack([np.lexsort((np.arange(n), row))[:10] for row in dist])
    for _ in range(5):
        index = HammingIndex.load(tmp_path / "idx", threads=1)
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda j: index.search(queries, 10, method="scan"), range(8)))
        for d, i in results:
            np.testing.assert_array_equal(i, want)
            np.testing.assert_array_equal(d, np.take_along_axis(dist, want, 1))
