"""Pretrained features as the input of every method, unlabelled collections, shallow methods at any size.

The backbone is EfficientNet-Lite0 with random-init weights that the tests write themselves (no download,
no pretrained package needed), run at 32 px so that a CPU computes 70 photographs' features in a second.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from learn2hash import features as F  # noqa: E402
from learn2hash.cli import main  # noqa: E402
from learn2hash.codes import Codes  # noqa: E402
from learn2hash.errors import Learn2HashError  # noqa: E402
from learn2hash.methods import Hasher, create  # noqa: E402
from learn2hash.methods import pca as P  # noqa: E402
from learn2hash.metrics import evaluate  # noqa: E402

N_PHOTOS = 70
SIZE = 32


def _photo(rng: np.random.Generator, kind: int) -> np.ndarray:
    """A 120x160 colour 'photograph': a smooth gradient of one of a few palettes plus noise."""
    h, w = 120, 160
    yy, xx = np.mgrid[0:h, 0:w] / np.array([h, w])[:, None, None]
    palette = np.array([[220, 60, 40], [40, 180, 70], [50, 80, 220], [230, 200, 40]])[kind % 4]
    img = palette[None, None, :] * (0.5 + 0.5 * (xx if kind % 2 else yy))[..., None]
    img = img + rng.normal(0, 12, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A flat folder of colour photographs (no labels) and random-init weights of the backbone."""
    from PIL import Image

    from learn2hash.nn import create_backbone

    root = tmp_path_factory.mktemp("photos")
    folder = root / "photos"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(N_PHOTOS):
        Image.fromarray(_photo(rng, i)).save(folder / f"img{i:03d}.jpg", quality=90)
    torch.manual_seed(0)
    net = create_backbone("efficientnet-lite0", (3, SIZE, SIZE), pretrained=False, image_size=SIZE)
    weights = root / "lite0-random.pt"
    torch.save(net.state_dict(), weights)
    torch.manual_seed(1)
    other = root / "lite0-other.pt"
    torch.save(create_backbone("efficientnet-lite0", (3, SIZE, SIZE), pretrained=False, image_size=SIZE).state_dict(),
               other)
    return {"root": root, "folder": folder, "weights": weights, "other": other,
            "files": sorted(folder.glob("*.jpg"))}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(F.CACHE_ENV, str(folder))
    return folder / "features"


def _cli(capsys, *argv):
    status = main([str(a) for a in argv])
    out = capsys.readouterr()
    return status, out.out, out.err


def _entries(cache_dir: Path) -> dict[str, int]:
    """The cache's feature entries and their modification times."""
    return ({p.name: p.stat().st_mtime_ns for p in cache_dir.glob("*.npy") if not p.name.endswith(".files.npy")}
            if cache_dir.exists() else {})


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _train(capsys, photos, out, *extra, size=SIZE, weights=None):
    return _cli(capsys, "train", "--method", "itq", "--dataset", "image-folder", "--data-path", photos["folder"],
                "--bits", 16, "--features", "efficientnet-lite0", "--features-weights", weights or photos["weights"],
                "--features-size", size, "--features-param", "workers=0", "--out", out, "--no-progress", *extra)


# ----------------------------------------------------------------------------- end to end, no labels
@pytest.fixture
def decoded(monkeypatch):
    """Counts the image files the feature stage decodes and runs through the network."""
    import learn2hash.train as T

    counted = []
    real = T.encode_items

    def counting(model, x, *a, **k):
        counted.append(len(x))
        return real(model, x, *a, **k)

    monkeypatch.setattr(T, "encode_items", counting)
    return counted


