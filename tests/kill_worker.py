"""A zygote for tests/test_kill_loop.py: imports once, then forks one saving child per request.

Usage: ``python kill_worker.py MODE FOLDER``. For every line read on stdin it forks a child that
prints ``pid <pid>``, then saves in a loop, printing ``s`` after each save, until it is killed
(``kill -9`` by the test). The
zygote itself never computes with torch before forking (so the children's thread pools are
fresh), and children are reaped automatically (SIGCHLD ignored), so a killed child's pid goes
away as soon as it is dead.

Modes: ``codes`` (Codes.save of two versions, alternately), ``hasher`` (Hasher.save of two ITQ
hashers, alternately), ``train`` (train_run of a small DHN run folder, resumed then overwritten,
in a loop).
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import numpy as np


def codes_versions():
    from learn2hash.codes import Codes

    rng = np.random.default_rng(0)
    return Codes.from_signs(rng.normal(size=(400, 13))), Codes.from_signs(rng.normal(size=(250, 13)))


def hasher_data():
    rng = np.random.default_rng(1)
    return rng.normal(size=(300, 24)), rng.normal(size=(20, 24))


def hasher_versions():
    from learn2hash.methods import create

    x, _ = hasher_data()
    return create("itq", bits=12, seed=0, n_iter=5).fit(x), create("itq", bits=12, seed=1, n_iter=5).fit(x)


TRAIN = dict(method="dhn", dataset="digits", bits=8, seed=0,
             params={"epochs": 3, "batch_size": 100, "backbone_options": {"widths": [4, 8]}, "device": "cpu"})


def _say(line: str) -> None:
    """One line on stdout in one write: a kill never leaves half a line for the next child's to join
    (print writes the text and its newline separately when Python runs unbuffered)."""
    os.write(1, f"{line}\n".encode())


def _loop(mode: str, folder: Path, versions) -> None:
    """Save forever; print ``s`` after every completed save (the test times its kill from these)."""
    from learn2hash.runs import train_run

    _say(f"pid {os.getpid()}")
    i = 0
    while True:
        if mode == "codes":
            versions[i % 2].save(folder / "c.npy")
        elif mode == "hasher":
            versions[i % 2].save(folder / "h")
        else:
            train_run(out=folder / "R", resume=True, overwrite=bool(i % 2), progress=False, **TRAIN)
        _say("s")
        i += 1


def main(mode: str, folder: Path) -> None:
    if mode == "train":
        import torch

        import learn2hash.methods.dhn  # noqa: F401  (imported before forking, not run)
        import learn2hash.runs  # noqa: F401
        from learn2hash import datasets

        from learn2hash.runs import train_run

        torch.set_num_threads(1)  # single-threaded: no thread pool exists when the children are forked
        datasets.load("digits", protocol="standard")
        # one whole run in a scratch folder, so that the children do not pay first-use costs
        train_run(out=folder / "warm-up", progress=False, **TRAIN)
        versions = None
    else:
        versions = codes_versions() if mode == "codes" else hasher_versions()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    print("ready", flush=True)
    for _ in sys.stdin:
        pid = os.fork()
        if pid == 0:
            try:
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _loop(mode, folder, versions)
            finally:
                os._exit(1)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]))
