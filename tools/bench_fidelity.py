"""How far a cheaper accuracy estimate keeps the ranking of children, and what successive halving
built on it picks. Chooses the low-fidelity defaults of successive halving.

Measurement. For --children random children of the run, and each calibration size: the child is
extracted, its BN statistics re-estimated on that many calibration images, and every val image
classified once; the top-1 on each val subset (`Split.subset`: the first images of one fixed
permutation, as search uses) is read from those per-image results. With the full calibration, the
test split is classified too. Each cell prints Kendall tau against the full estimate (the run's
calibration size, the whole val split) and its cost: the measured seconds per child of that
calibration plus that many val images, as a share of the full estimate's.

Replay (--schedule). Successive halving over --candidates children drawn at random from the
measured ones, --draws times: each rung keeps the best share of the last (`halving.best_share`,
as search promotes), then the best child on the full estimate is picked. Printed beside the pick
of the full estimate over all the candidates (full-fidelity search at equal candidates): the
pick's val top-1 (biased upwards by selection, more so the more children are compared), its test
top-1, and the evaluation cost as a share of full fidelity's. The draws share the measured
children, and candidates here are uniform, not a strategy's: the replay ranks schedules, a real
search (bench_strategies.py --halving) measures one. A schedule is its lower rungs
`CALIBRATIONxVAL` joined by commas, lowest first, then `:KEEP`, the share each rung promotes, as
`search --fidelity-option` sets them: `64x128:0.2` is search's default.

Usage: python tools/bench_fidelity.py --run RUN [--children 60] [--calibration 64 128 256 512]
       [--val 64 128 256] [--save FILE.json] [--schedule 64x128:0.2 32x64,128x256:0.4 ...]
       python tools/bench_fidelity.py --load FILE.json --schedule ...   (simulate again, measure nothing)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from bignas.data import resize_batch
from bignas.evaluate import calibration_count, recalibrate_bn
from bignas.io import write_json
from bignas.latency.stats import kendall
from bignas.nn import extract
from bignas.search.halving import best_share
from bignas.seeds import derive_seed
from bignas.train.run_dir import TrainedRun


@torch.no_grad()
def correct_per_image(model, split, resolution: int, batch_size: int) -> np.ndarray:
    model.eval()
    out = [(model(resize_batch(x, resolution)).argmax(1) == y).numpy() for x, y in split.eval_batches(batch_size)]
    return np.concatenate(out)


def measure(args: argparse.Namespace) -> dict:
    """Every child's top-1 at every (calibration, val subset) cell, its test top-1, and the costs."""
    torch.set_num_threads(args.threads)
    run = TrainedRun.open(args.run, torch.device("cpu"))
    data = args.data or run.config.data
    dataset = run.dataset(data)
    space, batch = run.space, run.config.eval.batch_size
    full_cal = calibration_count(dataset, run.config.eval.calibration_images)
    calibrations = sorted({c for c in args.calibration if c < full_cal} | {full_cal})
    n_val = len(dataset.val)
    vals = sorted({v for v in args.val if v < n_val} | {n_val})
    subsets = {v: dataset.val.subset(v).numpy() for v in vals}
    rng = random.Random(derive_seed("bench_fidelity", 0))
    children = list({c.hash: c for c in (space.sample(rng) for _ in range(args.children))}.values())
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus; torch threads {args.threads}"
    print(f"machine: {machine}; run {args.run}; data {data}; {len(children)} random children; {n_val} val images; "
          f"full estimate: {full_cal} calibration images, all val images")
    top1 = {f"{c}x{v}": [] for c in calibrations for v in vals}
    half = dataset.val.subset(n_val // 2).numpy()
    other = np.setdiff1d(np.arange(n_val), half)
    halves, test = [], []  # full calibration: top-1 on each half of the val split; test top-1
    cal_s: dict[int, list[float]] = {c: [] for c in calibrations}
    val_s = []
    for child in tqdm(children, unit="child", dynamic_ncols=True):
        for c in calibrations:
            t0 = time.perf_counter()
            static = extract(run.supernet, child)  # paid by every evaluation, whatever its fidelity
            recalibrate_bn(static, dataset.calibration_batches(c, batch, child.resolution), torch.device("cpu"))
            t1 = time.perf_counter()
            correct = correct_per_image(static, dataset.val, child.resolution, batch)
            cal_s[c].append(t1 - t0)
            val_s.append((time.perf_counter() - t1) / n_val)
            for v in vals:
                top1[f"{c}x{v}"].append(float(correct[subsets[v]].mean()))
            if c == full_cal:
                halves.append((float(correct[half].mean()), float(correct[other].mean())))
                test.append(float(correct_per_image(static, dataset.test, child.resolution, batch).mean()))
    return {"machine": machine, "run": str(args.run), "data": data, "val_images": n_val, "full": f"{full_cal}x{n_val}",
            "calibrations": calibrations, "vals": vals, "children": [c.hash for c in children], "top1": top1,
            "test": test, "halves": halves, "calibration_s": {str(c): statistics.median(s) for c, s in cal_s.items()},
            "val_s_per_image": statistics.median(val_s)}


def cost(m: dict, cell: str) -> float:
    """Seconds per child of the estimate at `cell` ("CALIBRATIONxVAL")."""
    c, v = cell.split("x")
    return m["calibration_s"][c] + m["val_s_per_image"] * int(v)


def report(m: dict) -> None:
    reference = np.array(m["top1"][m["full"]])
    full_cost = cost(m, m["full"])
    print(f"\nfull estimate: {full_cost:.3f} s per child (extraction and calibration "
          f"{m['calibration_s'][m['full'].split('x')[0]]:.3f} s, val {m['val_s_per_image'] * m['val_images']:.3f} s); "
          f"val top-1 {reference.min():.4f}..{reference.max():.4f}, sd {reference.std() * 100:.2f} points")
    a, b = np.array(m["halves"]).T
    print(f"noise ceiling: Kendall tau between the two halves of the val split {kendall(a, b):.3f}; the full "
          f"split's own ranking is only as repeatable as that suggests; val against test: "
          f"{kendall(reference, np.array(m['test'])):.3f}")
    print("Kendall tau against the full estimate (cost as a share of the full estimate's):")
    print(f"{'calibration':>11} " + " ".join(f"{'val ' + str(v):>16}" for v in m["vals"]))
    for c in m["calibrations"]:
        cells = [f"{kendall(np.array(m['top1'][f'{c}x{v}']), reference):.3f} "
                 f"({cost(m, f'{c}x{v}') / full_cost:.2f})" for v in m["vals"]]
        print(f"{c:>11} " + " ".join(f"{cell:>16}" for cell in cells))


def parse_schedule(text: str) -> tuple[list[str], float]:
    """`32x64,128x256:0.4` -> (["32x64", "128x256"], 0.4)."""
    cells, _, keep = text.rpartition(":")
    try:
        share = float(keep)
    except ValueError:
        share = 0.0
    if not cells or not 0 < share <= 1 or not all(_cell(c) for c in cells.split(",")):
        raise SystemExit(f"--schedule {text}: expected rungs CALIBRATIONxVAL joined by commas, then :KEEP with "
                         f"0 < KEEP <= 1, e.g. 64x128:0.2 or 32x64,128x256:0.4")
    return cells.split(","), share


def _cell(text: str) -> bool:
    c, _, v = text.partition("x")
    return c.isdigit() and v.isdigit()


def simulate(m: dict, schedules: list[str], candidates: int, draws: int) -> None:
    n = len(m["children"])
    if candidates >= n:
        raise SystemExit(f"--candidates {candidates} must be below the {n} measured children, so draws differ")
    full, test = np.array(m["top1"][m["full"]]), np.array(m["test"])
    full_cost = cost(m, m["full"])
    rng = random.Random(derive_seed("bench_fidelity", "simulate"))
    samples = [rng.sample(range(n), candidates) for _ in range(draws)]
    print(f"\nsuccessive halving replayed over {candidates} of the {n} children, {draws} draws: mean ± sd of the pick's "
          f"val and test top-1, and the evaluation cost as a share of full fidelity's")
    print(f"{'schedule':>28} {'val top-1':>16} {'test top-1':>16} {'cost':>6} {'full evals':>10}")

    def row(name: str, picks: list[int], costs: list[float], fulls: list[int]) -> None:
        v, t = full[picks] * 100, test[picks] * 100
        print(f"{name:>28} {v.mean():>8.2f} ± {v.std():<5.2f} {t.mean():>8.2f} ± {t.std():<5.2f} "
              f"{statistics.mean(costs):>6.3f} {statistics.mean(fulls):>10.1f}")

    row("full fidelity", [max(s, key=lambda i: full[i]) for s in samples], [1.0] * draws, [candidates] * draws)
    for text in schedules:
        cells, keep = parse_schedule(text)
        missing = [c for c in cells if c not in m["top1"]]
        if missing:
            raise SystemExit(f"--schedule {text}: {', '.join(missing)} not measured (measured: {', '.join(m['top1'])})")
        picks, costs, fulls = [], [], []
        for alive in samples:
            spent = 0.0
            for cell in cells:
                spent += len(alive) * cost(m, cell)
                scores = m["top1"][cell]
                alive = [alive[i] for i in best_share([scores[j] for j in alive], keep)]
            picks.append(max(alive, key=lambda i: full[i]))
            costs.append((spent + len(alive) * full_cost) / (candidates * full_cost))
            fulls.append(len(alive))
        row(text, picks, costs, fulls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", help="run directory of 'bignas train' (not with --load)")
    parser.add_argument("--data", help="dataset spec (default: the run's)")
    parser.add_argument("--children", type=int, default=60, help="random children (seeded)")
    parser.add_argument("--calibration", type=int, nargs="+", default=[64, 128, 256, 512],
                        help="calibration sizes besides the run's own")
    parser.add_argument("--val", type=int, nargs="+", default=[64, 128, 256], help="val subset sizes besides all")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument("--save", type=Path, help="write every measured figure to this JSON file")
    parser.add_argument("--load", type=Path, help="take the figures from a JSON file --save wrote: measure nothing")
    parser.add_argument("--schedule", nargs="+", default=[], metavar="RUNGS:KEEP",
                        help="successive-halving schedules to replay, e.g. 64x128:0.2 32x64,128x256:0.4")
    parser.add_argument("--candidates", type=int, default=40,
                        help="children per replayed search (fewer than the children measured)")
    parser.add_argument("--draws", type=int, default=2000, help="replayed searches per schedule")
    args = parser.parse_args()
    if (args.run is None) == (args.load is None):
        parser.error("give --run (measure) or --load (figures measured before), not both")
    for text in args.schedule:
        parse_schedule(text)  # refuse a malformed schedule before measuring for minutes
    if args.candidates < 1 or args.draws < 1:
        parser.error("--candidates and --draws must be at least 1")
    if args.schedule and args.run and args.candidates >= args.children:
        parser.error(f"--candidates {args.candidates} must be below --children {args.children}, so that draws differ")

    m = json.loads(args.load.read_text()) if args.load else measure(args)
    if args.save:
        write_json(args.save, m)
    report(m)
    if args.schedule:
        simulate(m, args.schedule, args.candidates, args.draws)


if __name__ == "__main__":
    main()