def test_unlabelled_photos_train_encode_index_search_with_cached_features(photos, cache, tmp_path, capsys, decoded):
    status, out, err = _train(capsys, photos, tmp_path / "run")
    assert status == 0, err
    assert "no labels, so no evaluation" in err
    run = tmp_path / "run"
    assert not (run / "metrics.json").exists()
    assert (run / "codes" / "database.npy").exists()
    first = _entries(cache)
    assert len(first) == 1  # train, query and database are the same 70 files: one entry, computed once
    assert sum(decoded) == N_PHOTOS

    # the saved hasher is self-contained: it encodes image files and image arrays by itself
    hasher = Hasher.load(run / "hasher")
    assert hasher.takes_image_files and hasher.name == "itq" and hasher.bits == 16
    codes, kept, skipped = hasher.encode_images(photos["files"], on_bad_image="error", progress=False)
    assert skipped == [] and list(kept) == list(range(N_PHOTOS))
    db = Codes.load(run / "codes" / "database.npy")
    assert np.array_equal(codes.packed, db.packed)
    from learn2hash.images import encode_image

    arr = np.stack([encode_image(p, hasher.image_geometry()) for p in photos["files"][:5]])
    assert np.array_equal(hasher.encode(arr).packed, db.packed[:5])

    # a second run reads the cache: no entry is written or rewritten, no image decoded
    decoded.clear()
    status, _, err = _train(capsys, photos, tmp_path / "run2")
    assert status == 0, err
    assert _entries(cache) == first and sum(decoded) == 0
    assert _sha(run / "hasher" / "hasher.json") == _sha(tmp_path / "run2" / "hasher" / "hasher.json")

    # encode --images, index build, search by an image file: the photo finds itself at distance 0
    status, out, err = _cli(capsys, "encode", "--run", run, "--images", photos["folder"], "--out",
                            tmp_path / "mine.npy", "--no-progress", "--workers", 1)
    assert status == 0, err
    assert sum(decoded) == 0
    assert np.array_equal(Codes.load(tmp_path / "mine.npy").packed, db.packed)
    status, out, err = _cli(capsys, "index", "build", "--run", run)
    assert status == 0, err
    status, out, err = _cli(capsys, "search", "--run", run, "--query", photos["files"][7], "-k", 3, "--json")
    assert status == 0, err
    result = json.loads(out)["queries"][0]["results"]
    assert result[0]["distance"] == 0 and 7 in [r["id"] for r in result if r["distance"] == 0]
    # the service searches by an uploaded photograph through the run's hasher
    from learn2hash.serve.service import SearchService

    found = SearchService(run).search(3, image=photos["files"][7].read_bytes())
    assert found["distances"][0] == 0 and 7 in [i for i, d in zip(found["ids"], found["distances"]) if d == 0]

    # a changed file is recomputed, and only it: the other rows come from the entry of the folder as it was
    from PIL import Image

    changed = photos["root"] / "changed"
    changed.mkdir()
    for p in photos["files"]:
        os.link(p, changed / p.name)

    def train_changed(out):
        return _cli(capsys, "train", "--method", "itq", "--dataset", "image-folder", "--data-path", changed,
                    "--bits", 16, "--features", "efficientnet-lite0", "--features-weights", photos["weights"],
                    "--features-size", SIZE, "--features-param", "workers=0", "--out", out, "--no-progress")

    assert train_changed(tmp_path / "run3")[0] == 0  # other paths: other files, computed
    before = _entries(cache)
    os.unlink(changed / "img010.jpg")
    Image.fromarray(_photo(np.random.default_rng(99), 3)).save(changed / "img010.jpg")
    decoded.clear()
    status, _, err = train_changed(tmp_path / "run4")
    assert status == 0, err
    now = _entries(cache)
    assert {k: v for k, v in now.items() if k in before} == before and len(now) == len(before) + 1
    assert sum(decoded) == 1  # the other 69 rows come from the earlier entry (same path, size and time)
    # a subset of the files (a training sample) is read from the entries, nothing decoded
    decoded.clear()
    sample = F.ImageFeatures("efficientnet-lite0", weights=str(photos["weights"]), image_size=SIZE, workers=0)
    zs = sample.transform(photos["files"][5:40:3])
    assert sum(decoded) == 0 and zs.shape == (12, 1280)
    f = F.ImageFeatures("efficientnet-lite0", weights=str(photos["weights"]), image_size=SIZE, workers=0)
    z_old, z_new = f.transform(photos["files"]), f.transform(sorted(changed.glob("*.jpg")))
    scale = np.abs(z_old).max()  # random-init weights give small features: compare relative to them
    assert scale > 0
    assert np.allclose(np.delete(z_old, 10, 0) / scale, np.delete(z_new, 10, 0) / scale, atol=1e-5)
    assert np.abs(z_old[10] - z_new[10]).max() / scale > 1e-2


