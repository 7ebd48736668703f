"""LEMON (online cross-modal hashing), the CCA-ITQ baseline, and the streaming protocol.

The references here are independent of the code under test: the round objective of Eq. (8) is
evaluated by brute force with explicit similarity matrices over every item seen; the
accumulated statistics and hash functions are recomputed from all the data at once; the
V-step's optimum is the closed form sqrt(n) * (nuclear norm of the centred Z).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.io

from learn2hash import cli
from learn2hash.codes import Codes
from learn2hash.errors import Learn2HashError
from learn2hash.methods import Hasher, create
from learn2hash.methods.lemon import LEMON, balanced_orthogonal
from learn2hash.metrics import evaluate
from learn2hash.stream import chunk_bounds, read_chunked_codes


# --------------------------------------------------------------------------- data
def _two_views(n, n_classes=4, d=(12, 7), seed=0, multilabel=False, noise=0.6):
    """Two views that depend on the class through different random maps of a class latent."""
    rng = np.random.default_rng(seed)
    if multilabel:
        labels = rng.random((n, n_classes)) < 0.35
        labels[~labels.any(axis=1), 0] = True
    else:
        labels = np.eye(n_classes, dtype=bool)[rng.integers(0, n_classes, n)]
    latent = labels.astype(float) @ rng.standard_normal((n_classes, 5))
    views = {f"v{i}": latent @ rng.standard_normal((5, di)) + noise * rng.standard_normal((n, di))
             for i, di in enumerate(d)}
    return views, labels


def _chunks(views, labels, size):
    for start in range(0, len(labels), size):
        yield {k: v[start:start + size] for k, v in views.items()}, labels[start:start + size]


# --------------------------------------------------------------------------- brute-force objective
def _objective(h: LEMON, old_b, old_v, old_l, L, B, V, P, R):
    """Eq. (8) with explicit S over every item; items as rows."""
    r = h.bits

    def unit(a):
        a = a.astype(float)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    L = L.astype(float)
    U = unit(L)
    s_cc = 2 * U @ U.T - 1
    f = np.sum((B - V @ R.T) ** 2) + h.alpha * np.sum((V @ B.T - r * s_cc) ** 2) + h.beta * np.sum((L - V @ P.T) ** 2)
    if len(old_b):
        Lo = old_l.astype(float)
        s_oc = 2 * unit(Lo) @ U.T - 1  # old x new
        f += np.sum((old_b - old_v @ R.T) ** 2)
        f += h.alpha * (np.sum((old_b @ V.T - r * s_oc) ** 2) + np.sum((old_v @ B.T - r * s_oc) ** 2))
        f += h.beta * np.sum((Lo - old_v @ P.T) ** 2)
    return f + h.beta * h.gamma * np.sum(P ** 2)


class _Recorder:
    """Wraps a LEMON's steps: objective before/after each one, and each round's final V, B."""

    def __init__(self, h: LEMON, check_optimal: bool, rng):
        self.h, self.rng, self.check_optimal = h, rng, check_optimal
        self.old_b, self.old_v, self.old_l = np.zeros((0, h.bits)), np.zeros((0, h.bits)), None
        self.steps = []
        self.rounds = []
        for name in ("_p_step", "_v_step", "_r_step", "_b_step"):
            setattr(h, name, self._wrap(name, getattr(h, name)))
        add = h._add_chunk
        h._add_chunk = lambda rnd, stats: self._commit(rnd, add(rnd, stats))

    def f(self, rnd, **override):
        v = {"B": rnd.B, "V": rnd.V, "P": rnd.P, "R": rnd.R, **override}
        old_l = self.old_l if self.old_l is not None else np.zeros((0, rnd.L.shape[1]))
        if old_l.shape[1] < rnd.L.shape[1]:
            old_l = np.pad(old_l, ((0, 0), (0, rnd.L.shape[1] - old_l.shape[1])))
        return _objective(self.h, self.old_b, self.old_v, old_l, rnd.L, **v)

    def _wrap(self, name, step):
        def wrapped(rnd, stats):
            before = self.f(rnd)
            step(rnd, stats)
            after = self.f(rnd)
            self.steps.append((name, before, after))
            if self.check_optimal:
                self._alternatives(name, rnd, after)
        return wrapped

    def _alternatives(self, name, rnd, value):
        """The step's result is no worse than nearby feasible alternatives of the same variable."""
        tol = 1e-9 * abs(value)
        for _ in range(3):
            if name == "_p_step":
                alt = {"P": rnd.P + 1e-3 * self.rng.standard_normal(rnd.P.shape)}
            elif name == "_r_step":
                skew = self.rng.standard_normal(rnd.R.shape)
                q, _ = np.linalg.qr(np.eye(len(rnd.R)) + 1e-2 * (skew - skew.T))
                alt = {"R": rnd.R @ q}
            elif name == "_b_step":
                flip = np.ones_like(rnd.B)
                flip.flat[self.rng.choice(flip.size, 3, replace=False)] = -1
                alt = {"B": rnd.B * flip}
            else:
                z = self.rng.standard_normal(rnd.V.shape)
                alt = {"V": balanced_orthogonal(rnd.V + 0.05 * z, self.rng)}
            assert value <= self.f(rnd, **alt) + tol, name

    def _commit(self, rnd, new_stats):
        self.rounds.append((rnd.L.copy(), rnd.B.copy(), rnd.V.copy()))
        old_l = self.old_l if self.old_l is not None else np.zeros((0, rnd.L.shape[1]))
        old_l = np.pad(old_l, ((0, 0), (0, rnd.L.shape[1] - old_l.shape[1])))
        self.old_l = np.vstack([old_l, rnd.L])
        self.old_b = np.vstack([self.old_b, rnd.B])
        self.old_v = np.vstack([self.old_v, rnd.V])
        return new_stats


