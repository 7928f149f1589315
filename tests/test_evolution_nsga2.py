"""Regularized evolution and NSGA-II: their state after tells, the sort and crowding distance on
hand-made points, a two-target NSGA-II search on shipped tables, and both against random search."""

import math
import random

import pytest

from bignas.latency.fit import predict
from bignas.latency.table import read_table
from bignas.search import driver
from bignas.search.problem import Evaluated, Problem, SearchError, Target
from bignas.search.strategies import make_settings
from bignas.search.strategies.base import fullest_skeleton
from bignas.search.strategies.coarse_to_fine import skeletons
from bignas.search.strategies.evolution import Evolution, tournament
from bignas.search.strategies.nsga2 import (NSGA2, crowding_distance, non_dominated_fronts, objectives,
                                            ranked_fronts, survivors, violation)
from bignas.space import load_space
from test_strategies import synthetic

SPACE = load_space("cifar-small")


def two_targets(loose=0.5, tight=0.25):
    """cpu-1t and cpu-2t, each budget a fraction of the way from its smallest to its largest child."""
    targets = []
    for name, fraction in (("cpu-1t", loose), ("cpu-2t", tight)):
        table = read_table(f"{name}/cifar-small", SPACE.hash)
        low, high = predict(table, SPACE, SPACE.min()), predict(table, SPACE, SPACE.max())
        targets.append(Target(name, table, low + fraction * (high - low)))
    return tuple(targets)


def drive(strategy, problem, evaluate, budget):
    """The driver's loop, by hand, so that the test sees the strategy's state after every tell."""
    told = []
    while len(told) < budget:
        asked = strategy.ask(budget - len(told))
        if not asked:
            break
        results = [Evaluated(c, top1, problem.costs(c)) for c, top1 in zip(asked, evaluate(asked))]
        strategy.tell(results)
        told += results
        yield asked, told


def test_evolution_keeps_the_youngest_population():
    limit, evaluate = synthetic(SPACE)
    problem = Problem(SPACE, (), max_mflops=limit)
    settings = make_settings("evolution", {"population": 4, "sample_size": 2})
    strategy = Evolution(problem.view(None), random.Random(0), 20, settings)
    sizes = []
    for asked, told in drive(strategy, problem, evaluate, 20):
        sizes.append(len(asked))
        assert all(problem.fits(c, None) for c in asked)
        assert list(strategy.population) == told[-4:]  # at most 4 alive, and the oldest died
    assert sizes == [4] + [1] * 16  # the initial population, then one offspring per ask (batch=1)
    assert len({e.child.hash for e in told}) == 20


def test_tournament_picks_the_best_of_its_sample():
    members = [Evaluated(SPACE.sample(random.Random(i)), top1, {}) for i, top1 in
               enumerate([0.3, 0.9, 0.1, 0.5, 0.7, 0.2])]
    for seed in range(10):
        drawn = random.Random(seed).sample(members, 3)
        picked = tournament(members, 3, random.Random(seed))
        assert picked[0] is max(drawn, key=lambda e: e.top1)
        assert [e.top1 for e in picked] == sorted((e.top1 for e in drawn), reverse=True)
    assert tournament(members, 6, random.Random(0))[0].top1 == 0.9  # the whole population: the best


def test_non_dominated_sort_and_crowding_distance():
    points = [(0, 6), (1, 3), (4, 1), (5, 0), (2, 4), (5, 5), (3, 3), (1, 3)]
    fronts = non_dominated_fronts(points)
    assert fronts == [[0, 1, 2, 3, 7], [4, 6], [5]]  # equal points share a front
    crowding = crowding_distance(points, [0, 1, 2, 3])
    assert crowding[0] == crowding[3] == math.inf
    assert crowding[1] == pytest.approx(4 / 5 + 5 / 6) and crowding[2] == pytest.approx(4 / 5 + 3 / 6)
    assert crowding_distance(points, [4, 6]) == {4: math.inf, 6: math.inf}
    flat = crowding_distance([(0, 1), (1, 1), (3, 1)], [0, 1, 2])  # the constant objective tells nothing
    assert flat == {0: math.inf, 1: pytest.approx(1.0), 2: math.inf}


