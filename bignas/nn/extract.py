"""Exact extraction: the static child holding only the weights a child uses."""

from __future__ import annotations

import torch

from bignas.nn.blocks import prefixed
from bignas.nn.static import StaticNet
from bignas.nn.supernet import Supernet
from bignas.space import Child, plan


@torch.no_grad()
def extract(supernet: Supernet, child: Child, resolution: int | None = None) -> StaticNet:
    """A `StaticNet` of plain layers computing what `supernet(x, child)` computes.

    `resolution` defaults to the child's; kernels larger than a feature map at that size are
    cropped to the taps that can touch it (see `space.effective_kernel`), so run the static
    child at that size. It is in the supernet's train/eval mode and on its device.
    """
    net = plan(supernet.space, child, resolution)
    state = prefixed({"stem": supernet.stem.active_state(net.stem.in_ch, net.stem.out_ch, net.stem.kernel),
                      "head": supernet.head.active_state(net.head)})
    for i, b in enumerate(net.blocks):
        state.update(prefixed({f"blocks.{i}": supernet.stages[b.stage][b.index].active_state(b)}))
    device = next(supernet.parameters()).device
    static = StaticNet(net).to(device)
    static.load_state_dict({k: v.clone() for k, v in state.items()}, strict=True)
    return static.train(supernet.training)
