"""How repeatable is a whole child's measured latency on this host? Estimators compared.

Times the same N fresh children (exported as users deploy them) in two passes that start at
least --gap minutes apart, under one device profile. Every repeat times, in turn: the fixed
small reference block that tables are measured against (`bignas.latency.models.REFERENCE`), a
large reference (the space's largest child) and the child, each after one untimed run (`measure.interleaved`). Each
child is timed in one block of --repeats repeats ("block") and again in --rounds short rounds
spread over the pass ("spread"). From the same samples every estimator below gives one number
per child and pass; the script prints, per estimator, the share of children whose second-pass
value is within 5 % and 10 % of the first, and the 10th / 50th / 90th percentile of the ratio.

    python tools/bench_repeatability.py --profile cpu-1t --space cifar-small
    python tools/bench_repeatability.py --profile cpu-1t --space ofa-mbv3 --children 30 --json out.json

Run it alone: anything else on the host is what it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

from bignas.console import Progress
from bignas.latency.measure import interleaved, open_session, random_feed
from bignas.latency.models import export_child, export_reference
from bignas.latency.profiles import load_profile
from bignas.latency.table import fingerprint
from bignas.space import load_space

# samples: (repeats, 3) seconds of (small reference, large reference, child), interleaved.
ESTIMATORS: dict[str, Callable[[np.ndarray], float]] = {
    "raw median (ms)": lambda s: 1e3 * np.median(s[:, 2]),
    "raw p10 (ms)": lambda s: 1e3 * np.percentile(s[:, 2], 10),
    "raw min (ms)": lambda s: 1e3 * s[:, 2].min(),
    "median / median small ref (today)": lambda s: np.median(s[:, 2]) / np.median(s[:, 0]),
    "p10 / p10 small ref": lambda s: np.percentile(s[:, 2], 10) / np.percentile(s[:, 0], 10),
    "median / median large ref": lambda s: np.median(s[:, 2]) / np.median(s[:, 1]),
    "p10 / p10 large ref": lambda s: np.percentile(s[:, 2], 10) / np.percentile(s[:, 1], 10),
    "median of paired ratios to large ref": lambda s: np.median(s[:, 2] / s[:, 1]),
    "p25 / p25 large ref": lambda s: np.percentile(s[:, 2], 25) / np.percentile(s[:, 1], 25),
}


def one_pass(sessions, reference, large, repeats: int, rounds: int, warmup: int, progress) -> dict[str, list]:
    """Samples of every child: 'block' (repeats in a row) and 'spread' (rounds of repeats / rounds,
    the children taken in turn in each round)."""
    block = []
    for i, s in enumerate(sessions):
        progress("block", i + 1, len(sessions))
        block.append(interleaved([reference, large, s], repeats, warmup))
    parts: list[list[np.ndarray]] = [[] for _ in sessions]
    for r in range(rounds):
        for i, s in enumerate(sessions):
            progress(f"spread {r + 1}/{rounds}", i + 1, len(sessions))
            parts[i].append(interleaved([reference, large, s], max(1, repeats // rounds), 2))
    return {"block": block, "spread": [np.concatenate(p) for p in parts]}


def agreement(first: list[float], second: list[float]) -> dict[str, float]:
    ratio = np.array(second) / np.array(first)
    error = np.abs(ratio - 1)
    return {"within_5pct": float(np.mean(error <= 0.05)), "within_10pct": float(np.mean(error <= 0.10)),
            "ratio_p10": float(np.percentile(ratio, 10)), "ratio_p50": float(np.median(ratio)),
            "ratio_p90": float(np.percentile(ratio, 90))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu-1t", help="device profile name or YAML file (default cpu-1t)")
    parser.add_argument("--space", default="cifar-small", help="search space (default cifar-small)")
    parser.add_argument("--children", type=int, default=40, help="fresh random children timed (default 40)")
    parser.add_argument("--repeats", type=int, default=60, help="timed repeats per child and pass (default 60)")
    parser.add_argument("--rounds", type=int, default=4, help="rounds the 'spread' schedule splits them into")
    parser.add_argument("--gap", type=float, default=3.0,
                        help="least minutes between the starts of the two passes (default 3)")
    parser.add_argument("--seed", type=int, default=2000, help="seed of the children (default 2000)")
    parser.add_argument("--json", help="also write every figure to this JSON file")
    args = parser.parse_args()

    profile, space = load_profile(args.profile), load_space(args.space)
    children = space.distinct_samples(random.Random(args.seed), args.children)
    progress = Progress()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_reference(tmp / "reference.onnx", tmp / "shared")
        export_child(space, space.max(), tmp / "large.onnx")
        for i, child in enumerate(children):
            progress("export", i + 1, len(children))
            export_child(space, child, tmp / f"child{i}.onnx")

        def opened(path: Path):
            session = open_session(profile, path)
            return session, random_feed(session, profile.batch)

        reference, large = opened(tmp / "reference.onnx"), opened(tmp / "large.onnx")
        sessions = [opened(tmp / f"child{i}.onnx") for i in range(len(children))]
        passes, starts = [], []
        for p in range(2):
            if p:
                time.sleep(max(0.0, 60 * args.gap - (time.monotonic() - starts[0])))
            starts.append(time.monotonic())
            passes.append(one_pass(sessions, reference, large, args.repeats, args.rounds, profile.warmup, progress))
    gap = (starts[1] - starts[0]) / 60
    rows = []
    for schedule in ("block", "spread"):
        for name, estimate in ESTIMATORS.items():
            values = [[estimate(s) for s in passes[p][schedule]] for p in range(2)]
            rows.append({"schedule": schedule, "estimator": name, **agreement(*values)})
    here = fingerprint(profile.provider)
    print(f"\nmachine: {here['host']} ({here['cpu_vendor']}, {here['cpu_id']}, isa {here['isa']}), "
          f"{platform.machine()}; onnxruntime {here['onnxruntime']}; profile {profile.name} "
          f"({profile.intra_op_threads} intra-op threads); space {space.name}; {len(children)} children; "
          f"{args.repeats} repeats; passes {gap:.1f} min apart (start to start); load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'schedule':>8} {'estimator':>38} {'within 5%':>10} {'within 10%':>11} {'ratio p10..p50..p90':>22}")
    for r in rows:
        print(f"{r['schedule']:>8} {r['estimator']:>38} {r['within_5pct']:>10.2f} {r['within_10pct']:>11.2f} "
              f"{r['ratio_p10']:>8.3f}..{r['ratio_p50']:.3f}..{r['ratio_p90']:.3f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": here, "profile": profile.name, "space": space.name, "args": vars(args),
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
