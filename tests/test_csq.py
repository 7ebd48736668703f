"""CSQ: the loss by hand, fitting on digits against a random-projection baseline, persistence, errors."""

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from learn2hash import datasets
from learn2hash.centers import hash_centers
from learn2hash.codes import Codes
from learn2hash.datasets import Split
from learn2hash.errors import CorruptFileError, Learn2HashError
from learn2hash.methods import Hasher, create
from learn2hash.methods.base import FitContext
from learn2hash.methods.csq import CSQ, pairwise_loss
from learn2hash.methods.deep import TrainingTask
from learn2hash.methods.pairwise import log_cosh
from learn2hash.metrics import evaluate
from learn2hash.train import Batch

SMALL = dict(backbone_options={"widths": [16, 32], "convs_per_stage": 1}, epochs=12, batch_size=50, lr=1e-2,
             augment="none")  # digits must not be flipped


@pytest.fixture(scope="module")
def digits():
    return datasets.load("digits", protocol="standard")


@pytest.fixture(scope="module")
def fitted(digits):
    return create("csq", bits=16, **SMALL).fit(digits.train, progress=False)


def _task(hasher, targets):
    """A training task whose only per-fit state is the items' target centers (what CSQ's loss reads)."""
    split = Split(x=np.zeros((len(targets), 1)), labels=np.ones((len(targets), 1), bool))
    return TrainingTask(hasher, split, FitContext(), model=None, train_split=split,
                        scratch=SimpleNamespace(targets=torch.as_tensor(targets)))


def _batch(labels, logits):
    labels = torch.as_tensor(labels, dtype=torch.bool)
    return Batch(x=torch.zeros(len(labels), 1), labels=labels, index=torch.arange(len(labels)), epoch=0, step=0,
                 logits=logits)


def _hand_loss(u, centers01, lam, quantization):
    h = (u + 1) / 2
    bce = -(centers01 * np.log(h) + (1 - centers01) * np.log(1 - h)).mean()
    dev = np.abs(u) - 1
    q = np.log(np.cosh(dev)).mean() if quantization == "logcosh" else (dev ** 2).mean()
    return bce, q, bce + lam * q


@pytest.mark.parametrize("quantization", ["logcosh", "squared"])
def test_loss_matches_a_hand_computation(quantization):
    hasher = CSQ(bits=4, lam=0.5, quantization=quantization)
    targets = np.array([[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 0, 0]], np.float32)
    task = _task(hasher, targets)
    logits = torch.tensor([[0.3, -1.2, 2.0, 0.1], [-0.5, -0.2, 0.7, 1.5], [1.1, 0.4, -2.5, -0.3]],
                          dtype=torch.float64)
    u = torch.tanh(logits)
    loss, parts = hasher.loss(task, u, _batch(np.eye(3), logits))
    bce, q, total = _hand_loss(u.numpy(), targets, 0.5, quantization)
    assert float(parts["center"]) == pytest.approx(bce, rel=1e-9)
    assert float(parts["quantization"]) == pytest.approx(q, rel=1e-9)
    assert float(loss) == pytest.approx(total, rel=1e-9)
    # the items are looked up by their index in the training set
    batch = _batch(np.eye(3)[[2, 0]], logits[[2, 0]])
    batch.index = torch.tensor([2, 0])
    loss2, _ = hasher.loss(task, u[[2, 0]], batch)
    assert float(loss2) == pytest.approx(_hand_loss(u.numpy()[[2, 0]], targets[[2, 0]], 0.5, quantization)[2])


def test_pairwise_term_by_brute_force():
    torch.manual_seed(0)
    u = torch.tanh(torch.randn(5, 6, dtype=torch.float64))
    labels = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 1], [0, 1, 0], [0, 0, 1]], dtype=torch.bool)
    total, count = 0.0, 0
    for i in range(5):
        for j in range(5):
            if i != j:
                theta = 0.5 * float(u[i] @ u[j])
                s = float((labels[i] & labels[j]).any())
                total += math.log1p(math.exp(theta)) - s * theta
                count += 1
    assert float(pairwise_loss(u, labels)) == pytest.approx(total / count, rel=1e-9)
    hasher = CSQ(bits=6, lam=0.0, pairwise_weight=2.0)
    loss, parts = hasher.loss(_task(hasher, torch.zeros(5, 6, dtype=torch.float64)), u, _batch(labels, torch.atanh(u)))
    assert float(loss) == pytest.approx(float(parts["center"]) + 2.0 * total / count, rel=1e-9)


