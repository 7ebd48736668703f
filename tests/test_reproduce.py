"""`learn2hash reproduce`: the recipes, and quick end-to-end runs on tiny fixtures in the published formats."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from learn2hash import cli, recipes
from learn2hash.datasets import registered
from test_datasets_benchmarks import write_lists
from test_datasets_cifar import fixture_pool, write_binary


def test_recipes_cover_the_papers_main_settings():
    assert set(recipes.RECIPES) == {("csq", "imagenet-100"), ("csq", "coco"), ("csq", "nus-wide-21"),
                                    ("dhn", "cifar10"), ("dhn", "nus-wide-21"), ("lemon", "mirflickr-25k-mat"),
                                    ("lemon", "nus-wide-mat")}
    csq = recipes.recipe("csq", "imagenet-100")
    assert csq.params["backbone"] == "resnet50" and csq.params["backbone_options"] == {"weights": "IMAGENET1K_V1"}
    assert (csq.params["optimizer"], csq.params["lr"], csq.params["batch_size"], csq.params["lam"]) == \
        ("rmsprop", 1e-5, 64, 1e-4)
    assert csq.resize_crop == (256, 224) and csq.topk == 1000
    assert (recipes.figure(csq.paper, 64), recipes.figure(csq.reference, 64)) == ("0.873", "0.881")
    assert recipes.figure(csq.reference, 32) == "n/a"
    assert [recipes.figure(recipes.recipe("csq", d).reference, 64) for d in ("coco", "nus-wide-21")] == ["0.883", "0.844"]
    assert [recipes.figure(recipes.recipe("csq", d).paper, 64) for d in ("coco", "nus-wide-21")] == ["0.861", "0.839"]
    for r in recipes.RECIPES.values():
        info = registered()[r.dataset]
        assert r.protocol in info.protocols and r.estimate
        if r.chunk is None:  # the recipe's mAP cutoff is the dataset's default one
            assert r.topk == (info.topk if not isinstance(info.topk, dict) else info.topk[r.protocol])
    p, _ = recipes.resolved(csq, quick=True)
    assert p["backbone"] == "smallcnn" and not set(recipes.FINE_TUNING) & set(p)
    with pytest.raises(Exception, match="no recipe for csq on mnist; recipes: csq --dataset imagenet-100"):
        recipes.recipe("csq", "mnist")


def _table(out: str) -> dict[str, list[str]]:
    lines = out.strip().splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith("metric"))
    return {l.split()[0]: l.split() for l in lines[start + 2:] if l and not l.startswith("note")}


def test_reproduce_dhn_cifar10_quick(tmp_path, capsys):
    images, labels = fixture_pool()
    write_binary(tmp_path / "cifar", images, labels)
    code = cli.main(["reproduce", "dhn", "--dataset", "cifar10", "--bits", "48", "--quick", "--no-progress",
                     "--data-path", str(tmp_path / "cifar"), "--data-param", "query_per_class=1",
                     "--data-param", "train_per_class=2", "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0, out
    row = _table(out)["mAP@all"]
    assert 0.0 <= float(row[1]) <= 1.0 and row[2:] == ["0.621", "0.781"]
    assert "quick run: not comparable" in out
    from learn2hash.runs import Run
    run = Run.open(tmp_path / "run")
    assert run.config["protocol"] == "cifar10" and run.config["sizes"] == {"train": 20, "query": 10, "database": 30}
    assert run.config["params"]["backbone"] == "smallcnn" and run.config["params"]["lam"] == 0.1


def test_reproduce_csq_imagenet_quick_and_unknown_recipe(tmp_path, capsys):
    write_lists(tmp_path / "in100", 100, {"train": 12, "query": 4, "database": 16})
    code = cli.main(["reproduce", "csq", "--dataset", "imagenet-100", "--quick", "--no-progress",
                     "--data-path", str(tmp_path / "in100"), "--out", str(tmp_path / "run")])
    out = capsys.readouterr().out
    assert code == 0, out
    row = _table(out)["mAP@1000"]
    assert 0.0 <= float(row[1]) <= 1.0 and row[2:] == ["0.873", "0.881"]
    assert cli.main(["reproduce", "csq", "--dataset", "cifar10", "--quick"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no recipe for csq on cifar10" in err


def test_reproduce_lemon_stream_on_a_lemon_mat(tmp_path, capsys):
    rng = np.random.default_rng(0)
    n_tr, n_te = 40, 10
    lab = np.zeros((n_tr + n_te, 4), np.uint8)
    lab[np.arange(n_tr + n_te), rng.integers(0, 4, n_tr + n_te)] = 1
    feats = lab @ rng.standard_normal((4, 6)) + 0.1 * rng.standard_normal((n_tr + n_te, 6))
    text = lab @ rng.standard_normal((4, 5)) + 0.1 * rng.standard_normal((n_tr + n_te, 5))
    folder = tmp_path / "mir"
    folder.mkdir()
    scipy.io.savemat(folder / "MIRFLICKR.mat", {"I_tr": feats[:n_tr], "I_te": feats[n_tr:], "T_tr": text[:n_tr],
                                                "T_te": text[n_tr:], "L_tr": lab[:n_tr], "L_te": lab[n_tr:]})
    code = cli.main(["reproduce", "lemon", "--dataset", "mirflickr-25k-mat", "--bits", "16", "--data-path",
                     str(folder), "--data-param", "queries=10", "--chunk", "20", "--out", str(tmp_path / "run")])
    captured = capsys.readouterr()
    out = captured.out
    assert code == 0, captured.err
    lines = [l for l in out.splitlines() if l.startswith("mAP ")]
    assert len(lines) == 2 and {l.split()[1] for l in lines} == {"image->text", "text->image"}
    for l in lines:
        parts = l.split()
        assert "(all, round 2)" in l and parts[-2:] == ["n/a", "n/a"] and 0.5 < float(parts[-3]) <= 1.0