def test_constrained_ranking_and_survival():
    points = [(0, 0), (3, 1), (1, 3), (2, 2), (3.5, 2.5), (5, 5)]
    violations = [0.5, 0.0, 0.0, 0.0, 0.0, 0.2]
    # the infeasible (0, 0) dominates everything but comes last; less violation first
    assert ranked_fronts(points, violations) == [[1, 2, 3], [4], [5], [0]]
    points += [(1, 4), (6, 1.5)]
    violations += [0.0, 0.0]
    assert ranked_fronts(points, violations)[:2] == [[1, 2, 3], [4, 6, 7]]
    kept = survivors(points, violations, 5)
    assert [(i, rank) for i, rank, _ in kept] == [(1, 0), (2, 0), (3, 0), (6, 1), (7, 1)]
    assert kept[3][2] == kept[4][2] == math.inf  # (3.5, 2.5), crowded between them, is cut
    assert crowding_distance(points, [4, 6, 7])[4] == pytest.approx(5 / 5 + 2.5 / 2.5)


def test_violation_is_the_distance_to_what_the_driver_accepts():
    a, b = Target("a", None, 2.0), Target("b", None, 1.0)
    problem = Problem(SPACE, (a, b), max_mflops=10.0)
    costs = {"mflops": 12.0, "params_m": 1.0, "latency_ms": {"a": 3.0, "b": 1.2}}
    assert violation(problem, costs) == pytest.approx(0.2 + 0.2)  # shared excess + the nearer target's
    assert violation(problem, {**costs, "mflops": 9.0, "latency_ms": {"a": 1.0, "b": 5.0}}) == 0.0
    assert violation(Problem(SPACE), costs) == 0.0
    result = Evaluated(SPACE.min(), 0.7, costs)
    assert objectives(problem, result) == (-0.7, 3.0, 1.2, 12.0)
    assert objectives(Problem(SPACE, (), max_params_m=2.0), result) == (-0.7, 12.0, 1.0)


def test_nsga2_searches_two_targets_at_once():
    limit, evaluate = synthetic(SPACE)
    targets = two_targets()
    problem = Problem(SPACE, targets)
    doc = driver.run("nsga2", problem, evaluate, budget=30, seed=0)
    assert [r["target"] for r in doc["devices"]] == ["cpu-1t", "cpu-2t"]
    children = [SPACE.child_from_dict(p["arch"]) for p in doc["devices"][0]["evaluated"]]
    assert len(children) == 30
    fits = [[not problem.violations(c, t) for t in targets] for c in children]
    assert all(any(f) for f in fits)  # every evaluated child meets some target's budget
    assert any(f.count(True) == 1 for f in fits)  # ... not necessarily every target's
    for result, target in zip(doc["devices"], targets):
        best = SPACE.child_from_dict(result["best"]["arch"])
        assert not problem.violations(best, target) and result["best"]["latency_ms"] <= target.max_ms
        assert result["best"]["top1_val"] == max(p["top1_val"] for p, f in zip(result["evaluated"], fits)
                                                 if f[targets.index(target)])
    again = driver.run("nsga2", Problem(SPACE, targets), evaluate, budget=30, seed=0)
    assert [p["hash"] for p in again["devices"][0]["evaluated"]] == [p["hash"] for p in doc["devices"][0]["evaluated"]]
    other = driver.run("nsga2", Problem(SPACE, targets), evaluate, budget=30, seed=1)
    assert [p["hash"] for p in other["devices"][0]["evaluated"]] != [p["hash"] for p in doc["devices"][0]["evaluated"]]


