"""The `reinforce` strategy (a REINFORCE-trained controller) through the driver, on the synthetic
problem of test_strategies.py: it learns, beats random, never asks an infeasible child, is fixed
by its seed, and a killed search replays to the same controller."""

import dataclasses
import random
import warnings
from statistics import mean

import pytest
import torch

from bignas.cost import child_cost
from bignas.latency.fit import predict
from bignas.latency.table import read_table
from bignas.search import driver
from bignas.search.problem import Problem, SearchError, Target
from bignas.search.strategies import STRATEGIES, make_settings
from bignas.search.strategies import reinforce
from bignas.search.strategies.reinforce import Reinforce, packing
from bignas.space import load_space, space_names
from test_strategies import synthetic


@pytest.fixture
def made(monkeypatch):
    """The Reinforce instances the driver builds, in order (to read their rewards and parameters)."""
    out = []

    def factory(*args):
        out.append(Reinforce(*args))
        return out[-1]

    monkeypatch.setitem(STRATEGIES, "reinforce", dataclasses.replace(STRATEGIES["reinforce"], factory=factory))
    return out


def search(problem, evaluate, budget, seed, *options, name="reinforce"):
    targets = problem.targets[:1] or (None,)
    return driver.run_one(name, problem, evaluate, budget, random.Random(seed), targets,
                          make_settings(name, list(options)))


def hashes(s):
    return [e.child.hash for e in s.evaluated]


def same_parameters(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.policy.parameters(), b.policy.parameters()))


def test_the_policy_learns_and_beats_random(made):
    space = load_space("cifar-small")
    limit, evaluate = synthetic(space)
    best = {"reinforce": [], "random": []}
    for seed in range(3):
        for name in best:
            s = search(Problem(space, (), max_mflops=limit), evaluate, 60, seed, name=name)
            best[name].append(max(e.top1 for e in s.evaluated))
            if name == "reinforce":
                rewards = [made[-1].rewards[h] for h in hashes(s)]
                assert len(rewards) == 60 and mean(rewards[-15:]) > mean(rewards[:15])
    assert mean(best["reinforce"]) > mean(best["random"])


def test_infeasible_samples_are_scored_but_never_asked(made):
    """A latency budget a quarter of the way up the range: most uniform samples miss it."""
    space = load_space("cifar-small")
    _, evaluate = synthetic(space)
    table = read_table("cpu-1t/cifar-small", space.hash)
    lo, hi = predict(table, space, space.min()), predict(table, space, space.max())
    target = Target("cpu-1t", table, max_ms=lo + 0.25 * (hi - lo))
    problem = Problem(space, (target,))
    s = search(problem, evaluate, 20, 0)  # the driver raises if an infeasible child is asked
    strategy = made[-1]
    assert len(s.evaluated) == 20 and sum(evaluate.calls) == 20
    assert all(problem.fits(e.child, target) for e in s.evaluated)
    assert strategy.over and not set(strategy.over) & set(hashes(s))  # drawn, penalised, not evaluated
    assert all(u > 1 for u in strategy.over.values())
    e = s.evaluated[-1]  # the reward's T is the target's latency budget
    lat = predict(table, space, e.child)
    assert strategy.rewards[e.child.hash] == pytest.approx(e.top1 + strategy.s.beta * abs(lat / target.max_ms - 1))


@pytest.mark.parametrize("policy", ["lstm", "factorised"])
@pytest.mark.parametrize("reward", ["absolute", "mnasnet"])
def test_both_policies_and_both_rewards_run(made, policy, reward):
    space = load_space("cifar-small")
    limit, evaluate = synthetic(space)
    runs = [search(Problem(space, (), max_mflops=limit), evaluate, 12, 4, f"policy={policy}", f"reward={reward}")
            for _ in range(2)]
    assert hashes(runs[0]) == hashes(runs[1]) and len(set(hashes(runs[0]))) == 12
    assert all(child_cost(space, e.child).mflops <= limit for e in runs[0].evaluated)
    assert same_parameters(*made)
    e = runs[0].evaluated[0]
    use = e.costs["mflops"] / limit
    expected = e.top1 * use ** made[0].s.w if reward == "mnasnet" else e.top1 + made[0].s.beta * abs(use - 1)
    assert made[0].rewards[e.child.hash] == pytest.approx(expected)


def test_without_a_budget_the_reward_is_the_accuracy(made):
    space = load_space("cifar-small")
    _, evaluate = synthetic(space)
    s = search(Problem(space), evaluate, 8, 0)
    assert [made[-1].rewards[h] for h in hashes(s)] == [e.top1 for e in s.evaluated]


def test_a_seed_fixes_the_search_and_the_controller_without_global_state(made):
    space = load_space("cifar-small")
    limit, evaluate = synthetic(space)
    rng_state, threads = torch.random.get_rng_state(), torch.get_num_threads()
    a, b, c = (search(Problem(space, (), max_mflops=limit), evaluate, 24, seed) for seed in (7, 7, 8))
    assert hashes(a) == hashes(b) != hashes(c)
    assert same_parameters(made[0], made[1]) and not same_parameters(made[0], made[2])
    assert torch.equal(torch.random.get_rng_state(), rng_state) and torch.get_num_threads() == threads


