"""How well an accuracy predictor ranks children it has not seen, against how many it was fitted on.

Evaluates --pool random children of the run (BN recalibration + val top-1, cached in
RUN/accuracy.jsonl like a search's, so a rerun is quick). Then, for each seed, holds out --test of
them, and for each training size fits every predictor kind on that many of the rest and scores
its predictions of the held-out children: Kendall tau, Spearman, mean absolute error in top-1
points. Beside them, the 5-fold cross-validated tau on the training children alone, which is what
`bignas predictor` reports and picks the kind by. Prints mean +- sd over the seeds.

With --vs-test, every child is also scored on the dataset's test split (cached in the same file,
apart from val), and each row adds the predictor's tau against the held-out children's *test*
top-1, beside the tau of their own measured val top-1 against it. Val labels are noisy where the
val split is small; this says whether the predictor ranks what generalises as well as a real
evaluation does. Test figures only judge the predictor here: it is fitted on val alone.

Usage: python tools/bench_predictor.py --run RUN [--sizes 25 50 100 200] [--test 100] [--seeds 3] [--vs-test]
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

from bignas.latency.stats import kendall
from bignas.search import predictor
from bignas.search.evaluator import Evaluator
from bignas.seeds import derive_seed
from bignas.train.run_dir import TrainedRun


def mean_sd(values: list[float]) -> str:
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values) if len(values) > 1 else 0.0:.3f}"


def evaluate(run: TrainedRun, dataset, data: str, pool: list, split: str) -> np.ndarray:
    """Top-1 of every child of `pool` on `split`, through the run's accuracy cache."""
    with tqdm(total=len(pool), unit="child", desc=f"evaluate on {split}", dynamic_ncols=True) as bar:
        evaluator = Evaluator(run.supernet, run.space, dataset, run.dir.accuracy_file, data_spec=data,
                              calibration_images=run.config.eval.calibration_images,
                              batch_size=run.config.eval.batch_size, on_result=lambda: bar.update(1), split=split)
        bar.update(len({c.hash for c in pool} & set(evaluator.known())))
        top1 = np.array(evaluator(pool))
    print(f"{split}: {evaluator.fresh} children evaluated afresh, {len(pool) - evaluator.fresh} from the cache")
    return top1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run directory of 'bignas train'")
    parser.add_argument("--data", help="dataset spec (default: the run's)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[25, 50, 100, 200], help="training-set sizes")
    parser.add_argument("--test", type=int, default=100, help="held-out children per seed")
    parser.add_argument("--seeds", type=int, default=3, help="random splits")
    parser.add_argument("--kinds", nargs="+", default=list(predictor.KINDS), choices=predictor.KINDS)
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--vs-test", action="store_true",
                        help="also score every child on the test split and rank against it (about doubles the "
                             "evaluation time the first time)")
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
    y_all = evaluate(run, dataset, data, pool, "val")
    evaluate_s = time.perf_counter() - start
    print(f"evaluated in {evaluate_s:.0f} s; val top-1 {y_all.min():.4f}..{y_all.max():.4f} (sd {y_all.std():.4f})")
    t_all = evaluate(run, dataset, data, pool, "test") if args.vs_test else None
    if t_all is not None:
        print(f"test top-1 {t_all.min():.4f}..{t_all.max():.4f} (sd {t_all.std():.4f}); val against test over "
              f"all {len(pool)}: Kendall tau {kendall(y_all, t_all):.3f}")
    x_all = predictor.Featurizer(space)(pool)
    rows = []
    test_columns = f" {'tau vs test':>14} {'val vs test':>14}" if t_all is not None else ""
    print(f"\n{'children':>8} {'kind':>6} {'held-out tau':>14} {'Spearman':>14} {'MAE points':>14} "
          f"{'CV tau':>14}{test_columns} {'fit s':>7}")
    for size in args.sizes:
        for kind in args.kinds:
            got: dict[str, list[float]] = {"kendall": [], "spearman": [], "mae_points": [], "cv": [], "fit_s": [],
                                           "kendall_test": [], "val_vs_test": []}
            for seed in range(args.seeds):
                order = np.random.default_rng(seed).permutation(len(pool))
                test, train = order[:args.test], order[args.test:args.test + size]
                t0 = time.perf_counter()
                model = predictor.fit(kind, x_all[train], y_all[train], seed)
                got["fit_s"].append(time.perf_counter() - t0)
                predicted = model.predict(x_all[test])
                for key, value in predictor.agreement(predicted, y_all[test]).items():
                    got[key].append(value)
                if t_all is not None:
                    got["kendall_test"].append(kendall(predicted, t_all[test]))
                    got["val_vs_test"].append(kendall(y_all[test], t_all[test]))
                got["cv"].append(predictor.cross_validate(kind, x_all[train], y_all[train], seed)["kendall"])
            rows.append({"children": size, "kind": kind, **got})
            tests = "" if t_all is None else f" {mean_sd(got['kendall_test']):>14} {mean_sd(got['val_vs_test']):>14}"
            print(f"{size:>8} {kind:>6} {mean_sd(got['kendall']):>14} {mean_sd(got['spearman']):>14} "
                  f"{mean_sd(got['mae_points']):>14} {mean_sd(got['cv']):>14}{tests} "
                  f"{statistics.median(got['fit_s']):>7.2f}")
    print(f"\nwhole benchmark: {(time.perf_counter() - start) / 60:.1f} min")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"run": args.run, "data": data, "threads": args.threads, "evaluate_s": evaluate_s,
                       "top1": y_all.tolist(), "top1_test": None if t_all is None else t_all.tolist(),
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
