"""DHN, HashNet and DCH: losses against hand-computed values, short fits, persistence, refusals."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from learn2hash.datasets import Split, load  # noqa: E402
from learn2hash.errors import Learn2HashError  # noqa: E402
from learn2hash.methods import FitContext, Hasher, create  # noqa: E402
from learn2hash.methods.deep import TrainingTask  # noqa: E402
from learn2hash.methods.dch import dch_loss, normalized_hamming  # noqa: E402
from learn2hash.methods.dhn import DHN, MemoryBank, dhn_loss  # noqa: E402
from learn2hash.methods.hashnet import HashNet, continuation_beta, hashnet_loss  # noqa: E402
from learn2hash.methods.pairwise import balanced_weights, label_similarity, log_cosh, off_diagonal  # noqa: E402
from learn2hash.train import Batch  # noqa: E402

# a tiny batch: three items, K = 3; item 0 and 1 share class 0, item 2 is alone
U = [[0.5, -0.2, 0.9], [-0.3, 0.4, 0.8], [0.7, 0.1, -0.6]]
LABELS = [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
SIM = {(0, 1): 1, (1, 0): 1, (0, 2): 0, (2, 0): 0, (1, 2): 0, (2, 1): 0}


def dot(a, b):
    return sum(x * y for x, y in zip(a, b))


def tensors():
    u = torch.tensor(U, dtype=torch.float64)
    y = torch.tensor(LABELS, dtype=torch.bool)
    return u, y, label_similarity(y, y), off_diagonal(3)


# --------------------------------------------------------------------------- shared pieces
def test_similarity_mask_and_weights():
    u, y, s, mask = tensors()
    assert s.tolist() == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert mask.tolist() == [[False, True, True], [True, False, True], [True, True, False]]
    w = balanced_weights(s, mask)
    # 6 ordered pairs: 2 similar (weight 6/2 = 3), 4 dissimilar (weight 6/4 = 1.5), diagonal 0
    assert w.tolist() == [[0, 3, 1.5], [3, 0, 1.5], [1.5, 1.5, 0]]
    # nothing to balance when every pair is similar
    ones = torch.ones(3, 3)
    assert balanced_weights(ones, mask).tolist() == mask.float().tolist()


def test_log_cosh_is_stable_and_exact():
    x = torch.tensor([-800.0, -3.0, -0.5, 0.0, 0.25, 2.0, 800.0], dtype=torch.float64)
    got = log_cosh(x)
    assert torch.isfinite(got).all()
    for xi, gi in zip(x.tolist(), got.tolist()):
        want = math.log(math.cosh(xi)) if abs(xi) < 300 else abs(xi) - math.log(2)
        assert gi == pytest.approx(want, rel=1e-12, abs=1e-12)


# --------------------------------------------------------------------------- DHN
def test_dhn_loss_matches_hand_computation():
    u, y, s, mask = tensors()
    lam = 0.3
    pairs = []
    for (i, j), sij in SIM.items():
        theta = 0.5 * dot(U[i], U[j])
        pairs.append(math.log(1 + math.exp(theta)) - sij * theta)
    pair = sum(pairs) / len(pairs)
    quant = sum(math.log(math.cosh(abs(v) - 1)) for row in U for v in row) / 9
    total, p, q = dhn_loss(u, u, s, mask, lam)
    assert p.item() == pytest.approx(pair, rel=1e-12)
    assert q.item() == pytest.approx(quant, rel=1e-12)
    assert total.item() == pytest.approx(pair + lam * quant, rel=1e-12)


def test_dhn_loss_is_stable_for_large_inner_products():
    k = 4096
    u = torch.cat([torch.ones(1, k), -torch.ones(1, k)]).double().requires_grad_()
    s = torch.tensor([[1.0, 1.0], [1.0, 1.0]])  # a similar pair at theta = -2048
    total, pair, _ = dhn_loss(u, u, s, off_diagonal(2), 0.1)
    assert pair.item() == pytest.approx(2048.0)  # log(1 + e^-2048) + 2048
    total.backward()
    assert torch.isfinite(u.grad).all()


def test_dhn_memory_bank_pairs_match_hand_computation():
    """The batch (items 0 and 2) against the bank: seen items 0, 1, 2, 3 (4 unseen); no self pairs."""
    h = DHN(bits=3, lam=0.5, memory_bank=True)
    bank_codes = [[0.1, 0.2, -0.3], [-0.5, 0.5, 0.5], [0.9, -0.9, 0.1], [0.3, 0.3, 0.3], [0.0, 0.0, 0.0]]
    bank_labels = [[1, 0], [1, 1], [0, 1], [0, 1], [1, 0]]
    bank = MemoryBank(5, 3, 2, torch.device("cpu"))
    bank.update(torch.arange(4), torch.tensor(bank_codes[:4]), torch.tensor(bank_labels[:4], dtype=torch.bool))
    u_batch = [[0.4, -0.1, 0.2], [-0.6, 0.7, 0.3]]
    batch_labels = [[1, 0], [0, 1]]
    index = [0, 2]
    batch = Batch(x=torch.zeros(2, 1), labels=torch.tensor(batch_labels, dtype=torch.bool),
                  index=torch.tensor(index), epoch=0, step=0)
    split = Split(x=np.zeros((5, 1)), labels=np.array(bank_labels, bool))
    task = TrainingTask(h, split, FitContext(), model=None, train_split=split, scratch=SimpleNamespace(bank=bank))
    total, parts = h.loss(task, torch.tensor(u_batch, dtype=torch.float32), batch)
    # by hand: the bank now holds the batch's codes at rows 0 and 2
    codes = [list(r) for r in bank_codes]
    codes[0], codes[2] = u_batch[0], u_batch[1]
    terms = []
    for bi, i in enumerate(index):
        for j in range(4):  # seen items
            if j == i:
                continue
            sij = 1.0 if any(a and b for a, b in zip(batch_labels[bi], bank_labels[j])) else 0.0
            theta = 0.5 * dot(u_batch[bi], codes[j])
            terms.append(math.log(1 + math.exp(theta)) - sij * theta)
    pair = sum(terms) / len(terms)
    quant = sum(math.log(math.cosh(abs(v) - 1)) for row in u_batch for v in row) / 6
    assert parts["pairwise"] == pytest.approx(pair, rel=1e-5)
    assert total.item() == pytest.approx(pair + 0.5 * quant, rel=1e-5)
    assert bank.seen.tolist() == [True, True, True, True, False]
    np.testing.assert_allclose(bank.codes[2].numpy(), u_batch[1], rtol=1e-6)


# --------------------------------------------------------------------------- HashNet
def test_hashnet_loss_matches_hand_computation():
    u, y, s, mask = tensors()
    alpha = 10 / 3
    n_sim = sum(SIM.values())
    n_all = len(SIM)
    total = 0.0
    for (i, j), sij in SIM.items():
        theta = alpha * dot(U[i], U[j])
        w = n_all / n_sim if sij else n_all / (n_all - n_sim)
        total += w * (math.log(1 + math.exp(theta)) - sij * theta)
    assert hashnet_loss(u, u, s, mask, alpha).item() == pytest.approx(total / n_all, rel=1e-12)


def test_hashnet_continuation_in_loss():
    assert continuation_beta(0) == 1.0
    assert continuation_beta(200) == pytest.approx(math.sqrt(2.0))
    h = HashNet(bits=3, gamma=0.005)  # a number: per step, as given
    logits = torch.tensor(U, dtype=torch.float64) * 2
    step = 600
    batch = Batch(x=torch.zeros(3, 1), labels=torch.tensor(LABELS, dtype=torch.bool), index=torch.arange(3),
                  epoch=0, step=step, logits=logits)
    split = Split(x=np.zeros((3, 1)), labels=np.array(LABELS, bool))
    task = TrainingTask(h, split, FitContext(), model=None, train_split=split)  # HashNet keeps no per-fit state
    loss, parts = h.loss(task, torch.tanh(logits), batch)
    beta = math.sqrt(1 + 0.005 * step)
    ub = [[math.tanh(beta * 2 * v) for v in row] for row in U]
    n_sim, n_all, want = 2, 6, 0.0
    for (i, j), sij in SIM.items():
        theta = (10 / 3) * dot(ub[i], ub[j])
        w = n_all / n_sim if sij else n_all / (n_all - n_sim)
        want += w * (math.log(1 + math.exp(theta)) - sij * theta)
    assert parts["beta"] == pytest.approx(beta)
    assert loss.item() == pytest.approx(want / n_all, rel=1e-12)


def test_hashnet_auto_gamma_ends_the_continuation_where_the_recipe_does(digits):
    from learn2hash.methods.hashnet import RECIPE_STEPS

    assert RECIPE_STEPS == 60 * 79  # 60 epochs of 5,000 items in batches of 64 (78 full, one of 8)
    five_thousand = Split(x=np.zeros((5000, 1)), labels=np.eye(10, dtype=bool)[np.arange(5000) % 10])
    h = HashNet()
    assert h.gamma == "auto" and h.resolved_gamma(five_thousand) == 0.005  # exactly the authors' value
    assert h.resolved_params(five_thousand)["gamma"] == 0.005
    # 500 digits: 8 batches an epoch, 480 steps; beta at the last step as the recipe's at its last
    gamma = h.resolved_gamma(digits.train)
    assert gamma == pytest.approx(0.005 * 4740 / 480, rel=1e-12)
    assert continuation_beta(480, gamma) == pytest.approx(continuation_beta(4740, 0.005), rel=1e-12)
    assert HashNet(epochs=6).resolved_gamma(digits.train) == pytest.approx(0.005 * 4740 / 48, rel=1e-12)
    assert HashNet(gamma=0.01).resolved_gamma(digits.train) == 0.01 and "gamma" not in HashNet(gamma=0.01).resolved_params(digits.train)
    # a fit uses it: 2 epochs of 2 batches of 250, the last epoch's logged beta is the mean over its steps 2 and 3
    h = HashNet(bits=16, epochs=2, batch_size=250, backbone_options={"widths": [8], "convs_per_stage": 1}, augment="none")
    h.fit(digits.train)
    g = 0.005 * 4740 / 4
    assert h.history_[-1]["beta"] == pytest.approx((continuation_beta(2, g) + continuation_beta(3, g)) / 2, rel=1e-6)
    with pytest.raises(Learn2HashError, match="gamma"):
        HashNet(gamma="fast").fit(digits.train)


# --------------------------------------------------------------------------- DCH
def test_dch_loss_matches_hand_computation():
    u, y, s, mask = tensors()
    gamma, lam, k = 20.0, 0.2, 3

    def norm(a):
        return math.sqrt(dot(a, a))

    total = 0.0
    for (i, j), sij in SIM.items():
        cos = dot(U[i], U[j]) / (norm(U[i]) * norm(U[j]))
        assert cos < 0.99  # the cap does not apply here
        d = k / 2 * (1 - cos)
        w = 6 / 2 if sij else 6 / 4
        total += w * (math.log(1 + d / gamma) if sij else math.log(1 + gamma / d))
    pair = total / 6
    quant = 0.0
    for row in U:
        a = [abs(v) for v in row]
        dq = k / 2 * (1 - sum(a) / (norm(a) * math.sqrt(k)))
        quant += math.log(1 + dq / gamma)
    quant /= 3
    t, p, q = dch_loss(u, u, s, mask, gamma, lam)
    assert p.item() == pytest.approx(pair, rel=1e-12)
    assert q.item() == pytest.approx(quant, rel=1e-12)
    assert t.item() == pytest.approx(pair + lam * quant, rel=1e-12)


def test_normalized_hamming_equals_hamming_on_sign_codes():
    rng = np.random.default_rng(0)
    a = np.where(rng.standard_normal((5, 16)) >= 0, 1.0, -1.0)
    b = np.where(rng.standard_normal((4, 16)) >= 0, 1.0, -1.0)
    d = normalized_hamming(torch.tensor(a), torch.tensor(b)).numpy()
    hamming = (a[:, None, :] != b[None, :, :]).sum(-1)
    np.testing.assert_allclose(d, hamming, atol=1e-12)


def test_dch_loss_finite_for_identical_dissimilar_codes():
    u = torch.ones(2, 8, dtype=torch.float64, requires_grad=True)
    s = torch.zeros(2, 2)
    total, pair, _ = dch_loss(u, u, s, off_diagonal(2), 20.0, 0.1)
    assert pair.item() == pytest.approx(math.log(1 + 20 / (8 / 2 * 0.01)))  # cos capped at 0.99
    total.backward()
    assert torch.isfinite(u.grad).all()


# --------------------------------------------------------------------------- methods end to end
# long enough for the bits to lose the bias of the initial network (all-positive pooled features)
FAST = {"epochs": 8, "batch_size": 50, "lr": 1e-3, "optimizer": "adam", "weight_decay": 0.0, "warmup_epochs": 0.0,
        "augment": "none", "backbone_options": {"widths": [16, 32]}, "device": "cpu"}


@pytest.fixture(scope="module")
def digits():
    return load("digits", protocol="standard")


@pytest.fixture(scope="module")
def fitted(digits):
    torch.set_num_threads(1)
    specs = {"dhn": {}, "dhn-bank": {"memory_bank": True}, "hashnet": {}, "dch": {}}
    out = {}
    for key, params in specs.items():
        out[key] = create(key.split("-")[0], bits=16, **FAST, **params).fit(digits.train)
    return out


@pytest.mark.parametrize("key", ["dhn", "dhn-bank", "hashnet", "dch"])
def test_short_fit_codes_shape_balance_and_learning(key, fitted, digits):
    h = fitted[key]
    codes = h.encode(digits.database.x)
    assert codes.bits == 16 and len(codes) == len(digits.database)
    ones = codes.to_bits().mean(axis=0)
    assert 0.35 < ones.mean() < 0.65, ones
    assert np.all((ones > 0.1) & (ones < 0.9)), ones  # no bit (nearly) constant over the database
    losses = [r["loss"] for r in h.history_]
    assert len(losses) == 8 and losses[-1] < losses[0], losses
    # classes are far better separated than at random: same-class codes are closer on average
    bits = codes.to_bits().astype(np.int64)[:300]
    y = digits.database.labels[:300].argmax(1)
    d = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    same = y[:, None] == y[None, :]
    off = ~np.eye(len(y), dtype=bool)
    assert d[same & off].mean() < d[~same].mean() - 1.5


@pytest.mark.parametrize("key", ["dhn", "dhn-bank", "hashnet", "dch"])
def test_save_load_identical_codes(key, fitted, digits, tmp_path):
    h = fitted[key]
    h.save(tmp_path / "h")
    loaded = Hasher.load(tmp_path / "h")
    assert type(loaded) is type(h)
    assert loaded.get_params() == json.loads(json.dumps(h.get_params()))  # params travel as JSON
    assert loaded.encode(digits.query.x) == h.encode(digits.query.x)


@pytest.mark.parametrize("key", ["dhn", "hashnet", "dch"])
def test_refuses_other_inputs_and_bit_lengths(key, fitted, digits, tmp_path):
    h = fitted[key]
    with pytest.raises(Learn2HashError, match="shape"):
        h.encode(np.zeros((2, 1, 9, 9), np.uint8))
    h.save(tmp_path / "h")
    meta_path = tmp_path / "h" / "hasher.json"
    meta = json.loads(meta_path.read_text())
    meta["params"]["bits"] = 32  # weights of a 16-bit network under a 32-bit configuration
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(Learn2HashError, match="32 bits"):
        Hasher.load(tmp_path / "h")


@pytest.mark.parametrize("method,params,match", [
    ("dhn", {"lam": -1.0}, "lam"), ("dhn", {"memory_bank": "yes"}, "memory_bank"),
    ("hashnet", {"alpha": 0.0}, "alpha"), ("hashnet", {"gamma": float("nan")}, "gamma"),
    ("dch", {"gamma": 0.0}, "gamma"), ("dch", {"lam": -0.5}, "lam"),
])
def test_bad_hyper_parameters(method, params, match, digits):
    with pytest.raises(Learn2HashError, match=match):
        create(method, bits=8, **{**FAST, "epochs": 1}, **params).fit(digits.train.subset(np.arange(20)))


def test_dhn_memory_bank_survives_resume(digits, tmp_path, monkeypatch):
    """Interrupted after epoch 1 and resumed, DHN with its bank ends with the same weights as a straight run."""
    torch.set_num_threads(1)
    params = {**FAST, "epochs": 3, "memory_bank": True}
    straight = create("dhn", bits=8, **params).fit(digits.train)

    original = DHN.on_epoch_start

    def stop(self, task, epoch):
        if epoch == 1:
            raise KeyboardInterrupt
        original(self, task, epoch)

    monkeypatch.setattr(DHN, "on_epoch_start", stop)
    with pytest.raises(KeyboardInterrupt):
        create("dhn", bits=8, **params).fit(digits.train, checkpoint_dir=tmp_path)
    monkeypatch.undo()
    resumed = create("dhn", bits=8, **params).fit(digits.train, checkpoint_dir=tmp_path, resume=True)
    for (name, a), (_, b) in zip(straight.model_.state_dict().items(), resumed.model_.state_dict().items()):
        assert torch.equal(a, b), name
    assert [r["epoch"] for r in resumed.history_] == [1, 2, 3]


# --------------------------------------------------------------------------- a standardized start
def _preactivations(model, xb):
    model.train()
    with torch.no_grad():
        return model.head(model.backbone(xb))


def test_standardize_head_gives_every_bit_mean_0_and_std_1_and_touches_nothing_else(digits):
    from learn2hash.nn import standardize_head
    from learn2hash.nn.inputs import as_input_tensor

    torch.manual_seed(0)
    model = create("dhn", bits=64).build_model((1, 8, 8))
    xb = as_input_tensor(torch.from_numpy(np.asarray(digits.train.x[:256])), torch.device("cpu"), "input")
    before = _preactivations(model, xb)
    constant_before = int(((before > 0).all(0) | (before <= 0).all(0)).sum())
    assert float(before.std(0).mean()) < 0.2 and constant_before >= 8  # PyTorch's init: a shared code
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    rng = torch.get_rng_state()
    model.eval()
    standardize_head(model, xb)
    assert not model.training  # the mode is restored
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())  # BatchNorm statistics kept
    assert all(torch.equal(v, backbone[k]) for k, v in model.backbone.state_dict().items())
    after = _preactivations(model, xb)
    assert torch.allclose(after.mean(0), torch.zeros(64), atol=1e-4)
    assert torch.allclose(after.std(0), torch.ones(64), rtol=1e-4)
    # so every bit starts balanced over the items: none is the same for all of them
    assert int(((after > 0).all(0) | (after <= 0).all(0)).sum()) == 0
    assert float(torch.sign(after).mean(0).abs().max()) < 0.3


def test_dhn_defaults_keep_the_digit_classes_apart(digits):
    """DHN's likelihood from PyTorch's initial hash layer leaves several digit classes sharing one
    code; its default standardized start (head_init) keeps all ten apart."""
    def class_codes(head_init):
        h = create("dhn", bits=64, head_init=head_init, epochs=20).fit(digits.train)  # it forms within 3
        assert h.head_init == head_init
        signs = h.encode(digits.train.x).to_signs()
        y = digits.train.labels.argmax(1)
        return np.stack([np.sign(signs[y == c].mean(0)) for c in range(10)])

    apart = class_codes("standardized")
    assert len({tuple(r) for r in apart}) == 10
    assert create("dhn").head_init == "standardized" and create("csq").head_init == "standardized"
    assert create("hashnet").head_init == "standardized" and create("dch").head_init == "default"
    assert create("eddh").head_init == "standardized"
    merged = class_codes("default")
    assert len({tuple(r) for r in merged}) < 10
    with pytest.raises(Learn2HashError, match="head_init"):
        create("dhn", head_init="random").fit(digits.train)
