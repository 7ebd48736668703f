"""`kill -9` at random moments of Codes.save, Hasher.save and training: never an unreadable artifact.

A zygote process (tests/kill_worker.py) imports once and forks a child that saves in a loop; the
test kills the child with SIGKILL after a random delay, then reads what is on disk. After each of
at least 30 kills every artifact must load, and hold the old or the new version (issue 18, 4).
"""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

import kill_worker  # noqa: E402

KILLS = 30


class Zygote:
    def __init__(self, mode: str, folder: Path):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
        self.proc = subprocess.Popen([sys.executable, str(HERE / "kill_worker.py"), mode, str(folder)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        line = self.proc.stdout.readline()
        assert line.strip() == "ready", line

    def kill_child(self, rng: random.Random, max_saves: int = 2, first: float = 0.05) -> int:
        """Fork a saving child, let it complete 0..max_saves saves, kill it at a random point of the next.

        The point is uniform over the duration of the child's last save (``first`` before any);
        returns the number of saves the child completed, as far as the test saw.
        """
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        while "pid " not in line:  # what the previous child printed before it died
            assert line, "the zygote exited"
            line = self.proc.stdout.readline()
        pid = int(line.split("pid ", 1)[1])
        wanted, interval = rng.randint(0, max_saves), first
        t = time.monotonic()
        for _ in range(wanted):
            assert self.proc.stdout.readline().strip() == "s"
            now = time.monotonic()
            interval, t = now - t, now
        time.sleep(rng.uniform(0.0, interval))
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # reaped by the zygote as soon as it is dead
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return wanted
            time.sleep(0.001)
        raise AssertionError(f"child {pid} did not die")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture
def zygote(tmp_path):
    made = []

    def start(mode):
        z = Zygote(mode, tmp_path)
        made.append(z)
        return z

    yield start
    for z in made:
        if z.proc.poll() is None:
            z.proc.kill()
            z.proc.wait()


@pytest.mark.slow
def test_kill_during_codes_save(tmp_path, zygote):
    from learn2hash.codes import Codes

    a, b = kill_worker.codes_versions()
    a.save(tmp_path / "c.npy")
    z = zygote("codes")
    rng = random.Random(0)
    seen = {"a": 0, "b": 0}
    for _ in range(KILLS):
        z.kill_child(rng)
        loaded = Codes.load(tmp_path / "c.npy")  # raises on an unreadable pair
        assert loaded in (a, b)
        seen["a" if loaded == a else "b"] += 1
        assert Codes(np.load(tmp_path / "c.npy"), 13) in (a, b)
    z.close()
    assert seen["a"] and seen["b"]  # the kills landed at different points of the loop
    a.save(tmp_path / "c.npy")  # what the kills left is collected by the next save
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert not leftovers and len(list(tmp_path.glob(".c.npy.*.npy"))) <= 2


@pytest.mark.slow
def test_kill_during_hasher_save(tmp_path, zygote):
    from learn2hash.methods import Hasher

    a, b = kill_worker.hasher_versions()
    _, probe = kill_worker.hasher_data()
    ca, cb = a.encode(probe), b.encode(probe)
    assert ca != cb
    a.save(tmp_path / "h")
    z = zygote("hasher")
    rng = random.Random(1)
    seen = {"a": 0, "b": 0}
    for _ in range(KILLS):
        z.kill_child(rng)
        codes = Hasher.load(tmp_path / "h").encode(probe)
        assert codes in (ca, cb)
        seen["a" if codes == ca else "b"] += 1
    z.close()
    assert seen["a"] and seen["b"]
    a.save(tmp_path / "h")
    names = [p.name for p in (tmp_path / "h").iterdir()]
    assert not [n for n in names if n.endswith(".tmp")] and len([n for n in names if n.endswith(".npy")]) <= 6


def _check_run_folder(folder: Path) -> list[str]:
    """Load every artifact present in a run folder; return the names found (raises when one is unreadable)."""
    from learn2hash.codes import Codes
    from learn2hash.methods import Hasher
    from learn2hash.runs import Run
    from learn2hash.train import load_checkpoint

    found = []
    if not (folder / "config.json").exists():
        return found
    run = Run.open(folder)
    found.append("config")
    if (folder / "checkpoints" / "checkpoint.pt").exists():
        load_checkpoint(folder / "checkpoints" / "checkpoint.pt")
        found.append("checkpoint")
    if (folder / "hasher" / "hasher.json").exists():
        Hasher.load(folder / "hasher")
        found.append("hasher")
    for split in ("query", "database"):
        if Codes.exists(run.codes_path(split)):
            assert Codes.load(run.codes_path(split)).bits == run.bits
            found.append(f"codes/{split}")
    if (folder / "metrics.json").exists():
        run.metrics()
        found.append("metrics")
    if (folder / "history.json").exists():
        run.history()
        found.append("history")
    return found


@pytest.mark.slow
def test_kill_during_training(tmp_path, zygote):
    from learn2hash.runs import train_run

    z = zygote("train")
    rng = random.Random(2)
    found: dict[str, int] = {}
    for _ in range(KILLS):
        z.kill_child(rng, max_saves=1, first=0.8)
        for name in _check_run_folder(tmp_path / "R"):
            found[name] = found.get(name, 0) + 1
    z.close()
    assert found.get("checkpoint") and found.get("hasher") and found.get("metrics"), found
    run = train_run(out=tmp_path / "R", resume=True, progress=False, **kill_worker.TRAIN)  # finishes cleanly
    assert len(run.history()) == 3 and "map@100" in run.metrics()
    assert set(_check_run_folder(tmp_path / "R")) >= {"config", "checkpoint", "hasher", "codes/query",
                                                      "codes/database", "metrics", "history"}
    leftovers = [str(p.relative_to(tmp_path)) for p in (tmp_path / "R").rglob("*")
                 if p.name.endswith(".tmp") or p.name.startswith(".deleted-")]
    assert not leftovers