def test_log_cosh_is_stable():
    x = torch.tensor([-3.0, -0.5, 0.0, 0.7, 2.0], dtype=torch.float64)
    assert torch.allclose(log_cosh(x), torch.log(torch.cosh(x)))
    big = log_cosh(torch.tensor([1000.0]))
    assert torch.isfinite(big).all() and float(big) == pytest.approx(1000 - math.log(2))


def test_fitted_codes_shape_and_bit_balance_follow_the_centers(digits, fitted):
    codes = fitted.encode(digits.database.x)
    assert isinstance(codes, Codes) and codes.bits == 16 and len(codes) == len(digits.database)
    assert fitted.centers_.method == "hadamard" and fitted.centers_.n == 10
    # codes gather at their class's center: close to it, and nearer to it than to any other center
    bits = codes.to_bits()
    own = (bits != fitted.item_centers(digits.database.labels).to_bits()).sum(axis=1)
    assert own.mean() < 8 / 2, own.mean()  # under half the distance (8) between two centers
    to_all = (bits[:, None, :] != fitted.centers_.codes.to_bits()[None, :, :]).sum(axis=2)
    nearest = to_all.argmin(axis=1)
    assert np.mean(nearest == digits.database.labels.argmax(axis=1)) > 0.9
    assert [h["epoch"] for h in fitted.history_] == list(range(1, 13))
    assert fitted.history_[-1]["loss"] < fitted.history_[0]["loss"]


def test_fitted_csq_beats_random_projections(digits, fitted):
    q, db = digits.query, digits.database
    csq = evaluate(fitted.encode(q.x), q.labels, fitted.encode(db.x), db.labels, ties="expected")["map@all"]
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 16))
    feats = lambda x: x.reshape(len(x), -1).astype(np.float64) / 255.0 - 0.5  # noqa: E731
    lsh = evaluate(Codes.from_signs(feats(q.x) @ w), q.labels, Codes.from_signs(feats(db.x) @ w), db.labels,
                   ties="expected")["map@all"]
    assert csq > lsh + 0.2, (csq, lsh)


def test_save_load_round_trip_gives_identical_codes(digits, fitted, tmp_path):
    fitted.save(tmp_path / "h")
    meta = json.loads((tmp_path / "h" / "hasher.json").read_text())
    named = {meta["files"]["weights.pt"]["file"], meta["arrays"]["centers"]["file"]}
    assert {p.name for p in (tmp_path / "h").iterdir() if not p.name.startswith(".")} == {"hasher.json"} | named
    loaded = Hasher.load(tmp_path / "h")
    assert isinstance(loaded, CSQ) and loaded.get_params() == json.loads(json.dumps(fitted.get_params()))
    assert loaded.centers_.codes == fitted.centers_.codes
    assert loaded.encode(digits.query.x) == fitted.encode(digits.query.x)
    assert np.array_equal(loaded.transform(digits.query.x[:5]), fitted.transform(digits.query.x[:5]))


def test_fitted_centers_are_balanced_and_loading_keeps_the_saved_ones(digits, fitted, tmp_path):
    c = fitted.centers_
    assert c.constant_bits == 0 and c.negated  # 10 rows of H_16 agree on column 0 unless some are negated
    assert c.codes == hash_centers(10, 16, seed=fitted.seed).codes
    # a hasher saved with other centers (Alg. 1's rows as they are, as saved before balancing existed,
    # without the `negated` entry) loads those centers, not freshly generated ones
    old = hash_centers(10, 16, balance=False)
    fitted.save(tmp_path / "h")
    meta = json.loads((tmp_path / "h" / "hasher.json").read_text())
    del meta["state"]["centers"]["negated"]
    (tmp_path / "h" / "hasher.json").write_text(json.dumps(meta))
    original = fitted.centers_
    try:
        fitted.centers_ = old
        fitted.save(tmp_path / "old")
    finally:
        fitted.centers_ = original
    meta_old = json.loads((tmp_path / "old" / "hasher.json").read_text())
    del meta_old["state"]["centers"]["negated"]
    (tmp_path / "old" / "hasher.json").write_text(json.dumps(meta_old))
    loaded = Hasher.load(tmp_path / "old")
    assert loaded.centers_.codes == old.codes and loaded.centers_.constant_bits == 1 and loaded.centers_.negated == ()
    assert Hasher.load(tmp_path / "h").centers_.codes == c.codes


