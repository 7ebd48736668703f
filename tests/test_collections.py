"""Collections: a user's images encoded by a run's hasher, indexed with their paths; sharded, resumable
and distributed encoding; changes through the writer lock; the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from learn2hash.cli import main
from learn2hash.codes import Codes
from learn2hash.collections import Collection
from learn2hash.errors import CorruptFileError, Learn2HashError
from learn2hash.index import HammingIndex

TINY_CSQ = dict(epochs=1, batch_size=8, lr=1e-3, backbone_options={"widths": [8, 16]}, augment="flip")
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
       "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}


def write_photos(root: Path, n: int, seed: int = 0, size: tuple[int, int] = (36, 48), prefix: str = "") -> list[Path]:
    """``n`` colour JPEG "photographs": a tinted noise background with a bright square somewhere."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        c = i % 3
        folder = root / f"{prefix}class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        a = rng.integers(0, 90, size + (3,)).astype(np.uint8)
        a[..., c] += 120
        y, x = rng.integers(0, size[0] - 8), rng.integers(0, size[1] - 8)
        a[y:y + 8, x:x + 8] = 255
        path = folder / f"{i:04d}.jpg"
        Image.fromarray(a).save(path, quality=90)
        out.append(path)
    return out


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("photos") / "photos"
    write_photos(root, 30)
    return root


@pytest.fixture(scope="module")
def run(photos, tmp_path_factory):
    from learn2hash.runs import train_run

    out = tmp_path_factory.mktemp("runs") / "csq"
    return train_run("csq", "image-folder", 16, out, params=TINY_CSQ,
                     data_params={"path": str(photos), "size": 16, "query_per_class": 2}, progress=False)


def sorted_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))


def reference_codes(run, root: Path, names: list[str]) -> Codes:
    """The run's codes of these files, encoded all at once (no shards, no collection)."""
    codes, kept, skipped = run.hasher().encode_images([root / n for n in names], on_bad_image="error")
    assert kept.tolist() == list(range(len(names))) and not skipped
    return codes


def stored(folder: Path) -> tuple[np.ndarray, np.ndarray, list[bytes]]:
    """Codes, ids and payloads of a collection's index as committed on disk."""
    index = HammingIndex.load(folder / "index")
    ids = index.ids
    return np.asarray(index.codes().packed), ids, index.payloads(ids)


def brute_force(codes: Codes, ids: np.ndarray, query: Codes, k: int) -> tuple[list[int], list[int]]:
    d = query.distances(codes)[0].astype(np.int64)
    order = np.lexsort((np.arange(d.size), d))[:k]  # ties by insertion order
    return ids[order].tolist(), d[order].tolist()


# ----------------------------------------------------------------------------- the library
def test_create_holds_the_runs_codes_and_searches_as_brute_force(run, photos, tmp_path):
    coll = Collection.create(tmp_path / "c", run.folder, photos, shard_size=7, workers=0)
    names = sorted_files(photos)
    ref = reference_codes(run, photos, names)
    codes, ids, payloads = stored(tmp_path / "c")
    assert ids.tolist() == list(range(len(names)))  # ids in path order
    assert np.array_equal(codes, ref.packed)  # shards of 7 give exactly the codes of one pass
    assert payloads == [b"p" + n.encode() for n in names]
    assert len(coll) == len(names) and coll.bits == 16 and coll.root == photos.resolve()
    assert coll.item(4) == {"id": 4, "path": names[4], "external_id": None}
    info = coll.info()
    assert info["items"] == 30 and info["hasher_sha256"] and info["pending_shards"] == 0
    assert [p.name for p in (tmp_path / "c" / "work").iterdir()] == [".active"]
    # a query by path, by file bytes, by decoded array: the same hits, equal to brute force
    q = photos / names[13]
    qcode = coll.encode(q)
    want_ids, want_d = brute_force(ref, ids, qcode, 8)
    for query in (q, q.read_bytes(), np.asarray(Image.open(q).convert("RGB"))):
        hits = coll.search(query, k=8)
        assert len(hits) == 1
        assert [h.id for h in hits[0]] == want_ids and [h.distance for h in hits[0]] == want_d
        assert [h.path for h in hits[0]] == [names[i] for i in want_ids]
    assert coll.search([q, photos / names[2]], k=3)[1] == coll.search(photos / names[2], k=3)[0]
    assert coll.search(ref[:2], k=40)[0][0].distance == 0 and len(coll.search(ref[:2], k=40)[0]) == 30


