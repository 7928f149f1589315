"""Static blocks: plain PyTorch layers built from one plan entry, as a deployed child runs them."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bignas.nn.ops import make_act
from bignas.plan import BlockPlan, ConvPlan, HeadPlan


def drop_path(x: Tensor, prob: float, training: bool) -> Tensor:
    """Drop the residual branch per sample (drop-connect / stochastic depth)."""
    if not training or prob == 0.0:
        return x
    keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) >= prob
    return x * keep / (1.0 - prob)


class ConvBNAct(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, act: str | None,
                 groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_ch)
        self.act = make_act(act)


class Stem(ConvBNAct):
    """The stem: conv k x k + BN + act, built from its plan."""

    def __init__(self, p: ConvPlan) -> None:
        super().__init__(p.in_ch, p.out_ch, p.kernel, p.stride, p.act)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, mid: int, act: str, gate: str) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(channels, mid, 1)
        self.act = make_act(act)
        self.expand = nn.Conv2d(mid, channels, 1)
        self.gate = make_act(gate)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(s))))


class MBConv(nn.Module):
    def __init__(self, p: BlockPlan, drop_connect: float = 0.0) -> None:
        super().__init__()
        self.expand = ConvBNAct(p.in_ch, p.mid_ch, 1, 1, p.act) if p.expand_conv else None
        self.dw = ConvBNAct(p.mid_ch, p.mid_ch, p.kernel, p.stride, p.act, groups=p.mid_ch)
        self.se = SqueezeExcite(p.mid_ch, p.se_mid, p.se_act, p.se_gate) if p.se_mid else None
        self.project = ConvBNAct(p.mid_ch, p.out_ch, 1, 1, None)
        self.residual = p.residual
        self.drop_connect = drop_connect

    def forward(self, x: Tensor) -> Tensor:
        h = self.expand(x) if self.expand is not None else x
        h = self.dw(h)
        if self.se is not None:
            h = self.se(h)
        h = self.project(h)
        if self.residual:
            h = drop_path(h, self.drop_connect, self.training) + x
        return h


class Head(nn.Module):
    """1x1 conv + BN + act, global average pool, optional 1x1 mix conv + act, dropout, linear."""

    def __init__(self, p: HeadPlan, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv = ConvBNAct(p.in_ch, p.width, 1, 1, p.act)
        self.mix = nn.Conv2d(p.width, p.mix, 1, bias=False) if p.mix is not None else None
        self.mix_act = make_act(p.act if p.mix is not None else None)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(p.features, p.num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x).mean((2, 3), keepdim=True)
        if self.mix is not None:
            x = self.mix_act(self.mix(x))
        return self.classifier(self.dropout(x.flatten(1)))
