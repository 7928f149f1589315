"""Elastic ops. Each has one `active(...)` method returning the weights a child uses;
`forward` and static-child extraction both call it, so they cannot drift apart."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bignas.nn.sync_bn import sync_batch_norm


def make_act(name: str | None) -> nn.Module:
    """Activation module by the name used in search-space files."""
    acts = {"relu": nn.ReLU, "hswish": nn.Hardswish, "swish": nn.SiLU, "sigmoid": nn.Sigmoid,
            "hsigmoid": nn.Hardsigmoid, None: nn.Identity}
    return acts[name]()


Index = tuple[slice, ...]
Take = Callable[[Tensor, Index], Tensor]


def view(t: Tensor, index: Index) -> Tensor:
    """`t[index]`, a view: the `Take` of extraction and of passes without gradients. Every `Take`
    returns a view for a tensor without gradient: the BN running statistics are updated in place,
    and the update must land in the full buffers."""
    return t[index]


def first(t: Tensor, n: int, take: Take = view, dim: int = 0) -> Tensor:
    """The first `n` entries of `t` along `dim`, taken with `take`; `t` itself when that is all."""
    return t if t.shape[dim] == n else take(t, (slice(None),) * dim + (slice(0, n),))


def conv_index(shape: torch.Size, out_ch: int, in_ch: int, kernel: int) -> Index | None:
    """The first `out_ch` x `in_ch` filters and centre `kernel` x `kernel` taps of a conv weight
    of `shape`; None when that is the whole weight (BigNAS: smaller kernels share the centre)."""
    if tuple(shape[:3]) == (out_ch, in_ch, kernel):
        return None
    start = (shape[-1] - kernel) // 2
    return slice(0, out_ch), slice(0, in_ch), slice(start, start + kernel), slice(start, start + kernel)


class GradSlices:
    """The `Take` of passes with gradients: `t[index]` as a leaf of its own, whose gradient
    autograd adds straight into `t.grad[index]`. One per supernet.

    A child uses slices of the supernet's weights. Plain slicing would have autograd build a
    zero-filled gradient of the full parameter for every slice, and an autograd node of our own
    per slice costs a Python call each in backward: for a small child of a large supernet, either
    costs more than the child's own convolutions. A leaf whose `.grad` already is a view of the
    parameter's gradient costs neither: autograd adds into an existing `.grad` in place, in C++.
    So the parameters get no autograd gradient of their own: `torch.autograd.grad` does not see
    sliced weights, and data parallelism all-reduces `.grad` after backward instead of relying
    on DDP's autograd hooks.

    That holds under two conditions: `.grad` stays the same tensor from forward to backward
    (zero it before the forward, or with `set_to_none=False`), and backward runs without
    `create_graph`. Otherwise sliced weights would lose their gradients silently, so a pass's
    backward checks both first (`begin` and `guard`) and refuses. `bignas.nn.step.SupernetStep`
    keeps that contract for a training step.

    A leaf is a view of its parameter, so it stays valid from pass to pass: leaves are kept (a
    child's slices recur, the largest and smallest child every step). When the parameter or its
    gradient moves to new storage (`Module.to`, `zero_grad(set_to_none=True)`, `.data = `), all
    of that parameter's leaves are dropped and made again. A copy of the supernet starts afresh.
    """

    def __init__(self) -> None:
        # parameter (tensors hash by identity) -> (where it and its gradient are stored, [(index, leaf)])
        self._leaves: dict[Tensor, tuple[tuple[int, int], list[tuple[Index, Tensor]]]] = {}
        self._taken: list[tuple[Tensor, Tensor]] = []  # (parameter, gradient) of the current pass

    def begin(self) -> None:
        """Start a pass: the slices taken from now on are the ones `guard` checks."""
        self._taken = []

    def guard(self, out: Tensor) -> None:
        """Make backward through `out` refuse to run if the gradients of the slices taken since
        `begin` would be lost: one was replaced after the forward, or `create_graph` is on."""
        taken = self._taken

        def check(grad: Tensor) -> None:
            if torch.is_grad_enabled():
                raise RuntimeError("backward with create_graph through a supernet pass: its sliced "
                                   "weights add their gradients into .grad in place, which autograd "
                                   "does not do while building a graph")
            for t, t_grad in taken:
                if t.grad is not t_grad:
                    raise RuntimeError(
                        f"a gradient of the supernet (parameter of shape {tuple(t.shape)}) was replaced "
                        "between forward and backward, so this pass's gradients would be lost: zero "
                        "gradients before the forward, or with zero_grad(set_to_none=False)")

        if out.requires_grad:
            out.register_hook(check)

    def __deepcopy__(self, memo: dict) -> GradSlices:
        return GradSlices()  # leaves of the original's parameters are no use to a copy

    def __call__(self, t: Tensor, index: Index) -> Tensor:
        if not t.requires_grad:
            return t[index]
        grad = t.grad
        if grad is None:
            grad = t.grad = torch.zeros_like(t)
        self._taken.append((t, grad))
        where = (t.data_ptr(), grad.data_ptr())
        known = self._leaves.get(t)
        if known is None or known[0] != where:
            known = self._leaves[t] = (where, [])
        for leaf_index, leaf in known[1]:
            if leaf_index == index:
                return leaf
        leaf = t.detach()[index].requires_grad_()
        leaf.grad = grad[index]
        known[1].append((index, leaf))
        return leaf


class ElasticConv2d(nn.Module):
    """A conv holding its largest weight; a child uses the first channels and the centre taps."""

    def __init__(self, max_in: int, max_out: int, max_kernel: int, depthwise: bool = False,
                 bias: bool = False) -> None:
        super().__init__()
        if depthwise and max_in != max_out:
            raise ValueError("a depthwise conv has as many outputs as inputs")
        self.depthwise = depthwise
        self.weight = nn.Parameter(torch.empty(max_out, 1 if depthwise else max_in, max_kernel, max_kernel))
        self.bias = nn.Parameter(torch.zeros(max_out)) if bias else None
        nn.init.kaiming_normal_(self.weight, mode="fan_out")

    def active(self, in_ch: int, out_ch: int, kernel: int, take: Take = view) -> tuple[Tensor, Tensor | None]:
        index = conv_index(self.weight.shape, out_ch, 1 if self.depthwise else in_ch, kernel)
        w = self.weight if index is None else take(self.weight, index)
        return w, None if self.bias is None else first(self.bias, out_ch, take)

    def forward(self, x: Tensor, out_ch: int, kernel: int, stride: int = 1, take: Take = view) -> Tensor:
        in_ch = x.shape[1]
        w, b = self.active(in_ch, in_ch if self.depthwise else out_ch, kernel, take)
        return F.conv2d(x, w, b, stride, kernel // 2, 1, in_ch if self.depthwise else 1)


class ElasticBatchNorm2d(nn.BatchNorm2d):
    """Batch norm whose affine weights and running statistics are sliced to the active width.

    In training the sliced running statistics are views, so updates land in the full buffers.
    With `process_group` set (`Supernet.use_sync_batch_norm`), training statistics are those of
    the global batch across all processes of that group (`sync_bn.sync_batch_norm`).
    """

    def __init__(self, num_features: int) -> None:
        super().__init__(num_features)
        self.process_group = None

    def active(self, channels: int, take: Take = view) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (first(self.weight, channels, take), first(self.bias, channels, take),
                first(self.running_mean, channels, take), first(self.running_var, channels, take))

    def forward(self, x: Tensor, take: Take = view) -> Tensor:
        weight, bias, mean, var = self.active(x.shape[1], take)
        factor = 0.0
        if self.training:
            self.num_batches_tracked.add_(1)
            # as torch's BN: momentum=None is a cumulative average over batches (BN recalibration
            # sets a momentum per batch instead, so that each image counts once: evaluate.recalibrate_bn)
            factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            if self.process_group is not None:
                return sync_batch_norm(x, weight, bias, mean, var, factor, self.eps, self.process_group)
        return F.batch_norm(x, mean, var, weight, bias, self.training, factor, self.eps)


class ElasticLinear(nn.Module):
    """A linear layer whose input features are elastic (the classifier after an elastic head)."""

    def __init__(self, max_in: int, out_features: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_features, max_in))
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.normal_(self.weight, 0.0, 0.01)

    def active(self, in_features: int, take: Take = view) -> tuple[Tensor, Tensor]:
        return first(self.weight, in_features, take, dim=1), self.bias

    def forward(self, x: Tensor, take: Take = view) -> Tensor:
        return F.linear(x, *self.active(x.shape[1], take))
