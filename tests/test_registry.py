"""The lazy method registry: listing methods and using the shallow ones never imports torch."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from learn2hash.errors import Learn2HashError
from learn2hash.methods import available, create, method_class, register
from learn2hash.methods.base import Hasher

SRC = str(Path(__file__).resolve().parents[1] / "src")

# A meta-path finder that makes torch (and what needs it) unimportable, installed before anything.
BLOCK_TORCH = textwrap.dedent("""
    import sys
    class _NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "torchvision", "timm", "open_clip"):
                raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)", name=name)
            return None
    sys.meta_path.insert(0, _NoTorch())
""")


def run_without_torch(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=SRC, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-c", BLOCK_TORCH + textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)


def test_the_blocker_really_blocks_torch():
    r = run_without_torch("import torch")
    assert r.returncode != 0 and "blocked by the test" in r.stderr


def test_shallow_methods_and_listing_work_without_torch():
    r = run_without_torch("""
        import numpy as np
        import learn2hash.methods as m
        from learn2hash.cli import main
        h = m.create('itq', bits=16)
        x = np.random.default_rng(0).standard_normal((200, 32))
        for name in ('lsh', 'itq', 'sdh'):
            h = m.create(name, bits=16).fit(x, np.arange(200) % 4)
            assert h.encode(x).bits == 16
        assert {'csq', 'dhn', 'itq', 'lsh', 'lemon', 'cca-itq'} <= set(m.available())
        assert main(['methods']) == 0
        try:
            m.create('csq', bits=16)
        except Exception as exc:  # a clear error, not a crash
            print('ERR', type(exc).__name__, exc)
        assert not any(k.split('.')[0] == 'torch' for k in sys.modules), sorted(k for k in sys.modules if 'torch' in k)
        print('OK')
    """)
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout and "csq" in r.stdout and "itq" in r.stdout  # the methods table was printed
    assert "ERR Learn2HashError method 'csq' needs PyTorch" in r.stdout


def test_listing_matches_the_classes():
    """What the registry declares for the listing is what the classes say (the one source is checked)."""
    for name, info in available().items():
        klass = method_class(name)
        assert klass.name == name
        assert f"{klass.__module__}:{klass.__qualname__}" == info.target
        assert klass.input_kind == info.input_kind and bool(klass.supervised) == info.supervised
        assert (klass.__doc__ or "").strip().splitlines()[0] == info.summary


def test_unknown_method_is_a_clear_error():
    with pytest.raises(Learn2HashError, match="unknown method 'itqq'.*did you mean itq"):
        create("itqq", bits=8)


def test_an_external_method_registers_itself():
    @register
    class Echo(Hasher):
        """Echo: a test method."""

        name = "echo-test"

        def _fit(self, split, context):
            pass

        def _encode(self, x):
            raise NotImplementedError

    try:
        assert available()["echo-test"].summary == "Echo: a test method."
        assert method_class("echo-test") is Echo and isinstance(create("echo-test", bits=4), Echo)
        with pytest.raises(RuntimeError, match="registered twice"):
            register(type("LSH2", (Hasher,), {"name": "lsh", "_fit": None, "_encode": None}))
    finally:
        from learn2hash.methods import registry

        registry._INFO.pop("echo-test")
        registry._CLASSES.pop("echo-test")
