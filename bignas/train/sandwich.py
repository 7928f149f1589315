"""The sandwich rule with inplace distillation (BigNAS Sec. 3.1)."""

from __future__ import annotations

import contextlib
import math
import random
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bignas.data import resize_batch
from bignas.seeds import derive_seed
from bignas.space import Child, SearchSpace
from bignas.train.config import SandwichConfig


def children_for_step(space: SearchSpace, seed: int, step: int, num_random: int,
                      draw: Callable[[random.Random], Child] | None = None) -> list[Child]:
    """Largest, smallest and `num_random` random children of one step.

    Drawn from a generator seeded by (seed, step) only, so every data-parallel rank, and a
    resumed run, trains exactly the same children. `draw(rng)` replaces the uniform draw
    (`space.sample`) of each random child (e.g. `attentive.pareto_draw`).
    """
    rng = random.Random(derive_seed("children", seed, step))
    draw = draw or space.sample
    return [space.max(), space.min()] + [draw(rng) for _ in range(num_random)]


def child_logits(model: nn.Module, images: Tensor, child: Child, **kwargs) -> Tensor:
    """The supernet's fp32 logits for `child`, on the batch resized to the child's resolution."""
    return model(resize_batch(images, child.resolution), child, **kwargs).float()


DistillLoss = Callable[[Tensor, Tensor], Tensor]  # (student logits, detached teacher logits) -> loss


def soft_cross_entropy(logits: Tensor, target_probs: Tensor, temperature: float = 1.0) -> Tensor:
    """Cross-entropy against soft targets (KL divergence up to the teachers' constant entropy).
    With a `temperature` T, the targets must be the teacher's softmax at T too; the loss is scaled
    by T^2 so that its gradients keep their size (Hinton et al., 2015, Sec. 2)."""
    return -(target_probs * F.log_softmax(logits / temperature, dim=1)).sum(1).mean() * temperature ** 2


def _alpha_terms(q: Tensor, p: Tensor, log_w: Tensor, alpha: float, clip: float) -> tuple[Tensor, Tensor]:
    """Per image D_alpha(p||q) = sum q ((p/q)^alpha - 1) / (alpha (alpha - 1)), and per class q times the
    weight its gradient puts on log q, with the importance weights (p/q)^alpha clipped at `clip`.
    Within 1e-3 of 1 it is KL(p||q), of 0 KL(q||p): their limits, where the formula cancels badly.
    Everything here is detached."""
    if abs(alpha - 1.0) < 1e-3:  # q (p/q) = p: bounded without clipping
        return (p * log_w).sum(1), p
    if abs(alpha) < 1e-3:
        log_w = log_w.clamp(max=math.log(clip))
        return -(q * log_w).sum(1), q * (log_w - 1.0)
    w = torch.exp(alpha * log_w).clamp(max=clip)
    scale = 1.0 / (alpha * (alpha - 1.0))
    return (q * (w - 1.0)).sum(1) * scale, q * (w / alpha + scale)


def alpha_divergence(student: Tensor, teacher: Tensor, alpha_min: float, alpha_max: float, clip: float) -> Tensor:
    """AlphaNet's adaptive distillation loss (Wang et al., 2021, Sec. 3), from logits: per image, the
    larger of the alpha-divergences D_alpha(p||q) at `alpha_min` and `alpha_max` between the teacher's
    distribution p and the student's q, averaged over the batch. A negative alpha punishes a student
    that is sure where the teacher is not, alpha = 1 (KL) one that misses classes the teacher sees.
    The importance weights (p/q)^alpha are clipped at `clip` (their Sec. 3.2: unclipped, they explode
    where p/q is large for alpha > 0, small for alpha < 0), in the value and the gradient alike; the
    value is the clipped divergence, which is not on the scale of a cross-entropy."""
    log_q = F.log_softmax(student, dim=1)
    log_p = F.log_softmax(teacher.detach(), dim=1)
    q, p, log_w = log_q.detach().exp(), log_p.exp(), log_p - log_q.detach()
    (low, low_weight), (high, high_weight) = (_alpha_terms(q, p, log_w, a, clip) for a in (alpha_min, alpha_max))
    pick_low = (low > high).unsqueeze(1)
    value = torch.maximum(low, high)
    surrogate = -(torch.where(pick_low, low_weight, high_weight) * log_q).sum(1)  # its gradient is the one wanted
    return (value + (surrogate - surrogate.detach())).mean()


def distill_loss(cfg: SandwichConfig) -> DistillLoss:
    """The loss by which children learn the largest child's predictions, as `cfg` says (kind, temperature)."""
    t = cfg.temperature
    if cfg.distill_loss == "alpha":
        return lambda student, teacher: alpha_divergence(student / t, teacher / t, cfg.alpha_min, cfg.alpha_max,
                                                         cfg.alpha_clip) * t ** 2
    return lambda student, teacher: soft_cross_entropy(student, F.softmax(teacher / t, dim=1), t)


def sandwich_backward(model: nn.Module, images: Tensor, labels: Tensor, children: list[Child], *,
                      label_smoothing: float, dropout: float, drop_connect: float, distill: DistillLoss | None,
                      autocast: Callable[[], contextlib.AbstractContextManager],
                      backward: Callable[[Tensor], None]) -> list[Tensor]:
    """Forward and backward of every child of one step; gradients accumulate in `.grad`.

    `backward` runs each child's loss backward: `SupernetStep.backward` (bignas.nn.step), whose
    `with` block zeroes the gradients before and takes the optimizer step after.

    children[0] is the largest child: it learns from the labels, with dropout, drop-connect and
    label smoothing (regularisation on the largest child only). Every other child learns from
    the largest child's detached predictions through `distill` (inplace distillation; see
    `distill_loss`) or, with distill=None, from the labels. Each child's graph is freed by its own
    backward, so memory holds one child at a time. Returns the detached per-child losses.
    """
    largest, *others = children
    with autocast():
        logits = child_logits(model, images, largest, dropout=dropout, drop_connect=drop_connect)
        loss = F.cross_entropy(logits, labels, label_smoothing=label_smoothing)
    backward(loss)
    teacher = logits.detach()
    parts = [loss.detach()]
    for child in others:
        with autocast():
            out = child_logits(model, images, child)
            loss = distill(out, teacher) if distill is not None else F.cross_entropy(out, labels)
        backward(loss)
        parts.append(loss.detach())
    return parts
