"""The elastic supernet: modules sized for the largest child, run under any child's plan."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from bignas.nn.blocks import State, prefixed
from bignas.nn.ops import ElasticBatchNorm2d, GradSlices, view
from bignas.nn.registry import elastic_block
from bignas.plan import Plan, plan
from bignas.space import Child, SearchSpace

if TYPE_CHECKING:
    from torch.distributed import ProcessGroup


class Supernet(nn.Module):
    """Weights of every child of `space`; `forward(x, child)` runs one of them.

    The spatial size of `x` is the resolution the child runs at, so a test can run any child
    at a reduced size. Sampling, costs and checkpointing live in their own modules.
    """

    def __init__(self, space: SearchSpace) -> None:
        super().__init__()
        self.space = space
        # The largest child at a size where no kernel is cropped gives every module its full shape.
        largest = plan(space, space.max(), resolution=2 ** 16)
        self.stem = elastic_block(largest.stem, space)
        self.stages = nn.ModuleList(
            nn.ModuleList(elastic_block(b, space) for b in largest.blocks if b.stage == si)
            for si in range(len(space.stages))
        )
        self.head = elastic_block(largest.head, space)
        self._grad_slices = GradSlices()

    def forward(self, x: Tensor, child: Child, dropout: float = 0.0,
                drop_connect: float = 0.0) -> Tensor:
        """Logits of `child` on `x`. Dropout and drop-connect are for the largest child only
        (BigNAS Sec. 3.1); drop-connect grows linearly with depth, as in EfficientNet.

        With gradients on, sliced weights add their gradients straight into `.grad`: keep each
        `.grad` from forward to backward, and backward without `create_graph`; backward refuses
        otherwise (see `ops.GradSlices`, whose leaves this supernet keeps between passes;
        `step.SupernetStep` trains under that contract)."""
        net = plan(self.space, child, resolution=x.shape[-1])
        grads = torch.is_grad_enabled()
        if grads:
            self._grad_slices.begin()
        take = self._grad_slices if grads else view
        x = self.stem(x, net.stem, take)
        for i, b in enumerate(net.blocks):
            x = self.stages[b.stage][b.index](x, b, drop_connect * i / len(net.blocks), take)
        out = self.head(x, net.head, dropout, take)
        if grads:
            self._grad_slices.guard(out)
        return out

    def use_sync_batch_norm(self, group: ProcessGroup | None) -> None:
        """Batch norm in training normalises with the statistics of the global batch of every
        process in `group` (`sync_bn.sync_batch_norm`); None: each process's own batch again."""
        for m in self.modules():
            if isinstance(m, ElasticBatchNorm2d):
                m.process_group = group

    def active_state(self, net: Plan) -> State:
        """The weights plan `net` uses, keyed as the state dict of its `StaticNet`."""
        state = prefixed({"stem": self.stem.active_state(net.stem.in_ch, net.stem.out_ch, net.stem.kernel),
                          "head": self.head.active_state(net.head)})
        for i, b in enumerate(net.blocks):
            state.update(prefixed({f"blocks.{i}": self.stages[b.stage][b.index].active_state(b)}))
        return state