def test_add_item_remove_and_reopen(run, photos, tmp_path):
    names = sorted_files(photos)
    coll = Collection.create(tmp_path / "c", run.folder, [photos / n for n in names[:10]], root=photos, workers=0)
    assert len(coll) == 10
    ref = reference_codes(run, photos, names)
    # an upload: the bytes of a file, with an id of the caller's; its code is the file's code
    new = coll.add_item((photos / names[20]).read_bytes(), external_id="upload-20")
    assert new == 10 and coll.item(new) == {"id": 10, "path": None, "external_id": "upload-20"}
    codes, ids, payloads = stored(tmp_path / "c")
    assert np.array_equal(codes[10], ref.packed[20]) and payloads[10] == b"xupload-20"
    hit = coll.search(photos / names[20], k=11)[0]
    assert any(h.id == 10 and h.distance == 0 and h.external_id == "upload-20" for h in hit)
    # a decoded image as an array, and a file path under the root
    arr = np.asarray(Image.open(photos / names[21]).convert("RGB"))
    assert coll.add_item(arr) == 11 and coll.add_item(photos / names[22]) == 12
    assert coll.item(12)["path"] == names[22]
    # more files: those already present are left out
    added = coll.add_images([photos / n for n in names[5:15]], workers=0)
    assert added.tolist() == [13, 14, 15, 16, 17]
    codes, ids, payloads = stored(tmp_path / "c")
    assert np.array_equal(codes[13:18], ref.packed[10:15])
    assert [coll.item(i)["path"] for i in added] == names[10:15]
    # remove by id, path and external id; unknown ones remove nothing
    with pytest.raises(Learn2HashError, match="not in collection"):
        coll.remove(paths=[names[0], "no/such.jpg"])
    assert len(coll) == 18
    assert coll.remove(ids=[1], paths=[names[0], str(photos / names[2])], external_ids=["upload-20"]) == 4
    left = {h.id for h in coll.search(ref[:1], k=100)[0]}
    assert left == set(range(18)) - {0, 1, 2, 10}
    with pytest.raises(Learn2HashError):
        coll.item(10)
    # reopened: the same items; compaction keeps ids and sources and drops the removed
    again = Collection.open(tmp_path / "c")
    assert len(again) == 14 and again.item(13)["path"] == names[10]
    result = again.compact()
    assert result["dropped"] == 4 and result["segments_after"] == 1
    codes2, ids2, payloads2 = stored(tmp_path / "c")
    keep = np.isin(ids, ids2)
    assert ids2.tolist() == ids[keep].tolist() and np.array_equal(codes2, codes[keep])
    assert payloads2 == [p for p, k in zip(payloads, keep) if k]
    # the first object sees what the other committed
    assert len(coll) == 14 and coll.info()["segments"] == 1
    assert coll.ids().tolist() == ids2.tolist()
    assert coll.items(2, 3) == [{"id": int(i), **coll.item(int(i))} for i in ids2[2:5]]
    # codes computed elsewhere (a service decoding uploads itself), with their sources
    new = coll.add_codes(ref[[25, 26]], external_ids=["a", None], paths=[None, names[26]])
    assert new.tolist() == [18, 19] and coll.items(14) == [
        {"id": 18, "path": None, "external_id": "a"}, {"id": 19, "path": names[26], "external_id": None}]
    with pytest.raises(Learn2HashError, match="not both"):
        coll.add_codes(ref[[1]], external_ids=["a"], paths=[names[1]])


