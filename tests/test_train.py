"""The shared training loop: reproducibility, checkpoints, resume, schedules, torchrun."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from learn2hash import datasets
from learn2hash.errors import CorruptFileError, Learn2HashError
from learn2hash.nn import HashHead, HashModel, create_backbone
from learn2hash.train import checkpoint as checkpoint_mod  # the module whose save_checkpoint the loop calls
from learn2hash.train import TrainConfig, lr_factor, train

HERE = Path(__file__).parent


class CountingTask:
    """Per-class random targets; counts its steps in state that a resume must restore."""

    def __init__(self, n_classes: int, bits: int):
        self.targets = torch.randint(0, 2, (n_classes, bits), generator=torch.Generator().manual_seed(7)).float()
        self.steps = 0
        self.epochs_started: list[int] = []

    def loss(self, u, batch):
        self.steps += 1
        t = self.targets[batch.labels.float().argmax(1)]
        bce = F.binary_cross_entropy_with_logits(2 * batch.logits, t)
        return bce, {"bce": bce}

    def on_epoch_start(self, epoch, model):
        self.epochs_started.append(epoch)

    def on_epoch_end(self, epoch, model):
        pass

    def extra_state(self):
        return {"steps": self.steps}

    def load_extra_state(self, state):
        self.steps = state["steps"]


@pytest.fixture(scope="module")
def digits():
    ds = datasets.load("digits", protocol="standard")
    return ds.train.x[:128], ds.train.labels[:128]


def _model(seed: int = 0, dropout: float = 0.2) -> HashModel:
    torch.manual_seed(seed)
    return HashModel(create_backbone("smallcnn", (1, 8, 8), widths=(8, 16)), HashHead(16, 12, [16], dropout))


CFG = dict(epochs=4, batch_size=32, lr=5e-3, augment="shift:1,erase", seed=5, device="cpu")


def _weights(model) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


class Killed(Exception):
    pass


def test_resume_after_kill_matches_uninterrupted_run(digits, tmp_path, monkeypatch):
    x, y = digits
    full = _model()
    full_task = CountingTask(10, 12)
    hist_full = train(full, x, y, full_task, TrainConfig(**CFG), checkpoint_dir=tmp_path / "a", progress=False)

    real_save = checkpoint_mod.save_checkpoint

    def save_then_die(path, payload):
        real_save(path, payload)
        if payload["epoch"] == 2:
            raise Killed

    monkeypatch.setattr(checkpoint_mod, "save_checkpoint", save_then_die)
    with pytest.raises(Killed):
        train(_model(), x, y, CountingTask(10, 12), TrainConfig(**CFG), checkpoint_dir=tmp_path / "b", progress=False)
    monkeypatch.setattr(checkpoint_mod, "save_checkpoint", real_save)

    # a fresh process would build a fresh (differently initialised) model and task
    resumed, task = _model(seed=99), CountingTask(10, 12)
    hist = train(resumed, x, y, task, TrainConfig(**CFG), checkpoint_dir=tmp_path / "b", resume=True, progress=False)
    assert task.epochs_started == [2, 3]
    assert task.steps == full_task.steps
    assert [h["loss"] for h in hist] == [h["loss"] for h in hist_full]
    wa, wb = _weights(full), _weights(resumed)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert np.array_equal(wa[k], wb[k]), k


def test_same_seed_same_weights_other_seed_differs(digits):
    x, y = digits
    cfg = {**CFG, "epochs": 2}
    a, b, c = _model(), _model(), _model()
    train(a, x, y, CountingTask(10, 12), TrainConfig(**cfg), progress=False)
    train(b, x, y, CountingTask(10, 12), TrainConfig(**cfg), progress=False)
    train(c, x, y, CountingTask(10, 12), TrainConfig(**{**cfg, "seed": 6}), progress=False)
    wa, wb, wc = _weights(a), _weights(b), _weights(c)
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    assert not all(np.array_equal(wa[k], wc[k]) for k in wa)


def test_training_reduces_the_loss_and_logs_history(digits):
    x, y = digits
    hist = train(_model(dropout=0.0), x, y, CountingTask(10, 12), TrainConfig(**{**CFG, "augment": "none"}),
                 progress=False)
    assert [h["epoch"] for h in hist] == [1, 2, 3, 4]
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert all(math.isclose(h["loss"], h["bce"]) for h in hist)
    assert hist[-1]["lr"] == pytest.approx(0.0)


def test_resume_refuses_another_configuration(digits, tmp_path):
    x, y = digits
    cfg = {**CFG, "epochs": 1}
    train(_model(), x, y, CountingTask(10, 12), TrainConfig(**cfg), checkpoint_dir=tmp_path, progress=False)
    with pytest.raises(Learn2HashError, match="different training configuration.*lr"):
        train(_model(), x, y, CountingTask(10, 12), TrainConfig(**{**cfg, "lr": 1e-3}), checkpoint_dir=tmp_path,
              resume=True, progress=False)
    with pytest.raises(Learn2HashError, match="different training configuration.*labels_sha256"):
        y2 = y.copy()
        y2[[0, 1]] = y2[[1, 0]]
        train(_model(), x, y2, CountingTask(10, 12), TrainConfig(**cfg), checkpoint_dir=tmp_path, resume=True,
              progress=False)
    with pytest.raises(Learn2HashError, match="different training configuration.*bits"):
        train(_model(), x, y, CountingTask(10, 12), TrainConfig(**cfg), checkpoint_dir=tmp_path, resume=True,
              progress=False, identity={"bits": 32})


def test_corrupt_checkpoint_is_a_clear_error(digits, tmp_path):
    x, y = digits
    (tmp_path / "checkpoint.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CorruptFileError, match="checkpoint"):
        train(_model(), x, y, CountingTask(10, 12), TrainConfig(**CFG), checkpoint_dir=tmp_path, resume=True,
              progress=False)


def test_lr_schedules_by_hand():
    cos = lr_factor(TrainConfig(epochs=2, schedule="cosine", warmup_epochs=0.5), steps_per_epoch=4)
    # 2 warm-up steps (1/2, 1), then a half cosine over the remaining 6 steps
    assert [cos(s) for s in range(2)] == [0.5, 1.0]
    assert cos(2) == pytest.approx(1.0)
    assert cos(5) == pytest.approx(0.5 * (1 + math.cos(math.pi * 3 / 6)))
    step = lr_factor(TrainConfig(epochs=6, schedule="step", step_epochs=2, gamma=0.5), steps_per_epoch=3)
    assert [step(s) for s in (0, 5, 6, 11, 12)] == [1.0, 1.0, 0.5, 0.5, 0.25]
    assert lr_factor(TrainConfig(schedule="none"), 5)(17) == 1.0


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(batch_size=-1), dict(lr=0.0), dict(optimizer="lbfgs"),
                                 dict(schedule="exp"), dict(augment="rotate"), dict(grad_clip=-1.0),
                                 dict(epochs=1.5)])
def test_bad_configuration_is_a_clear_error(bad):
    with pytest.raises(Learn2HashError):
        TrainConfig(**bad).validate()


def test_torchrun_two_processes_on_cpu(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(HERE / "ddp_train_digits.py"), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["group_left"] and r1["group_left"]  # no process group left to the interpreter's exit
    assert r0["digest"] == r1["digest"]  # every process ends with the same weights
    assert [h["loss"] for h in r0["history"]] == [h["loss"] for h in r1["history"]] and len(r0["history"]) == 2
    assert (tmp_path / "checkpoints" / "checkpoint.pt").exists()
    for epoch in ("0", "1"):  # each process trains on its own half of the 500 items
        a, b = set(r0["seen"][epoch]), set(r1["seen"][epoch])
        assert not a & b and len(a) == len(b) == 250 and a | b == set(range(500))


def test_eval_every_records_one_evaluation_per_n_epochs_and_reports_their_best(tmp_path, capsys):
    import json

    from learn2hash import cli

    out = tmp_path / "run"
    code = cli.main(["train", "--method", "csq", "--dataset", "digits", "--bits", "16", "--epochs", "5",
                     "--eval-every", "2", "--out", str(out), "--no-progress",
                     "--param", 'backbone_options={"widths": [8, 16]}'])
    printed = capsys.readouterr().out
    assert code == 0, printed
    history = json.loads((out / "history.json").read_text())
    history = history["history"] if isinstance(history, dict) else history
    evaluated = {r["epoch"]: r["evaluation"] for r in history if "evaluation" in r}
    assert sorted(evaluated) == [2, 4, 5]            # every 2nd epoch, and the last
    metrics = json.loads((out / "metrics.json").read_text())
    topk = metrics["topk"]
    values = {e: ev[f"map@{topk}"] for e, ev in evaluated.items()}
    best = metrics["best_of_evaluations"]
    assert best["value"] == max(values.values()) and values[best["epoch"]] == best["value"]
    assert best["evaluations"] == 3 and best["every"] == 2 and "reference code's protocol" in best["protocol"]
    # the evaluation after the last epoch is the run's own figure (same weights, same codes)
    assert values[5] == pytest.approx(metrics[f"map@{topk}"], abs=1e-12)
    assert "evaluations (every 2 epochs)" in printed and "reference code's protocol" in printed
    # evaluating along the way leaves the training as it was: the same codes as a run without it
    assert cli.main(["train", "--method", "csq", "--dataset", "digits", "--bits", "16", "--epochs", "5",
                     "--out", str(tmp_path / "plain"), "--no-progress",
                     "--param", 'backbone_options={"widths": [8, 16]}']) == 0
    capsys.readouterr()
    for split in ("query", "database"):
        assert (out / "codes" / f"{split}.npy").read_bytes() == (tmp_path / "plain" / "codes" / f"{split}.npy").read_bytes()
    assert cli.main(["train", "--method", "csq", "--dataset", "digits", "--eval-every", "-1",
                     "--out", str(tmp_path / "bad")]) == 2
