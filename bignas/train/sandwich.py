"""The sandwich rule with inplace distillation (BigNAS Sec. 3.1)."""

from __future__ import annotations

import contextlib
import random
from typing import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from bignas.data import resize_batch
from bignas.seeds import derive_seed
from bignas.space import Child, SearchSpace


def children_for_step(space: SearchSpace, seed: int, step: int, num_random: int) -> list[Child]:
    """Largest, smallest and `num_random` random children of one step.

    Drawn from a generator seeded by (seed, step) only, so every data-parallel rank, and a
    resumed run, trains exactly the same children.
    """
    rng = random.Random(derive_seed("children", seed, step))
    return [space.max(), space.min()] + [space.sample(rng) for _ in range(num_random)]


def soft_cross_entropy(logits: Tensor, target_probs: Tensor, temperature: float = 1.0) -> Tensor:
    """Cross-entropy against soft targets (KL divergence up to the teachers' constant entropy).
    With a `temperature` T, the targets must be the teacher's softmax at T too; the loss is scaled
    by T^2 so that its gradients keep their size (Hinton et al., 2015, Sec. 2)."""
    return -(target_probs * F.log_softmax(logits / temperature, dim=1)).sum(1).mean() * temperature ** 2


def sandwich_backward(model: nn.Module, images: Tensor, labels: Tensor, children: list[Child], *,
                      label_smoothing: float, dropout: float, drop_connect: float, distill: bool,
                      autocast: Callable[[], contextlib.AbstractContextManager],
                      backward: Callable[[Tensor], None], temperature: float = 1.0) -> list[Tensor]:
    """Forward and backward of every child of one step; gradients accumulate in `.grad`.

    `backward` runs each child's loss backward: `SupernetStep.backward` (bignas.nn.step), whose
    `with` block zeroes the gradients before and takes the optimizer step after.

    children[0] is the largest child: it learns from the labels, with dropout, drop-connect and
    label smoothing (regularisation on the largest child only). Every other child learns from
    the largest child's detached soft predictions (inplace distillation; softened by
    `temperature`) or, with distill=False, from the labels. Each child's graph is freed by its own backward, so memory
    holds one child at a time. Returns the detached per-child losses.
    """
    largest, *others = children
    with autocast():
        logits = model(resize_batch(images, largest.resolution), largest,
                       dropout=dropout, drop_connect=drop_connect)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
    backward(loss)
    teacher = F.softmax(logits.detach().float() / temperature, dim=1)
    parts = [loss.detach()]
    for child in others:
        with autocast():
            out = model(resize_batch(images, child.resolution), child).float()
            loss = soft_cross_entropy(out, teacher, temperature) if distill else F.cross_entropy(out, labels)
        backward(loss)
        parts.append(loss.detach())
    return parts
