"""Launched by tests/test_train.py under ``torchrun --nproc_per_node=2``: trains a small hashing
network on digits with :func:`learn2hash.train.train` and writes, per rank, a digest of the final
weights, the training items the rank saw in each epoch, and the history."""

import hashlib
import json
import sys
from pathlib import Path

import torch
import torch.distributed
import torch.nn.functional as F

from learn2hash import datasets
from learn2hash.nn import HashHead, HashModel, create_backbone
from learn2hash.train import TrainConfig, dist_info, train


class Task:
    def __init__(self, n_classes: int, bits: int):
        self.targets = torch.randint(0, 2, (n_classes, bits), generator=torch.Generator().manual_seed(1)).float()
        self.seen: dict[int, list[int]] = {}

    def loss(self, u, batch):
        self.seen.setdefault(batch.epoch, []).extend(batch.index.tolist())
        t = self.targets[batch.labels.float().argmax(1)]
        return F.binary_cross_entropy_with_logits(2 * batch.logits, t), {}

    def on_epoch_start(self, epoch, model):
        pass

    def on_epoch_end(self, epoch, model):
        pass

    def extra_state(self):
        return {}

    def load_extra_state(self, state):
        pass


def main(out: Path) -> None:
    ds = datasets.load("digits", protocol="standard")
    torch.manual_seed(0)
    model = HashModel(create_backbone("smallcnn", (1, 8, 8), widths=(8, 16)), HashHead(16, 12))
    task = Task(ds.train.n_classes, 12)
    history = train(model, ds.train.x, ds.train.labels, task,
                    TrainConfig(epochs=2, batch_size=50, lr=1e-2, seed=3, device="cpu"),
                    checkpoint_dir=out / "checkpoints", progress=False)
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().numpy().tobytes())
    info = dist_info()
    (out / f"rank{info.rank}.json").write_text(json.dumps({
        "world_size": info.world_size, "digest": h.hexdigest(), "history": history,
        # train() leaves the process group it joined (one left to the interpreter's exit aborts it)
        "group_left": not torch.distributed.is_initialized(),
        "seen": {str(k): v for k, v in task.seen.items()},
    }))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
