"""Coarse-to-fine (BigNAS Sec. 3.4): a grid of skeletons, then constrained mutation of the best."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

from bignas.schema import rules
from bignas.search.strategies import register
from bignas.search.strategies.base import feasible_variant, random_feasible
from bignas.space import Child, SearchSpace, StageChoice

if TYPE_CHECKING:  # types only: the registry stays light for the CLI
    from bignas.search.problem import Evaluated, TargetView

# Levels of the coarse grid: relative positions in each choice's options (0 smallest, 1 largest).
GRID_LEVELS = {"depth": (0.0, 0.5, 1.0), "width": (0.0, 0.5, 1.0), "kernel": (0.0, 1.0), "expand": (0.0, 0.5, 1.0)}


def at_levels(space: SearchSpace, resolution: int, depth: float, width: float, kernel: float,
              expand: float) -> Child:
    """The child that takes, in every stage, the option at the same relative position of each
    choice (0 = smallest, 1 = largest): a skeleton of the coarse search grid."""
    def at(options, level):
        return sorted(options)[round(level * (len(options) - 1))]

    stages = tuple(
        StageChoice(at(s.depths, depth), at(s.widths, width), (at(s.kernels, kernel),) * at(s.depths, depth),
                    (at(s.expands, expand),) * at(s.depths, depth))
        for s in space.stages)
    return Child(resolution=resolution, stem=at(space.stem.widths, width), stages=stages,
                 head=at(space.head.widths, width),
                 mix=at(space.head.mix_widths, width) if space.head.mix_widths else None)


def skeletons(space: SearchSpace) -> list[Child]:
    """The coarse grid: resolution x global depth / width / kernel / expand levels, duplicates removed."""
    grid = {}
    for r, d, w, k, e in itertools.product(space.resolutions, *GRID_LEVELS.values()):
        child = at_levels(space, r, d, w, k, e)
        grid.setdefault(child.hash, child)
    return list(grid.values())


@dataclass(frozen=True)
class CoarseToFineSettings:
    coarse_share: float = rules(0.5, positive=True, max=1.0, help="share of the budget spent on the grid")
    parents: int = rules(3, positive=True, help="best children mutated in each fine round")
    mutate_prob: float = rules(0.2, positive=True, max=1.0, help="chance that each decision of a parent changes")


@register("coarse-to-fine", settings=CoarseToFineSettings,
          help="a grid of skeletons, then constrained mutation of the best (default)")
class CoarseToFine:
    """Ask for the feasible skeletons that use the budget most (the most accurate ones to expect),
    then for constrained random mutations of the best few, widening to random feasible children
    when a neighbourhood is exhausted."""

    def __init__(self, problem: TargetView, rng: random.Random, budget: int,
                 settings: CoarseToFineSettings) -> None:
        self.problem, self.rng, self.budget = problem, rng, budget
        self.coarse_share, self.parents, self.mutate_prob = settings.coarse_share, settings.parents, settings.mutate_prob
        self.history: list[Evaluated] = []
        self.seen: set[str] = set()
        self.started = False

    def ask(self, n: int) -> list[Child]:
        space, fits = self.problem.space, self.problem.fits
        if not self.started:
            self.started = True
            feasible = [c for c in skeletons(space) if fits(c)]
            feasible.sort(key=self.problem.budget_use, reverse=True)  # stable: grid order among equals
            batch = (feasible[:max(1, int(self.budget * self.coarse_share))] or [space.min()])[:n]
        else:
            best = sorted(self.history, key=lambda e: e.top1, reverse=True)[:self.parents]
            batch = []
            for parent in best[:n]:
                child = feasible_variant(space, parent.child, fits, self.rng, self.mutate_prob, self.seen)
                if child is None:  # the neighbourhood is exhausted: widen it with a random feasible child
                    child = random_feasible(space, fits, self.rng, self.seen)
                if child is not None:
                    self.seen.add(child.hash)
                    batch.append(child)
        self.seen.update(c.hash for c in batch)
        return batch

    def tell(self, results: Sequence[Evaluated]) -> None:
        self.history.extend(results)
