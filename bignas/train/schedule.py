"""Learning-rate schedule of the BigNAS recipe: warm-up, decay, constant ending."""

from __future__ import annotations

import math

from bignas.train.config import ScheduleConfig


def lr_factor(step: int, steps_per_epoch: int, epochs: int, cfg: ScheduleConfig) -> float:
    """Fraction of the peak learning rate at optimizer step `step`.

    Linear warm-up over `warmup_epochs`, then cosine or exponential decay, never below
    `floor`: BigNAS (Sec. 3.2) ends training at a constant 5% of the peak, because the smaller
    children keep improving after the largest one has converged.
    """
    epoch = step / steps_per_epoch
    if epoch < cfg.warmup_epochs:
        return (step + 1) / (cfg.warmup_epochs * steps_per_epoch)
    if cfg.decay == "constant":
        return 1.0
    if cfg.decay == "exponential":
        factor = cfg.decay_rate ** (epoch - cfg.warmup_epochs)
    else:
        span = max(epochs - cfg.warmup_epochs, 1e-9)
        factor = 0.5 * (1 + math.cos(math.pi * min(1.0, (epoch - cfg.warmup_epochs) / span)))
    return max(cfg.floor, factor)
