"""Elastic ops. Each has one `active(...)` method returning the weights a child uses;
`forward` and static-child extraction both call it, so they cannot drift apart."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def make_act(name: str | None) -> nn.Module:
    """Activation module by the name used in search-space files."""
    acts = {"relu": nn.ReLU, "hswish": nn.Hardswish, "swish": nn.SiLU, "sigmoid": nn.Sigmoid,
            "hsigmoid": nn.Hardsigmoid, None: nn.Identity}
    return acts[name]()


def take(t: Tensor, n: int, dim: int = 0) -> Tensor:
    """The first `n` entries of `t` along `dim` as a view (BN running statistics updated in
    place land in the full buffers); `t` itself when nothing is cut. For the small vectors this
    serves (BN affine, biases, the classifier's columns), a view costs less than a copy."""
    return t if t.shape[dim] == n else t.narrow(dim, 0, n)


class _Slice(torch.autograd.Function):
    """`param[index]` as one contiguous copy, whose gradient is added straight into the slice of
    `param.grad` it came from.

    Plain slicing would hand autograd a zero-filled gradient of the full parameter for every
    child in backward: for a small child of a large supernet that costs more than the child's
    own convolutions. Adding in place into `param.grad` (created once, and kept by the trainer's
    `zero_grad(set_to_none=False)`) costs only the slice. The parameter itself therefore gets no
    autograd gradient from this node, which is why data parallelism all-reduces `.grad` after
    backward (bignas.train.distributed) instead of relying on DDP's autograd hooks.
    """

    @staticmethod
    def forward(ctx, param: Tensor, index: tuple[slice, ...]) -> Tensor:
        ctx.param, ctx.index = param, index
        return param[index].contiguous()

    @staticmethod
    def backward(ctx, grad: Tensor):
        param = ctx.param
        if param.grad is None:
            param.grad = torch.zeros_like(param)
        param.grad[ctx.index] += grad
        return None, None


def slice_weight(w: Tensor, out_ch: int, in_ch: int, kernel: int) -> Tensor:
    """The first `out_ch` x `in_ch` filters of a conv weight, centre `kernel` x `kernel` taps."""
    if w.shape[:3] == (out_ch, in_ch, kernel):
        return w
    start = (w.shape[-1] - kernel) // 2
    index = (slice(0, out_ch), slice(0, in_ch), slice(start, start + kernel), slice(start, start + kernel))
    return _Slice.apply(w, index) if w.requires_grad else w[index]


def centre_crop(w: Tensor, kernel: int) -> Tensor:
    """Centre `kernel` x `kernel` taps of a conv weight (BigNAS: smaller kernels share the centre)."""
    start = (w.shape[-1] - kernel) // 2
    return w if start == 0 else w[:, :, start:start + kernel, start:start + kernel]


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

    def active(self, in_ch: int, out_ch: int, kernel: int) -> tuple[Tensor, Tensor | None]:
        w = slice_weight(self.weight, out_ch, 1 if self.depthwise else in_ch, kernel)
        bias = None if self.bias is None else take(self.bias, out_ch)
        return w, bias

    def forward(self, x: Tensor, out_ch: int, kernel: int, stride: int = 1) -> Tensor:
        in_ch = x.shape[1]
        w, b = self.active(in_ch, in_ch if self.depthwise else out_ch, kernel)
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

    def active(self, channels: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return (take(self.weight, channels), take(self.bias, channels),
                take(self.running_mean, channels), take(self.running_var, channels))

    def forward(self, x: Tensor) -> Tensor:
        weight, bias, mean, var = self.active(x.shape[1])
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

    def active(self, in_features: int) -> tuple[Tensor, Tensor]:
        return take(self.weight, in_features, dim=1), self.bias

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, *self.active(x.shape[1]))