# --------------------------------------------------------------------------- closed-form steps
@pytest.mark.parametrize("params", [{}, {"alpha": 1.0, "beta": 1.0, "gamma": 0.1}, {"alpha": 0.01, "beta": 3.0}])
def test_each_step_does_not_increase_the_round_objective(params):
    views, labels = _two_views(90, multilabel=True, seed=1)
    h = LEMON(bits=8, iterations=3, seed=3, **params)
    rec = _Recorder(h, check_optimal=True, rng=np.random.default_rng(0))
    for chunk_views, chunk_labels in _chunks(views, labels, 30):
        h.partial_fit(chunk_views, chunk_labels)
    assert len(rec.steps) == 3 * 3 * 4
    for name, before, after in rec.steps:
        assert after <= before + 1e-9 * abs(before), (name, before, after)
    # the steps do work: the objective drops within every round
    for t in range(3):
        first, last = rec.steps[12 * t][1], rec.steps[12 * t + 11][2]
        assert last < first


def test_v_satisfies_orthogonality_and_balance_every_round():
    views, labels = _two_views(200, seed=2)
    h = LEMON(bits=16, seed=0)
    rec = _Recorder(h, check_optimal=False, rng=np.random.default_rng(0))
    for chunk_views, chunk_labels in _chunks(views, labels, 50):
        h.partial_fit(chunk_views, chunk_labels)
    for _, _, V in rec.rounds:
        n = len(V)
        np.testing.assert_allclose(V.T @ V, n * np.eye(h.bits), atol=1e-6)
        np.testing.assert_allclose(V.sum(axis=0), 0, atol=1e-6)


