"""Supernet overhead: forward+backward of the supernet with a child active vs the extracted child.

Both run side by side, interleaved step by step, so machine noise hits them alike; the overhead
is the median of the per-pair time ratios. Usage: python tools/bench_supernet.py [--repeats N]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from bignas.nn import Supernet, SupernetStep, extract
from bignas.space import load_space


def training_step(model: torch.nn.Module) -> SupernetStep:
    # lr 0: the update is not measured, and both models keep their weights from repeat to repeat.
    return SupernetStep(model, torch.optim.SGD(model.parameters(), lr=0.0))


def step_time(step: SupernetStep, x, y, forward) -> float:
    """Seconds of one forward+backward. As in training, gradients stay allocated and are zeroed
    in place once per optimizer step, on entering the step (and shared by the children of a
    sandwich step): neither that zeroing nor the optimizer step on leaving is timed."""
    with step:
        start = time.perf_counter()
        step.backward(F.cross_entropy(forward(x), y))
        elapsed = time.perf_counter() - start
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="ofa-mbv3")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--repeats", type=int, default=15, help="timed steps per model (after 3 warm-up)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = load_space(args.space)
    supernet = Supernet(space).train()
    supernet_step = training_step(supernet)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; torch {torch.__version__}; "
          f"threads {args.threads}; batch {args.batch}; fp32; space {space.name}; median of {args.repeats}")
    print(f"{'child':>6} {'res':>4} {'supernet ms':>12} {'static ms':>10} {'overhead':>9}")
    for r in args.resolutions:
        for name, child in (("max", space.max()), ("min", space.min())):
            static = extract(supernet, child, r).train()
            x = torch.randn(args.batch, 3, r, r)
            y = torch.randint(0, space.num_classes, (args.batch,))
            runs = [(supernet_step, lambda x, c=child: supernet(x, c)), (training_step(static), static)]
            times = {0: [], 1: []}
            for i in range(3 + args.repeats):
                order = (0, 1) if i % 2 == 0 else (1, 0)  # alternate who goes first
                for k in order:
                    t = step_time(runs[k][0], x, y, runs[k][1])
                    if i >= 3:
                        times[k].append(t)
            ratios = [a / b for a, b in zip(times[0], times[1])]
            print(f"{name:>6} {r:>4} {1e3 * statistics.median(times[0]):>12.1f} "
                  f"{1e3 * statistics.median(times[1]):>10.1f} {100 * (statistics.median(ratios) - 1):>8.1f}%")


if __name__ == "__main__":
    main()
