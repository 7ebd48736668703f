"""Run reports: every plot renders to a valid PNG of the promised size, report.html links only
files that exist, and the numbers behind the plots match brute-force references."""

from __future__ import annotations

import html.parser
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from learn2hash import report
from learn2hash.centers import HashCenters
from learn2hash.cli import main
from learn2hash.codes import Codes
from learn2hash.methods import HasCenters
from learn2hash.methods.shallow import ITQ
from learn2hash.runs import Run, train_run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def itq_run(tmp_path_factory) -> Run:
    return train_run("itq", "digits", 16, tmp_path_factory.mktemp("runs") / "itq16", progress=False)


@pytest.fixture(scope="module")
def lsh_run(tmp_path_factory) -> Run:
    return train_run("lsh", "digits", 8, tmp_path_factory.mktemp("runs") / "lsh8", progress=False)


@pytest.fixture(scope="module")
def feature_run(tmp_path_factory) -> Run:
    """An LSH run on feature vectors (the digits pixels as float32 features, from an .npz)."""
    from sklearn.datasets import load_digits

    folder = tmp_path_factory.mktemp("features")
    d = load_digits()
    np.savez(folder / "digits.npz", x=d.data.astype(np.float32), labels=d.target)
    return train_run("lsh", "npz", 16, folder / "run", data_params={"path": str(folder / "digits.npz"),
                                                                     "query_size": 50, "train_size": 300},
                     progress=False)


def png_size(path: Path) -> tuple[int, int]:
    """Pixel size of a PNG file after checking its signature and that Pillow decodes it fully."""
    with open(path, "rb") as fh:
        assert fh.read(8) == PNG_SIGNATURE, f"{path} is not a PNG"
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.load()
        return im.size


class _Refs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.refs: list[str] = []

    def handle_starttag(self, tag, attrs):
        for key, value in attrs:
            if key in ("src", "href") and value:
                self.refs.append(value)


def html_refs(path: Path) -> list[str]:
    parser = _Refs()
    parser.feed(path.read_text(encoding="utf-8"))
    return parser.refs


@pytest.fixture(scope="module")
def reported(itq_run, tmp_path_factory) -> dict[str, Path]:
    """The report of a copy of the ITQ run to which a per-epoch history was added."""
    folder = tmp_path_factory.mktemp("reported") / "run"
    shutil.copytree(itq_run.folder, folder)
    history = [{"epoch": e, "loss": 1.0 / e, "quantization": 0.1 / e, "seconds": 2.0} for e in range(1, 6)]
    (folder / "history.json").write_text(json.dumps(history))
    return report.report_run(folder)


def test_report_writes_every_plot_as_png_of_expected_size(reported):
    assert set(reported) == {"pr_curve", "precision_at_n", "center_heatmap", "retrievals", "training_curve",
                             "report"}
    folder = reported["report"].parent
    assert folder.name == "report"
    expected = {"pr_curve": (640, 480), "precision_at_n": (640, 480), "center_heatmap": (960, 480),
                "training_curve": (640, 480),
                # 11 columns of 100 px plus a 25 px gap; 6 rows of 100 px plus a 40 px title
                "retrievals": (1125, 640)}
    for name, size in expected.items():
        assert reported[name] == folder / f"{name}.png"
        assert png_size(reported[name]) == size, name
    # nothing half-written is left behind
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{n}.png" for n in expected] + ["report.html"])


def test_report_html_references_only_existing_files(reported, itq_run):
    page = reported["report"]
    refs = html_refs(page)
    for ref in refs:
        assert "://" not in ref and not ref.startswith("/"), f"report.html is not self-contained: {ref}"
        assert (page.parent / ref).is_file(), f"report.html references missing file {ref}"
    assert set(refs) == {p.name for p in page.parent.glob("*.png")}
    text = page.read_text(encoding="utf-8")
    m = itq_run.metrics()
    for key in ("map@all", "precision_at_radius2", "map@100"):
        assert f"{m[key]:.4f}" in text, key


def test_training_curve_refuses_history_without_numbers(tmp_path):
    with pytest.raises(report.Learn2HashError, match="numeric"):
        report.plot_training_curve([{"epoch": 1, "note": "x"}], tmp_path / "t.png")
    with pytest.raises(report.Learn2HashError, match="empty"):
        report.plot_training_curve([], tmp_path / "t.png")