@pytest.mark.parametrize("rank", [None, 3, 0])
def test_balanced_orthogonal_is_the_constrained_maximum(rank):
    rng = np.random.default_rng(rank or 7)
    n, r = 40, 6
    z = rng.standard_normal((n, r)) * [1e10, 1e6, 1, 1, 1e-3, 1]  # wide dynamic range
    if rank is not None:
        z = rng.standard_normal((n, rank)) @ rng.standard_normal((rank, r)) if rank else np.ones((n, r)) * 5.0
    v = balanced_orthogonal(z, rng)
    np.testing.assert_allclose(v.T @ v, n * np.eye(r), atol=1e-6)
    np.testing.assert_allclose(v.sum(axis=0), 0, atol=1e-6)
    zc = z - z.mean(axis=0)
    best = np.sqrt(n) * np.linalg.svd(zc, compute_uv=False).sum()  # max <Z, V> in closed form
    np.testing.assert_allclose(np.sum(z * v), best, rtol=1e-9, atol=1e-6)
    for _ in range(5):  # random feasible points are never better
        other = balanced_orthogonal(rng.standard_normal((n, r)), rng)
        assert np.sum(z * other) <= best * (1 + 1e-12) + 1e-6


# --------------------------------------------------------------------------- online behaviour
def test_old_codes_are_bit_for_bit_unchanged_by_later_rounds(tmp_path):
    views, labels = _two_views(400, seed=4)
    h = LEMON(bits=12, seed=1)
    history = []
    for i, (chunk_views, chunk_labels) in enumerate(_chunks(views, labels, 80)):
        h.partial_fit(chunk_views, chunk_labels)
        history.append(h.codes_.packed.copy())
        if i == 2:  # stop, save, continue from the saved state
            h.save(tmp_path / "h")
            h = Hasher.load(tmp_path / "h")
    assert [len(p) for p in history] == [80, 160, 240, 320, 400]
    for earlier, later in zip(history, history[1:]):
        assert np.array_equal(later[: len(earlier)], earlier)


def test_stop_and_continue_equals_an_uninterrupted_stream(tmp_path):
    views, labels = _two_views(300, seed=5)
    chunks = list(_chunks(views, labels, 60))
    straight = LEMON(bits=10, seed=2)
    for c in chunks:
        straight.partial_fit(*c)
    resumed = LEMON(bits=10, seed=2)
    for c in chunks[:2]:
        resumed.partial_fit(*c)
    resumed.save(tmp_path / "h")
    resumed = Hasher.load(tmp_path / "h")
    for c in chunks[2:]:
        resumed.partial_fit(*c)
    assert resumed.codes_ == straight.codes_
    for m in views:
        assert resumed.encode(views[m], modality=m) == straight.encode(views[m], modality=m)


def test_accumulated_statistics_and_hash_functions_equal_batch_formulas():
    views, labels = _two_views(240, seed=6, multilabel=True)
    h = LEMON(bits=8, seed=0, xi=0.7)
    rec = _Recorder(h, check_optimal=False, rng=np.random.default_rng(0))
    for c in _chunks(views, labels, 60):
        h.partial_fit(*c)
    L = np.vstack([r[0] for r in rec.rounds])
    B = np.vstack([r[1] for r in rec.rounds])
    V = np.vstack([r[2] for r in rec.rounds])
    U = L / np.linalg.norm(L, axis=1, keepdims=True)
    np.testing.assert_allclose(h.stats_["C1"], L.T @ V, atol=1e-8)
    np.testing.assert_allclose(h.stats_["C2"], len(V) * np.eye(8), atol=1e-6)
    np.testing.assert_allclose(h.stats_["C3"], U.T @ B, atol=1e-8)
    np.testing.assert_allclose(h.stats_["C5"], B.T @ V, atol=1e-8)
    np.testing.assert_allclose(h.stats_["C6"], V.T @ U, atol=1e-8)
    assert np.array_equal(h.codes_.to_signs(np.float64), B)
    for m, x in views.items():
        # ridge regression on all the data at once: [X 1; sqrt(xi) I] W^T = [B; 0]
        xa = np.column_stack([x, np.ones(len(x))])
        design = np.vstack([xa, np.sqrt(h.xi) * np.eye(xa.shape[1])])
        target = np.vstack([B, np.zeros((xa.shape[1], 8))])
        w = np.linalg.lstsq(design, target, rcond=None)[0].T
        np.testing.assert_allclose(h.W_[m], w, atol=1e-8)
        assert h.encode(x, modality=m) == Codes.from_signs(xa @ w.T)


