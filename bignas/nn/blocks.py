"""Elastic building blocks. Each block runs a `BlockPlan` (or stem / head plan) and can hand the
weights of that plan over as the state dict of the matching static module in `static.py`.
`take` (see `ops.Take`) is how `forward` makes sliced parameters: views by default, or the
gradient leaves of a training pass (`ops.GradSlices`)."""

from __future__ import annotations

from torch import Tensor, nn

from bignas.nn.ops import ElasticBatchNorm2d, ElasticConv2d, ElasticLinear, Take, make_act, view
from bignas.nn.static import drop_path
from bignas.plan import BlockPlan, ConvPlan, HeadPlan
from bignas.space import SearchSpace

State = dict[str, Tensor]


class ElasticConvBN(nn.Module):
    """Conv + BN + act with elastic channels (and kernel for depthwise convs)."""

    def __init__(self, max_in: int, max_out: int, max_kernel: int, act: str | None,
                 depthwise: bool = False) -> None:
        super().__init__()
        self.conv = ElasticConv2d(max_in, max_out, max_kernel, depthwise)
        self.bn = ElasticBatchNorm2d(max_out)
        self.act = make_act(act)

    def forward(self, x: Tensor, out_ch: int, kernel: int, stride: int, take: Take = view) -> Tensor:
        return self.act(self.bn(self.conv(x, out_ch, kernel, stride, take), take))

    def active_state(self, in_ch: int, out_ch: int, kernel: int) -> State:
        w, _ = self.conv.active(in_ch, out_ch, kernel)
        weight, bias, mean, var = self.bn.active(out_ch)
        return {"conv.weight": w, "bn.weight": weight, "bn.bias": bias, "bn.running_mean": mean,
                "bn.running_var": var, "bn.num_batches_tracked": self.bn.num_batches_tracked}


class ElasticSE(nn.Module):
    def __init__(self, max_ch: int, max_mid: int, act: str, gate: str) -> None:
        super().__init__()
        self.reduce = ElasticConv2d(max_ch, max_mid, 1, bias=True)
        self.act = make_act(act)
        self.expand = ElasticConv2d(max_mid, max_ch, 1, bias=True)
        self.gate = make_act(gate)

    def forward(self, x: Tensor, mid: int, take: Take = view) -> Tensor:
        s = self.act(self.reduce(x.mean((2, 3), keepdim=True), mid, 1, take=take))
        return x * self.gate(self.expand(s, x.shape[1], 1, take=take))

    def active_state(self, channels: int, mid: int) -> State:
        rw, rb = self.reduce.active(channels, mid, 1)
        ew, eb = self.expand.active(mid, channels, 1)
        return {"reduce.weight": rw, "reduce.bias": rb, "expand.weight": ew, "expand.bias": eb}


class ElasticMBConv(nn.Module):
    """Inverted residual block: [1x1 expand] -> k x k depthwise -> [SE] -> 1x1 project."""

    def __init__(self, largest: BlockPlan, space: SearchSpace) -> None:
        super().__init__()
        p = largest
        max_kernel = max(space.stages[p.stage].kernels)
        self.expand = ElasticConvBN(p.in_ch, p.mid_ch, 1, p.act) if p.expand_conv else None
        self.dw = ElasticConvBN(p.mid_ch, p.mid_ch, max_kernel, p.act, depthwise=True)
        self.se = ElasticSE(p.mid_ch, p.se_mid, p.se_act, p.se_gate) if p.se_mid else None
        self.project = ElasticConvBN(p.mid_ch, p.out_ch, 1, None)

    def forward(self, x: Tensor, p: BlockPlan, drop_connect: float = 0.0, take: Take = view) -> Tensor:
        h = self.expand(x, p.mid_ch, 1, 1, take) if self.expand is not None else x
        h = self.dw(h, p.mid_ch, p.kernel, p.stride, take)
        if self.se is not None:
            h = self.se(h, p.se_mid, take)
        h = self.project(h, p.out_ch, 1, 1, take)
        if p.residual:
            h = drop_path(h, drop_connect, self.training) + x
        return h

    def active_state(self, p: BlockPlan) -> State:
        parts = {"dw": self.dw.active_state(p.mid_ch, p.mid_ch, p.kernel),
                 "project": self.project.active_state(p.mid_ch, p.out_ch, 1)}
        if self.expand is not None:
            parts["expand"] = self.expand.active_state(p.in_ch, p.mid_ch, 1)
        if self.se is not None:
            parts["se"] = self.se.active_state(p.mid_ch, p.se_mid)
        return prefixed(parts)


class ElasticStem(ElasticConvBN):
    def __init__(self, largest: ConvPlan, space: SearchSpace) -> None:
        super().__init__(largest.in_ch, largest.out_ch, space.stem.kernel, largest.act)

    def forward(self, x: Tensor, p: ConvPlan, take: Take = view) -> Tensor:  # type: ignore[override]
        return super().forward(x, p.out_ch, p.kernel, p.stride, take)


class ElasticHead(nn.Module):
    """1x1 conv + BN + act, global pool, optional 1x1 mix conv + act, dropout, linear."""

    def __init__(self, largest: HeadPlan, space: SearchSpace) -> None:
        super().__init__()
        p = largest
        self.conv = ElasticConvBN(p.in_ch, p.width, 1, p.act)
        self.mix = ElasticConv2d(p.width, p.mix, 1) if p.mix is not None else None
        self.mix_act = make_act(p.act if p.mix is not None else None)
        self.classifier = ElasticLinear(p.features, p.num_classes)

    def forward(self, x: Tensor, p: HeadPlan, dropout: float = 0.0, take: Take = view) -> Tensor:
        x = self.conv(x, p.width, 1, 1, take).mean((2, 3), keepdim=True)
        if self.mix is not None:
            x = self.mix_act(self.mix(x, p.mix, 1, take=take))
        x = nn.functional.dropout(x.flatten(1), dropout, self.training)
        return self.classifier(x, take)

    def active_state(self, p: HeadPlan) -> State:
        weight, bias = self.classifier.active(p.features)
        state = {"classifier.weight": weight, "classifier.bias": bias,
                 **prefixed({"conv": self.conv.active_state(p.in_ch, p.width, 1)})}
        if self.mix is not None:
            state["mix.weight"] = self.mix.active(p.width, p.mix, 1)[0]
        return state


def prefixed(parts: dict[str, State]) -> State:
    """Flatten {"dw": {"conv.weight": w}} into {"dw.conv.weight": w}."""
    return {f"{name}.{key}": t for name, state in parts.items() for key, t in state.items()}
