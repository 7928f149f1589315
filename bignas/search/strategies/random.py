"""Uniformly random feasible children: the baseline every other strategy must beat."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Sequence

from bignas.search.strategies import register
from bignas.search.strategies.base import NoSettings, Proposals
from bignas.space import Child

if TYPE_CHECKING:  # types only: the registry stays light for the CLI
    from bignas.search.problem import Evaluated, TargetView


@register("random", help="uniform feasible children (the baseline)")
class RandomSearch:
    def __init__(self, problem: TargetView, rng: random.Random, budget: int, settings: NoSettings) -> None:
        self.proposals = Proposals(problem.space, problem.fits, rng)

    def ask(self, n: int) -> list[Child]:
        return self.proposals.extend([], n)

    def tell(self, results: Sequence[Evaluated]) -> None:
        pass