def test_class_mean_centers_and_distances_match_brute_force(itq_run):
    run = Run.open(itq_run.folder)
    data = report.center_code_distances(run, per_class=7, seed=3)
    assert data["source"] == "class means"
    bits = run.codes("database").to_bits().astype(int)
    labels = run.dataset().database.labels
    n_classes = labels.shape[1]
    # class mean of the +-1 codes, then its sign (a zero mean counts as +1)
    expected_centers = np.array([[1 if (2 * bits[labels[:, c], j] - 1).mean() >= 0 else 0
                                  for j in range(run.bits)] for c in range(n_classes)])
    assert np.array_equal(data["centers"].to_bits(), expected_centers)
    cc, ids = data["column_class"], data["column_ids"]
    assert len(ids) == 7 * n_classes and np.all(np.diff(cc) >= 0)
    for col, i in enumerate(ids):
        assert labels[i, cc[col]], "a column is grouped under a class its item does not have"
        for c in range(n_classes):
            assert data["distances"][c, col] == int(np.sum(expected_centers[c] != bits[i]))


class _CenteredITQ(HasCenters, ITQ):
    """An ITQ hasher that declares hash centers (what CSQ does), for the report's center plot."""


def test_hash_centers_are_used_when_the_hasher_declares_them(itq_run):
    run = Run.open(itq_run.folder)
    rng = np.random.default_rng(0)
    centers01 = rng.integers(0, 2, size=(10, 16))
    hasher = _CenteredITQ(bits=16)
    hasher.centers_ = HashCenters(Codes.from_bits(centers01), "bernoulli", 0, 0.0, 0.0)
    run._hasher = hasher
    data = report.center_code_distances(run, per_class=3)
    assert data["source"] == "hash centers"
    assert np.array_equal(data["centers"].to_bits(), centers01)
    db_bits = run.codes("database").to_bits()
    for col, i in enumerate(data["column_ids"]):
        assert np.array_equal(data["distances"][:, col], (centers01 != db_bits[i]).sum(axis=1))
    # a hasher that does not declare them gets the class means, whatever attributes it holds
    plain = ITQ(bits=16)
    plain.centers_ = hasher.centers_
    run._hasher = plain
    assert report.class_centers(run)[1] == "class means"


def test_top_results_match_brute_force(itq_run):
    run = Run.open(itq_run.folder)
    q_bits = run.codes("query").to_bits().astype(int)
    db_bits = run.codes("database").to_bits().astype(int)
    ql, dbl = run.dataset().query.labels, run.dataset().database.labels
    qids = [0, 17, 99]
    res = report.top_results(run, qids, topn=10)
    for row, q in enumerate(qids):
        d = [int(np.sum(q_bits[q] != db_bits[i])) for i in range(len(db_bits))]
        order = sorted(range(len(d)), key=lambda i: (d[i], i))[:10]
        assert res["ids"][row].tolist() == order
        assert res["distances"][row].tolist() == [d[i] for i in order]
        assert res["relevant"][row].tolist() == [bool(np.any(ql[q] & dbl[i])) for i in order]


def test_top_results_break_the_many_ties_of_short_codes_by_database_position(lsh_run):
    """8-bit codes: most of the top 40 sit in tie groups; ids, distances and their order are those of a
    brute-force ranking by (distance, database position), the tie order the HammingIndex defines."""
    run = Run.open(lsh_run.folder)
    q_bits = run.codes("query").to_bits().astype(np.int64)
    db_bits = run.codes("database").to_bits().astype(np.int64)
    qids = list(range(0, len(q_bits), 7))
    res = report.top_results(run, qids, topn=40)
    d = (q_bits[qids, None, :] != db_bits[None, :, :]).sum(axis=2)
    for row, q in enumerate(qids):
        order = sorted(range(len(db_bits)), key=lambda i: (d[row, i], i))[:40]
        assert res["ids"][row].tolist() == order
        assert res["distances"][row].tolist() == d[row, order].tolist()
    assert len(set(res["distances"][0].tolist())) < 40  # ties were there to break


