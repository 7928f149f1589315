"""Sandwich-step throughput: images/s of the real training step (largest + smallest + 2 random
children, inplace distillation, one optimizer step), all children at a fixed resolution.

Images are counted as (2 + num_random) x batch per step. Usage: python tools/bench_train.py
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import statistics
import time

import torch

from bignas.nn import Supernet, SupernetStep
from bignas.train.config import OptimizerConfig, SandwichConfig
from bignas.train.recipe import make_optimizer, zero_init_last_bn
from bignas.train.sandwich import children_for_step, distill_loss, sandwich_backward
from bignas.space import load_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--space", default="ofa-mbv3")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    parser.add_argument("--num-random", type=int, default=2)
    parser.add_argument("--steps", type=int, default=10, help="timed steps (after 2 warm-up steps)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    space = load_space(args.space)
    supernet = Supernet(space).train()
    zero_init_last_bn(supernet)
    optimizer = make_optimizer(supernet, OptimizerConfig())
    step = SupernetStep(supernet, optimizer)  # zero in place, all children's backward, one optimizer step
    per_step = (2 + args.num_random) * args.batch
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cpus; torch {torch.__version__}; "
          f"threads {args.threads}; batch {args.batch}; fp32; space {space.name}; "
          f"{per_step} images per step; median of {args.steps} steps")
    for r in args.resolutions:
        images = torch.randn(args.batch, 3, r, r)
        labels = torch.randint(0, space.num_classes, (args.batch,))
        times = []
        for i in range(2 + args.steps):
            children = [dataclasses.replace(c, resolution=r)
                        for c in children_for_step(space, 0, i, args.num_random)]
            start = time.perf_counter()  # the whole step: zeroing, sandwich, optimizer step
            with step:
                sandwich_backward(supernet, images, labels, children, label_smoothing=0.1, dropout=0.1,
                                  drop_connect=0.1, distill=distill_loss(SandwichConfig()),
                                  autocast=contextlib.nullcontext,
                                  backward=step.backward)
            if i >= 2:
                times.append(time.perf_counter() - start)
        median = statistics.median(times)
        print(f"resolution {r:>3}: {per_step / median:7.1f} images/s  ({1e3 * median:.0f} ms per step)")


if __name__ == "__main__":
    main()
