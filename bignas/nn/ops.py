"""Elastic ops. Each has one `active(...)` method returning the weights a child uses;
`forward` and static-child extraction both call it, so they cannot drift apart."""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


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


class _Gather(torch.autograd.Function):
    """Every `param[index]` of one pass, made contiguous (a copy, or the view itself where the
    slice already is), in one autograd node whose backward adds each slice's gradient straight
    into the slice of `param.grad` it came from."""

    @staticmethod
    def forward(ctx, slices: list[tuple[Tensor, Index]], *params: Tensor) -> tuple[Tensor, ...]:
        ctx.slices = slices
        return tuple(param[index].contiguous() for param, index in slices)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        for (param, index), grad in zip(ctx.slices, grads):
            if param.grad is None:
                param.grad = torch.zeros_like(param)
            param.grad[index].add_(grad)
        return (None,) * (1 + len(grads))


class SliceBatch:
    """The sliced parameters of one training pass of a child, made by one autograd node.

    A child uses slices of the supernet's weights. Plain slicing would hand autograd a
    zero-filled gradient of the full parameter per slice, and one autograd node per slice costs
    a Python call each in backward: for a small child of a large supernet, either costs more
    than the child's own convolutions. So the supernet first records every (parameter, index) a
    pass will take (`record`), `gather` makes them all in one node, and the pass then looks
    them up (calling the batch as its `Take`).

    That node adds gradients into `param.grad` in place (created once, and kept by the trainer's
    `zero_grad(set_to_none=False)`): the parameters get no autograd gradient of their own, which
    is why data parallelism all-reduces `.grad` after backward (bignas.train.distributed)
    instead of relying on DDP's autograd hooks.
    """

    def __init__(self) -> None:
        self._index: dict[Tensor, Index] = {}
        self._sliced: dict[Tensor, Tensor] = {}

    def record(self, t: Tensor, index: Index) -> Tensor:
        """A `Take` noting the index of each sliced parameter that needs a gradient. It returns
        `t` uncut: the state a recording pass builds is not to be read."""
        if t.requires_grad and self._index.setdefault(t, index) != index:
            raise RuntimeError(f"a parameter of shape {tuple(t.shape)} is sliced twice in one pass: "
                               f"{self._index[t]} and {index}")
        return t

    def gather(self) -> None:
        """Make every recorded slice, in one autograd node."""
        params = list(self._index)
        if params:
            sliced = _Gather.apply([(p, self._index[p]) for p in params], *params)
            self._sliced = dict(zip(params, sliced))

    def __call__(self, t: Tensor, index: Index) -> Tensor:
        """A `Take` returning the gathered slice of a parameter; a view of anything without a
        gradient. A parameter asked for with another index than recorded is a bug: refused."""
        if not t.requires_grad:
            return t[index]
        if self._index.get(t) != index:
            raise RuntimeError(f"a parameter of shape {tuple(t.shape)} is sliced as {index} but was "
                               f"recorded as {self._index.get(t)} (forward and active_state disagree)")
        return self._sliced[t]


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
    With `process_group` set (by data-parallel setup), training statistics are those of the
    global batch across all processes.
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
            # momentum=None is a cumulative average, used to re-estimate statistics (BN recalibration).
            factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            if self.process_group is not None:
                return sync_batch_norm(x, weight, bias, mean, var, factor, self.eps, self.process_group)
        return F.batch_norm(x, mean, var, weight, bias, self.training, factor, self.eps)


def sync_batch_norm(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor,
                    momentum: float, eps: float, group) -> Tensor:
    """Training-mode batch norm over the union of every process's batch (differentiable)."""
    from torch.distributed.nn.functional import all_reduce

    c = x.shape[1]
    xf = x.float()
    local = torch.cat([xf.sum((0, 2, 3)), (xf * xf).sum((0, 2, 3)),
                       xf.new_full((1,), x.numel() // c)])
    total = all_reduce(local, group=group)
    count = total[-1]
    mean = total[:c] / count
    var = total[c:2 * c] / count - mean * mean
    with torch.no_grad():
        running_mean.mul_(1 - momentum).add_(mean, alpha=momentum)
        running_var.mul_(1 - momentum).add_(var * count / (count - 1), alpha=momentum)
    scale = weight * torch.rsqrt(var + eps)
    shift = bias - mean * scale
    return (xf * scale[None, :, None, None] + shift[None, :, None, None]).to(x.dtype)


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