def test_the_hasher_identity_changes_with_the_feature_stage(photos, cache, tmp_path, capsys):
    digests = {}
    for name, kw in {"base": {}, "size": {"size": 48}, "weights": {"weights": photos["other"]}}.items():
        status, _, err = _train(capsys, photos, tmp_path / name, **kw)
        assert status == 0, err
        meta = json.loads((tmp_path / name / "hasher" / "hasher.json").read_text())
        digests[name] = (_sha(tmp_path / name / "hasher" / "hasher.json"), meta["features"]["identity"])
    assert len({d for d, _ in digests.values()}) == 3
    assert digests["size"][1]["geometry"]["size"] == [48, 48] and digests["base"][1]["geometry"]["size"] == [32, 32]
    assert digests["weights"][1]["weights_sha256"] != digests["base"][1]["weights_sha256"]


def test_unreadable_images_follow_on_bad_image(photos, cache, tmp_path, capsys):
    status, _, err = _train(capsys, photos, tmp_path / "run")
    assert status == 0, err
    bad = tmp_path / "mixed"
    bad.mkdir()
    for p in photos["files"][:5]:
        os.link(p, bad / p.name)
    (bad / "img002.jpg").unlink()
    (bad / "img002.jpg").write_bytes(b"not a jpeg at all")
    status, out, err = _cli(capsys, "encode", "--run", tmp_path / "run", "--images", bad, "--out",
                            tmp_path / "c.npy", "--no-progress")
    assert status == 2 and len(err.strip().splitlines()) == 1 and "img002.jpg" in err
    status, out, err = _cli(capsys, "encode", "--run", tmp_path / "run", "--images", bad, "--out",
                            tmp_path / "c.npy", "--on-bad-image", "skip", "--no-progress")
    assert status == 0, err
    ids = json.loads((tmp_path / "c.ids.json").read_text())
    assert ids["ids"] == ["img000.jpg", "img001.jpg", "img003.jpg", "img004.jpg"]
    assert [s["id"] for s in ids["skipped"]] == ["img002.jpg"]
    hasher = Hasher.load(tmp_path / "run" / "hasher")
    good = hasher.encode_images([bad / f"img00{i}.jpg" for i in (0, 1, 3, 4)])[0]
    assert np.array_equal(Codes.load(tmp_path / "c.npy").packed, good.packed)
    # training on a folder with an unreadable photo: one line, or skipped with --on-bad-image skip
    status, _, err = _cli(capsys, "train", "--method", "itq", "--dataset", "image-folder", "--data-path", bad,
                          "--bits", 2, "--features", "efficientnet-lite0", "--features-weights", photos["weights"],
                          "--features-size", SIZE, "--features-param", "workers=0", "--out", tmp_path / "r2",
                          "--no-progress")
    errors = [line for line in err.splitlines() if "error" in line]
    assert status == 2 and len(errors) == 1 and "img002.jpg" in errors[0] and "Traceback" not in err
    status, _, err = _cli(capsys, "train", "--method", "itq", "--dataset", "image-folder", "--data-path", bad,
                          "--bits", 2, "--features", "efficientnet-lite0", "--features-weights", photos["weights"],
                          "--features-size", SIZE, "--features-param", "workers=0", "--out", tmp_path / "r3",
                          "--no-progress", "--on-bad-image", "skip")
    assert status == 0, err
    assert "1 unreadable training image(s) skipped" in err
    listed = json.loads((tmp_path / "r3" / "skipped_images.json").read_text())
    assert "img002.jpg" in json.dumps(listed)