def test_hasher_changed_is_refused_in_one_line(run, photos, tmp_path, capsys):
    Collection.create(tmp_path / "c", run.folder, photos, workers=0)
    copy = tmp_path / "run-copy"
    shutil.copytree(run.folder, copy)
    Collection.create(tmp_path / "c2", copy, photos, workers=0)
    meta = copy / "hasher" / "hasher.json"
    meta.write_text(meta.read_text().replace('"bits"', '"bits" ', 1))  # any change to the hasher
    with pytest.raises(Learn2HashError, match="has changed since"):
        Collection.open(tmp_path / "c2")
    assert main(["search", "--collection", str(tmp_path / "c2"), "--query", str(next(photos.rglob("*.jpg")))]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "has changed since" in err
    assert main(["collection", "info", str(tmp_path / "c")]) == 0  # the other collection is fine


def test_bad_inputs_are_refused(run, photos, tmp_path, capsys):
    coll = Collection.create(tmp_path / "c", run.folder, photos / "class0", workers=0)
    with pytest.raises(Learn2HashError, match="outside the collection's root"):
        coll.add_images(photos / "class1")
    (tmp_path / "link").symlink_to(photos)  # the root reached through a link is the root
    assert coll.add_images([tmp_path / "link" / "class0" / "0000.jpg"]).size == 0  # already in it
    assert coll.item(0)["path"] == "0000.jpg"
    with pytest.raises(Learn2HashError, match="already holds a collection of another root"):
        Collection.create(tmp_path / "c", run.folder, photos / "class1")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "x.txt").write_text("mine")
    with pytest.raises(Learn2HashError, match="not a collection"):
        Collection.create(tmp_path / "other", run.folder, photos)
    with pytest.raises(Learn2HashError, match="not a collection"):
        Collection.open(tmp_path / "other")
    with pytest.raises(Learn2HashError, match="uint8"):
        coll.search(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(Learn2HashError, match="k must be"):
        coll.search(photos / "class0" / "0000.jpg", k=0)
    for argv in (["collection", "create", "--run", str(run.folder), "--images", str(tmp_path / "none"),
                  "--out", str(tmp_path / "n")],
                 ["collection", "add", str(tmp_path / "c"), "--images", str(photos / "class1")],
                 ["collection", "remove", str(tmp_path / "c"), "--ids", "999"],
                 ["collection", "remove", str(tmp_path / "c")],
                 ["collection", "info", str(tmp_path / "other")],
                 ["search", "--collection", str(tmp_path / "c"), "--query", str(tmp_path / "none.jpg")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "error" in err, (argv, err)


def test_unreadable_images_stop_or_are_skipped_and_a_rerun_keeps_finished_shards(run, photos, tmp_path, monkeypatch):
    root = tmp_path / "p"
    shutil.copytree(photos, root)
    names = sorted_files(root)
    (root / names[17]).write_bytes(b"not a jpeg")
    calls = []
    from learn2hash.methods.deep import DeepHasher

    real = DeepHasher.encode_images

    def counting(self, paths, *args, **kwargs):
        calls.append(len(paths))
        return real(self, paths, *args, **kwargs)

    monkeypatch.setattr(DeepHasher, "encode_images", counting)
    with pytest.raises(CorruptFileError, match=names[17].split("/")[-1]):
        Collection.create(tmp_path / "c", run.folder, root, shard_size=5, workers=0)
    assert calls == [5, 5, 5, 5]  # the fourth shard holds the bad file
    assert len(Collection.open(tmp_path / "c")) == 0  # nothing committed, and it loads
    shutil.copy(photos / names[17], root / names[17])  # fixed
    calls.clear()
    coll = Collection.create(tmp_path / "c", run.folder, root, shard_size=5, workers=0)
    assert calls == [5, 5, 5]  # shards 0-2 were kept
    codes, ids, _ = stored(tmp_path / "c")
    assert np.array_equal(codes, reference_codes(run, root, names).packed) and ids.tolist() == list(range(30))
    # skip: left out, listed, and the others keep their order
    (root / names[3]).write_bytes(b"junk")
    coll2 = Collection.create(tmp_path / "c2", run.folder, root, shard_size=5, workers=0, on_bad_image="skip")
    assert [s["path"] for s in coll2.last_skipped] == [names[3]] and len(coll2) == 29
    _, _, payloads = stored(tmp_path / "c2")
    assert payloads == [b"p" + n.encode() for n in names if n != names[3]]
    assert len(coll) == 30


def test_edit_commits_a_block_and_threads_take_turns(run, photos, tmp_path):
    names = sorted_files(photos)
    Collection.create(tmp_path / "c", run.folder, [photos / n for n in names[:6]], root=photos, workers=0)
    with pytest.raises(RuntimeError):
        with Collection.edit(tmp_path / "c") as coll:
            coll.remove(ids=[0])
            raise RuntimeError("nothing of the block is committed")
    assert len(Collection.open(tmp_path / "c")) == 6
    with Collection.edit(tmp_path / "c") as coll:
        coll.remove(ids=[0])
        coll.add_images([photos / names[6]], workers=0)
    assert len(Collection.open(tmp_path / "c")) == 6
    assert [p.name for p in (tmp_path / "c" / "work").iterdir()] == [".active"]  # its shards, once committed
    # threads of one process (one shared object) and a second object add at once: nothing lost
    shared, other = Collection.open(tmp_path / "c"), Collection.open(tmp_path / "c")
    arrays = [np.asarray(Image.open(photos / n).convert("RGB")) for n in names[10:22]]
    got, errors = [], []

    def add(coll, some):
        try:
            for a in some:
                got.append(coll.add_item(a, external_id="t"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(c, arrays[i::3])) for i, c in enumerate((shared, shared, other))]
    stop = False
    seen = []

    def search():
        while not stop:
            hits = shared.search(arrays[0], k=50)[0]
            seen.append(len(hits))
            ids = [h.id for h in hits]
            assert len(set(ids)) == len(ids)

    reader = threading.Thread(target=search)
    reader.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop = True
    reader.join(60)
    assert not errors and sorted(got) == list(range(7, 19))
    assert seen == sorted(seen)  # a reader never sees the collection shrink while items are only added
    codes, ids, payloads = stored(tmp_path / "c")
    assert len(ids) == 18 and payloads[-12:] == [b"xt"] * 12
    ref = Collection.open(tmp_path / "c").encode(arrays)
    by_id = dict(zip(ids.tolist(), codes))
    for i in got:  # each id holds the code of the image its thread added
        hits = [h for h in shared.search(Codes.from_packed(by_id[i][None], 16), k=18)[0] if h.id == i]
        assert hits and hits[0].distance == 0
    assert {bytes(c) for c in ref.packed} == {bytes(by_id[i]) for i in got}


# ----------------------------------------------------------------------------- the index underneath
def test_index_payloads_compaction_and_automatic_merging(tmp_path):
    rng = np.random.default_rng(1)
    codes = Codes.from_bits(rng.integers(0, 2, (300, 24)).astype(bool))
    index = HammingIndex(24)
    index.max_segments = 8
    index.save(tmp_path / "i")
    payloads = [f"item-{i}".encode() * (i % 3) for i in range(300)]
    for s in range(0, 300, 10):  # 30 saves of 10 items
        with HammingIndex.edit(tmp_path / "i") as idx:
            idx.max_segments = 8
            idx.add(codes[s:s + 10], payloads=payloads[s:s + 10])
        files = [p for p in (tmp_path / "i").iterdir() if p.name.endswith(".codes.npy")]
        manifest = json.loads((tmp_path / "i" / "manifest.json").read_text())
        assert len(manifest["segments"]) <= 8  # merged automatically
        assert len(files) <= 16  # this version's and the previous one's
    loaded = HammingIndex.load(tmp_path / "i")
    assert np.array_equal(loaded.codes().packed, codes.packed) and loaded.ids.tolist() == list(range(300))
    assert loaded.payloads(np.arange(300)) == payloads
    sizes = [s["n"] for s in json.loads((tmp_path / "i" / "manifest.json").read_text())["segments"]]
    assert sizes == sorted(sizes, reverse=True)  # older segments larger: a geometric merge
    # remove, then compact: ids, codes and payloads of the rest are kept, removed ones dropped, one segment
    with HammingIndex.edit(tmp_path / "i") as idx:
        idx.remove(np.arange(0, 300, 4))
        found = idx.find_payloads([b"item-5item-5", b"item-7", b"item-8item-8", b"item-4", b"none", b""])
        assert {v: i.tolist() for v, i in found.items()} == {  # items 4 and 8 were removed
            b"item-5item-5": [5], b"item-7": [7], b"": [i for i in range(300) if i % 3 == 0 and i % 4]}
        assert idx.compact() == 75
    loaded = HammingIndex.load(tmp_path / "i")
    keep = np.arange(300) % 4 != 0
    assert loaded.ids.tolist() == np.arange(300)[keep].tolist()
    assert np.array_equal(loaded.codes().packed, codes.packed[keep])
    assert loaded.payloads(loaded.ids) == [p for p, k in zip(payloads, keep) if k]
    assert sorted(p.name for p in (tmp_path / "i").iterdir() if p.suffix == ".npy") == sorted(
        v for s in json.loads((tmp_path / "i" / "manifest.json").read_text())["segments"]
        for key, v in s.items() if key in ("codes", "ids", "payload", "offsets"))  # the old files are gone
    d, ids, pl = loaded.search(codes[:3], 5, with_payloads=True)
    for q in range(3):
        want_ids, want_d = brute_force(codes[keep], np.arange(300)[keep], codes[q:q + 1], 5)
        assert ids[q].tolist() == want_ids and d[q].tolist() == want_d
        assert pl[q] == [payloads[i] for i in want_ids]


def test_compaction_is_atomic_for_readers(tmp_path):
    """Readers loading while another thread compacts and appends see a whole version every time."""
    rng = np.random.default_rng(2)
    codes = Codes.from_bits(rng.integers(0, 2, (400, 16)).astype(bool))
    index = HammingIndex(16)
    index.max_segments = None
    for s in range(0, 200, 5):
        index.add(codes[s:s + 5], payloads=[str(i).encode() for i in range(s, s + 5)])
        index.save(tmp_path / "i")
    stop = threading.Event()
    errors = []

    def read():
        while not stop.is_set():
            try:
                idx = HammingIndex.load(tmp_path / "i")
                ids = idx.ids
                assert idx.payloads(ids) == [str(i).encode() for i in ids]
                assert np.array_equal(idx.codes().packed, codes.packed[ids])
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    for s in range(200, 400, 20):
        with HammingIndex.edit(tmp_path / "i") as idx:
            idx.max_segments = None
            idx.remove(idx.ids[:3])
            idx.add(codes[s:s + 20], ids=np.arange(s, s + 20), payloads=[str(i).encode() for i in range(s, s + 20)])
            if s % 40 == 0:
                idx.compact()
    stop.set()
    for t in readers:
        t.join(60)
    assert not errors, errors[:3]


# ----------------------------------------------------------------------------- the command line
def test_cli_create_add_search_remove_info_compact(run, photos, tmp_path, capsys):
    names = sorted_files(photos)
    listing = photos / "first.txt"
    listing.write_text("".join(f"{n}\n" for n in names[:20]))
    try:
        out = tmp_path / "c"
        assert main(["collection", "create", "--run", str(run.folder), "--images", str(listing), "--out", str(out),
                     "--shard-size", "6", "--workers", "0", "--no-progress"]) == 0
        assert "20 images added" in capsys.readouterr().out
        assert main(["collection", "add", str(out), "--images", str(photos), "--workers", "0", "--no-progress",
                     "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert doc["added"] == 10 and doc["items"] == 30 and doc["first_id"] == 20
    finally:
        listing.unlink()
    coll = Collection.open(out)
    assert main(["search", "--collection", str(out), "--query", str(photos / names[4]), "-k", "5", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    want = coll.search(photos / names[4], k=5)[0]
    assert [(r["id"], r["distance"], r["path"]) for r in doc["queries"][0]["results"]] == \
        [(h.id, h.distance, h.path) for h in want]
    assert main(["search", "--collection", str(out), "--query", str(photos / names[4]), "-k", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[3] for line in lines[3:8]] == [h.path for h in want]
    assert main(["collection", "remove", str(out), "--paths", names[0], "--ids", "25"]) == 0
    assert "removed 2 items" in capsys.readouterr().out
    assert main(["collection", "info", str(out), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["items"] == 28 and info["removed_not_compacted"] == 2
    assert main(["collection", "compact", str(out)]) == 0
    assert "2 removed items dropped" in capsys.readouterr().out
    assert Collection.open(out).info()["segments"] == 1


# ----------------------------------------------------------------------------- kill -9 and torchrun
def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "learn2hash", *args]


def _kill_after(proc: subprocess.Popen, work: Path, rng: np.random.Generator) -> bool:
    """SIGKILL ``proc`` at a random moment: half the time anywhere in its first seconds, half the time
    just after its first shard is written (inside the encoding and the commit). True if it was killed."""
    if rng.random() < 0.5:
        deadline = time.monotonic() + rng.uniform(0.2, 2.5)
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.01)
    else:
        before = set(work.glob("shard-*.json")) if work.is_dir() else set()
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if work.is_dir() and set(work.glob("shard-*.json")) - before:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.3))
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    return True


@pytest.mark.slow
def test_kill_loop_create_and_add(run, tmp_path):
    """`collection create` then `collection add` of 500 photographs (320 x 256), killed with SIGKILL 20
    times: the collection always loads, holding what an uninterrupted run held at one of its commits,
    and once the commands have run to the end it equals the uninterrupted run's codes, ids and paths,
    byte for byte (then the cycle starts again in a new folder until 20 kills are done)."""
    root = tmp_path / "photos"
    write_photos(root, 300, seed=5, prefix="a/", size=(256, 320))
    write_photos(root, 200, seed=6, prefix="b/", size=(256, 320))
    lists = {}
    for part in ("a", "b"):  # list files in the root: the collection's root holds both parts
        lists[part] = root / f"{part}.txt"
        lists[part].write_text("".join(f"{p.relative_to(root).as_posix()}\n"
                                       for p in sorted((root / part).rglob("*.jpg"))))
    common = ["--shard-size", "25", "--workers", "0", "--no-progress"]
    ref = Collection.create(tmp_path / "ref", run.folder, lists["a"], shard_size=25, workers=0)
    ref.add_images(lists["b"], shard_size=25, workers=0)
    ref_state = stored(tmp_path / "ref")
    assert len(ref_state[1]) == 500
    rng = np.random.default_rng(0)
    kills = cycles = 0
    started = time.monotonic()

    def same_as_reference(folder: Path, n: int) -> None:
        codes, ids, payloads = stored(folder)
        assert np.array_equal(codes, ref_state[0][:n]) and ids.tolist() == ref_state[1][:n].tolist()
        assert payloads == ref_state[2][:n]

    while kills < 20:
        assert time.monotonic() - started < 600, "the kill loop takes too long"
        folder = tmp_path / f"k{cycles}"
        n = len(Collection.open(folder)) if (folder / "collection.json").exists() else 0
        if n == 500:  # a whole cycle done: run `add` again (adds nothing, clears the work folder); it equals
            proc = subprocess.run(_cli("collection", "add", str(folder), "--images", str(lists["b"]), *common),
                                  env=ENV, capture_output=True, text=True, timeout=300)  # the uninterrupted run
            assert proc.returncode == 0 and "0 images added" in proc.stdout, proc.stderr[-2000:]
            same_as_reference(folder, 500)
            assert [p.name for p in (folder / "work").iterdir()] == [".active"]
            cycles += 1
            continue
        step = (["collection", "create", "--run", str(run.folder), "--images", str(lists["a"]), "--out", str(folder)]
                if n < 300 else ["collection", "add", str(folder), "--images", str(lists["b"])])
        proc = subprocess.Popen(_cli(*step, *common), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        kills += _kill_after(proc, folder / "work", rng)
        if proc.returncode not in (0, -signal.SIGKILL):
            raise AssertionError(proc.stderr.read().decode()[-2000:])
        proc.stderr.close()
        if (folder / "collection.json").exists():
            n = len(Collection.open(folder))  # always loads
            assert n in (0, 300, 500), n  # what the uninterrupted run held after one of its commits
            if n:
                same_as_reference(folder, n)
    folder = tmp_path / f"k{cycles}"
    for step in (["collection", "create", "--run", str(run.folder), "--images", str(lists["a"]), "--out", str(folder)],
                 ["collection", "add", str(folder), "--images", str(lists["b"])]):
        proc = subprocess.run(_cli(*step, *common), env=ENV, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
    same_as_reference(folder, 500)
    assert [p.name for p in (folder / "work").iterdir()] == [".active"]


def build_random_collection(folder: Path, run, n: int, segments: int, removed: int, seed: int = 0) -> None:
    """A collection of ``n`` random 16-bit codes with paths, in ``segments`` saved segments, ``removed``
    of them removed (written through the index, not encoded)."""
    coll = Collection.create(folder, run.folder, [], root=folder.parent)
    rng = np.random.default_rng(seed)
    codes = Codes.from_bits(rng.integers(0, 2, (n, 16)).astype(bool))
    index = HammingIndex(16)
    index.built_from = coll._built_from()
    index.max_segments = None
    per = n // segments
    for s in range(0, n, per):
        index.add(codes[s:s + per], payloads=[f"p{i}.jpg".encode() for i in range(s, s + per)])
        index.save(folder / "index")
    index.remove(rng.choice(n, removed, replace=False))
    index.compact_removed = None
    index.save(folder / "index")


@pytest.mark.slow
def test_kill_during_compaction_loses_nothing(run, tmp_path):
    """`collection compact` killed with SIGKILL at random moments (half of them just after it has begun
    writing the new segment): the collection always loads with the same items (ids, codes, paths),
    whether it holds the old segments or the compacted one, and compacting again finishes the job."""
    template = tmp_path / "template"
    build_random_collection(template, run, 20_000, 100, 2_000)
    want = stored(template)
    assert len(want[1]) == 18_000
    rng = np.random.default_rng(3)
    kills = rounds = 0
    started = time.monotonic()
    while kills < 5:
        assert time.monotonic() - started < 300, "the compaction kill loop takes too long"
        folder = tmp_path / f"c{rounds}"
        shutil.copytree(template, folder)
        old_files = set(os.listdir(folder / "index"))
        proc = subprocess.Popen(_cli("collection", "compact", str(folder)), env=ENV, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0.3, 2.0))
        else:
            deadline = time.monotonic() + 60
            while (proc.poll() is None and time.monotonic() < deadline
                   and set(os.listdir(folder / "index")) <= old_files):
                time.sleep(0.002)
            time.sleep(rng.uniform(0.0, 0.05))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(60)
        got = stored(folder)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]
        coll = Collection.open(folder)
        assert len(coll) == 18_000 and coll.compact()["segments_after"] == 1  # a rerun finishes the job
        got = stored(folder)
        assert np.array_equal(got[0], want[0]) and np.array_equal(got[1], want[1]) and got[2] == want[2]
        assert len(list((folder / "index").glob("*.npy"))) == 4  # one segment's files, nothing else
        shutil.rmtree(folder)
        rounds += 1


@pytest.mark.slow
def test_torchrun_two_processes_give_the_one_process_collection(run, tmp_path):
    root = tmp_path / "photos"
    write_photos(root, 90, seed=9)
    (root / "class1" / "0004.jpg").write_bytes(b"unreadable")
    args = ["collection", "create", "--run-folder", str(run.folder), "--images", str(root), "--shard-size", "8",
            "--workers", "0", "--no-progress", "--on-bad-image", "skip"]
    one = subprocess.run(_cli(*args, "--out", str(tmp_path / "one")), env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          "-m", "learn2hash", *args, "--out", str(tmp_path / "two")],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("images added") == 1  # rank 0 reports
    a, b = stored(tmp_path / "one"), stored(tmp_path / "two")
    assert len(a[1]) == 89
    assert a[0].tobytes() == b[0].tobytes() and a[1].tobytes() == b[1].tobytes() and a[2] == b[2]
    for name in ("codes", "ids", "payload", "offsets"):  # the stored files too, byte for byte
        fa = sorted((tmp_path / "one" / "index").glob(f"*.{name}.npy"))
        fb = sorted((tmp_path / "two" / "index").glob(f"*.{name}.npy"))
        assert [f.read_bytes() for f in fa] == [f.read_bytes() for f in fb]
