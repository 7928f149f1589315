"""Analytic cost of a child: multiply-accumulates and parameters, from its operations (`graph`, no tracing).

MFLOPs here are millions of multiply-accumulates (MACs) of convolutions and linear layers, the
convention of once-for-all, MobileNet and EfficientNet papers. Batch norm, activations, pooling
and the residual additions are not counted (they are < 2% of the total on these networks).
Parameters count every learnable tensor of the static child: conv and linear weights, their
biases, and batch-norm affine weights.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from bignas.graph import entry_convs
from bignas.plan import Plan, plan
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


# A pure function of one entry, asked for some ten entries of every candidate a search considers;
# entries repeat across children, and hashing one is a tenth of costing it.
@functools.lru_cache(maxsize=1 << 16)
def entry_cost(entry: Any) -> Cost:
    """MACs and parameters of one plan entry: the sum over its convolutions and classifier."""
    convs = entry_convs(entry)
    return Cost(sum(c.macs for c in convs), sum(c.params for c in convs))


def plan_cost(net: Plan) -> Cost:
    total = Cost(0, 0)
    for entry in (net.stem, *net.blocks, net.head):
        total += entry_cost(entry)
    return total


def child_cost(space: SearchSpace, child: Child, resolution: int | None = None) -> Cost:
    """MACs and parameters of `child` (at `resolution` if given, else the child's own)."""
    return plan_cost(plan(space, child, resolution))
