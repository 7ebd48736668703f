"""Training steps whose result does not depend on the number of CPU threads.

Two of PyTorch's CPU kernels that a training step of our networks runs reduce in an order that
follows the threads, so that ``OMP_NUM_THREADS=1`` and 2 give different last bits, which a training
run amplifies into different codes:

- batch norm in training mode collects the batch statistics (channels-last images ``[N, C, H, W]``,
  feature batches ``[N, C]``) by summing each thread's share of the rows, then merging the shares;
- the convolution's weight gradient (oneDNN) sums over the batch in per-thread parts.

:func:`batch_norm` computes batch norm with every per-channel sum taken over one channel at a time
by one thread (a reduction over the rows whose output has one entry per channel, which PyTorch
parallelises over the channels, never within one), and writes its backward pass out the same
way; the running statistics are updated as ``torch.nn.BatchNorm*d`` does (unbiased variance,
``momentum``). :func:`conv` computes the convolution and its input gradient
with PyTorch's kernels at any thread count (neither splits a sum between threads) and the weight
gradient on one thread.

``FixedOrderBatchNorm1d/2d/3d`` and ``FixedOrderConv2d/3d`` are the torch modules with that
forward pass when they train on a CPU; on a GPU and in eval mode they are PyTorch's (same
parameters, same state dict). :func:`fixed_order` turns the batch norms and convolutions of any
network into them in place, which :meth:`learn2hash.methods.deep.DeepHasher.build_model` does for
every network it builds. A GPU's kernels and mixed precision (``amp``) are not covered: there
PyTorch's kernels run (the run folder's ``hasher.json`` records ``thread_invariant: false`` for a
run on a GPU or under autocast).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

_ROW = 4096  # a single channel's values are summed in rows of this many, then the row sums in order


def channel_sums(t: torch.Tensor) -> torch.Tensor:
    """Per-channel sums (channel axis 1) of ``t`` ``[N, C, ...]``, in ``t``'s dtype, in an order that
    does not depend on the number of threads: a reduction whose output has one entry per channel is
    parallelised over the channels, and each channel's values are summed in the order of the layout."""
    dims = [0] + list(range(2, t.ndim))
    if t.shape[1] > 1:
        return t.sum(dims)
    # one channel: a reduction to one value would be split between the threads; sum rows first
    flat = t.reshape(-1)
    pad = (-len(flat)) % _ROW
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, _ROW).sum(1).sum().reshape(1)


def _view(v: torch.Tensor, ndim: int) -> torch.Tensor:
    return v.reshape((1, -1) + (1,) * (ndim - 2))


class _BatchNormFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        count = x.numel() // x.shape[1]
        mean = channel_sums(x) / count
        centred = x - _view(mean, x.ndim)
        var = channel_sums(centred.mul_(centred)) / count
        del centred
        # normalising with given statistics is elementwise (eval mode's fused kernel)
        out = F.batch_norm(x, mean, var, weight, bias, False, 0.0, float(eps))
        rstd = torch.rsqrt(var + float(eps))
        ctx.save_for_backward(x, weight, mean, rstd)
        ctx.count = count
        ctx.mark_non_differentiable(mean, var)
        return out, mean, var

    @staticmethod
    def backward(ctx, grad, _grad_mean, _grad_var):
        x, weight, mean, rstd = ctx.saved_tensors
        n, nd = ctx.count, x.ndim
        sum_g = channel_sums(grad)
        sum_gxhat = channel_sums((x - _view(mean, nd)).mul_(grad)) * rstd  # sum of grad * xhat
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            # grad_x = k1 * (grad - sum_g / n - xhat * sum_gxhat / n) = k1 * grad + k2 * x + k3
            k1 = rstd if weight is None else rstd * weight
            k2 = -k1 * rstd * sum_gxhat / n
            k3 = -k1 * sum_g / n - k2 * mean
            grad_x = torch.addcmul(_view(k3, nd), x, _view(k2, nd)).addcmul_(grad, _view(k1, nd))
        if weight is not None:
            grad_w, grad_b = sum_gxhat, sum_g
        return grad_x, grad_w, grad_b, None


