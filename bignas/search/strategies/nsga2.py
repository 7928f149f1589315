"""NSGA-II over every target at once: Deb, Pratap, Agarwal and Meyarivan, "A fast and elitist
multiobjective genetic algorithm: NSGA-II", IEEE Trans. Evol. Comput. 6(2), 2002.

Objectives, all minimised: -top-1, each target's predicted latency (MFLOPs when there is no
target), and MFLOPs / parameters when they are budgeted. Ranking (Sec. VI of the paper,
constrained domination): less constraint violation first, then the lower non-dominated front,
then the larger crowding distance. The violation is the distance from what the driver accepts
(every budget of at least one target met; see `violation`), not the sum over every target: that
sum would rank a child that fits only the looser target behind every child that fits all, and
on two shipped tables it cost the looser target's best child up to 0.017 top-1 (synthetic
accuracy, 30 seeds, budget 40). Offspring: binary tournaments on that order, crossover, mutation;
only unseen children that meet at least one target's budgets. Survival: the best `population` of
parents and offspring together (elitism). The first members are the two ends of the front: per
target, the feasible skeleton that uses its budget most (see `base.fullest_skeleton`), and the
smallest child, the cheapest in every cost. The extremes of a front get an infinite crowding
distance, so while they are on the first front they stay and breed. The smallest child costs one
evaluation and anchors the front's low-latency end: without it that end is filled only in later
generations, and at budget 20 the front's hypervolume was below coarse-to-fine's (0.281 against
0.291 on the 40-epoch cifar10-5k supernet; with it, 0.48 against 0.21 on the 20-epoch one). On a
synthetic noisy problem (6 seeds) it doubles the hypervolume at budget 20 (0.27 to 0.54) for
0.001-0.002 of the best child's top-1.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from bignas.schema import rules
from bignas.search.strategies import register
from bignas.search.strategies.base import Proposals, fullest_random, fullest_skeleton, offspring
from bignas.search.strategies.coarse_to_fine import skeletons
from bignas.space import Child

if TYPE_CHECKING:  # types only: the registry stays light for the CLI
    from bignas.search.problem import Evaluated, Problem

Point = Sequence[float]


@dataclass(frozen=True)
class NSGA2Settings:
    # A budget of 20-60 evaluations leaves 2-6 generations of 10; the paper's crossover
    # probability 0.9; a mutation rate that changes about 2 of the ~30 decisions of a child. On two
    # shipped tables (synthetic accuracy, budget 40), P in 6..16 and both rates are within noise.
    # init_pool: as for evolution (see EvolutionSettings), a start from children that fill some
    # target's budget: on a synthetic noisy problem (10 seeds) the best child under the budget gains
    # 0.004-0.007 top-1; the front's hypervolume loses 0.05-0.15 (normalised), its low-latency end
    # filled in later generations. 1 starts from uniform children: the widest first front.
    population: int = rules(10, positive=True, help="children kept each generation, and offspring per generation")
    crossover_prob: float = rules(0.9, min=0.0, max=1.0, help="chance that an offspring crosses its two parents")
    mutate_prob: float = rules(0.1, positive=True, max=1.0, help="chance each decision of an offspring is resampled")
    init_pool: int = rules(8, positive=True, help="each random member of the initial population is the one of this "
                                                   "many random acceptable children that uses some target's budget most")


def dominates(a: Point, b: Point) -> bool:
    """`a` is no worse than `b` in every objective and better in one (all minimised)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def non_dominated_fronts(points: Sequence[Point]) -> list[list[int]]:
    """The indices of `points` by Pareto front, first (non-dominated) front first: the paper's fast
    non-dominated sort (Sec. III-A), O(objectives x points^2)."""
    beats: list[list[int]] = [[] for _ in points]  # the points each one dominates
    beaten = [0] * len(points)  # how many points dominate each one
    for i in range(len(points)):
        for j in range(i + 1, len(points)):
            if dominates(points[i], points[j]):
                beats[i].append(j)
                beaten[j] += 1
            elif dominates(points[j], points[i]):
                beats[j].append(i)
                beaten[i] += 1
    fronts, front = [], [i for i in range(len(points)) if beaten[i] == 0]
    while front:
        fronts.append(front)
        following = []
        for i in front:
            for j in beats[i]:
                beaten[j] -= 1
                if beaten[j] == 0:
                    following.append(j)
        front = sorted(following)
    return fronts


def crowding_distance(points: Sequence[Point], front: Sequence[int]) -> dict[int, float]:
    """Each point of `front`: the sum over objectives of the normalised gap between its two
    neighbours (Sec. III-B); the extremes of every objective get infinity."""
    if len(front) <= 2:
        return {i: math.inf for i in front}
    distance = {i: 0.0 for i in front}
    for m in range(len(points[front[0]])):
        order = sorted(front, key=lambda i: points[i][m])
        low, high = points[order[0]][m], points[order[-1]][m]
        if high == low:  # every point equal here: no information, no extreme
            continue
        distance[order[0]] = distance[order[-1]] = math.inf
        for before, i, after in zip(order, order[1:], order[2:]):
            distance[i] += (points[after][m] - points[before][m]) / (high - low)
    return distance


