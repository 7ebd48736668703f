"""Fixed-order batch norm and convolution (learn2hash.nn.fixed_order): the same function and gradients
as PyTorch's modules (checked in float64 against them), and the same bits at 1 and 2 CPU threads."""

import copy
import hashlib
import os

import numpy as np
import pytest
import torch
from torch import nn

from learn2hash.nn.fixed_order import (FixedOrderBatchNorm1d, FixedOrderConv2d, channel_sums,
                                       fixed_order)

CL = torch.channels_last


def _pair(module: nn.Module) -> tuple[nn.Module, nn.Module]:
    ours = fixed_order(copy.deepcopy(module))
    return module, ours


def _run(module: nn.Module, x: torch.Tensor, weights: torch.Tensor):
    x = x.clone().requires_grad_()
    y = module(x)
    (y * weights).sum().backward()
    grads = [p.grad.clone() for p in module.parameters()]
    return y.detach(), x.grad, grads


@pytest.mark.parametrize("shape,fmt,kwargs", [
    ((16, 5), None, {}),
    ((7, 3, 6, 5), None, {}),
    ((7, 3, 6, 5), CL, {}),
    ((9, 1, 8, 8), CL, {}),                         # one channel: the row-then-total path
    ((4, 3, 4, 5), CL, {"affine": False}),
    ((4, 3, 4, 5), None, {"momentum": None}),       # cumulative average of the statistics
    ((4, 3, 2, 3, 5), None, {}),
])
def test_batch_norm_is_torchs_batch_norm(shape, fmt, kwargs):
    torch.manual_seed(0)
    cls = {2: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}[len(shape)]
    ref = cls(shape[1], **kwargs).double()
    if ref.affine:
        with torch.no_grad():
            ref.weight.uniform_(0.5, 2.0)
            ref.bias.uniform_(-1.0, 1.0)
    ref, ours = _pair(ref)
    assert type(ours).__name__.startswith("FixedOrder")
    for step in range(3):   # running statistics over several steps
        x = (torch.randn(shape, dtype=torch.float64) * 3 + 2)
        if fmt is not None:
            x = x.contiguous(memory_format=fmt)
        w = torch.randn(shape, dtype=torch.float64)
        for m in (ref, ours):
            m.zero_grad()
        y0, gx0, gp0 = _run(ref, x, w)
        y1, gx1, gp1 = _run(ours, x, w)
        torch.testing.assert_close(y1, y0, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(gx1, gx0, rtol=1e-9, atol=1e-9)
        for a, b in zip(gp1, gp0):
            torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours.running_mean, ref.running_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.running_var, ref.running_var, rtol=1e-12, atol=1e-12)
    assert int(ours.num_batches_tracked) == int(ref.num_batches_tracked) == 3
    ref.eval(), ours.eval()
    x = torch.randn(shape, dtype=torch.float64)
    ours.load_state_dict(ref.state_dict())
    assert torch.equal(ours(x), ref(x))   # eval mode is torch's own kernel


def test_batch_norm_refuses_one_value_per_channel_like_torch():
    bn = FixedOrderBatchNorm1d(3)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        bn(torch.randn(1, 3))


@pytest.mark.parametrize("kwargs,shape", [
    ({"in_channels": 3, "out_channels": 4, "kernel_size": 3, "padding": 1, "bias": False}, (5, 3, 7, 6)),
    ({"in_channels": 4, "out_channels": 6, "kernel_size": 3, "stride": 2, "groups": 2, "bias": True}, (3, 4, 9, 8)),
    ({"in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": 1, "padding_mode": "reflect"}, (2, 2, 6, 6)),
    ({"in_channels": 2, "out_channels": 3, "kernel_size": 3, "padding": "same"}, (2, 2, 6, 6)),
])
def test_conv_is_torchs_conv(kwargs, shape):
    torch.manual_seed(1)
    ref, ours = _pair(nn.Conv2d(**kwargs).double())
    assert isinstance(ours, FixedOrderConv2d)
    x = torch.randn(shape, dtype=torch.float64).contiguous(memory_format=CL)
    y0, gx0, gp0 = _run(ref, x, torch.ones(1, dtype=torch.float64))
    y1, gx1, gp1 = _run(ours, x, torch.ones(1, dtype=torch.float64))
    torch.testing.assert_close(y1, y0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gx1, gx0, rtol=1e-10, atol=1e-10)
    for a, b in zip(gp1, gp0):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_conv3d_gradients_are_torchs():
    torch.manual_seed(2)
    ref, ours = _pair(nn.Conv3d(2, 3, 3, padding=1).double())
    x = torch.randn(2, 2, 4, 5, 5, dtype=torch.float64)
    for a, b in zip(_run(ours, x, torch.ones(1, dtype=torch.float64))[2], _run(ref, x, torch.ones(1, dtype=torch.float64))[2]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_state_dict_and_subclasses_are_left_as_they_are():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.SyncBatchNorm(2), nn.Linear(2, 2))
    keys = list(model.state_dict())
    fixed_order(model)
    assert list(model.state_dict()) == keys
    assert [type(m).__name__ for m in model] == ["FixedOrderConv2d", "FixedOrderBatchNorm2d", "SyncBatchNorm", "Linear"]


def test_channel_sums_are_sums():
    t = torch.arange(2 * 3 * 4 * 5, dtype=torch.float64).reshape(2, 3, 4, 5)
    np.testing.assert_array_equal(channel_sums(t).numpy(), t.numpy().sum(axis=(0, 2, 3)))
    one = torch.ones(3, 1, 100, 100)   # 30,000 values, not a multiple of the row length
    assert channel_sums(one).tolist() == [30000.0]


def _digest(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().contiguous().numpy().tobytes()).hexdigest()


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs 2 cores to run at 2 threads")
def test_a_training_step_gives_the_same_bits_at_1_and_2_threads():
    from learn2hash import methods

    torch.manual_seed(0)
    model = methods.create("csq", bits=16).build_model((1, 28, 28))   # smallcnn, as the default path builds it
    start = copy.deepcopy(model.state_dict())
    x = torch.randn(64, 1, 28, 28)
    target = torch.randn(64, 16)
    threads = torch.get_num_threads()
    digests = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            model.load_state_dict(start)
            model.train()
            model.zero_grad()
            u = model(x)
            (u - target).pow(2).mean().backward()
            digests.append([_digest(u)] + [_digest(p.grad) for p in model.parameters()]
                           + [_digest(b) for b in model.buffers()])
    finally:
        torch.set_num_threads(threads)
    assert digests[0] == digests[1]

