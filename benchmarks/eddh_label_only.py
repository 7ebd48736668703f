"""EDDH with a label-only similarity: the ablation of its semantic–visual Ŝ (benchmarks/RESULTS.md).

Runs ``benchmarks/sweep_defaults.py`` (same arguments) with
:func:`learn2hash.methods.eddh.semantic_visual_similarity` replaced by ``+1`` for pairs that share
a label and ``-1`` otherwise (DHN's similarity), so the visual features no longer change the
targets; everything else (the distance fit, the A- and B-steps, the recipe) is EDDH's own. Say
so in ``--tag``: the lines it appends look like any other EDDH candidate's.

Usage::

    python benchmarks/eddh_label_only.py --method eddh --bits 64 --grid '[{}]' --tag 'label-only' --results out.jsonl
"""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import torch

import learn2hash.methods.eddh as eddh


def label_only(distance, similar, alpha, beta, n):  # noqa: ARG001 — the signature it replaces
    d = torch.as_tensor(distance).float()
    s = torch.as_tensor(similar, dtype=torch.bool, device=d.device)
    return torch.where(s, torch.ones_like(d), -torch.ones_like(d))


if __name__ == "__main__":
    eddh.semantic_visual_similarity = label_only
    sys.argv = ["sweep_defaults.py"] + sys.argv[1:]
    runpy.run_path(str(Path(__file__).resolve().parent / "sweep_defaults.py"), run_name="__main__")
