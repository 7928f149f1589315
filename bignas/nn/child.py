"""The static child: plain PyTorch layers built from a plan, ready to train, export or deploy."""

from __future__ import annotations

from torch import Tensor, nn

from bignas.nn.registry import static_block
from bignas.plan import Plan


class StaticNet(nn.Module):
    """A child network of plain layers, one module per entry of its plan."""

    def __init__(self, net: Plan, dropout: float = 0.0, drop_connect: float = 0.0) -> None:
        super().__init__()
        self.stem = static_block(net.stem)
        self.blocks = nn.Sequential(*[static_block(b, drop_connect=drop_connect) for b in net.blocks])
        self.head = static_block(net.head, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))
