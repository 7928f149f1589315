"""Every registered strategy through the driver on a synthetic problem (no trained run), the
pinned behaviour of the ported strategies, the child encoding, and the evaluator's cache."""

import datetime
import json
import math
import os
import random
from pathlib import Path

import pytest
import torch

from bignas.cli import build_parser
from bignas.cost import child_cost
from bignas.search import driver
from bignas.search.evaluator import Evaluator
from bignas.search.problem import Problem, SearchError
from bignas.search.report import write_results
from bignas.search.strategies import STRATEGIES, register
from bignas.space import SpaceError, load_space, space_names

PINS = Path(__file__).parent / "data" / "strategy_pins.json"


def synthetic(space):
    """MFLOPs halfway between the smallest and largest child, and an accuracy that grows with
    MFLOPs and saturates, plus a small deterministic per-child term."""
    limit = (child_cost(space, space.min()).mflops + child_cost(space, space.max()).mflops) / 2
    calls = []

    def evaluate(children):
        calls.append(len(children))
        return [0.5 + 0.4 * (1 - math.exp(-child_cost(space, c).mflops / limit))
                + 0.01 * ((int(c.hash, 16) % 1000) / 1000) for c in children]

    evaluate.calls = calls
    return limit, evaluate


@pytest.fixture
def scratch_strategies():
    """Register test-only strategies and remove them afterwards."""
    before = dict(STRATEGIES)
    yield register
    STRATEGIES.clear()
    STRATEGIES.update(before)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("budgets", ["mflops-params", "none"])
def test_every_strategy_meets_the_contract(name, budgets):
    space = load_space("cifar-small")
    limit, evaluate = synthetic(space)
    params = (child_cost(space, space.min()).params_m + child_cost(space, space.max()).params_m) / 2
    docs = []
    for _ in range(2):
        problem = Problem(space, (), max_mflops=limit, max_params_m=params) if budgets != "none" else Problem(space)
        # the driver raises SearchError if the strategy asks for an infeasible child
        docs.append(driver.run(name, problem, evaluate, budget=12, seed=3))
    (result,) = docs[0]["devices"]
    assert 1 <= len(result["evaluated"]) <= 12 and sum(evaluate.calls) <= 2 * 12
    assert len({p["hash"] for p in result["evaluated"]}) == len(result["evaluated"])
    if budgets != "none":
        assert all(p["mflops"] <= limit and p["params_m"] <= params for p in result["evaluated"])
    assert [p["hash"] for p in result["evaluated"]] == [p["hash"] for p in docs[1]["devices"][0]["evaluated"]]
    assert result["target"] == "any" and result["best"]["top1_val"] == max(p["top1_val"] for p in result["evaluated"])
    assert result["candidates_considered"] > 0


def test_coarse_to_fine_beats_random():
    space = load_space("cifar-small")
    limit, evaluate = synthetic(space)
    best = {name: sum(driver.run(name, Problem(space, (), max_mflops=limit), evaluate, budget=20, seed=seed)
                      ["devices"][0]["best"]["top1_val"] for seed in (0, 1)) / 2
            for name in ("coarse-to-fine", "random")}
    assert best["coarse-to-fine"] > best["random"]


def test_ported_strategies_reproduce_the_pins():
    """The evaluated children, in order, of coarse_to_fine / random_search before the ask/tell
    port (tests/data/strategy_pins.json), for two spaces and two seeds of random.Random(seed)."""
    pins = json.loads(PINS.read_text())
    assert len(pins["cases"]) == 8
    for key, case in pins["cases"].items():
        name, strategy, seed = key.split("/")
        space = load_space(name)
        limit, evaluate = synthetic(space)
        assert limit == case["limit_mflops"]
        search = driver.run_one(strategy, Problem(space, (), max_mflops=limit), evaluate, pins["budget"],
                                random.Random(int(seed)))
        assert [e.child.hash for e in search.evaluated] == case["hashes"], key
        assert max(e.top1 for e in search.evaluated) == case["best_top1"]


