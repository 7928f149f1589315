"""How far a cheaper accuracy estimate keeps the ranking of children: Kendall tau of val top-1 on a
subset of the validation images, after BN recalibration on fewer calibration images, against the
full estimate (the run's calibration size, the whole val split). Chooses the low-fidelity defaults
of successive halving.

For --children random children of the run, and each calibration size: the child is extracted,
its BN statistics re-estimated on that many calibration images, and every val image classified
once; the top-1 on each val subset (`Split.subset`: the first images of one fixed permutation, as
search uses) is read from those per-image results. Each cell prints tau against the full estimate
and its cost, the measured seconds per child of that calibration plus that many val images.

Usage: python tools/bench_fidelity.py --run RUN [--children 60] [--calibration 64 128 256 512]
       [--val 64 128 256]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import time

import numpy as np
import torch
from tqdm import tqdm

from bignas.data import resize_batch
from bignas.evaluate import recalibrate_bn
from bignas.latency.stats import kendall
from bignas.nn import extract
from bignas.seeds import derive_seed
from bignas.train.run_dir import TrainedRun


@torch.no_grad()
def correct_per_image(model, dataset, resolution: int, batch_size: int) -> np.ndarray:
    model.eval()
    out = [(model(resize_batch(x, resolution)).argmax(1) == y).numpy() for x, y in dataset.val.eval_batches(batch_size)]
    return np.concatenate(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="run directory of 'bignas train'")
    parser.add_argument("--data", help="dataset spec (default: the run's)")
    parser.add_argument("--children", type=int, default=60, help="random children (seeded)")
    parser.add_argument("--calibration", type=int, nargs="+", default=[64, 128, 256, 512],
                        help="calibration sizes besides the run's own")
    parser.add_argument("--val", type=int, nargs="+", default=[64, 128, 256], help="val subset sizes besides all")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    run = TrainedRun.open(args.run, torch.device("cpu"))
    data = args.data or run.config.data
    dataset = run.dataset(data)
    space, batch = run.space, run.config.eval.batch_size
    full_cal = min(run.config.eval.calibration_images, len(dataset.train))
    calibrations = sorted({c for c in args.calibration if c < full_cal} | {full_cal})
    n_val = len(dataset.val)
    vals = sorted({v for v in args.val if v < n_val} | {n_val})
    subsets = {v: dataset.val.subset(v).numpy() for v in vals}
    rng = random.Random(derive_seed("bench_fidelity", 0))
    children = list({c.hash: c for c in (space.sample(rng) for _ in range(args.children))}.values())
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; torch threads "
          f"{args.threads}; run {args.run}; data {data}; {len(children)} random children; {n_val} val images; "
          f"full estimate: {full_cal} calibration images, all val images")
    top1 = {(c, v): [] for c in calibrations for v in vals}
    half = dataset.val.subset(n_val // 2).numpy()
    other = np.setdiff1d(np.arange(n_val), half)
    halves: list[tuple[float, float]] = []  # full calibration: top-1 on each half of the val split
    cal_s = {c: [] for c in calibrations}
    val_s = []
    for child in tqdm(children, unit="child", dynamic_ncols=True):
        for c in calibrations:
            t0 = time.perf_counter()
            static = extract(run.supernet, child)  # paid by every evaluation, whatever its fidelity
            recalibrate_bn(static, dataset.calibration_batches(c, batch, child.resolution), torch.device("cpu"))
            t1 = time.perf_counter()
            correct = correct_per_image(static, dataset, child.resolution, batch)
            cal_s[c].append(t1 - t0)
            val_s.append((time.perf_counter() - t1) / n_val)
            for v in vals:
                top1[(c, v)].append(float(correct[subsets[v]].mean()))
            if c == full_cal:
                halves.append((float(correct[half].mean()), float(correct[other].mean())))
    reference = np.array(top1[(full_cal, n_val)])
    per_image = statistics.median(val_s)
    full_cost = statistics.median(cal_s[full_cal]) + per_image * n_val
    print(f"\nfull estimate: {full_cost:.3f} s per child (extraction and calibration "
          f"{statistics.median(cal_s[full_cal]):.3f} s, "
          f"val {per_image * n_val:.3f} s); val top-1 {reference.min():.4f}..{reference.max():.4f}")
    a, b = np.array(halves).T
    print(f"noise ceiling: Kendall tau between the two halves of the val split ({len(half)} and {len(other)} "
          f"images) {kendall(a, b):.3f}; the full split's own ranking is only as repeatable as that suggests")
    print("Kendall tau against the full estimate (cost as a share of the full estimate's):")
    print(f"{'calibration':>11} " + " ".join(f"{'val ' + str(v):>16}" for v in vals))
    for c in calibrations:
        cells = []
        for v in vals:
            tau = kendall(np.array(top1[(c, v)]), reference)
            cost = (statistics.median(cal_s[c]) + per_image * v) / full_cost
            cells.append(f"{tau:.3f} ({cost:.2f})")
        print(f"{c:>11} " + " ".join(f"{cell:>16}" for cell in cells))


if __name__ == "__main__":
    main()
