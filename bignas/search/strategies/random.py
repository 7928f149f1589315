"""Uniformly random feasible children: the baseline every other strategy must beat."""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Sequence

from bignas.search.strategies import register
from bignas.search.strategies.base import NoSettings, random_feasible
from bignas.space import Child

if TYPE_CHECKING:  # types only: the registry stays light for the CLI
    from bignas.search.problem import Evaluated, TargetView


@register("random", help="uniform feasible children (the baseline)")
class RandomSearch:
    def __init__(self, problem: TargetView, rng: random.Random, budget: int, settings: NoSettings) -> None:
        self.problem, self.rng = problem, rng
        self.seen: set[str] = set()
        self.exhausted = False

    def ask(self, n: int) -> list[Child]:
        batch: list[Child] = []
        while len(batch) < n and not self.exhausted:
            child = random_feasible(self.problem.space, self.problem.fits, self.rng, self.seen)
            if child is None:  # no unseen feasible child found: stop for good
                self.exhausted = True
                break
            self.seen.add(child.hash)
            batch.append(child)
        return batch

    def tell(self, results: Sequence[Evaluated]) -> None:
        pass
