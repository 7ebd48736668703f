"""Which process this is under ``torchrun``, its device, and the process group of a training.

Importing this module does not import torch (the run folders ask :func:`is_main_process` without
it); the functions that need torch import it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from learn2hash.errors import Learn2HashError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class DistInfo:
    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def dist_info() -> DistInfo:
    """World size and ranks from the environment ``torchrun`` sets (1 process otherwise)."""
    return DistInfo(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
                    int(os.environ.get("LOCAL_RANK", "0")))


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a ``torchrun`` launch (only rank 0 writes files)."""
    return dist_info().is_main


def resolve_device(device: str, info: DistInfo | None = None) -> "torch.device":
    """``"auto"`` -> the process's GPU (``cuda:LOCAL_RANK``) when CUDA is available, else CPU."""
    import torch

    info = info or dist_info()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise Learn2HashError(f"device {device!r} asked for, but CUDA is not available here")
        if dev.index is None:
            dev = torch.device("cuda", info.local_rank % torch.cuda.device_count())
    return dev


def init_distributed(info: DistInfo, device: "torch.device") -> bool:
    """Join the process group ``torchrun`` describes; True when this call created it (and must destroy it)."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return True


def destroy_distributed() -> None:
    """Leave the process group :func:`init_distributed` created (also after an error)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        return
    gloo = dist.get_backend() == "gloo"
    dist.destroy_process_group()
    if gloo:
        _wait_for_idle_gloo_workers()


def _wait_for_idle_gloo_workers(timeout: float = 10.0, settle: float = 0.02) -> None:
    """Return once gloo's worker threads have been asleep (idle) for ``settle`` seconds (Linux).

    A gloo worker thread drops its reference to a finished operation (and to the tensors in it)
    a moment after the caller has seen the operation finish. If that happens while the
    interpreter exits, releasing a tensor that Python had held needs the GIL, the thread is
    killed inside a C++ destructor and the process aborts ("terminate called without an active
    exception", SIGABRT: 2 of 10 two-process runs here). ``destroy_process_group`` does not join
    those threads: DistributedDataParallel keeps the process group alive. So wait here, with the
    GIL released (``time.sleep``), until every ``pt_gloo_runloop`` thread sleeps in its queue.
    """
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return
    deadline = time.monotonic() + timeout
    quiet_since = None
    while time.monotonic() < deadline:
        busy = _gloo_busy(tasks)
        now = time.monotonic()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= settle:
            return
        time.sleep(0.002)


def _gloo_busy(tasks: Path) -> bool:
    """Whether a ``pt_gloo_runloop`` thread of this process is not asleep now."""
    for task in tasks.iterdir():
        try:
            if (task / "comm").read_text().strip() != "pt_gloo_runloop":
                continue
            state = (task / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if state != "S":
            return True
    return False