def test_a_killed_search_replays_to_the_same_children_and_controller(made):
    space = load_space("cifar-small")
    limit, evaluate = synthetic(space)

    def problem():
        return Problem(space, (), max_mflops=limit)

    full = search(problem(), evaluate, 40, 1)
    short = search(problem(), evaluate, 15, 1)  # an interrupted run: its budget ran out at 15
    assert hashes(short) == hashes(full)[:15]

    cache = {}

    def killed(children):  # the accuracy cache is appended child by child; killed at the 18th
        for child in children:
            if len(cache) == 17:
                raise RuntimeError("killed")
            cache[child.hash] = evaluate([child])[0]
        return [cache[c.hash] for c in children]

    with pytest.raises(RuntimeError, match="killed"):
        search(problem(), killed, 40, 1)
    fresh = []

    def cached(children):
        fresh.extend(c.hash for c in children if c.hash not in cache)
        return [cache[c.hash] if c.hash in cache else evaluate([c])[0] for c in children]

    again = search(problem(), cached, 40, 1)
    assert hashes(again) == hashes(full) and len(fresh) == 40 - 17
    assert same_parameters(made[0], made[-1])


def test_a_search_that_runs_out_of_feasible_children_stops(monkeypatch):
    """Only the smallest child meets the budget: after it, bounded sampling, then []."""
    monkeypatch.setattr(reinforce, "MAX_SAMPLES", 32)  # the bound, smaller: a faster test
    space = load_space("cifar-small")
    _, evaluate = synthetic(space)
    s = search(Problem(space, (), max_mflops=child_cost(space, space.min()).mflops), evaluate, 5, 0)
    assert hashes(s) == [space.min().hash]


@pytest.mark.parametrize("name", space_names())
def test_the_controller_codes_are_the_childs_encoding(name):
    """The controller steps only through decisions with a choice; the codes it hands to `decode`
    (inactive blocks zeroed) are exactly `encode`'s, so a child has one key however it was drawn."""
    from bignas.search.strategies.controller import POLICIES

    space = load_space(name)
    p = packing(space)
    policy = POLICIES["lstm"](p, 16, 1.5, torch.Generator().manual_seed(0))
    codes = policy.sample(64, torch.Generator().manual_seed(1))
    assert codes.shape == (64, p.n) and p.n == sum(len(o) > 1 for _, o in space.decisions())
    for key in p.full(codes * p.active(codes).long()).tolist():
        assert list(space.encode(space.decode(key))) == key


def test_the_lstm_scores_as_a_cell_stepped_on_its_parameters():
    """Scoring runs the LSTM over the whole sequence at once: it must give the log-probabilities of
    stepping a cell with the same weights through the decisions, one choice after another."""
    from bignas.search.strategies.controller import POLICIES

    p = packing(load_space("cifar-small"))
    policy = POLICIES["lstm"](p, 16, 1.5, torch.Generator().manual_seed(0))
    torch.nn.init.uniform_(policy.head.weight, -1, 1, generator=torch.Generator().manual_seed(2))  # not uniform
    cell = torch.nn.LSTMCell(16, 16)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(policy.lstm, f"{name}_l0"))
    codes = policy.sample(5, torch.Generator().manual_seed(1))
    x, state, stepped = policy.start.expand(5, -1), None, []
    for i, (o, k) in enumerate(zip(p.offset_list, p.sizes)):
        state = cell(x, state)
        stepped.append(torch.log_softmax(1.5 * torch.tanh(policy.head(state[0])[:, o:o + k]), -1)
                       .gather(1, codes[:, i:i + 1]).squeeze(1))
        x = policy.embed(codes[:, i] + o)
    logp, _ = policy.score(codes)
    assert torch.allclose(logp, torch.stack(stepped, 1), atol=1e-5)


@pytest.mark.parametrize("spread", [1.5, 30.0])
def test_the_lstm_draws_are_gumbel_max_on_the_scored_logits(spread):
    """`sample` steps the cell in numpy; `score` runs it in torch. Each draw must be the argmax of
    the scored logits plus the same Gumbel noise, so the policy trained is the policy sampled; with
    weights grown large (spread 30: gates far past where exp(-x) overflows float32) the draw must
    stay exact and silent."""
    from bignas.search.strategies.controller import POLICIES, gumbel_noise

    p = packing(load_space("ofa-mbv3"))
    policy = POLICIES["lstm"](p, 16, 1.5, torch.Generator().manual_seed(0))
    with torch.no_grad():  # far from the near-uniform start, so that any slip in the cell shows
        for i, param in enumerate(policy.parameters()):  # a seed each: no two alike (W_ih vs W_hh)
            torch.nn.init.uniform_(param, -spread, spread, generator=torch.Generator().manual_seed(i))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        codes = policy.sample(32, torch.Generator().manual_seed(1))
    noise = gumbel_noise(p.n, 32, max(p.sizes), torch.Generator().manual_seed(1))
    with torch.no_grad():
        previous = policy.embed(codes[:, :-1] + p.offsets[:-1])
        hidden, _ = policy.lstm(torch.cat([policy.start.expand(32, 1, -1), previous], 1))
        logits = 1.5 * torch.tanh(policy.head(hidden))
    for i, (o, k) in enumerate(zip(p.offset_list, p.sizes)):
        assert torch.equal((logits[:, i, o:o + k] + noise[i, :, :k]).argmax(1), codes[:, i]), i
    assert len({tuple(c) for c in codes.tolist()}) > 1  # not one child drawn 32 times


@pytest.mark.parametrize("option, field", [
    ("policy=gru", "policy"), ("reward=latency", "reward"), ("lr=0", "lr"), ("baseline_decay=1", "baseline_decay"),
    ("entropy_weight=-0.1", "entropy_weight"), ("beta=0.5", "beta"), ("w=1", "w"), ("batch=0", "batch"),
    ("hidden=0", "hidden"), ("tanh_constant=0", "tanh_constant"), ("temperature=5", "temperature")])
def test_bad_settings_are_a_search_error_naming_the_option(option, field):
    with pytest.raises(SearchError, match=f"'{field}'"):
        make_settings("reinforce", [option])