def test_cross_modal_retrieval_works_in_both_directions():
    views, labels = _two_views(1200, n_classes=5, seed=8)
    qv, ql = {k: v[:200] for k, v in views.items()}, labels[:200]
    h = LEMON(bits=16, seed=0)
    for c in _chunks({k: v[200:] for k, v in views.items()}, labels[200:], 250):
        h.partial_fit(*c)
    for a in views:
        result = evaluate(h.encode(qv[a], modality=a), ql, h.codes_, labels[200:])
        assert result["map@all"] > 0.9, (a, result["map@all"])
    assert h.encode(qv["v0"]) == h.encode(qv["v0"], modality="v0")  # default: the first modality


def test_fit_is_a_single_round_from_scratch():
    from learn2hash.datasets.base import Split

    views, labels = _two_views(150, seed=9)
    split = Split(x=views["v0"], labels=labels, kind="multiview", views=views)
    a = create("lemon", bits=8).fit(split)
    b = LEMON(bits=8).partial_fit(views, labels)
    assert a.rounds_ == 1 and a.codes_ == b.codes_
    a.fit(split)  # refitting starts over
    assert a.rounds_ == 1 and len(a.codes_) == 150


def test_new_classes_grow_the_label_space_exactly():
    views, labels = _two_views(240, n_classes=4, seed=10)
    first, second = slice(0, 120), slice(120, 240)
    keep = ~labels[first, 3]  # the first chunk never shows class 3
    v1 = {k: v[first][keep] for k, v in views.items()}
    l1 = labels[first][keep]
    v2 = {k: v[second] for k, v in views.items()}
    grown = LEMON(bits=8, seed=0).partial_fit(v1, l1[:, :3]).partial_fit(v2, labels[second])
    full = LEMON(bits=8, seed=0).partial_fit(v1, l1).partial_fit(v2, labels[second])
    assert grown.n_classes_ == 4 and grown.codes_ == full.codes_
    for k in _STATS_KEYS:
        np.testing.assert_allclose(grown.stats_[k], full.stats_[k], atol=1e-9)
    ids = LEMON(bits=8, seed=0).partial_fit(v1, np.argmax(l1, axis=1)).partial_fit(v2, np.argmax(labels[second], 1))
    assert ids.codes_ == full.codes_
    with pytest.raises(Learn2HashError, match="keeps the columns"):
        grown.partial_fit(v2, labels[second][:, :3])


_STATS_KEYS = ("C1", "C2", "C3", "C5", "C6")


def test_bad_input_is_a_clear_error_and_changes_nothing():
    views, labels = _two_views(200, seed=11)
    h = LEMON(bits=8).partial_fit({k: v[:100] for k, v in views.items()}, labels[:100])
    before = h.codes_
    rest = {k: v[100:] for k, v in views.items()}
    cases = [
        ({"v0": views["v0"][100:], "v1": views["v1"][100:150]}, labels[100:], "different row counts"),
        ({**rest, "text": rest["v0"]}, labels[100:], "never seen in training"),
        ({"v0": rest["v0"]}, labels[100:], "'v1' is missing"),
        ({"v0": rest["v0"][:, :5], "v1": rest["v1"]}, labels[100:], "cannot change between chunks"),
        (rest, labels[100:150], "rows"),
        (rest, np.zeros_like(labels[100:]), "no label"),
        ({k: v[:8] for k, v in rest.items()}, labels[100:108], "at least bits"),
        ({"v0": np.full_like(rest["v0"], np.nan), "v1": rest["v1"]}, labels[100:], "NaN"),
        (rest, None, "needs the chunk's labels"),
    ]
    for chunk_views, chunk_labels, message in cases:
        with pytest.raises(Learn2HashError, match=message):
            h.partial_fit(chunk_views, chunk_labels)
        assert h.codes_ == before and h.rounds_ == 1
    with pytest.raises(Learn2HashError, match="never seen in training"):
        h.encode(rest["v0"], modality="text")
    with pytest.raises(Learn2HashError, match="fitted on 12"):
        h.encode(rest["v1"], modality="v0")
    with pytest.raises(Learn2HashError, match="not fitted"):
        LEMON(bits=8).encode(rest["v0"])
    with pytest.raises(Learn2HashError, match="gamma"):
        LEMON(bits=8, gamma=0).partial_fit(rest, labels[100:])


