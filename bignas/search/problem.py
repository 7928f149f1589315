"""What a search must satisfy: a latency budget per target, MFLOPs, parameters, weight and activation
memory; what it records.

Checking a candidate is analytic (costs) and a table lookup (latency): far cheaper than
evaluating its accuracy, so strategies filter before they ask.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from bignas.cost import plan_cost
from bignas.errors import BignasError
from bignas.latency.fit import predict
from bignas.latency.keys import plan_keys
from bignas.latency.table import LatencyTable
from bignas.memory import plan_memory
from bignas.plan import plan
from bignas.space import Child, SearchSpace


class SearchError(BignasError):
    """A search that cannot run: an infeasible budget, a table of another space, a bad request."""


@dataclass(frozen=True)
class Target:
    """One device to search for: its latency table and the budget a child must meet on it, on the
    median of runs (`p50`) or their 90th percentile (`p90`)."""

    name: str
    table: LatencyTable
    max_ms: float | None = None
    stat: str = "p50"


@dataclass(frozen=True)
class Evaluated:
    """One evaluated child. `costs`: {"mflops", "params_m", "latency_ms": {target name: ms}}."""

    child: Child
    top1: float
    costs: dict[str, Any]


@dataclass
class Problem:
    space: SearchSpace
    targets: tuple[Target, ...] = ()
    max_mflops: float | None = None
    max_params_m: float | None = None
    max_weights_mb: float | None = None  # of the child's weights, in the precision of the target's table
    max_activation_mb: float | None = None  # its peak activation memory, batch 1, in that precision
    checks: int = 0  # calls of `fits`: the candidates the strategies considered
    _costs: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    @property
    def memory_budgets(self) -> bool:
        return self.max_weights_mb is not None or self.max_activation_mb is not None

    def costs(self, child: Child) -> dict[str, Any]:
        """{"mflops", "params_m", "latency_ms": {target: predicted ms, on the target's `stat`}} of
        `child` (memoised), and with a memory budget "memory" (`bignas.memory.Memory`)."""
        key = child.hash
        if key not in self._costs:
            net = plan(self.space, child)  # once for the costs and every table's prediction
            cost, keys = plan_cost(net), plan_keys(net)
            self._costs[key] = {"mflops": cost.mflops, "params_m": cost.params_m,
                                "latency_ms": {t.name: predict(t.table, self.space, child, keys, t.stat)
                                               for t in self.targets}}
            if self.memory_budgets:  # a walk over every operation: only when it is asked for
                self._costs[key]["memory"] = plan_memory(net)
        return self._costs[key]

    def memory_uses(self, costs: dict[str, Any], target: Target | None) -> list[tuple[str, float, float]]:
        """(what, MB, budget MB) of each memory budget for a child of `costs`, in the precision `target`
        deploys (its table's; fp32 without a target). int8 weights are counted per channel, the
        default format."""
        memory = costs.get("memory")
        if memory is None:
            return []
        precision = target.table.precision if target is not None else "fp32"
        return [(f"{precision} {what}", figure(precision), limit)
                for what, figure, limit in (("weights", memory.weights_mb, self.max_weights_mb),
                                            ("peak activations", memory.activation_mb, self.max_activation_mb))
                if limit is not None]

    def violations(self, child: Child, target: Target | None) -> list[str]:
        """The budgets `child` exceeds: the shared MFLOPs / params ones and `target`'s latency."""
        c = self.costs(child)
        out = []
        if self.max_mflops is not None and c["mflops"] > self.max_mflops:
            out.append(f"{c['mflops']:.2f} MFLOPs > MFLOPs budget {self.max_mflops:g}")
        if self.max_params_m is not None and c["params_m"] > self.max_params_m:
            out.append(f"{c['params_m']:.3f} M params > params budget {self.max_params_m:g} M")
        if target is not None and target.max_ms is not None and c["latency_ms"][target.name] > target.max_ms:
            out.append(f"{c['latency_ms'][target.name]:.3f} ms {target.stat} on {target.name} > latency budget "
                       f"{target.max_ms:g} ms")
        out += [f"{mb:.4f} MB of {what} > budget {limit:g} MB" for what, mb, limit in self.memory_uses(c, target)
                if mb > limit]
        return out

    def fits(self, child: Child, target: Target | None) -> bool:
        self.checks += 1
        return not self.violations(child, target)

    def budget_use(self, child: Child, target: Target | None) -> float:
        """The largest fraction of any budget `child` uses (1.0 = exactly on a limit); 0.0 with no budget."""
        c = self.costs(child)
        uses = [0.0]
        if self.max_mflops:
            uses.append(c["mflops"] / self.max_mflops)
        if self.max_params_m:
            uses.append(c["params_m"] / self.max_params_m)
        if target is not None and target.max_ms:
            uses.append(c["latency_ms"][target.name] / target.max_ms)
        uses += [mb / limit for _, mb, limit in self.memory_uses(c, target)]
        return max(uses)

    def check_achievable(self, target: Target | None) -> None:
        """Refuse a budget that even the cheapest child misses, saying what is achievable.

        The smallest child has the fewest MFLOPs and parameters of the space; its predicted
        latency is the least of any child's as long as every block's time grows with its size.
        """
        problems = self.violations(self.space.min(), target)
        if problems:
            where = f" for target {target.name}" if target is not None else ""
            raise SearchError(f"no child of space '{self.space.name}' can meet the budget{where}: the smallest "
                              f"child needs {'; '.join(problems)}. Raise the budget to at least the "
                              f"smallest child's value.")

    def check_budget(self, budget: int) -> None:
        """Refuse a budget of more accuracy evaluations than the space has distinct children."""
        count = self.space.child_count()
        if budget > count:
            raise SearchError(f"--budget {budget} exceeds the {count} distinct children of space "
                              f"'{self.space.name}': give at most {count}")

    def view(self, target: Target | None) -> "TargetView":
        return TargetView(self, target)


@dataclass(frozen=True)
class TargetView:
    """What a single-target strategy sees: the problem with `fits` and `budget_use` bound to one target."""

    problem: Problem
    target: Target | None

    @property
    def space(self) -> SearchSpace:
        return self.problem.space

    @property
    def name(self) -> str:
        return self.target.name if self.target is not None else "any"

    def costs(self, child: Child) -> dict[str, Any]:
        return self.problem.costs(child)

    def fits(self, child: Child) -> bool:
        return self.problem.fits(child, self.target)

    def budget_use(self, child: Child) -> float:
        return self.problem.budget_use(child, self.target)


@dataclass
class Search:
    """One search: what it evaluated (in order) and what it cost besides the evaluations."""

    strategy: str
    targets: tuple[Target | None, ...]  # (one target or None) for a single-target strategy
    evaluated: list[Evaluated]
    eval_s: float
    overhead_s: float
    considered: int  # feasibility checks the strategy made (candidates considered)
    notes: dict[str, Any] = field(default_factory=dict)  # a guided search's predictions (see `guided`)
