"""The training package's structure: one declaration of each training setting (type, default,
constraint, runtime or not) that the deep hashers' signatures and checks are made from, one test of
the main process, one list of bad-image policies, and names that load without torch where they can."""

from __future__ import annotations

import dataclasses
import inspect
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from learn2hash.errors import Learn2HashError

SRC = Path(__file__).resolve().parents[1] / "src"
DEEP = ("csq", "dch", "dhn", "eddh", "hashnet", "orthohash")


def _python(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_run_folders_and_the_rank_test_import_no_torch():
    code = ("import sys, learn2hash.runs, learn2hash.stream, learn2hash.train.distributed as d; "
            "print('torch' in sys.modules, d.is_main_process())")
    assert _python(code) == "False True"


def test_one_is_main_process_follows_the_rank_torchrun_sets(monkeypatch):
    from learn2hash.runs import folder
    from learn2hash.train import distributed, is_main_process

    assert folder.is_main_process is distributed.is_main_process is is_main_process
    monkeypatch.delenv("RANK", raising=False)
    assert is_main_process()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not is_main_process() and not folder.is_main_process()
    monkeypatch.setenv("RANK", "0")
    assert is_main_process()


def test_every_exported_name_imports_from_the_package():
    import learn2hash.train as T

    assert hasattr(T, "__path__")  # a package
    for name in T.__all__:
        assert getattr(T, name) is getattr(sys.modules[T.__name__ + "." + T._WHERE[name][0]], name), name
    assert set(T.__all__) <= set(dir(T))
    with pytest.raises(AttributeError):
        T.not_a_name  # noqa: B018
    with pytest.raises(ImportError):
        exec("from learn2hash.train import _as_batch")  # the identity collate is data._collate


def test_runtime_settings_are_declared_once():
    from learn2hash.methods import method_class
    from learn2hash.train import RUNTIME_SETTINGS, TrainConfig

    declared = [f.name for f in dataclasses.fields(TrainConfig) if f.metadata["runtime"]]
    assert RUNTIME_SETTINGS == tuple(declared) == ("device", "workers", "amp", "on_bad_image")
    for name in DEEP:
        assert set(method_class(name).runtime_params) == set(RUNTIME_SETTINGS) | {"encode_batch_size"}, name


@pytest.mark.parametrize("name", DEEP)
def test_deep_signatures_list_the_training_fields_with_their_constraints(name):
    """Each training setting of a deep hasher is a TrainConfig field: the signature shows it with
    the field's annotation and the recipe's default (or the method's), and its constraint is the field's."""
    from learn2hash.methods import method_class
    from learn2hash.methods.deep import RECIPE
    from learn2hash.train import TrainConfig, constraints

    klass = method_class(name)
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    sig = inspect.signature(klass).parameters
    declared = klass.parameter_constraints()
    for setting, default in RECIPE.items():
        p = sig[setting]
        assert p.kind is p.KEYWORD_ONLY and p.annotation == fields[setting].type, setting
        assert p.default == klass.shared_defaults.get(setting, default), setting
        if fields[setting].metadata["constraints"]:
            assert declared[setting] is fields[setting].metadata["constraints"], setting
    assert set(constraints(RECIPE)) <= set(declared)
    # what the hasher holds is what the loop runs
    h = klass(epochs=3, lr=0.01, workers=0, device="cpu")
    config = h.train_config()
    assert (config.epochs, config.lr, config.workers, config.device, config.seed) == (3, 0.01, 0, "cpu", 0)
    assert {k: getattr(config, k) for k in RECIPE if k != "augment"} == \
        {k: v for k, v in h.get_params().items() if k in RECIPE and k != "augment"}


@pytest.mark.parametrize("setting,bad,expected", [
    ("epochs", 0, "an integer >= 1"), ("batch_size", 2.5, "an integer >= 1"), ("lr", 0.0, "a finite number > 0"),
    ("weight_decay", -1e-4, "a finite number >= 0"), ("optimizer", "adagrad", "one of 'adam', 'adamw', 'sgd'"),
    ("workers", -1, "None or an integer >= 0"), ("amp", "fp8", "one of 'auto', 'off', 'bf16', 'fp16'"),
    ("grad_clip", 0.0, "None or a finite number > 0"), ("on_bad_image", "blank", "one of 'error', 'skip', got"),
    ("warmup_epochs", float("nan"), "a finite number >= 0"),
])
def test_a_bad_training_setting_is_the_same_error_for_the_loop_and_the_hasher(setting, bad, expected):
    from learn2hash.methods import create
    from learn2hash.train import TrainConfig

    with pytest.raises(Learn2HashError, match=rf"^training: parameter {setting} must be {expected}"):
        TrainConfig(**{setting: bad}).validate()
    h = create("csq", bits=8, device="cpu", **{setting: bad})
    with pytest.raises(Learn2HashError, match=rf"^csq: parameter {setting} must be {expected}"):
        h.fit(np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32), np.arange(20) % 2)


def test_bad_image_policies_are_one_list_checked_by_the_dataset(tmp_path):
    from PIL import Image

    from learn2hash.datasets.files import LazyImages
    from learn2hash.train import BAD_IMAGE_POLICIES, TRAINING_BAD_IMAGE_POLICIES, ItemDataset

    assert BAD_IMAGE_POLICIES == ("error", "skip", "blank")
    assert set(TRAINING_BAD_IMAGE_POLICIES) < set(BAD_IMAGE_POLICIES)
    files = []
    for i in range(3):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((4, 4, 3), 40 * (i + 1), np.uint8)).save(files[-1])
    files[1].write_bytes(b"not an image")
    x = LazyImages(files, (4, 4), 3, "t")
    keys = [(0, 0), (0, 1), (0, 2)]
    skip = ItemDataset(x, on_bad_image="skip").__getitems__(keys)
    assert skip["index"].tolist() == [0, 2] and [s[0] for s in skip["skipped"]] == [1]
    blank = ItemDataset(x, on_bad_image="blank").__getitems__(keys)
    assert blank["index"].tolist() == [0, 1, 2] and [s[0] for s in blank["skipped"]] == [1]
    assert int(blank["x"][1].max()) == 0 and int(blank["x"][0].min()) == 40 and int(blank["x"][2].min()) == 120
    error = ItemDataset(x, on_bad_image="error").__getitems__(keys)
    assert error["x"] is None and error["error"] is not None and "1.png" in error["error"][1]
    with pytest.raises(Learn2HashError, match=r"on_bad_image must be one of 'error', 'skip', 'blank', got 'ignore'"):
        ItemDataset(x, on_bad_image="ignore")