# --------------------------------------------------------------------------- CCA-ITQ
def test_cca_itq_recovers_canonical_correlations_and_saves(tmp_path):
    from learn2hash.datasets.base import Split

    views, labels = _two_views(600, seed=12, d=(9, 6))
    split = Split(x=views["v0"], labels=labels, kind="multiview", views=views)
    h = create("cca-itq", bits=4, reg=0.5, power=1.0).fit(split)
    # reference: two-view CCA via SVD of the whitened cross-covariance (ridge as in the method)
    x, y = (v - v.mean(axis=0) for v in (views["v0"], views["v1"]))
    n = len(x)

    def ridge_cov(a):
        c = a.T @ a / (n - 1)
        return c + 0.5 * np.trace(c) / c.shape[0] * np.eye(c.shape[0])

    def inv_sqrt(c):
        w, q = np.linalg.eigh(c)
        return q @ np.diag(w ** -0.5) @ q.T

    rho = np.linalg.svd(inv_sqrt(ridge_cov(x)) @ (x.T @ y / (n - 1)) @ inv_sqrt(ridge_cov(y)), compute_uv=False)
    np.testing.assert_allclose(h.eigenvalues_, 1 + rho[:4], rtol=1e-8)
    for m in views:
        z = (views[m] - h.means_[m]) @ h.projections_[m]
        assert h.encode(views[m], modality=m) == Codes.from_signs(z)
    h.save(tmp_path / "c")
    back = Hasher.load(tmp_path / "c")
    for m in views:
        assert back.encode(views[m], modality=m) == h.encode(views[m], modality=m)
    one = Split(x=views["v0"], labels=labels, kind="features")
    with pytest.raises(Learn2HashError, match="at least two modalities"):
        create("cca-itq", bits=4).fit(one)


# --------------------------------------------------------------------------- stream and CLI
def _mat_file(tmp_path, n=560, seed=13):
    views, labels = _two_views(n, seed=seed, d=(10, 6))
    path = tmp_path / "data.mat"
    scipy.io.savemat(path, {"IMG": views["v0"], "TXT": views["v1"], "LAB": labels.astype(np.uint8)})
    return path


def _stream(tmp_path, out, *extra):
    return cli.main(["stream", "--mat", str(_mat_file(tmp_path)), "--mat-keys", "image=IMG,text=TXT,labels=LAB",
                     "--queries", "60", "--chunk", "100", "--bits", "12", "--out", str(out), "--quiet", *extra])


