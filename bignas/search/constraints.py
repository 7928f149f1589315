"""What a candidate child must satisfy: a latency budget per device, MFLOPs, parameters.

Checking a candidate is analytic (costs) and a table lookup (latency): far cheaper than
evaluating its accuracy, so the search filters before it evaluates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bignas.cost import child_cost
from bignas.errors import BignasError
from bignas.latency.fit import predict
from bignas.latency.table import LatencyTable
from bignas.space import Child, SearchSpace


class SearchError(BignasError):
    """A search that cannot run: an infeasible budget, a table of another space, bad flags."""


@dataclass(frozen=True)
class Device:
    """One target: its latency table and the budget the child must meet on it."""

    name: str
    table: LatencyTable
    max_ms: float | None = None


@dataclass
class Constraints:
    space: SearchSpace
    devices: tuple[Device, ...] = ()
    max_mflops: float | None = None
    max_params_m: float | None = None
    _costs: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def costs(self, child: Child) -> dict[str, Any]:
        """{"mflops", "params_m", "latency_ms": {device: predicted ms}} of `child` (memoised)."""
        key = child.hash
        if key not in self._costs:
            cost = child_cost(self.space, child)
            self._costs[key] = {"mflops": cost.mflops, "params_m": cost.params_m,
                                "latency_ms": {d.name: predict(d.table, self.space, child) for d in self.devices}}
        return self._costs[key]

    def violations(self, child: Child, device: Device | None) -> list[str]:
        """The budgets `child` exceeds: the shared MFLOPs / params ones and `device`'s latency."""
        c = self.costs(child)
        out = []
        if self.max_mflops is not None and c["mflops"] > self.max_mflops:
            out.append(f"{c['mflops']:.2f} MFLOPs > --max-mflops {self.max_mflops:g}")
        if self.max_params_m is not None and c["params_m"] > self.max_params_m:
            out.append(f"{c['params_m']:.3f} M params > --max-params-m {self.max_params_m:g}")
        if device is not None and device.max_ms is not None and c["latency_ms"][device.name] > device.max_ms:
            out.append(f"{c['latency_ms'][device.name]:.3f} ms on {device.name} > --max-latency-ms {device.max_ms:g}")
        return out

    def fits(self, child: Child, device: Device | None) -> bool:
        return not self.violations(child, device)

    def check_achievable(self, device: Device | None) -> None:
        """Refuse a budget that even the cheapest child misses, saying what is achievable.

        The smallest child has the fewest MFLOPs and parameters of the space; its predicted
        latency is the least of any child's as long as every block's time grows with its size.
        """
        smallest = self.space.min()
        problems = self.violations(smallest, device)
        if problems:
            where = f" for device {device.name}" if device is not None else ""
            raise SearchError(f"no child of space '{self.space.name}' can meet the budget{where}: the smallest "
                              f"child needs {'; '.join(problems)}. Raise the budget to at least the "
                              f"smallest child's value.")