def ranked_fronts(points: Sequence[Point], violations: Sequence[float]) -> list[list[int]]:
    """Constrained domination: fronts of the feasible points (violation 0), then of each larger
    violation in turn; points with less violation always come first."""
    fronts = []
    for v in sorted(set(violations)):
        group = [i for i, x in enumerate(violations) if x == v]
        fronts += [[group[j] for j in front] for front in non_dominated_fronts([points[i] for i in group])]
    return fronts


def survivors(points: Sequence[Point], violations: Sequence[float], k: int) -> list[tuple[int, int, float]]:
    """The `k` best points by (front, larger crowding distance first): (index, front rank, crowding)."""
    kept: list[tuple[int, int, float]] = []
    for rank, front in enumerate(ranked_fronts(points, violations)):
        crowding = crowding_distance(points, front)
        kept += [(i, rank, crowding[i]) for i in sorted(front, key=lambda i: -crowding[i])][:k - len(kept)]
        if len(kept) >= k:
            break
    return kept


def objectives(problem: Problem, result: Evaluated) -> tuple[float, ...]:
    costs = result.costs
    values = [-result.top1] + ([costs["latency_ms"][t.name] for t in problem.targets] or [costs["mflops"]])
    if problem.targets and problem.max_mflops is not None:
        values.append(costs["mflops"])
    if problem.max_params_m is not None:
        values.append(costs["params_m"])
    return tuple(values)


def violation(problem: Problem, costs: dict[str, Any]) -> float:
    """How far a child is from what the driver accepts: its relative excess over the shared budgets
    plus the least relative excess over any one target's latency and memory budgets (memory is in
    the target's precision; 0: it meets some target)."""
    def excess(pairs):
        return sum(max(0.0, value / limit - 1.0) for value, limit in pairs if limit is not None)

    shared = excess([(costs["mflops"], problem.max_mflops), (costs["params_m"], problem.max_params_m)])
    def target_excess(t):
        latency = [(costs["latency_ms"][t.name], t.max_ms)] if t is not None else []
        return excess(latency + [(mb, limit) for _, mb, limit in problem.memory_uses(costs, t)])

    return shared + min(target_excess(t) for t in problem.targets or (None,))


@register("nsga2", multi_target=True, settings=NSGA2Settings,
          help="NSGA-II over every target's latency at once (Deb et al. 2002)")
class NSGA2:
    """The initial population is the feasible skeleton that uses each target's budget most, the
    smallest child, then random children that meet some target's budgets; then one generation per ask."""

    def __init__(self, problem: Problem, rng: random.Random, budget: int, settings: NSGA2Settings) -> None:
        self.problem, self.rng, self.settings = problem, rng, settings
        self.targets = problem.targets or (None,)
        self.population: list[tuple[Evaluated, int, float]] = []  # (member, front rank, crowding distance)
        self.proposals = Proposals(problem.space, self.acceptable, rng)

    def acceptable(self, child: Child) -> bool:
        """What the driver accepts from a multi-target strategy: every budget of some target met."""
        return any(self.problem.fits(child, t) for t in self.targets)

    def ask(self, n: int) -> list[Child]:
        s = self.settings
        filling = len(self.population) < s.population
        want = min(n, s.population - len(self.population) if filling else s.population)
        seeds = [] if self.proposals.seen else list({c.hash: c for c in self._seeds()}.values())[:want]
        return self.proposals.extend(seeds, want, self._initial if filling else self._offspring)

    def fullness(self, child: Child) -> float:
        """The most any target whose budgets `child` meets has of its budget used."""
        return max((self.problem.budget_use(child, t) for t in self.targets if self.problem.fits(child, t)),
                   default=0.0)

    def _initial(self, seen: set[str]) -> Child | None:
        return fullest_random(self.problem.space, self.acceptable, self.fullness, self.rng, seen,
                              self.settings.init_pool)

    def _offspring(self, seen: set[str]) -> Child | None:
        s = self.settings
        return offspring(self.problem.space, self._parent(), self._parent(), self.acceptable, self.rng,
                         s.crossover_prob, s.mutate_prob, seen)

    def _seeds(self) -> list[Child]:
        """Per target, the feasible skeleton closest to its budget (see `base.fullest_skeleton`),
        then the smallest child when it is acceptable."""
        space = self.problem.space
        grid = skeletons(space)
        found = [fullest_skeleton(self.problem.view(t), grid) for t in self.targets] + [space.min()]
        return [c for c in found if c is not None and self.acceptable(c)]

    def _parent(self) -> Child:
        """Binary tournament (with replacement): the lower front wins, then the larger crowding distance."""
        a, b = (self.population[self.rng.randrange(len(self.population))] for _ in range(2))
        return min(a, b, key=lambda m: (m[1], -m[2]))[0].child

    def tell(self, results: Sequence[Evaluated]) -> None:
        members = [m[0] for m in self.population] + list(results)
        points = [objectives(self.problem, e) for e in members]
        violations = [violation(self.problem, e.costs) for e in members]
        kept = survivors(points, violations, self.settings.population)
        self.population = [(members[i], rank, crowding) for i, rank, crowding in kept]
