"""The versioned-folder abstraction shared by codes, hashers and indexes, and its lock.

``tests/data/saved_v2`` was written by the code before codes, hashers and indexes shared
:mod:`learn2hash._versioned` (``Codes.save``, ``Hasher.save`` and ``HammingIndex.save`` each with
their own version files); it must still load, and a save now must lay the folder out the same way.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from learn2hash import Codes, HammingIndex, _atomic
from learn2hash._versioned import VersionedFolder, read_current
from learn2hash.errors import Learn2HashError, MissingFileError
from learn2hash.methods import create
from learn2hash.methods.base import Hasher

FIXTURE = Path(__file__).parent / "data" / "saved_v2"
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def expected_codes() -> Codes:  # what the fixture's script saved
    return Codes.from_bits(np.random.default_rng(0).integers(0, 2, (6, 20)))


def features() -> np.ndarray:
    return np.random.default_rng(1).normal(size=(40, 10)).astype(np.float32)


@pytest.fixture
def saved(tmp_path) -> Path:
    folder = tmp_path / "saved"
    shutil.copytree(FIXTURE, folder)
    return folder


def test_folders_written_before_the_shared_abstraction_still_load(saved):
    assert Codes.load(saved / "codes" / "db.npy") == expected_codes()
    hasher = Hasher.load(saved / "hasher")
    assert hasher.name == "itq" and hasher.bits == 8
    assert hasher.encode(features()[:5]) == Codes.load(saved / "hasher_codes.npy")
    index = HammingIndex.load(saved / "index")
    extra = Codes.from_bits(np.random.default_rng(2).integers(0, 2, (2, 20)))
    kept = np.r_[0, 2:6]  # item 1 was removed
    assert np.array_equal(index.ids, np.r_[kept, 6, 7])
    assert np.array_equal(np.asarray(index.codes()), np.concatenate([np.asarray(expected_codes())[kept],
                                                                       np.asarray(extra)]))
    assert index.payloads([0, 5, 6]) == [b"item0", b"item5", b""]


def test_a_save_now_lays_out_codes_and_hasher_byte_for_byte_as_before(tmp_path):
    # data files are named by content, so saving the same codes / the same fitted hasher again must
    # give the very file names and the very JSON bytes of the folders in the fixture
    expected_codes().save(tmp_path / "codes" / "db.npy")
    assert _listing(tmp_path / "codes") == _listing(FIXTURE / "codes") | {".db.npy.lock"}
    for name in _listing(FIXTURE / "codes"):
        assert (tmp_path / "codes" / name).read_bytes() == (FIXTURE / "codes" / name).read_bytes(), name
    create("itq", bits=8, seed=0).fit(features()).save(tmp_path / "hasher")
    assert _listing(tmp_path / "hasher") == _listing(FIXTURE / "hasher") | {".lock"}
    for name in _listing(FIXTURE / "hasher"):
        assert (tmp_path / "hasher" / name).read_bytes() == (FIXTURE / "hasher" / name).read_bytes(), name


def test_a_save_now_lays_out_an_index_as_before(tmp_path):
    # index file names carry a random token: compare names with it masked, and the manifest's fields
    index = HammingIndex(bits=20)
    index.add(expected_codes(), payloads=[f"item{i}".encode() for i in range(6)])
    index.remove(index.ids[1:2])
    index.save(tmp_path / "index")
    index.add(Codes.from_bits(np.random.default_rng(2).integers(0, 2, (2, 20))))
    index.save()
    mask = lambda names: {re.sub(r"^(seg-\d{6}-\d)[0-9a-f]{8}|^(tomb-\d{6}-)[0-9a-f]{8}", r"\1\2X", n) for n in names}
    assert mask(_listing(tmp_path / "index")) == mask(_listing(FIXTURE / "index")) | {".writer.lock"}
    new, old = (json.loads((f / "index" / "manifest.json").read_text()) for f in (tmp_path, FIXTURE))
    for key in ("format", "version", "bits", "generation", "n", "next_id", "backend", "built_from"):
        assert new[key] == old[key], key
    for a, b in zip(new["segments"], old["segments"], strict=True):
        assert sorted(a) == sorted(b)
        assert {k: v for k, v in a.items() if k.endswith("sha256") or k == "n"} == \
               {k: v for k, v in b.items() if k.endswith("sha256") or k == "n"}
    assert new["tombstones"]["file_sha256"] == old["tombstones"]["file_sha256"]


def test_saving_over_an_old_folder_switches_and_collects_its_versions(saved):
    path = saved / "codes" / "db.npy"
    old_data = json.loads(path.with_name("db.npy.json").read_text())["file"]
    other = Codes.from_bits(np.ones((3, 20), np.uint8))
    other.save(path)
    assert Codes.load(path) == other
    assert (path.parent / old_data).exists()  # the previous version stays for a reader that just read it
    Codes.from_bits(np.zeros((2, 20), np.uint8)).save(path)  # a third version: the first one goes
    assert {p.name for p in path.parent.glob(".db.npy.*.npy")} == {
        _data_name(other, "db.npy"), _data_name(Codes.from_bits(np.zeros((2, 20), np.uint8)), "db.npy")}
    assert old_data == _data_name(expected_codes(), "db.npy")
    hasher = create("itq", bits=8, seed=3).fit(features())
    hasher.save(saved / "hasher")
    assert Hasher.load(saved / "hasher").encode(features()) == hasher.encode(features())


def _data_name(codes: Codes, name: str) -> str:
    return _atomic.content_name(f".{name}", _atomic.npy_bytes(codes.packed), ".npy")[0]


def _listing(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


# ----------------------------------------------------------------------------- the abstraction itself
def _toy(folder: Path) -> VersionedFolder:
    return VersionedFolder(folder, "manifest.json", lock=".lock", data=re.compile(r"^part\.[0-9a-f]{12}\.bin$"),
                           temps=re.compile(r"^\..*\.tmp$"))


def _save(vf: VersionedFolder, payload: bytes) -> str:
    with vf.save() as v:
        previous = json.loads(vf.manifest.read_text())["file"] if vf.manifest.exists() else None
        name, digest = v.write_named("part", payload, ".bin")
        v.switch({"file": name, "sha256": digest})
        v.collect({name, previous} - {None})
    return name


def _load(vf: VersionedFolder) -> bytes:
    def load(meta):
        p = vf.folder / meta["file"]
        if not p.exists():
            raise MissingFileError(str(p))
        return p.read_bytes()
    return vf.read(lambda: json.loads(vf.manifest.read_text()), load)


def test_a_save_keeps_the_new_and_the_previous_version_only(tmp_path):
    vf = _toy(tmp_path)
    names = [_save(vf, bytes([i]) * 10) for i in range(4)]
    assert _load(vf) == bytes([3]) * 10
    assert {p.name for p in tmp_path.glob("part.*")} == set(names[2:])
    (tmp_path / ".part.x.tmp").write_bytes(b"left by a killed save")
    (tmp_path / "unrelated.bin").write_bytes(b"not ours")
    _save(vf, b"again")
    assert not (tmp_path / ".part.x.tmp").exists() and (tmp_path / "unrelated.bin").exists()


def test_a_reader_whose_version_was_collected_reads_the_new_one_and_a_real_loss_is_raised():
    manifests = iter([{"v": 1}, {"v": 2}])
    current = {"m": None}

    def read_meta():
        current["m"] = next(manifests, current["m"])
        return current["m"]

    def load(meta):
        if meta["v"] == 1:
            raise MissingFileError("collected by a concurrent save")
        return "version 2"

    assert read_current(read_meta, load) == "version 2"
    with pytest.raises(MissingFileError):  # the manifest has not changed: the file is really gone
        read_current(lambda: {"v": 1}, load)


# ----------------------------------------------------------------------------- the lock
HOLD = ("import sys, time; from learn2hash import _atomic\n"
        "with _atomic.file_lock(sys.argv[1]):\n"
        "    print('held', flush=True); time.sleep(float(sys.argv[2]))\n")


def _holder(lock: Path, seconds: float) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), str(seconds)], stdout=subprocess.PIPE,
                            text=True, env=ENV)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_writer_fails_clearly_or_waits_and_a_killed_writer_leaves_no_lock(tmp_path):
    lock = tmp_path / ".lock"
    proc = _holder(lock, 60)
    try:
        with pytest.raises(Learn2HashError, match="busy here"):
            with _atomic.file_lock(lock, wait=False, busy="busy here"):
                pass
        entered = threading.Event()

        def wait_for_it():
            with _atomic.file_lock(lock):
                entered.set()

        waiter = threading.Thread(target=wait_for_it, daemon=True)
        waiter.start()
        assert not entered.wait(0.5)  # a waiting writer does not get in while the holder lives
        proc.kill()  # killed while holding the lock: the OS releases it
        proc.wait(timeout=10)
        assert entered.wait(10)
        waiter.join(10)
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert lock.exists()  # the lock file stays (waiters share one file)
    with _atomic.file_lock(lock, wait=False):
        pass


def test_threads_of_one_process_exclude_each_other(tmp_path):
    lock = tmp_path / ".lock"
    inside, overlaps = [0], []
    guard = threading.Lock()

    def work():
        for _ in range(20):
            with _atomic.file_lock(lock):
                with guard:
                    inside[0] += 1
                    overlaps.append(inside[0])
                time.sleep(0.001)
                with guard:
                    inside[0] -= 1

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(overlaps) == 80 and max(overlaps) == 1


SAVER = ("import sys, numpy as np; from learn2hash import Codes\n"
         "for i in range(int(sys.argv[2])):\n"
         "    Codes.from_bits(np.full((50, 20), (i + int(sys.argv[3])) % 2, np.uint8)).save(sys.argv[1])\n")


def test_concurrent_saves_of_one_artifact_take_turns(tmp_path):
    path = tmp_path / "codes.npy"
    procs = [subprocess.Popen([sys.executable, "-c", SAVER, str(path), "15", str(k)], env=ENV) for k in range(2)]
    seen, deadline = 0, time.monotonic() + 120
    while any(p.poll() is None for p in procs) and time.monotonic() < deadline:
        if Codes.exists(path):
            codes = Codes.load(path)  # never a mixed or half-written version
            bits = codes.to_bits()
            assert bits.shape == (50, 20) and (bits.all() or not bits.any())
            seen += 1
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert seen > 0
    assert len(list(tmp_path.glob(".codes.npy.*.npy"))) <= 2
    assert not list(tmp_path.glob(".*.tmp"))