def test_defaults_train_digits_without_flips_and_record_what_ran(digits, tmp_path, monkeypatch):
    from learn2hash.nn import augment as augment_module
    from learn2hash.runs import train_run

    # 8x8 digits: no flips (a flipped digit is another symbol) and no shifts (under 14 pixels,
    # where one pixel is 1/8 of the image)
    h = create("csq", bits=16)
    assert h.augment == "auto" and h.resolved_params(digits.train) == {"augment": "none"}
    assert h.train_config(digits.train).augment == "none"
    seen = []
    real = augment_module.augment
    monkeypatch.setattr(augment_module, "augment", lambda x, ops: seen.append(list(ops)) or real(x, ops))
    params = {k: v for k, v in SMALL.items() if k != "augment"} | {"epochs": 1}
    run = train_run("csq", "digits", 16, tmp_path / "run", params=params, progress=False)
    assert seen and all(ops == [] for ops in seen)  # the batches were neither flipped nor shifted
    config = json.loads((run.folder / "config.json").read_text())
    assert config["params"]["augment"] == "auto" and config["resolved"] == {"augment": "none"}
    saved = json.loads((run.folder / "hasher" / "hasher.json").read_text())
    assert saved["state"]["augment"] == "none"
    assert Hasher.load(run.folder / "hasher").augment_ == "none"
    # the same images at 28 pixels (arrays of unknown origin) are shifted by 2, never flipped
    big = np.repeat(np.repeat(np.asarray(digits.train.x), 4, axis=2), 4, axis=3)[:, :, 2:30, 2:30]
    seen.clear()
    create("csq", bits=16, **params).fit(big, digits.train.labels.argmax(1))
    assert seen and all(ops == [("shift", 2)] for ops in seen)
    # an explicit value is what runs, and frozen features are never augmented under "auto"
    assert create("csq", augment="flip").resolved_params(digits.train) == {"augment": "flip"}
    assert create("csq", frozen_features=True).resolved_params(digits.train) == {"augment": "none"}


def test_a_saved_hasher_of_another_bit_length_is_refused(fitted, tmp_path):
    fitted.save(tmp_path / "h")
    meta = json.loads((tmp_path / "h" / "hasher.json").read_text())
    meta["params"]["bits"] = 32
    (tmp_path / "h" / "hasher.json").write_text(json.dumps(meta))
    with pytest.raises(Learn2HashError, match="centers have 16 bits, the hasher 32"):
        Hasher.load(tmp_path / "h")
    meta["params"]["bits"] = 16
    (tmp_path / "h" / "hasher.json").write_text(json.dumps(meta))
    (tmp_path / "h" / meta["files"]["weights.pt"]["file"]).write_bytes(b"garbage")
    with pytest.raises(CorruptFileError, match="checksum"):
        Hasher.load(tmp_path / "h")