def batch_norm(x: torch.Tensor, running_mean: torch.Tensor | None, running_var: torch.Tensor | None,
               weight: torch.Tensor | None, bias: torch.Tensor | None, momentum: float | None, eps: float,
               num_batches_tracked: torch.Tensor | None = None) -> torch.Tensor:
    """Training-mode batch norm of ``x`` ``[N, C, ...]`` on its batch statistics, thread-count independent;
    updates ``running_mean`` / ``running_var`` in place (``momentum`` None: cumulative average, as torch)."""
    if x.numel() // x.shape[1] < 2:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {list(x.shape)}")
    out, mean, var = _BatchNormFn.apply(x, weight, bias, eps)
    if running_mean is not None:
        with torch.no_grad():
            if num_batches_tracked is not None:
                num_batches_tracked.add_(1)
            m = 1.0 / float(num_batches_tracked) if momentum is None else float(momentum)
            count = x.numel() // x.shape[1]
            running_mean.mul_(1 - m).add_(mean.to(running_mean.dtype), alpha=m)
            running_var.mul_(1 - m).add_((var * count / (count - 1)).to(running_var.dtype), alpha=m)
    return out


class _FixedOrderBatchNorm:
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        self._check_input_dim(x)
        uses_batch = self.training or self.running_mean is None
        if not uses_batch or x.device.type != "cpu" or torch.is_autocast_enabled("cpu"):
            return super().forward(x)  # eval mode, a GPU, or mixed precision: PyTorch's kernels
        track = self.training and self.track_running_stats
        return batch_norm(x, self.running_mean if track else None, self.running_var if track else None,
                          self.weight, self.bias, self.momentum, self.eps,
                          self.num_batches_tracked if track else None)


class FixedOrderBatchNorm1d(_FixedOrderBatchNorm, nn.BatchNorm1d):
    """``torch.nn.BatchNorm1d`` whose training on a CPU gives the same bits at any thread count."""


class FixedOrderBatchNorm2d(_FixedOrderBatchNorm, nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` whose training on a CPU gives the same bits at any thread count."""


class FixedOrderBatchNorm3d(_FixedOrderBatchNorm, nn.BatchNorm3d):
    """``torch.nn.BatchNorm3d`` whose training on a CPU gives the same bits at any thread count."""


class _ConvFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        ctx.save_for_backward(x, weight)
        ctx.conf = (list(stride), list(padding), list(dilation), int(groups), bias is not None)
        op = F.conv2d if x.ndim == 4 else F.conv3d
        return op(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def backward(ctx, grad):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, groups, has_bias = ctx.conf
        zeros = [0] * len(stride)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(grad, x, weight, None, stride, padding, dilation, False,
                                                         zeros, groups, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                grad_w = torch.ops.aten.convolution_backward(grad, x, weight, None, stride, padding, dilation, False,
                                                             zeros, groups, [False, True, False])[1]
            finally:
                torch.set_num_threads(threads)
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = channel_sums(grad).to(grad.dtype)
        return grad_x, grad_w, grad_b, None, None, None, None


def conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride: Sequence[int],
         padding: Sequence[int], dilation: Sequence[int], groups: int) -> torch.Tensor:
    """``F.conv2d`` / ``F.conv3d`` (numeric padding) whose gradients do not depend on the thread count."""
    return _ConvFn.apply(x, weight, bias, tuple(stride), tuple(padding), tuple(dilation), int(groups))


class _FixedOrderConv:
    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if (x.device.type != "cpu" or not torch.is_grad_enabled() or isinstance(self.padding, str)
                or torch.is_autocast_enabled("cpu") or not (weight.requires_grad or x.requires_grad)):
            return super()._conv_forward(x, weight, bias)
        padding = self.padding
        if self.padding_mode != "zeros":
            x = F.pad(x, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = (0,) * len(self.padding)
        return conv(x, weight, bias, self.stride, padding, self.dilation, self.groups)


class FixedOrderConv2d(_FixedOrderConv, nn.Conv2d):
    """``torch.nn.Conv2d`` whose gradients on a CPU are the same bits at any thread count."""


class FixedOrderConv3d(_FixedOrderConv, nn.Conv3d):
    """``torch.nn.Conv3d`` whose gradients on a CPU are the same bits at any thread count."""


_SWAP = {nn.BatchNorm1d: FixedOrderBatchNorm1d, nn.BatchNorm2d: FixedOrderBatchNorm2d,
         nn.BatchNorm3d: FixedOrderBatchNorm3d, nn.Conv2d: FixedOrderConv2d, nn.Conv3d: FixedOrderConv3d}


def fixed_order(model: nn.Module) -> nn.Module:
    """Turn every ``torch.nn.BatchNorm1d/2d/3d`` and ``Conv2d/3d`` of ``model`` (exactly those classes,
    not subclasses such as ``SyncBatchNorm``) into its fixed-order twin, in place; parameters and
    buffers are kept."""
    for module in model.modules():
        twin = _SWAP.get(type(module))
        if twin is not None:
            module.__class__ = twin
    return model
