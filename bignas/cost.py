"""Analytic cost of a child: multiply-accumulates and parameters, from its plan (no tracing).

MFLOPs here are millions of multiply-accumulates (MACs) of convolutions and linear layers, the
convention of once-for-all, MobileNet and EfficientNet papers. Batch norm, activations, pooling
and the residual additions are not counted (they are < 2% of the total on these networks).
Parameters count every learnable tensor of the static child: conv and linear weights, their
biases, and batch-norm affine weights.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from bignas.plan import BlockPlan, ConvPlan, HeadPlan, Plan, plan
from bignas.space import Child, SearchSpace


@dataclass(frozen=True)
class Cost:
    macs: int
    params: int

    def __add__(self, other: "Cost") -> "Cost":
        return Cost(self.macs + other.macs, self.params + other.params)

    @property
    def mflops(self) -> float:
        return self.macs / 1e6

    @property
    def params_m(self) -> float:
        return self.params / 1e6

    def summary(self) -> dict[str, float]:
        """{"mflops", "params_m"} rounded as every JSON output reports them."""
        return {"mflops": round(self.mflops, 4), "params_m": round(self.params_m, 6)}


def conv_cost(in_ch: int, out_ch: int, kernel: int, out_size: int, groups: int = 1,
              bias: bool = False, bn: bool = True) -> Cost:
    weights = out_ch * (in_ch // groups) * kernel * kernel
    params = weights + (out_ch if bias else 0) + (2 * out_ch if bn else 0)
    return Cost(weights * out_size * out_size, params)


def stem_cost(p: ConvPlan) -> Cost:
    out = (p.resolution - 1) // p.stride + 1
    return conv_cost(p.in_ch, p.out_ch, p.kernel, out)


def block_cost(p: BlockPlan) -> Cost:
    size, out = p.resolution, p.out_resolution
    cost = Cost(0, 0)
    if p.expand_conv:
        cost += conv_cost(p.in_ch, p.mid_ch, 1, size)
    cost += conv_cost(p.mid_ch, p.mid_ch, p.kernel, out, groups=p.mid_ch)
    if p.se_mid:
        cost += conv_cost(p.mid_ch, p.se_mid, 1, 1, bias=True, bn=False)
        cost += conv_cost(p.se_mid, p.mid_ch, 1, 1, bias=True, bn=False)
    return cost + conv_cost(p.mid_ch, p.out_ch, 1, out)


def head_cost(p: HeadPlan) -> Cost:
    cost = conv_cost(p.in_ch, p.width, 1, p.resolution)
    if p.mix is not None:
        cost += conv_cost(p.width, p.mix, 1, 1, bn=False)
    return cost + Cost(p.features * p.num_classes, p.features * p.num_classes + p.num_classes)


# The cost function of each block kind, by plan type (see bignas.nn.registry for the modules).
COSTS: dict[type, Callable[[Any], Cost]] = {ConvPlan: stem_cost, BlockPlan: block_cost, HeadPlan: head_cost}


# A pure function of one entry, asked for some ten entries of every candidate a search considers;
# entries repeat across children, and hashing one is a tenth of costing it.
@functools.lru_cache(maxsize=1 << 16)
def entry_cost(entry: Any) -> Cost:
    return COSTS[type(entry)](entry)


def plan_cost(net: Plan) -> Cost:
    total = Cost(0, 0)
    for entry in (net.stem, *net.blocks, net.head):
        total += entry_cost(entry)
    return total


def child_cost(space: SearchSpace, child: Child, resolution: int | None = None) -> Cost:
    """MACs and parameters of `child` (at `resolution` if given, else the child's own)."""
    return plan_cost(plan(space, child, resolution))
