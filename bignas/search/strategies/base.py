"""The ask/tell protocol every strategy follows, and the bounded helpers they share.

A strategy proposes children (`ask`) and learns their accuracy (`tell`); it knows nothing of
models, data or devices. The driver owns the budget, dedup, feasibility checks and timing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Protocol, Sequence, Union

from bignas.space import Child, SearchSpace

if TYPE_CHECKING:
    from bignas.search.problem import Evaluated, Problem, TargetView

MAX_TRIES = 200  # candidates drawn per feasible one before giving up on a region
Fits = Callable[[Child], bool]


class Strategy(Protocol):
    def ask(self, n: int) -> list[Child]:
        """At most `n` children not asked before; [] when the strategy has nothing more to propose."""

    def tell(self, results: Sequence["Evaluated"]) -> None:
        """The evaluated children of the last `ask`, in its order."""


@dataclass(frozen=True)
class NoSettings:
    """The settings of a strategy without options."""


# A single-target strategy gets a TargetView (fits / budget_use bound to one target); a
# multi-target one the whole Problem. `budget` is the number of evaluations it will be granted;
# `settings` an instance of the dataclass it registered (see `register`).
StrategyFactory = Callable[[Union["TargetView", "Problem"], random.Random, int, Any], Strategy]


def feasible_variant(space: SearchSpace, parent: Child, fits: Fits, rng: random.Random, prob: float,
                     seen: set[str]) -> Child | None:
    """A feasible mutation of `parent` not in `seen`, or None after MAX_TRIES candidates."""
    for _ in range(MAX_TRIES):
        child = space.mutate(parent, rng, prob)
        if child.hash not in seen and fits(child):
            return child
    return None


def random_feasible(space: SearchSpace, fits: Fits, rng: random.Random, seen: set[str]) -> Child | None:
    """A uniformly random feasible child not in `seen`, or None after 2 x MAX_TRIES candidates."""
    for _ in range(MAX_TRIES):
        child = space.sample(rng)
        if child.hash not in seen and fits(child):
            return child
    # Random children rarely meet a tight budget: mutate the smallest child instead.
    return feasible_variant(space, space.min(), fits, rng, 0.3, seen)


def fullest_random(space: SearchSpace, fits: Fits, use: Callable[[Child], float], rng: random.Random,
                   seen: set[str], draws: int) -> Child | None:
    """Of `draws` random feasible children not in `seen`, the one that uses the budget most (the
    first drawn among equals); None if none is found. `draws` = 1 is a uniform feasible child."""
    drawn = (random_feasible(space, fits, rng, seen) for _ in range(draws))
    return max((c for c in drawn if c is not None), key=use, default=None)


def offspring(space: SearchSpace, a: Child, b: Child | None, fits: Fits, rng: random.Random, crossover_prob: float,
              mutate_prob: float, seen: set[str]) -> Child | None:
    """A feasible child not in `seen`, made by crossing `a` with `b` (with probability
    `crossover_prob`, when `b` is given) and mutating the result; None after MAX_TRIES candidates."""
    for _ in range(MAX_TRIES):
        child = space.crossover(a, b, rng) if b is not None and rng.random() < crossover_prob else a
        child = space.mutate(child, rng, mutate_prob)
        if child.hash not in seen and fits(child):
            return child
    return None


class Proposals:
    """The children a strategy has asked for, and the loop that asks for more.

    Each new child comes from the strategy's own `propose` (an offspring, a mutation) when it
    gives one, else from a uniformly random feasible child; when neither finds an unseen
    feasible child the strategy is `exhausted` for good and asks for nothing more.
    """

    def __init__(self, space: SearchSpace, fits: Fits, rng: random.Random) -> None:
        self.space, self.fits, self.rng = space, fits, rng
        self.seen: set[str] = set()
        self.exhausted = False

    def extend(self, batch: list[Child], want: int,
               propose: Callable[[set[str]], Child | None] | None = None) -> list[Child]:
        """`batch` (children already chosen, marked seen here) grown to `want` children."""
        self.seen.update(c.hash for c in batch)
        while len(batch) < want and not self.exhausted:
            child = propose(self.seen) if propose is not None else None
            if child is None:  # nothing proposed, or the neighbourhood is exhausted: widen to random
                child = random_feasible(self.space, self.fits, self.rng, self.seen)
            if child is None:  # nothing new and feasible found: stop for good
                self.exhausted = True
                break
            self.seen.add(child.hash)
            batch.append(child)
        return batch


def fullest_skeleton(view: TargetView, grid: Sequence[Child]) -> Child | None:
    """The feasible skeleton of `grid` (the coarse grid of `skeletons`) that uses `view`'s budgets
    most (with no budget, the largest). A supernet child's accuracy grows with its capacity, so
    with a budget of a few dozen evaluations it is a far better start than a random child."""
    feasible = [c for c in grid if view.fits(c)]
    # The grid runs from the smallest levels to the largest: with no budget, the last one wins.
    return max(reversed(feasible), key=view.budget_use, default=None)