def test_precision_at_n_curve_matches_brute_force(itq_run):
    """P@N with the expected-value tie policy: the item cut by N at distance d contributes m/n per
    remaining slot, where the tie group at d holds n items of which m are relevant."""
    run = Run.open(itq_run.folder)
    n, p = report.precision_at_n_points(run, ties="expected")
    assert n.tolist() == [1, 5, 10, 20, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 1000]
    q_bits = run.codes("query").to_bits().astype(np.int64)
    db_bits = run.codes("database").to_bits().astype(np.int64)
    dist = (q_bits[:, None, :] != db_bits[None, :, :]).sum(axis=2)
    rel = (run.dataset().query.labels.astype(int) @ run.dataset().database.labels.T.astype(int)) > 0
    expected = []
    for big_n in n.astype(int):
        values = []
        for q in range(len(q_bits)):
            d_cut = np.sort(dist[q])[big_n - 1]
            before = dist[q] < d_cut
            group = dist[q] == d_cut
            slots = big_n - before.sum()
            values.append((rel[q, before].sum() + slots * rel[q, group].sum() / group.sum()) / big_n)
        expected.append(np.mean(values))
    np.testing.assert_allclose(p, expected, rtol=0, atol=1e-9)


def test_sample_queries_cover_classes_without_repeats(itq_run):
    run = Run.open(itq_run.folder)
    picks = report.sample_queries(run, 10, seed=1)
    assert len(set(picks.tolist())) == 10
    first = run.dataset().query.labels[picks].argmax(axis=1)
    assert sorted(first.tolist()) == list(range(10))  # one per class when there are 10 classes
    assert np.array_equal(picks, report.sample_queries(run, 10, seed=1))


def test_item_image_layouts():
    gray = np.arange(12, dtype=np.uint8).reshape(1, 3, 4)
    assert np.array_equal(report.item_image(gray), gray[0])
    rgb = np.arange(24, dtype=np.uint8).reshape(2, 3, 4).repeat(2, axis=0)[:3]
    assert report.item_image(rgb).shape == (3, 4, 3)
    assert np.array_equal(report.item_image(rgb)[..., 1], rgb[1])
    clip = np.stack([np.full((1, 2, 2), t, dtype=np.uint8) for t in range(5)])
    assert np.all(report.item_image(clip) == 2)  # the middle frame
    assert report.item_image(np.zeros(8, dtype=np.float32)) is None


def test_feature_run_report_shows_labels_and_has_no_training_curve(feature_run, tmp_path):
    written = report.report_run(feature_run, out=tmp_path / "rep", n_queries=3)
    assert png_size(written["retrievals"]) == report.retrieval_grid_size(3) == (1125, 340)
    assert png_size(written["center_heatmap"]) == (960, 480)
    assert "training_curve" not in written and not (tmp_path / "rep" / "training_curve.png").exists()
    refs = html_refs(written["report"])
    assert "training_curve.png" not in refs and all((tmp_path / "rep" / r).is_file() for r in refs)


def test_cli_report_compare_and_errors(itq_run, lsh_run, tmp_path, capsys):
    assert main(["report", "--run", str(itq_run.folder), "--out", str(tmp_path / "a"), "--queries", "2"]) == 0
    out = capsys.readouterr().out
    assert "report.html" in out and png_size(tmp_path / "a" / "retrievals.png") == report.retrieval_grid_size(2)
    assert main(["report", "--compare", str(itq_run.folder), str(lsh_run.folder), "--out", str(tmp_path / "c")]) == 0
    folder = tmp_path / "c"
    assert png_size(folder / "compare_pr_curve.png") == (640, 480)
    assert png_size(folder / "compare_precision_at_n.png") == (640, 480)
    assert png_size(folder / "compare_vs_bits.png") == (960, 420)
    refs = html_refs(folder / "report.html")
    assert set(refs) == {"compare_pr_curve.png", "compare_precision_at_n.png", "compare_vs_bits.png"}
    text = (folder / "report.html").read_text(encoding="utf-8")
    assert "itq16" in text and "lsh8" in text
    capsys.readouterr()
    assert main(["report", "--run", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "not a run folder" in err and len(err.strip().splitlines()) == 1
    assert main(["report", "--run", str(itq_run.folder), "--queries", "0"]) == 2