def test_stream_cli_records_rounds_appends_chunks_and_resumes(tmp_path, capsys):
    straight, parted = tmp_path / "straight", tmp_path / "parted"
    assert _stream(tmp_path, straight) == 0
    assert _stream(tmp_path, parted, "--rounds", "2") == 0
    stats = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (parted / "codes" / "database").glob("chunk-*.npy")}
    assert sorted(stats) == ["chunk-00000.npy", "chunk-00001.npy"]
    assert _stream(tmp_path, parted) == 0
    after = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (parted / "codes" / "database").glob("chunk-*.npy")}
    assert all(after[k] == v for k, v in stats.items())  # earlier chunk files were not rewritten
    assert len(after) == 5 and len(chunk_bounds(500, 100)) == 5

    import json
    rec = json.loads((straight / "stream.json").read_text())
    assert rec["total_rounds"] == 5 and [r["n_seen"] for r in rec["rounds"]] == [100, 200, 300, 400, 500]
    assert set(rec["rounds"][-1]["map@all"]) == {"image->text", "text->image"}
    assert (straight / "stream.png").stat().st_size > 1000
    rec2 = json.loads((parted / "stream.json").read_text())
    assert [r["map@all"] for r in rec2["rounds"]] == [r["map@all"] for r in rec["rounds"]]

    db = read_chunked_codes(parted / "codes" / "database")
    assert db == read_chunked_codes(straight / "codes" / "database") == Hasher.load(parted / "hasher").codes_
    # the recorded mAP is what evaluate gives on the files the stream wrote
    from learn2hash import datasets
    ds = datasets.load("mat", splits=parted)
    q = Codes.load(parted / "codes" / "query-image.npy")
    expect = evaluate(q, ds.query.labels, db, ds.database.labels)["map@all"]
    assert rec2["rounds"][-1]["map@all"]["image->text"] == pytest.approx(expect, abs=1e-12)
    assert rec2["rounds"][-1]["map@all"]["image->text"] > 0.8


def test_stream_written_with_the_older_map_key_resumes_and_reads(tmp_path, capsys):
    """Rounds of an older stream.json hold their per-direction mAPs under "map": a resumed stream keeps their values
    under the one spelling, "map@all", and a complete one reads and shows them."""
    import json

    out = tmp_path / "old"
    assert _stream(tmp_path, out, "--rounds", "2") == 0
    path = out / "stream.json"
    now = json.loads(path.read_text())
    first = [r["map@all"] for r in now["rounds"]]
    now["rounds"] = [{("map" if k == "map@all" else k): v for k, v in r.items()} for r in now["rounds"]]
    path.write_text(json.dumps(now))
    capsys.readouterr()
    assert _stream(tmp_path, out) == 0
    rec = json.loads(path.read_text())
    assert [r["round"] for r in rec["rounds"]] == [1, 2, 3, 4, 5]
    assert all("map" not in r and set(r["map@all"]) == {"image->text", "text->image"} for r in rec["rounds"])
    assert [r["map@all"] for r in rec["rounds"][:2]] == first
    rec["rounds"] = [{("map" if k == "map@all" else k): v for k, v in r.items()} for r in rec["rounds"]]
    path.write_text(json.dumps(rec))
    capsys.readouterr()
    assert _stream(tmp_path, out) == 0  # complete: read back, nothing trained
    table = capsys.readouterr().out
    assert "mAP image->text" in table and f"{first[0]['image->text']:.4f}" in table


def test_stream_retrain_baseline_and_errors(tmp_path, capsys):
    assert _stream(tmp_path, tmp_path / "cca", "--method", "cca-itq", "--eval-every", "0") == 0
    out = capsys.readouterr().out
    assert "retrain: complete" in out
    import json
    rec = json.loads((tmp_path / "cca" / "stream.json").read_text())
    assert rec["mode"] == "retrain" and "map@all" in rec["rounds"][-1] and "map@all" not in rec["rounds"][0]
    assert not (tmp_path / "cca" / "codes" / "database").exists()

    assert _stream(tmp_path, tmp_path / "cca", "--method", "cca-itq", "--bits", "16") == 2
    assert "different configuration" in capsys.readouterr().err
    assert cli.main(["stream", "--mat", str(tmp_path / "data.mat"), "--out", str(tmp_path / "x")]) == 2
    assert "--mat-keys" in capsys.readouterr().err
    assert cli.main(["stream", "--mat", str(tmp_path / "data.mat"), "--mat-keys", "image=IMG,labels=LAB",
                     "--out", str(tmp_path / "y"), "--queries", "60"]) == 2
    assert "at least two" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "y" / "stream.json")
