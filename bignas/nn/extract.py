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


@torch.no_grad()
def embed(supernet: Supernet, child: Child, state: dict[str, torch.Tensor]) -> None:
    """Write the state dict of `child`'s `StaticNet` into the supernet's slices: the inverse of
    `extract`, so that `supernet(x, child)` computes what that static child computes. The weights
    no other child shares with it are left as they were."""
    active = supernet.active_state(plan(supernet.space, child))
    if set(active) != set(state):
        missing, extra = sorted(set(active) - set(state)), sorted(set(state) - set(active))
        raise KeyError(f"the weights are not those of this child (missing {missing[:3]}, unexpected {extra[:3]})")
    for key, target in active.items():
        if target.shape != state[key].shape:
            raise ValueError(f"{key}: shape {tuple(state[key].shape)}, the child needs {tuple(target.shape)}")
        target.copy_(state[key])