@pytest.mark.parametrize("argv, message", [
    (["--features", "efficientnet-lit0"], "did you mean efficientnet-lite0"),
    (["--features", "resnet5O"], "did you mean resnet50"),
    (["--backbone", "efficientnet-lite0"], "give --features efficientnet-lite0"),
])
def test_unknown_backbone_is_one_line_with_the_closest_name(photos, tmp_path, capsys, argv, message):
    status, out, err = _cli(capsys, "train", "--method", "itq", "--dataset", "image-folder", "--data-path",
                            photos["folder"], "--out", tmp_path / "r", *argv)
    assert status == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert not (tmp_path / "r").exists()


def test_folder_without_images_and_supervised_method_are_one_line(photos, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("nothing here")
    status, _, err = _cli(capsys, "train", "--method", "itq", "--dataset", "image-folder", "--data-path", empty,
                          "--out", tmp_path / "r")
    assert status == 2 and len(err.strip().splitlines()) == 1 and "holds no images" in err
    status, _, err = _cli(capsys, "encode", "--run", tmp_path / "nowhere", "--images", empty, "--out", tmp_path / "c")
    assert status == 2 and len(err.strip().splitlines()) == 1
    status, _, err = _cli(capsys, "train", "--method", "sdh", "--dataset", "image-folder", "--data-path",
                          photos["folder"], "--out", tmp_path / "r", "--bits", 8)
    assert status == 2 and len(err.strip().splitlines()) == 1 and "supervised" in err and "no labels" in err
    assert not (tmp_path / "r").exists()


# ----------------------------------------------------------------------------- unlabelled loaders
def test_unlabelled_npy_list_and_flat_folder_load(photos, tmp_path, capsys):
    from learn2hash import datasets

    x = np.random.default_rng(0).normal(size=(300, 20)).astype(np.float32)
    np.save(tmp_path / "feats.npy", x)
    ds = datasets.load("npz", path=tmp_path / "feats.npy")
    assert ds.train.labels.shape == (300, 0) and len(ds.database) == 300 and len(ds.query) == 100
    assert np.array_equal(ds.database.x, x)
    lst = tmp_path / "photos.txt"
    lst.write_text("".join(f"{p.relative_to(photos['root'])}\n" for p in photos["files"]))
    ds = datasets.load("image-list", path=lst, root=photos["root"], query_size=5)
    assert len(ds.database) == N_PHOTOS and ds.query.labels.shape == (5, 0)
    ds2 = datasets.load("image-folder", path=photos["folder"], train_size=20)
    assert len(ds2.train) == 20 and len(ds2.database) == N_PHOTOS and ds2.n_classes == 0
    # train, encode, index, search on the unlabelled .npy: no evaluation, everything else as usual
    status, out, err = _cli(capsys, "train", "--method", "itq", "--dataset", "npz", "--data-path",
                            tmp_path / "feats.npy", "--bits", 8, "--out", tmp_path / "r", "--json")
    assert status == 0, err
    assert json.loads(out)["metrics"] is None and "no labels" in err
    status, _, err = _cli(capsys, "train", "--method", "sdh", "--dataset", "npz", "--data-path",
                          tmp_path / "feats.npy", "--bits", 8, "--out", tmp_path / "r2")
    assert status == 2 and "supervised" in err and len(err.strip().splitlines()) == 1
    status, out, err = _cli(capsys, "search", "--run", tmp_path / "r", "--query", 0, "-k", 2, "--rebuild-index")
    assert status == 0, err
    # what needs labels says so in one line and writes nothing; compare shows the run with blank metrics
    for argv in (["evaluate", "--run", tmp_path / "r"], ["report", "--run", tmp_path / "r"]):
        status, _, err = _cli(capsys, *argv)
        assert status == 2 and "has no labels" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r" / "metrics.json").exists() and not (tmp_path / "r" / "report").exists()
    status, out, err = _cli(capsys, "compare", tmp_path / "r", "--markdown")
    assert status == 0, err
    assert "| r | itq | 8 | npz | standard |" in out


# ----------------------------------------------------------------------------- scikit-learn
def test_image_features_in_a_pipeline_and_clone(photos, cache):
    from sklearn.base import clone
    from sklearn.pipeline import make_pipeline

    paths = [str(p) for p in photos["files"]]
    pipe = make_pipeline(F.ImageFeatures("efficientnet-lite0", weights=str(photos["weights"]), image_size=SIZE,
                                         workers=0), create("itq", bits=64))
    pipe.fit(paths)
    twin = clone(pipe)
    assert twin.get_params()["imagefeatures__image_size"] == SIZE
    assert not hasattr(twin.steps[0][1], "item_shape_") and not getattr(twin.steps[1][1], "fitted_", False)
    twin.fit(paths)
    z = pipe[:-1].transform(paths)
    assert z.shape == (N_PHOTOS, 1280) and z.dtype == np.float32
    assert np.array_equal(pipe[-1].encode(z).packed, twin[-1].encode(twin[:-1].transform(paths)).packed)
    # arrays of images go in too, in any common layout
    from learn2hash.images import encode_image

    f = pipe.steps[0][1]
    arr = np.stack([encode_image(p, f.geometry()) for p in photos["files"][:4]])  # [n, C, H, W]
    scale = np.abs(z).max()
    assert scale > 0
    assert np.allclose(f.transform(arr) / scale, f.transform(arr.transpose(0, 2, 3, 1)) / scale, atol=1e-6)
    assert np.allclose(f.transform(arr) / scale, z[:4] / scale, atol=1e-4)


# ----------------------------------------------------------------------------- shallow methods at any size
def _clusters(n, d, classes, seed, rank=12):
    rng = np.random.default_rng(seed)
    basis = rng.normal(size=(rank, d))
    centers = rng.normal(size=(classes, rank)) * 3
    y = rng.integers(0, classes, n)
    return ((centers[y] + rng.normal(size=(n, rank))) @ basis + rng.normal(size=(n, d)) * 2.0).astype(np.float32), y


@pytest.mark.parametrize("method", ["gram", "randomized"])
def test_itq_on_wide_input_matches_the_exact_path(method):
    x, y = _clusters(1200, 2000, 6, seed=0)
    train, query, db = x[:400], x[400:600], x[600:]
    labels = np.eye(6, dtype=bool)[y]
    maps = {}
    for pca in ("covariance", method):
        itq = create("itq", bits=16, pca=pca).fit(train)  # d = 2000 > n = 400
        assert itq.pca_method_ == pca
        maps[pca] = evaluate(itq.encode(query), labels[400:600], itq.encode(db), labels[600:])["map@all"]
    assert maps["covariance"] > 0.5  # the classes are findable at all
    assert abs(maps[method] - maps["covariance"]) <= 0.005, maps


def test_pca_paths_span_the_same_subspace():
    from learn2hash.methods.base import as_features

    x, _ = _clusters(300, 900, 4, seed=1, rank=8)
    _, exact, _ = P.fit_pca(x, 8, as_features, method="covariance")
    for method in ("gram", "randomized"):
        mean, comps, used = P.fit_pca(x, 8, as_features, method=method)
        assert used == method and comps.shape == (900, 8)
        assert np.allclose(comps.T @ comps, np.eye(8), atol=1e-6)
        # principal angles between the subspaces: all cosines near 1
        cos = np.linalg.svd(exact.T @ comps, compute_uv=False)
        assert cos.min() > 0.999, (method, cos)
    assert P.choose(300, 5000) == "gram" and P.choose(10_000, 57_600) == "randomized" and P.choose(10, 784) == "covariance"


def test_pca_that_cannot_fit_is_refused_up_front(monkeypatch):
    monkeypatch.setattr(P, "available_memory", lambda: 1 << 30)
    x = np.zeros((8000, 57_600), dtype=np.uint8)  # pages never touched: no pass over it may start

    def boom(*a, **k):
        raise AssertionError("a pass over the items started before the memory check")

    with pytest.raises(Learn2HashError, match=r"needs about .* GiB, only 1.0 GiB") as info:
        P.fit_pca(x, 16, boom, method="gram", who="itq")
    assert "\n" not in str(info.value)
    assert P.peak_bytes(10_000, 57_600, 64, "randomized") < 1 << 30


def test_features_in_front_of_a_deep_method_is_its_frozen_backbone(tmp_path, capsys):
    from learn2hash.runs import with_features

    csq = with_features("csq", create("csq", bits=16), {}, {"backbone": "smallcnn", "image_size": 48})
    p = csq.get_params()
    assert (p["backbone"], p["frozen_features"], p["augment"]) == ("smallcnn", True, "none")
    assert p["backbone_options"] == {"image_size": 48} and csq.takes_image_files
    wrapped = with_features("itq", create("itq", bits=16), {}, {"backbone": "smallcnn"})
    assert isinstance(wrapped, F.FeatureHasher) and wrapped.name == "itq" and wrapped.takes_image_files
    with pytest.raises(Learn2HashError, match="give one or the other"):
        with_features("csq", create("csq", bits=16, backbone="resnet18"), {"backbone": "resnet18"},
                      {"backbone": "smallcnn"})
    status, _, err = _cli(capsys, "train", "--method", "itq", "--dataset", "digits", "--out", tmp_path / "r",
                          "--features-size", 64)
    assert status == 2 and "go with --features BACKBONE" in err and len(err.strip().splitlines()) == 1


def test_arrays_are_cached_by_content_and_a_sample_reuses_the_pool(photos, cache, monkeypatch):
    seen = []
    real = F.BackboneExtractor.__call__

    def counting(self, batch):
        seen.append(len(batch))
        return real(self, batch)

    monkeypatch.setattr(F.BackboneExtractor, "__call__", counting)
    rng = np.random.default_rng(5)
    pool = rng.integers(0, 256, (F.MIN_CACHED_ITEMS + 44, 20, 24, 3), dtype=np.uint8)  # [n, H, W, C]
    f = F.ImageFeatures("efficientnet-lite0", weights=str(photos["weights"]), image_size=SIZE)
    z = f.transform(pool)
    assert sum(seen) == len(pool) and z.shape == (len(pool), 1280)
    seen.clear()
    assert np.array_equal(f.transform(pool), z) and sum(seen) == 0  # the same array: its entry
    sample = pool[rng.permutation(len(pool))[:F.MIN_CACHED_ITEMS]]
    new = sample.copy()
    new[3] = 255 - new[3]  # one item that no entry holds
    zs = f.transform(new)
    assert sum(seen) == 1  # every other row is the pool's
    where = [int(np.flatnonzero((pool == row).all(axis=(1, 2, 3)))[0]) for row in sample]
    keep = [i for i in range(len(sample)) if i != 3]
    assert np.array_equal(zs[keep], z[np.asarray(where)[keep]])
    seen.clear()
    few = f.transform(pool[:5])  # a few items (a query): computed, not cached
    assert sum(seen) == 5 and np.allclose(few, z[:5], rtol=1e-4, atol=np.abs(z).max() * 1e-5)


def test_stream_hashes_an_image_modality_through_the_backbone(photos, cache, tmp_path, capsys):
    """LEMON on a .mat whose image modality holds images: --features hashes their features instead."""
    import scipy.io

    rng = np.random.default_rng(3)
    n, classes = 300, 3
    y = rng.integers(0, classes, n)
    imgs = np.stack([_photo(rng, int(c))[::4, ::4].transpose(2, 0, 1) for c in y])  # uint8 [n, 3, 30, 40]
    text = np.eye(classes)[y] * 2 + rng.normal(size=(n, classes))
    scipy.io.savemat(tmp_path / "d.mat", {"IMG": imgs, "TXT": text, "LAB": np.eye(classes, dtype=np.uint8)[y]})
    argv = ["stream", "--mat", tmp_path / "d.mat", "--mat-keys", "image=IMG,text=TXT,labels=LAB", "--queries", 50,
            "--chunk", 125, "--bits", 8, "--quiet", "--features", "efficientnet-lite0", "--features-weights",
            photos["weights"], "--features-size", SIZE]
    status, out, err = _cli(capsys, *argv, "--out", tmp_path / "s")
    assert status == 0, err
    config = json.loads((tmp_path / "s" / "config.json").read_text())
    assert config["features"]["backbone"] == "efficientnet-lite0"
    rec = json.loads((tmp_path / "s" / "stream.json").read_text())
    assert rec["total_rounds"] == 2 and set(rec["rounds"][-1]["map@all"]) == {"image->text", "text->image"}
    status, _, err = _cli(capsys, "stream", "--mat", tmp_path / "d.mat", "--mat-keys", "image=TXT,text=TXT,labels=LAB",
                          "--queries", 50, "--out", tmp_path / "t", "--features", "efficientnet-lite0")
    assert status == 2 and "no modality" in err and len(err.strip().splitlines()) == 1


def test_feature_hasher_clone_save_load(photos, cache, tmp_path):
    from sklearn.base import clone

    import learn2hash as l2h

    h = l2h.FeatureHasher(l2h.ImageFeatures("efficientnet-lite0", weights=str(photos["weights"]), image_size=SIZE,
                                            workers=0), create("itq", bits=16, n_iter=5))
    twin = clone(h)
    assert twin.get_params()["hasher__n_iter"] == 5 and twin.features is not h.features
    h.fit(photos["files"])
    assert not getattr(twin.hasher, "fitted_", False)
    h.save(tmp_path / "h")
    back = Hasher.load(tmp_path / "h")
    assert isinstance(back, l2h.FeatureHasher) and back.features.identity() == h.features.identity()
    assert back.encode(photos["files"][:9]) == h.encode(photos["files"][:9])
    meta = json.loads((tmp_path / "h" / "hasher.json").read_text())
    entry = meta["files"]["features.pt"]
    assert entry["sha256"] == _sha(tmp_path / "h" / entry["file"])
    # a damaged weights file is refused, naming it
    (tmp_path / "h" / entry["file"]).write_bytes(b"damaged")
    with pytest.raises(Learn2HashError, match="does not match its checksum"):
        Hasher.load(tmp_path / "h")


def test_a_damaged_entry_is_recomputed_never_used(photos, cache, caplog):
    f = F.ImageFeatures("efficientnet-lite0", weights=str(photos["weights"]), image_size=SIZE, workers=0)
    z = np.array(f.transform(photos["files"][:20]))
    (entry,) = [p for p in cache.glob("*.npy") if not p.name.endswith(".files.npy")]
    raw = bytearray(entry.read_bytes())
    raw[-8:] = b"\x00\x00\xc0\x7f" * 2  # two NaN floats in the last row, the sidecar's checksum now wrong
    entry.write_bytes(bytes(raw))
    with caplog.at_level("WARNING", logger="learn2hash.features"):
        again = f.transform(photos["files"][:20])
    assert "unusable" in caplog.text and np.array_equal(np.asarray(again), z)
    # a list holding those files does not copy rows from the damaged entry either (it was replaced)
    assert np.all(np.isfinite(f.transform(photos["files"][:25])))
