"""Exact extraction: the static child holding only the weights a child uses."""

from __future__ import annotations

import torch

from bignas.nn.child import StaticNet
from bignas.nn.supernet import Supernet
from bignas.plan import plan
from bignas.space import Child


@torch.no_grad()
def extract(supernet: Supernet, child: Child, resolution: int | None = None) -> StaticNet:
    """A `StaticNet` of plain layers computing what `supernet(x, child)` computes.

    `resolution` defaults to the child's; kernels larger than a feature map at that size are
    cropped to the taps that can touch it (see `space.effective_kernel`), so run the static
    child at that size. It is in the supernet's train/eval mode and on its device.
    """
    net = plan(supernet.space, child, resolution)
    state = supernet.active_state(net)
    device = next(supernet.parameters()).device
    static = StaticNet(net).to(device)
    static.load_state_dict({k: v.clone() for k, v in state.items()}, strict=True)
    return static.train(supernet.training)