def test_weights_of_another_network_are_refused(digits, fitted, tmp_path):
    fitted.save(tmp_path / "h")
    meta = json.loads((tmp_path / "h" / "hasher.json").read_text())
    meta["params"]["backbone_options"] = {"widths": [8, 32], "convs_per_stage": 1}
    (tmp_path / "h" / "hasher.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptFileError, match="inconsistent.*recorded as"):
        Hasher.load(tmp_path / "h")
    meta["state"]["backbone"]["options"]["widths"] = [8, 32]
    (tmp_path / "h" / "hasher.json").write_text(json.dumps(meta))
    with pytest.raises(CorruptFileError, match="does not fit a csq network of 16 bits"):
        Hasher.load(tmp_path / "h")


def test_multilabel_items_get_centroid_or_random_label_centers():
    labels = np.array([[1, 1, 1, 0], [0, 1, 0, 0], [1, 0, 0, 1]], bool)
    h = CSQ(bits=8)
    h.centers_ = hash_centers(4, 8)
    signs = h.centers_.signs()
    cent = h.item_centers(labels).to_signs()
    assert np.array_equal(cent[0], np.sign(signs[:3].sum(0)))  # three votes: never a tie
    assert np.array_equal(cent[1], signs[1])
    h.multilabel = "random"
    rnd = h.item_centers(labels).to_signs()
    for i in range(3):
        assert any(np.array_equal(rnd[i], signs[c]) for c in np.flatnonzero(labels[i]))


def test_resume_of_a_finished_run_restores_it(digits, tmp_path):
    params = {**SMALL, "epochs": 2}
    a = create("csq", bits=8, **params).fit(digits.train, checkpoint_dir=tmp_path, progress=False)
    b = create("csq", bits=8, **params).fit(digits.train, checkpoint_dir=tmp_path, resume=True, progress=False)
    assert b.encode(digits.query.x) == a.encode(digits.query.x) and b.history_ == a.history_
    with pytest.raises(Learn2HashError, match="different training configuration.*lam"):
        create("csq", bits=8, lam=0.5, **params).fit(digits.train, checkpoint_dir=tmp_path, resume=True)


def test_bad_input_errors(digits, fitted):
    with pytest.raises(Learn2HashError, match="bits must be a positive integer"):
        create("csq", bits=0)
    with pytest.raises(Learn2HashError, match="unknown backbone"):
        create("csq", bits=8, backbone="vgg99", epochs=1).fit(digits.train)
    with pytest.raises(Learn2HashError, match=r"shape \(3, 1, 28, 28\).*\[n, 1, 8, 8\]"):
        fitted.encode(np.zeros((3, 1, 28, 28), np.uint8))
    labels = digits.train.labels.copy()
    labels[7] = False
    with pytest.raises(Learn2HashError, match="no positive label"):
        create("csq", bits=8, epochs=1).fit(digits.train.x, labels)
    with pytest.raises(Learn2HashError, match="quantization"):
        create("csq", bits=8, quantization="cubic", epochs=1).fit(digits.train)
    with pytest.raises(Learn2HashError, match="lam"):
        create("csq", bits=8, lam=-1.0, epochs=1).fit(digits.train)
    with pytest.raises(Learn2HashError, match="has no parameter 'lambda'"):
        create("csq", bits=8, **{"lambda": 0.1})
    with pytest.raises(Learn2HashError, match="not fitted"):
        create("csq", bits=8).encode(digits.query.x)


def test_hash_head_layers_survive_save_and_load(digits, tmp_path):
    h = create("csq", bits=8, hidden=(24,), epochs=1, batch_size=100,
               backbone_options={"widths": [8], "convs_per_stage": 1}).fit(digits.train, progress=False)
    assert h.get_params()["hidden"] == (24,)  # kept as given (scikit-learn's clone relies on it)
    h.save(tmp_path / "h")
    loaded = Hasher.load(tmp_path / "h")
    assert loaded.get_params()["hidden"] == [24]  # params travel as JSON
    assert loaded.get_params() == json.loads(json.dumps(h.get_params()))
    assert loaded.encode(digits.query.x) == h.encode(digits.query.x)


def test_a_saved_hasher_survives_a_change_of_backbone_defaults(digits, fitted, tmp_path, monkeypatch):
    import dataclasses
    import functools

    from learn2hash.nn import backbones, registry

    fitted.save(tmp_path / "h")
    recorded = json.loads((tmp_path / "h" / "hasher.json").read_text())["state"]["backbone"]
    # every option is written out, including the ones left at their defaults
    assert recorded == {"name": "smallcnn", "options": {"widths": [16, 32], "convs_per_stage": 1, "dropout": 0.0}}
    info = registry._BACKBONES["smallcnn"]
    changed = dataclasses.replace(info, factory=functools.partial(backbones.SmallCNN, widths=(8, 8, 8),
                                                                  convs_per_stage=3, dropout=0.5))
    monkeypatch.setitem(registry._BACKBONES, "smallcnn", changed)
    loaded = Hasher.load(tmp_path / "h")
    assert loaded.encode(digits.query.x) == fitted.encode(digits.query.x)