def test_the_driver_refuses_an_infeasible_ask_and_charges_a_child_once(scratch_strategies):
    space = load_space("cifar-small")
    limit, evaluate = synthetic(space)

    @scratch_strategies("test-biggest", help="asks for the largest child")
    class Biggest:
        def __init__(self, problem, rng, budget, settings):
            pass

        def ask(self, n):
            return [space.max()]

        def tell(self, results):
            pass

    @scratch_strategies("test-repeat", help="asks for the smallest child again and again")
    class Repeat:
        def __init__(self, problem, rng, budget, settings):
            self.told = []

        def ask(self, n):
            return [space.min(), space.min()]

        def tell(self, results):
            self.told.append(len(results))

    with pytest.raises(SearchError, match="'test-biggest'.*misses the budget"):
        driver.run("test-biggest", Problem(space, (), max_mflops=limit), evaluate, budget=5, seed=0)
    assert evaluate.calls == []
    doc = driver.run("test-repeat", Problem(space, (), max_mflops=limit), evaluate, budget=5, seed=0)
    assert len(doc["devices"][0]["evaluated"]) == 1 and evaluate.calls == [1]
    with pytest.raises(SearchError, match="unknown strategy 'nope'"):
        driver.run("nope", Problem(space), evaluate, budget=5, seed=0)
    with pytest.raises(SearchError, match="smallest child needs"):
        driver.run("random", Problem(space, (), max_mflops=0.001), evaluate, budget=5, seed=0)


def test_registry_refuses_a_duplicate_and_feeds_the_cli(scratch_strategies, capsys):
    with pytest.raises(ValueError, match="already registered"):
        scratch_strategies("random", help="again")(object)
    scratch_strategies("test-listed", help="a strategy registered by the test")(object)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["search", "--help"])
    out = "".join(capsys.readouterr().out.split())  # help text wraps, possibly inside names
    for name, info in STRATEGIES.items():
        assert f"{name}:{''.join(info.help.split())}" in out
    assert "test-listed" in out


@pytest.mark.parametrize("name", space_names())
def test_encode_decode_round_trip(name):
    space = load_space(name)
    decisions = space.decisions()
    rng = random.Random(0)
    for child in [space.max(), space.min()] + [space.sample(rng) for _ in range(50)]:
        codes = space.encode(child)
        assert len(codes) == len(decisions) and all(0 <= c < len(o) for c, (_, o) in zip(codes, decisions))
        assert space.decode(codes) == child
    assert space.encode(space.min()) == (0,) * len(decisions)
    codes = list(space.encode(space.max()))
    codes[2] += 1  # stages[0].depth
    with pytest.raises(SpaceError, match=r"'stages\[0\]\.depth' is out of range"):
        space.decode(codes)
    with pytest.raises(SpaceError, match="codes"):
        space.decode(codes[:-1])


def test_evaluator_appends_each_child_as_it_is_evaluated(tmp_path):
    space = load_space("cifar-small")
    children = [space.sample(random.Random(i)) for i in range(4)]
    seen = []

    def flaky(child):
        seen.append(child.hash)
        if len(seen) == 3:
            raise RuntimeError("killed")
        return len(seen) / 10

    model = torch.nn.Linear(2, 2)  # the cache is keyed on its weights

    def make(fn):
        return Evaluator(model, space, None, tmp_path / "accuracy.jsonl", data_spec="synthetic", calibration_images=8, batch_size=8,
                         evaluate_one=fn)

    with pytest.raises(RuntimeError, match="killed"):
        make(flaky)(children)
    lines = (tmp_path / "accuracy.jsonl").read_text().splitlines()
    assert [json.loads(line)["hash"] for line in lines] == [c.hash for c in children[:2]]
    with open(tmp_path / "accuracy.jsonl", "a") as f:
        f.write('{"hash": "cut sho')  # a line a kill cut short
    again = make(lambda c: 0.5)
    assert again.skipped == 1 and again.known() == {children[0].hash: 0.1, children[1].hash: 0.2}
    assert again(children) == [0.1, 0.2, 0.5, 0.5] and again.fresh == 2  # the done ones cost nothing
    records = (tmp_path / "accuracy.jsonl").read_text().splitlines()
    assert [json.loads(line)["hash"] for line in records[-2:]] == [c.hash for c in children[2:]]


