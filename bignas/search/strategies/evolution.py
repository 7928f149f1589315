"""Regularized (aging) evolution: Real et al., "Regularized Evolution for Image Classifier
Architecture Search", AAAI 2019 (Algorithm 1), constrained to the budgets.

A population of the `population` most recently evaluated children. Each offspring comes from a
tournament: `sample_size` members drawn at random, the best is the parent; with probability
`crossover_prob` it is first crossed with the second best (an addition to the paper, which only
mutates), then every decision is resampled with probability `mutate_prob`. Only feasible, unseen
offspring are proposed. Each evaluated offspring joins the population and the oldest member dies
(aging, not the worst), which keeps the search from settling on one lucky child.

The first member is the feasible skeleton of the coarse grid that uses the budget most: at a
budget of a few dozen evaluations, random children rarely come near the budget, where the most
accurate children are (see `fullest_skeleton`). The other initial members are each the fullest of
`init_pool` random feasible children, for the same reason.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from bignas.schema import Invalid, rules
from bignas.search.strategies import register
from bignas.search.strategies.base import Proposals, fullest_random, fullest_skeleton, offspring
from bignas.search.strategies.coarse_to_fine import skeletons
from bignas.space import Child

if TYPE_CHECKING:  # types only: the registry stays light for the CLI
    from bignas.search.problem import Evaluated, TargetView


@dataclass(frozen=True)
class EvolutionSettings:
    # The paper's P=100, S=25 are for ~20k evaluations. At budgets of 20-60, P=10 leaves 1-5
    # populations' worth of offspring after the initial one, and S=4 (a stronger pressure than
    # the paper's S/P = 25%) exploits more in so few cycles: on the synthetic problem of
    # tests/test_strategies.py (20 seeds, budget 40), P in 6..16, S in 2..4 are all within noise.
    # One offspring per ask, as in the paper's sequential loop: each result informs the next tournament.
    # init_pool: on real images a supernet child's val top-1 is noisy (about 2 points on 500 images)
    # and grows with the budget it uses (Spearman 0.47 over 240 cifar10-5k children); uniform
    # children mostly use far less than the budget, so with P=10 half of a budget of 20 went to
    # children no better than random search's. The fullest of 8 (a synthetic noisy problem, 20
    # seeds): best val top-1 +0.004 at budget 20 and +0.005 at 60; 1 restores the paper's uniform start.
    population: int = rules(10, positive=True, help="members alive at once; each new child replaces the oldest")
    sample_size: int = rules(4, positive=True, help="members drawn for each tournament, at most population")
    mutate_prob: float = rules(0.1, positive=True, max=1.0, help="chance each decision of an offspring is resampled")
    crossover_prob: float = rules(0.5, min=0.0, max=1.0, help="chance that an offspring first crosses the two best "
                                                              "of its tournament")
    init_pool: int = rules(8, positive=True, help="each random member of the initial population is the one of this "
                                                   "many random feasible children that uses the budget most")
    batch: int = rules(1, positive=True, help="offspring proposed per ask; raise it to keep several GPUs busy")

    def __post_init__(self) -> None:
        if self.sample_size > self.population:
            raise Invalid("sample_size", f"must be at most population ({self.population}), got {self.sample_size}")


def tournament(members: Sequence[Evaluated], size: int, rng: random.Random) -> list[Evaluated]:
    """`size` members drawn without replacement, best top-1 first (ties: in the order drawn)."""
    return sorted(rng.sample(list(members), size), key=lambda e: -e.top1)


@register("evolution", settings=EvolutionSettings,
          help="regularized (aging) evolution with tournament selection (Real et al. 2019)")
class Evolution:
    """The initial population is the feasible skeleton that uses the budget most, then random
    feasible children; then one tournament per offspring, the oldest member dying at each tell."""

    def __init__(self, problem: TargetView, rng: random.Random, budget: int, settings: EvolutionSettings) -> None:
        self.problem, self.rng, self.settings = problem, rng, settings
        self.population: deque[Evaluated] = deque()  # oldest first
        self.proposals = Proposals(problem.space, problem.fits, rng)

    def ask(self, n: int) -> list[Child]:
        s = self.settings
        filling = len(self.population) < s.population  # the initial population: random children
        want = min(n, s.population - len(self.population) if filling else s.batch)
        seeds = self._seeds()[:want] if not self.proposals.seen else []
        return self.proposals.extend(seeds, want, self._initial if filling else self._offspring)

    def _initial(self, seen: set[str]) -> Child | None:
        p = self.problem
        return fullest_random(p.space, p.fits, p.budget_use, self.rng, seen, self.settings.init_pool)

    def _offspring(self, seen: set[str]) -> Child | None:
        s = self.settings
        best = tournament(self.population, s.sample_size, self.rng)
        second = best[1].child if len(best) > 1 else None
        return offspring(self.problem.space, best[0].child, second, self.problem.fits, self.rng, s.crossover_prob,
                         s.mutate_prob, seen)

    def _seeds(self) -> list[Child]:
        child = fullest_skeleton(self.problem, skeletons(self.problem.space))
        return [child] if child is not None else []

    def tell(self, results: Sequence[Evaluated]) -> None:
        for result in results:
            self.population.append(result)
            if len(self.population) > self.settings.population:
                self.population.popleft()  # aging: the oldest dies, however good it is
