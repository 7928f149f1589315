"""Batch norm over the global batch of a process group, for data-parallel training."""

from __future__ import annotations

import torch
from torch import Tensor


def sync_batch_norm(x: Tensor, weight: Tensor, bias: Tensor, running_mean: Tensor, running_var: Tensor,
                    momentum: float, eps: float, group) -> Tensor:
    """Training-mode batch norm over the union of every process's batch in `group` (differentiable:
    the all-reduce of the statistics has a backward). Updates the running statistics in place."""
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
