"""Coarse-to-fine vs random search at equal budgets, and the search's own overhead.

For each budget and seed, both strategies search the same run under the same latency budget
(halfway between the smallest and largest child unless --max-latency-ms); prints the mean val
top-1 of the best child over the seeds, and the search time per candidate considered, excluding
accuracy evaluations. Evaluations are cached in RUN/accuracy.jsonl, so reruns are quick.

Usage: python tools/bench_search.py --run runs/quickstart --table bignas/latency_tables/cpu-1t/cifar-small.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics

import torch

from bignas.latency.fit import predict
from bignas.latency.table import read_table
from bignas.search import driver
from bignas.search.evaluator import Evaluator
from bignas.search.problem import Problem, Target
from bignas.train.run_dir import TrainedRun


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True)
    parser.add_argument("--table", required=True)
    parser.add_argument("--max-latency-ms", type=float)
    parser.add_argument("--budgets", type=int, nargs="+", default=[10, 25])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    run = TrainedRun.open(args.run, torch.device("cpu"))
    space, config = run.space, run.config
    table = read_table(args.table, space.hash)
    limit = args.max_latency_ms or (predict(table, space, space.min()) + predict(table, space, space.max())) / 2
    problem = Problem(space, (Target(table.header["profile"], table, limit),))
    evaluator = Evaluator(run.supernet, space, run.dataset(), run.dir.accuracy_file, data_spec=config.data,
                          calibration_images=config.eval.calibration_images, batch_size=config.eval.batch_size)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; threads {args.threads}; "
          f"run {args.run}; space {space.name}; budget {limit:.4f} ms on {table.header['profile']}; "
          f"{args.seeds} seeds")
    print(f"{'budget':>6} {'strategy':>15} {'mean best top-1':>16} {'per seed':>30} {'overhead ms/cand':>17}")
    for budget in args.budgets:
        for strategy in ("coarse-to-fine", "random"):
            best, overhead = [], []
            for seed in range(args.seeds):
                doc = driver.run(strategy, problem, evaluator, budget, seed)
                result = doc["devices"][0]
                best.append(result["best"]["top1_val"])
                overhead.append(result["overhead_ms_per_candidate"])
            print(f"{budget:>6} {strategy:>15} {statistics.mean(best):>16.4f} "
                  f"{' '.join(f'{b:.4f}' for b in best):>30} {statistics.median(overhead):>17.4f}")


if __name__ == "__main__":
    main()
