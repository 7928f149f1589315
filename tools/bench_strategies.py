"""Every search strategy against each other over one trained supernet, at equal budgets.

Setup (issue 15): each strategy at each budget (default 20 and 60 accuracy evaluations) and seed
searches (a) one latency target, the first --table, under a budget halfway between its smallest
and largest child's predicted latency, and (b) two targets at once (every --table, each with its
halfway budget). Single-target strategies search each target on its own; multi-target ones
(nsga2) once for all. Evaluations are cached per child in RUN/accuracy.jsonl, so strategies share
work and a rerun is quick.

Prints, per setup, strategy and budget: mean +- sd over the seeds of the best feasible child's val
top-1 and test top-1, the normalised hypervolume of the feasible evaluated set (reference: the
latency budget and top-1 0), and the median search overhead (excluding evaluations) per candidate
considered and per evaluation, then the winner at each budget and the margin over the runner-up.

Before anything is timed, each strategy runs one short search (WARMUP_BUDGET evaluations, seed 0,
the single target: children the timed searches evaluate anyway). It pays what the first search
of a process pays once (imports, oneDNN building the LSTM controller's kernels: about 30 ms),
which otherwise lands on whichever seed runs first. That once-per-process cost is printed apart,
as the warm-up search's overhead beside its candidates.

Cheaper estimation (issue 16): --guided NAME ... adds those strategies predictor-guided, with no
prior children (the budget counts every child the predictor learns from); --halving NAME ... adds
them with successive halving (the budget counts candidates; the eval s column is the evaluation
wall-clock of all rungs); each --halving-variant adds them again with other settings, shown as
NAME+halving2, +halving3, ..., so that two settings compare side by side. With --fresh-cache every
search starts from an empty cache, so eval s is the real cost of its evaluations.

Usage: python tools/bench_strategies.py --run RUN [--data cifar10:PATH] [--json results.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from importlib import resources

import torch

from bignas.latency.fit import predict
from bignas.latency.table import read_table
from bignas.search import driver
from bignas.search.evaluator import Evaluator
from bignas.search.guided import make_guided
from bignas.search.halving import make_halving, rung_settings
from bignas.search.problem import Problem, SearchError, Target
from bignas.search.strategies import STRATEGIES, make_settings, settings_dict
from bignas.train.run_dir import TrainedRun


def shipped_table(profile: str) -> str:
    return str(resources.files("bignas") / "latency_tables" / profile / "cifar-small.json")


def halfway_target(table_path: str, space) -> Target:
    table = read_table(table_path, space.hash)
    limit = (predict(table, space, space.min()) + predict(table, space, space.max())) / 2
    return Target(table.header["profile"], table, limit)


WARMUP_BUDGET = 4


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def testbed(space, evaluator, on_test) -> None:
    """Is this supernet a useful test bed? Its largest and smallest child, and the spread of 20
    random children (seed 0): strategies can only be told apart if these differ by several points."""
    rng = random.Random(0)
    sampled = [space.sample(rng) for _ in range(20)]
    val = evaluator([space.max(), space.min(), *sampled])
    test = [on_test(c) for c in (space.max(), space.min(), *sampled)]
    print(f"test bed: largest child val {val[0]:.4f} test {test[0]:.4f}; smallest val {val[1]:.4f} test "
          f"{test[1]:.4f}; 20 random children val {min(val[2:]):.4f}..{max(val[2:]):.4f} "
          f"(mean {statistics.mean(val[2:]):.4f}, sd {statistics.stdev(val[2:]):.4f}), test "
          f"{min(test[2:]):.4f}..{max(test[2:]):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run directory of 'bignas train'")
    parser.add_argument("--data", help="dataset spec (default: the run's)")
    parser.add_argument("--table", action="append", help="latency tables (default: the shipped cpu-1t and "
                        "cpu-2t tables of the cifar-small space); the first is the single target")
    parser.add_argument("--budgets", type=int, nargs="+", default=[20, 60], help="evaluations per search")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per strategy and budget")
    parser.add_argument("--strategies", nargs="+", default=sorted(STRATEGIES), choices=sorted(STRATEGIES))
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the strategies benchmarked (as search --option); give one strategy")
    parser.add_argument("--guided", nargs="+", default=[], choices=sorted(STRATEGIES), metavar="STRATEGY",
                        help="also run these strategies predictor-guided (as search --predictor, shown as "
                             "NAME+predictor), with no prior children: their budget counts every child the "
                             "predictor was fitted on")
    parser.add_argument("--predictor-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the guided runs (as search --predictor-option)")
    parser.add_argument("--halving", nargs="+", default=[], choices=sorted(STRATEGIES), metavar="STRATEGY",
                        help="also run these strategies with successive halving (as search --fidelity "
                             "successive-halving, shown as NAME+halving): the budget counts candidates")
    parser.add_argument("--fidelity-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of the successive-halving runs (as search --fidelity-option)")
    parser.add_argument("--halving-variant", nargs="+", action="append", default=[], metavar="KEY=VALUE",
                        help="run the --halving strategies again with these settings on top of --fidelity-option "
                             "(repeat for several variants), e.g. --halving-variant keep=0.3 val_images=[64]")
    parser.add_argument("--fresh-cache", action="store_true",
                        help="every search evaluates into a new, empty accuracy cache (in a temporary folder), "
                             "so its evaluation seconds are real and no search reuses another's work")
    parser.add_argument("--setups", nargs="+", default=["one", "two"], choices=["one", "two"],
                        help="one: the first table alone; two: every table at once")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args()

    if args.option and len(args.strategies) != 1:
        parser.error("--option sets one strategy's settings: give that one with --strategies")
    if args.halving_variant and not args.halving:
        parser.error("--halving-variant runs the --halving strategies again: name them with --halving")
    try:
        settings = {name: make_settings(name, args.option if name in args.strategies else [])
                    for name in {*args.strategies, *args.guided, *args.halving}}
        guided = make_guided(args.predictor_option)
        halvings = [make_halving(args.fidelity_option + extra) for extra in [[], *args.halving_variant]]
        if len(halvings) > 1 and not args.fresh_cache:  # the variants would reuse each other's evaluations
            parser.error("--halving-variant compares evaluation times: give --fresh-cache")
    except SearchError as e:
        parser.error(str(e))
    # (label, strategy, guided settings or None, halving settings or None) of every search benchmarked
    variants = ([(name, name, None, None) for name in args.strategies]
                + [(f"{name}+predictor", name, guided, None) for name in args.guided]
                + [(f"{name}+halving{i + 1 if i else ''}", name, None, halving) for name in args.halving
                   for i, halving in enumerate(halvings)])
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    run = TrainedRun.open(args.run, torch.device("cpu"))
    space, config = run.space, run.config
    data = args.data or config.data
    dataset = run.dataset(data)
    tables = args.table or [shipped_table("cpu-1t"), shipped_table("cpu-2t")]
    targets = tuple(halfway_target(t, space) for t in tables)
    evaluator = Evaluator(run.supernet, space, dataset, run.dir.accuracy_file, data_spec=data,
                          calibration_images=config.eval.calibration_images, batch_size=config.eval.batch_size)
    scratch = tempfile.TemporaryDirectory(prefix="bench_strategies-")
    fresh = 0  # children evaluated by the searches' own evaluators (with --fresh-cache or successive halving)

    def search(strategy: str, guide, halve, problem: Problem, budget: int, seed: int) -> dict:
        """One search, as `bignas search` runs it, on the run's cache or (--fresh-cache) a new one."""
        nonlocal fresh
        cache = Path(scratch.name) / f"{len(os.listdir(scratch.name))}.jsonl" if args.fresh_cache \
            else run.dir.accuracy_file
        full = evaluator if not args.fresh_cache else Evaluator(
            run.supernet, space, dataset, cache, data_spec=data, calibration_images=config.eval.calibration_images,
            batch_size=config.eval.batch_size)
        lower = [Evaluator(run.supernet, space, dataset, cache, data_spec=data, batch_size=config.eval.batch_size,
                           **rung) for rung in (rung_settings(halve) if halve is not None else [])]
        doc = driver.run(strategy, problem, lower[0] if lower else full, budget, seed, settings[strategy], guide, (),
                         halve, [*lower[1:], full] if lower else ())
        fresh += sum(e.fresh for e in lower) + (full.fresh if full is not evaluator else 0)
        return doc
    test_top1: dict[str, float] = {}

    def on_test(child) -> float:
        if child.hash not in test_top1:
            test_top1[child.hash] = run.evaluate(child, dataset, "test")[0]
        return test_top1[child.hash]

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; torch threads "
          f"{args.threads}; run {args.run}; data {data}; space {space.name}; {args.seeds} seeds")
    for t in targets:
        print(f"target {t.name}: budget {t.max_ms:.4f} ms (halfway between the smallest and largest child)")
    for label, _, _, halve in variants:
        if halve is not None:
            print(f"{label}: {settings_dict(halve)}")
    testbed(space, evaluator, on_test)
    warmups = {}
    for label, strategy, guide, halve in variants:
        (r,) = search(strategy, guide, halve, Problem(space, targets[:1]), WARMUP_BUDGET, 0)["devices"]
        warmups[label] = {"overhead_ms": 1e3 * r["overhead_s"], "candidates": r["candidates_considered"]}
    print("first search of the process (warm-up, not in the figures below): " + "; ".join(
        f"{name} {w['overhead_ms']:.1f} ms overhead over {w['candidates']} candidates" for name, w in warmups.items()))
    setups = {name: ts for key, name, ts in (("one", "one target", targets[:1]), ("two", "two targets", targets))
              if key in args.setups}
    rows = []
    for setup, problem_targets in setups.items():
        if setup == "two targets" and len(targets) < 2:
            continue
        print(f"\n== {setup}: {', '.join(t.name for t in problem_targets)}")
        print(f"{'budget':>6} {'strategy':>20} {'target':>8} {'best val top-1':>17} {'its test top-1':>17} "
              f"{'hypervolume':>17} {'overhead ms/cand':>17} {'ms/eval':>8} {'eval s':>15}")
        for budget in args.budgets:
            for label, strategy, guide, halve in variants:
                per_target: dict[str, dict[str, list[float]]] = {}
                for seed in range(args.seeds):
                    doc = search(strategy, guide, halve, Problem(space, problem_targets), budget, seed)
                    for r in doc["devices"]:
                        slot = per_target.setdefault(r["target"], {"val": [], "test": [], "hv": [], "ovh": [],
                                                                   "ovh_eval": [], "eval_s": []})
                        slot["val"].append(r["best"]["top1_val"] if r["best"] else 0.0)
                        slot["test"].append(on_test(space.child_from_dict(r["best"]["arch"])) if r["best"] else 0.0)
                        slot["hv"].append(r["hypervolume"]["normalised"])
                        slot["ovh"].append(r["overhead_ms_per_candidate"])
                        slot["ovh_eval"].append(1e3 * r["overhead_s"] / max(len(r["evaluated"]), 1))
                        slot["eval_s"].append(r["evaluation_s"])
                for target, s in per_target.items():
                    rows.append({"setup": setup, "budget": budget, "strategy": label, "target": target, **s})
                    print(f"{budget:>6} {label:>20} {target:>8} {mean_sd(s['val']):>17} {mean_sd(s['test']):>17} "
                          f"{mean_sd(s['hv']):>17} {statistics.median(s['ovh']):>17.4f} "
                          f"{statistics.median(s['ovh_eval']):>8.2f} {mean_sd(s['eval_s']):>15}")
        for budget in args.budgets:
            for target in [t.name for t in problem_targets]:
                mine = sorted((r for r in rows if r["setup"] == setup and r["budget"] == budget
                               and r["target"] == target), key=lambda r: statistics.mean(r["val"]), reverse=True)
                if len(mine) > 1:
                    a, b = mine[0], mine[1]
                    print(f"winner at budget {budget} on {target}: {a['strategy']} "
                          f"({mean_sd(a['val'])}), {statistics.mean(a['val']) - statistics.mean(b['val']):+.4f} "
                          f"over {b['strategy']} ({mean_sd(b['val'])})")
    elapsed = time.perf_counter() - start
    print(f"\nwhole benchmark: {elapsed / 60:.1f} min; {evaluator.fresh + fresh} fresh evaluations, "
          f"{len(evaluator.known())} children cached")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"run": args.run, "data": data, "threads": args.threads, "options": args.option,
                       "halving": {label: settings_dict(h) for label, _, _, h in variants if h is not None},
                       "seconds": elapsed, "warmups": warmups, "rows": rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