def test_records_from_before_size_weighted_bn_calibration_are_reused_only_where_it_changes_nothing(tmp_path):
    space = load_space("cifar-small")
    child = space.sample(random.Random(0))
    model = torch.nn.Linear(2, 2)

    def make(calibration_images):
        return Evaluator(model, space, None, tmp_path / "accuracy.jsonl", data_spec="synthetic",
                         calibration_images=calibration_images, batch_size=8, evaluate_one=lambda c: 0.5)

    for n in (16, 5, 12):  # 16 in batches of 8 or 5 in one: the same statistics then; 12: a short last batch
        record = {k: v for k, v in make(n).context.items() if k != "bn_average"}
        with open(tmp_path / "accuracy.jsonl", "a") as f:
            f.write(json.dumps({"hash": child.hash, "top1": 0.25, **record}) + "\n")
    assert make(16)([child]) == [0.25] and make(5)([child]) == [0.25]
    assert make(12)([child]) == [0.5]  # measured again; the new record is reused from then on
    assert make(12).known() == {child.hash: 0.5}


def _two_rank_evaluation(rank, port, cache_files, children, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
                            timeout=datetime.timedelta(seconds=60))
    try:
        torch.manual_seed(0)
        evaluator = Evaluator(torch.nn.Linear(2, 2), load_space("cifar-small"), None, cache_files[rank],
                              data_spec="synthetic", calibration_images=8, batch_size=8, rank=rank, world_size=2,
                              evaluate_one=lambda c: int(c.hash[:4], 16) / 65536)
        out.put((rank, evaluator(children), evaluator.fresh))
    finally:
        dist.destroy_process_group()


def test_torchrun_ranks_share_rank_0s_reading_of_the_cache(tmp_path):
    """Rank 1 sees another cache file than rank 0 (as when a process appends between the ranks'
    reads): without the broadcast the ranks split different children and the gather hangs or fails."""
    space = load_space("cifar-small")
    children = [space.sample(random.Random(i)) for i in range(5)]
    torch.manual_seed(0)
    first = Evaluator(torch.nn.Linear(2, 2), space, None, tmp_path / "accuracy.jsonl", data_spec="synthetic",
                      calibration_images=8, batch_size=8, evaluate_one=lambda c: int(c.hash[:4], 16) / 65536)
    first(children[:3])  # rank 0's file holds three of the five
    ctx = torch.multiprocessing.get_context("spawn")
    out = ctx.Queue()
    port = 29600 + os.getpid() % 300
    procs = [ctx.Process(target=_two_rank_evaluation,
                         args=(r, port, [tmp_path / "accuracy.jsonl", tmp_path / "empty.jsonl"], children, out))
             for r in range(2)]
    for proc in procs:
        proc.start()
    results = sorted(out.get(timeout=120) for _ in procs)
    for proc in procs:
        proc.join(timeout=60)
        assert proc.exitcode == 0
    expected = [int(c.hash[:4], 16) / 65536 for c in children]
    assert results == [(0, expected, 2), (1, expected, 2)]  # both ranks: two fresh children, same answers
    assert not (tmp_path / "empty.jsonl").exists()  # only rank 0 writes


def test_write_results_writes_best_children_and_replaces_a_search_whole(tmp_path):
    space = load_space("cifar-small")
    limit, evaluate = synthetic(space)
    doc = driver.run("random", Problem(space, (), max_mflops=limit), evaluate, budget=3, seed=0)
    out = tmp_path / "search"
    write_results(doc, out)
    assert sorted(p.name for p in out.iterdir()) == ["best.json", "pareto.png", "search.json"]
    assert space.load_child(out / "best.json").hash == doc["devices"][0]["best"]["hash"]
    doc2 = driver.run("random", Problem(space, (), max_mflops=limit), evaluate, budget=3, seed=1)
    write_results(doc2, out)
    assert json.loads((out / "search.json").read_text())["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["search"]  # no temporary folder left
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "supernet.pt").write_bytes(b"")
    with pytest.raises(SearchError, match="more than an earlier search"):
        write_results(doc, tmp_path / "run")
    assert (tmp_path / "run" / "supernet.pt").exists()
