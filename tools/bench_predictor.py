"""How well an accuracy predictor ranks children it has not seen, against how many it was fitted on.

Evaluates --pool random children of the run (BN recalibration + val top-1, cached in
RUN/accuracy.jsonl like a search's, so a rerun is quick). Then, for each seed, holds out --test of
them, and for each training size fits every predictor kind on that many of the rest and scores
its predictions of the held-out children: Kendall tau, Spearman, mean absolute error in top-1
points. Beside them, the 5-fold cross-validated tau on the training children alone, which is what
`bignas predictor` reports and picks the kind by. Prints mean +- sd over the seeds.

Usage: python tools/bench_predictor.py --run RUN [--sizes 25 50 100 200] [--test 100] [--seeds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time

import numpy as np
import torch
from tqdm import tqdm

from bignas.search import predictor
from bignas.search.evaluator import Evaluator
from bignas.seeds import derive_seed
from bignas.train.run_dir import TrainedRun


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run directory of 'bignas train'")
    parser.add_argument("--data", help="dataset spec (default: the run's)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200], help="training-set sizes")
    parser.add_argument("--test", type=int, default=100, help="held-out children per seed")
    parser.add_argument("--seeds", type=int, default=3, help="random splits")
    parser.add_argument("--kinds", nargs="+", default=list(predictor.KINDS), choices=predictor.KINDS)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    run = TrainedRun.open(args.run, torch.device("cpu"))
    data = args.data or run.config.data
    dataset = run.dataset(data)
    space = run.space
    pool_size = max(args.sizes) + args.test
    rng = random.Random(derive_seed("bench_predictor", 0))
    pool = list({c.hash: c for c in (space.sample(rng) for _ in range(pool_size))}.values())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; torch threads "
          f"{args.threads}; run {args.run}; data {data}; space {space.name}; {len(pool)} random children")
    start = time.perf_counter()
    with tqdm(total=len(pool), unit="child", desc="evaluate", dynamic_ncols=True) as bar:
        evaluator = Evaluator(run.supernet, space, dataset, run.dir.accuracy_file, data_spec=data,
                              calibration_images=run.config.eval.calibration_images,
                              batch_size=run.config.eval.batch_size, on_result=lambda: bar.update(1))
        bar.update(len({c.hash for c in pool} & set(evaluator.known())))
        y_all = np.array(evaluator(pool))
    evaluate_s = time.perf_counter() - start
    print(f"evaluated {evaluator.fresh} fresh children in {evaluate_s:.0f} s "
          f"({evaluate_s / max(evaluator.fresh, 1):.2f} s each); val top-1 {y_all.min():.4f}..{y_all.max():.4f} "
          f"(sd {y_all.std():.4f})")
    x_all = predictor.Featurizer(space)(pool)
    rows = []
    print(f"\n{'children':>8} {'kind':>6} {'held-out tau':>14} {'Spearman':>14} {'MAE points':>14} "
          f"{'CV tau':>14} {'fit s':>7}")
    for size in args.sizes:
        for kind in args.kinds:
            got: dict[str, list[float]] = {"kendall": [], "spearman": [], "mae_points": [], "cv": [], "fit_s": []}
            for seed in range(args.seeds):
                order = np.random.default_rng(seed).permutation(len(pool))
                test, train = order[:args.test], order[args.test:args.test + size]
                t0 = time.perf_counter()
                model = predictor.fit(kind, x_all[train], y_all[train], seed)
                got["fit_s"].append(time.perf_counter() - t0)
                for key, value in predictor.agreement(model.predict(x_all[test]), y_all[test]).items():
                    got[key].append(value)
                got["cv"].append(predictor.cross_validate(kind, x_all[train], y_all[train], seed)["kendall"])
            rows.append({"children": size, "kind": kind, **got})
            print(f"{size:>8} {kind:>6} {mean_sd(got['kendall']):>14} {mean_sd(got['spearman']):>14} "
                  f"{mean_sd(got['mae_points']):>14} {mean_sd(got['cv']):>14} {statistics.median(got['fit_s']):>7.2f}")
    print(f"\nwhole benchmark: {(time.perf_counter() - start) / 60:.1f} min")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"run": args.run, "data": data, "threads": args.threads, "evaluate_s": evaluate_s,
                       "top1": y_all.tolist(), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
