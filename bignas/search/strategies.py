"""Search strategies: coarse-to-fine (BigNAS Sec. 3.4) and the uniform random baseline.

A strategy sees the space, a feasibility test and an accuracy function of a list of children
(so an evaluator can spread a batch over processes), and spends at most `budget` accuracy
evaluations (a cached one counts too: the budget is about candidates, so strategies compare on
equal footing). It returns every (child, top-1) it evaluated, in order.
"""

from __future__ import annotations

import itertools
import random
from typing import Callable

from bignas.space import Child, SearchSpace

Fits = Callable[[Child], bool]
Evaluate = Callable[[list[Child]], list[float]]
History = list[tuple[Child, float]]

# Levels of the coarse grid: relative positions in each choice's options (0 smallest, 1 largest).
GRID_LEVELS = {"depth": (0.0, 0.5, 1.0), "width": (0.0, 0.5, 1.0), "kernel": (0.0, 1.0), "expand": (0.0, 0.5, 1.0)}
MAX_TRIES = 200  # candidates drawn per feasible one before giving up on a region


def skeletons(space: SearchSpace) -> list[Child]:
    """The coarse grid: resolution x global depth / width / kernel / expand levels, duplicates removed."""
    grid = {}
    for r, d, w, k, e in itertools.product(space.resolutions, *GRID_LEVELS.values()):
        child = space.at_levels(r, d, w, k, e)
        grid.setdefault(child.hash, child)
    return list(grid.values())


def coarse_to_fine(space: SearchSpace, fits: Fits, evaluate: Evaluate, budget: int, rng: random.Random,
                   cost: Callable[[Child], float], coarse_share: float = 0.5, parents: int = 3,
                   mutate_prob: float = 0.2) -> History:
    """Evaluate the feasible skeletons that use the budget most, then refine the best few by
    constrained random mutation, keeping improvements, until `budget` evaluations are spent.

    `cost` is a candidate's largest fraction of any budget (1.0 = on the limit): among feasible
    skeletons, the ones nearest the limit are the most accurate ones to expect.
    """
    feasible = [c for c in skeletons(space) if fits(c)]
    feasible.sort(key=cost, reverse=True)
    history: History = []
    seen: set[str] = set()

    def run(children: list[Child]) -> None:
        seen.update(c.hash for c in children)
        history.extend(zip(children, evaluate(children)))

    run(feasible[:max(1, int(budget * coarse_share))] or [space.min()])
    while len(history) < budget:
        best = sorted(history, key=lambda h: h[1], reverse=True)[:parents]
        batch: list[Child] = []
        for parent, _ in best[:budget - len(history)]:
            child = _feasible_variant(space, parent, fits, rng, mutate_prob, seen)
            if child is None:  # the neighbourhood is exhausted: widen it with a random feasible child
                child = _random_feasible(space, fits, rng, seen)
            if child is not None:
                seen.add(child.hash)
                batch.append(child)
        if not batch:
            break
        run(batch)
    return history


def random_search(space: SearchSpace, fits: Fits, evaluate: Evaluate, budget: int,
                  rng: random.Random) -> History:
    """Uniformly random feasible children: the baseline coarse-to-fine must beat."""
    seen: set[str] = set()
    batch: list[Child] = []
    while len(batch) < budget:
        child = _random_feasible(space, fits, rng, seen)
        if child is None:
            break
        seen.add(child.hash)
        batch.append(child)
    return list(zip(batch, evaluate(batch)))


def _feasible_variant(space: SearchSpace, parent: Child, fits: Fits, rng: random.Random, prob: float,
                      seen: set[str]) -> Child | None:
    for _ in range(MAX_TRIES):
        child = space.mutate(parent, rng, prob)
        if child.hash not in seen and fits(child):
            return child
    return None


def _random_feasible(space: SearchSpace, fits: Fits, rng: random.Random, seen: set[str]) -> Child | None:
    for _ in range(MAX_TRIES):
        child = space.sample(rng)
        if child.hash not in seen and fits(child):
            return child
    # Random children rarely meet a tight budget: mutate the smallest child instead.
    return _feasible_variant(space, space.min(), fits, rng, 0.3, seen)
