"""One driver for every strategy: it owns the budget, dedup, feasibility checks and timing.

A single-target strategy runs once per target (or once, with no target), on a view of the
problem bound to that target; a multi-target one runs once and sees every target. Searches share
`evaluate`, so a child evaluated for one target is free for the next (but still counts toward
that search's budget: the budget is about candidates, so strategies compare on equal footing).
"""

from __future__ import annotations

import random
import time
from typing import Any, Callable, Sequence

from bignas.search.guided import Guided, GuidedSettings
from bignas.search.halving import HalvingSettings, promote
from bignas.search.problem import Evaluated, Problem, Search, SearchError, Target
from bignas.search.report import document
from bignas.search.strategies import get_strategy, make_settings, settings_dict
from bignas.seeds import derive_seed
from bignas.space import Child

Evaluate = Callable[[list[Child]], list[float]]


def run(strategy_name: str, problem: Problem, evaluate: Evaluate, budget: int, seed: int,
        settings: Any = None, guided: GuidedSettings | None = None,
        prior: Sequence[tuple[Child, float]] = (), halving: HalvingSettings | None = None,
        higher: Sequence[Evaluate] = ()) -> dict[str, Any]:
    """Search with `strategy_name` and return the search.json document (see `report.document`).
    `settings`: the strategy's options (see `strategies.make_settings`); None means its defaults.
    `guided`: screen the strategy's candidates on an accuracy predictor (see `guided`), fitted on
    `prior` (known children and their val top-1) and on what the search evaluates.
    `halving`: successive halving (see `halving`): `evaluate` is the lowest fidelity, `higher` the
    next ones up to the full estimate; `budget` counts the candidates of the lowest."""
    settings = make_settings(strategy_name) if settings is None else settings
    found = searches(strategy_name, problem, evaluate, budget, seed, settings, guided, prior)
    if halving is not None:
        found = promote(problem, found, [evaluate, *higher], halving.keep)
    return document(problem, strategy_name, budget, seed, settings_dict(settings), found,
                    settings_dict(guided) if guided is not None else None,
                    settings_dict(halving) if halving is not None else None)


def searches(strategy_name: str, problem: Problem, evaluate: Evaluate, budget: int, seed: int,
             settings: Any = None, guided: GuidedSettings | None = None,
             prior: Sequence[tuple[Child, float]] = ()) -> list[Search]:
    """One search per target for a single-target strategy (seeded by target name), else one in all."""
    info = get_strategy(strategy_name)
    settings = make_settings(strategy_name) if settings is None else settings
    if budget < 1:
        raise SearchError(f"the search budget must be at least 1 evaluation, got {budget}")
    targets: list[Target | None] = list(problem.targets) or [None]
    problem.check_budget(budget)
    for target in targets:  # refuse an infeasible budget before spending any evaluation
        problem.check_achievable(target)
    if info.multi_target:
        names = [t.name if t is not None else "any" for t in targets]
        rng = random.Random(derive_seed("search", seed, *names))
        return [run_one(info.name, problem, evaluate, budget, rng, tuple(targets), settings, guided, prior)]
    return [run_one(info.name, problem, evaluate, budget,
                    random.Random(derive_seed("search", seed, t.name if t is not None else "any")), (t,), settings,
                    guided, prior)
            for t in targets]


def run_one(strategy_name: str, problem: Problem, evaluate: Evaluate, budget: int, rng: random.Random,
            targets: tuple[Target | None, ...] = (None,), settings: Any = None, guided: GuidedSettings | None = None,
            prior: Sequence[tuple[Child, float]] = ()) -> Search:
    """One search with a given `rng`: over `targets` for a multi-target strategy, else over the one target."""
    info = get_strategy(strategy_name)
    settings = make_settings(strategy_name) if settings is None else settings
    if not info.multi_target and len(targets) != 1:
        raise SearchError(f"strategy {info.name!r} searches one target at a time, got {len(targets)}")
    start, eval_s, checks = time.perf_counter(), 0.0, problem.checks
    strategy = info.factory(problem if info.multi_target else problem.view(targets[0]), rng, budget, settings)
    if guided is not None:  # the strategy starts, then screens candidates on the predictor: a search of it per round
        def screen(surrogate: Evaluate, n: int, screen_rng: random.Random) -> list[Child]:
            return [e.child for e in run_one(info.name, problem, surrogate, n, screen_rng, targets, settings).evaluated]

        strategy = Guided(problem, targets, rng, guided, strategy, screen, prior)
    done: dict[str, Evaluated] = {}
    order: list[Evaluated] = []
    while len(order) < budget:
        n = budget - len(order)
        asked = list({c.hash: c for c in strategy.ask(n)}.values())
        new = [c for c in asked if c.hash not in done]
        if not new:
            break
        if len(new) > n:
            raise SearchError(f"strategy {info.name!r} asked for {len(new)} new children, more than the "
                              f"{n} left of the budget (a bug in the strategy)")
        for child in new:
            _check_feasible(info.name, problem, targets, child)
        t0 = time.perf_counter()
        top1s = evaluate(new)
        eval_s += time.perf_counter() - t0
        if len(top1s) != len(new):
            raise SearchError(f"the accuracy function returned {len(top1s)} values for {len(new)} children")
        for child, top1 in zip(new, top1s):
            done[child.hash] = Evaluated(child, top1, problem.costs(child))
            order.append(done[child.hash])
        strategy.tell([done[c.hash] for c in asked])
    overhead = time.perf_counter() - start - eval_s
    notes = strategy.notes() if isinstance(strategy, Guided) else {}
    return Search(info.name, targets, order, eval_s, overhead, problem.checks - checks, notes)


def _check_feasible(name: str, problem: Problem, targets: tuple[Target | None, ...], child: Child) -> None:
    """A single-target strategy must meet its target's budgets; a multi-target one at least one target's."""
    problem.space.validate(child, f"child asked by strategy {name!r}")
    missed = [problem.violations(child, t) for t in targets]
    if all(missed):
        where = " on every target" if len(targets) > 1 else ""
        raise SearchError(f"strategy {name!r} asked for child {child.hash}, which misses the budget{where}: "
                          f"{'; '.join(missed[0])} (a bug in the strategy)")