def test_nsga2_keeps_the_best_and_asks_a_generation_at_a_time():
    limit, evaluate = synthetic(SPACE)
    problem = Problem(SPACE, (), max_mflops=limit)
    strategy = NSGA2(problem, random.Random(0), 35, make_settings("nsga2", {"population": 8}))
    sizes = []
    for asked, told in drive(strategy, problem, evaluate, 35):
        sizes.append(len(asked))
        assert len(strategy.population) == min(8, len(told))
        assert max(e.top1 for e in told) == max(m[0].top1 for m in strategy.population)  # elitism
    assert sizes == [8, 8, 8, 8, 3]
    doc = driver.run("nsga2", Problem(SPACE), evaluate, budget=12, seed=0)  # no target, no budget
    assert [r["target"] for r in doc["devices"]] == ["any"] and len(doc["devices"][0]["evaluated"]) == 12


def test_nsga2_starts_from_both_ends_of_the_front():
    """The first generation holds, per target, the skeleton that uses its budget most, and the
    smallest child: the front's two ends, each the extreme of some objective."""
    targets = two_targets()
    problem = Problem(SPACE, targets)
    first = NSGA2(problem, random.Random(0), 20, make_settings("nsga2")).ask(20)
    grid = skeletons(SPACE)
    ends = [fullest_skeleton(problem.view(t), grid) for t in targets]
    assert [c.hash for c in first[:3]] == [ends[0].hash, ends[1].hash, SPACE.min().hash]
    assert len(first) == 10 and len({c.hash for c in first}) == 10
    # A budget the smallest child does not meet leaves it out, and nothing infeasible is asked for.
    tight = Problem(SPACE, (), max_mflops=Problem(SPACE).costs(SPACE.min())["mflops"] * 0.99)
    assert NSGA2(tight, random.Random(0), 20, make_settings("nsga2")).ask(20) == []


def test_evolution_asks_in_batches_and_is_deterministic():
    limit, evaluate = synthetic(SPACE)
    (target, _) = two_targets()
    runs = [driver.run("evolution", Problem(SPACE, (target,)), evaluate, budget=25, seed=seed,
                       settings=make_settings("evolution", ["batch=4"])) for seed in (0, 0, 1)]
    assert evaluate.calls == [10, 4, 4, 4, 3] * 3  # the population, then batches of 4
    hashes = [[p["hash"] for p in doc["devices"][0]["evaluated"]] for doc in runs]
    assert hashes[0] == hashes[1] != hashes[2]
    assert all(p["latency_ms"] <= target.max_ms for doc in runs for p in doc["devices"][0]["evaluated"])


@pytest.mark.parametrize("name", ["evolution", "nsga2"])
def test_a_budget_only_one_child_meets_ends_the_search(name):
    _, evaluate = synthetic(SPACE)
    problem = Problem(SPACE, (), max_mflops=Problem(SPACE).costs(SPACE.min())["mflops"])
    doc = driver.run(name, problem, evaluate, budget=5, seed=0)
    assert [p["hash"] for p in doc["devices"][0]["evaluated"]] == [SPACE.min().hash]


def test_both_beat_random_search():
    limit, evaluate = synthetic(SPACE)
    best = {name: sum(driver.run(name, Problem(SPACE, (), max_mflops=limit), evaluate, budget=40, seed=seed)
                      ["devices"][0]["best"]["top1_val"] for seed in (0, 1, 2)) / 3
            for name in ("evolution", "nsga2", "random")}
    assert best["evolution"] > best["random"] and best["nsga2"] > best["random"], best


@pytest.mark.parametrize("name, options, field", [
    ("evolution", ["population=0"], "population"),
    ("evolution", ["population=4", "sample_size=5"], "sample_size"),
    ("evolution", ["crossover_prob=1.5"], "crossover_prob"),
    ("nsga2", ["population=0"], "population"),
    ("nsga2", ["mutate_prob=0"], "mutate_prob"),
])
def test_bad_settings_name_the_option(name, options, field):
    with pytest.raises(SearchError, match=f"'{field}'"):
        make_settings(name, options)
