"""Successive halving (low-fidelity estimation) through the driver on a synthetic problem, and the
fixed validation subsets it reads."""

import math
import random

import pytest
import torch

from bignas.cost import child_cost
from bignas.data import load_dataset
from bignas.latency.fit import predict
from bignas.latency.table import read_table
from bignas.search import driver
from bignas.search.evaluator import Evaluator
from bignas.search.halving import HalvingSettings, best_share, make_halving
from bignas.search.problem import Problem, SearchError, Target
from bignas.space import load_space
from test_latency import PACKAGE


def truth(space):
    largest = child_cost(space, space.max()).mflops
    return lambda c: 0.5 + 0.3 * math.sqrt(child_cost(space, c).mflops / largest) + (int(c.hash, 16) % 97) / 1e4


def noisy(top1, scale):
    """A lower fidelity: the truth plus a deterministic error per child."""
    return lambda c: top1(c) + scale * ((int(c.hash[::-1], 16) % 1000) / 1000 - 0.5)


def counting(fn, calls, seen=None):
    def evaluate(children):
        calls.extend(c.hash for c in children)
        if seen is not None:
            seen.update((c.hash, c) for c in children)
        return [fn(c) for c in children]
    return evaluate


@pytest.mark.parametrize("rungs", [((64,), (64,), 0.25), ((32, 128), (16, 64), 0.5)])
def test_successive_halving_promotes_by_rank_and_reports_only_full_fidelity(rungs):
    space = load_space("cifar-small")
    top1 = truth(space)
    limit = (child_cost(space, space.min()).mflops + child_cost(space, space.max()).mflops) / 2
    settings = HalvingSettings(val_images=rungs[0], calibration_images=rungs[1], keep=rungs[2])
    lower = len(rungs[0])
    levels = [noisy(top1, 0.04 / (i + 1)) for i in range(lower)] + [top1]
    calls = [[] for _ in levels]
    doc = driver.run("evolution", Problem(space, (), max_mflops=limit), counting(levels[0], calls[0]), 12, seed=2,
                     halving=settings, higher=[counting(f, c) for f, c in zip(levels[1:], calls[1:])])
    (result,) = doc["devices"]
    assert doc["fidelity"]["method"] == "successive-halving" and doc["fidelity"]["keep"] == rungs[2]
    assert len(calls[0]) == 12 and len(result["fidelity"]["screened"]) == 12
    scores = {s["hash"]: s["top1_low"] for s in result["fidelity"]["screened"]}
    for r in range(lower):  # each rung evaluates the best share of the one below, by that one's top-1
        ranked = sorted(calls[r], key=lambda h: -scores[h][r])
        assert sorted(calls[r + 1]) == sorted(ranked[:math.ceil(rungs[2] * len(calls[r]))])
    assert [p["hash"] for p in result["evaluated"]] == calls[-1]  # only full-fidelity children are reported
    for p in result["evaluated"]:
        assert p["top1_val"] == top1(space.child_from_dict(p["arch"]))
    assert result["best"]["top1_val"] == max(p["top1_val"] for p in result["evaluated"])
    assert [r["children"] for r in result["fidelity"]["rungs"]] == [len(c) for c in calls]


def test_several_targets_promote_the_best_share_of_each():
    space = load_space("cifar-small")
    top1, low = truth(space), noisy(truth(space), 0.04)
    targets = []
    for profile in ("cpu-1t", "cpu-2t"):
        table = read_table(PACKAGE / "latency_tables" / profile / "cifar-small.json", space.hash)
        lo, hi = predict(table, space, space.min()), predict(table, space, space.max())
        targets.append(Target(profile, table, lo + 0.4 * (hi - lo)))
    problem = Problem(space, tuple(targets))
    calls, children = ([], []), {}
    driver.run("nsga2", problem, counting(low, calls[0], children), 16, seed=0, halving=HalvingSettings(keep=0.25),
               higher=[counting(top1, calls[1])])
    want = set()
    for t in targets:
        feasible = [h for h in calls[0] if not problem.violations(children[h], t)]
        want.update(sorted(feasible, key=lambda h: -low(children[h]))[:math.ceil(0.25 * len(feasible))])
    assert len(calls[0]) == 16 and set(calls[1]) == want


def test_the_best_share_rounds_up_and_keeps_the_earlier_of_equals():
    assert best_share([0.5, 0.7, 0.1, 0.7], 0.5) == [1, 3]
    assert best_share([0.5, 0.7, 0.1, 0.7], 0.3) == [1, 3]  # ceil(1.2): never fewer than the share
    assert best_share([0.5, 0.7, 0.1, 0.7], 0.2) == [1] and best_share([0.4], 0.01) == [0]
    assert best_share([], 0.5) == []


def test_halving_options_are_checked():
    assert make_halving(["val_images=[32, 128]", "calibration_images=[16, 64]"]).val_images == (32, 128)
    with pytest.raises(SearchError, match="calibration_images.*one per rung"):
        make_halving(["val_images=[32, 128]"])
    with pytest.raises(SearchError, match="keep"):
        make_halving(["keep=0"])


def test_a_val_subset_is_fixed_nested_and_cached_apart(tmp_path):
    dataset = load_dataset("mnist5k")
    val = dataset.val
    small, large = val.subset(50), val.subset(200)
    assert torch.equal(small, val.subset(50)) and set(small.tolist()) <= set(large.tolist())
    assert torch.equal(val.subset(None), torch.arange(len(val))) and torch.equal(val.subset(10 ** 6), val.subset())
    assert len(small) == 50 and torch.equal(small, small.sort().values)
    space = load_space("cifar-small")
    child = space.sample(random.Random(0))
    model = torch.nn.Linear(2, 2)
    low = Evaluator(model, space, dataset, tmp_path / "accuracy.jsonl", data_spec="mnist5k", calibration_images=8,
                    batch_size=8, val_images=50, evaluate_one=lambda c: 0.25)
    full = Evaluator(model, space, dataset, tmp_path / "accuracy.jsonl", data_spec="mnist5k", calibration_images=8,
                     batch_size=8, evaluate_one=lambda c: 0.75)
    assert low([child]) == [0.25] and full([child]) == [0.75]  # one cache file, two fidelities kept apart
    again = Evaluator(model, space, dataset, tmp_path / "accuracy.jsonl", data_spec="mnist5k", calibration_images=8,
                      batch_size=8, val_images=len(val) + 5, evaluate_one=lambda c: 0.0)
    assert again.val_images is None and again([child]) == [0.75]  # a subset of at least the split is the split


def test_an_evaluator_on_the_test_split_measures_it_and_keeps_it_apart_from_val(tmp_path):
    from bignas.evaluate import evaluate_child
    from conftest import make_random_supernet

    dataset = load_dataset("mnist5k")
    net = make_random_supernet("cifar-small").eval()
    child = net.space.min()
    cache = tmp_path / "accuracy.jsonl"
    test = Evaluator(net, net.space, dataset, cache, data_spec="mnist5k", calibration_images=8, batch_size=64,
                     split="test")
    expected, _ = evaluate_child(net, child, dataset, "test", calibration_images=8, batch_size=64)
    assert test([child]) == [expected]
    val = Evaluator(net, net.space, dataset, cache, data_spec="mnist5k", calibration_images=8, batch_size=64,
                    evaluate_one=lambda c: -1.0)
    assert val.known() == {} and val([child]) == [-1.0]  # the test record is not a val accuracy
    with pytest.raises(ValueError, match="split"):
        Evaluator(net, net.space, dataset, cache, data_spec="mnist5k", calibration_images=8, batch_size=64,
                  split="train")
