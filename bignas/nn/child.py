"""The static child: plain PyTorch layers built from a plan, ready to train, export or deploy."""

from __future__ import annotations

from torch import Tensor, nn

from bignas.nn.registry import static_block
from bignas.plan import Plan


class StaticNet(nn.Module):
    """A child network of plain layers, one module per entry of its plan; `dropout` before the
    classifier and `drop_connect` on residual blocks regularise it when it is trained alone."""

    def __init__(self, net: Plan, dropout: float = 0.0, drop_connect: float = 0.0) -> None:
        super().__init__()
        self.stem = static_block(net.stem)
        # Drop-connect grows linearly with depth, as in the supernet (EfficientNet's rule).
        self.blocks = nn.Sequential(*[static_block(b, drop_connect=drop_connect * i / len(net.blocks))
                                      for i, b in enumerate(net.blocks)])
        self.head = static_block(net.head, dropout=dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x)))
