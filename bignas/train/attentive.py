"""Pareto-aware sandwich sampling (AttentiveNAS, Wang et al., CVPR 2021, Sec. 3.2).

Uniform sampling trains every part of the space alike. AttentiveNAS trains the random children of
a step nearer the Pareto front (best-up) or its far side (worst-up): each random child is the
best, or the worst, of a few candidates of about the same FLOPs, ranked by their loss on the
step's own batch (the cheap estimator of their Sec. 3.3). Matching FLOPs is what keeps best-up
from always picking the largest candidate.
"""

from __future__ import annotations

import contextlib
import random
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bignas.cost import child_cost
from bignas.space import Child, SearchSpace
from bignas.train.sandwich import child_logits

FLOPS_TOLERANCE = 0.05  # candidates within 5 % of the anchor's MACs (AttentiveNAS bins FLOPs about this finely)
TRIES = 200  # uniform draws per anchor before settling for the nearest ones found


def flops_matched(space: SearchSpace, rng: random.Random, k: int) -> list[Child]:
    """Up to `k` distinct children of about the same MACs: an anchor drawn uniformly (so the MACs follow
    the space's own prior), then uniform draws until k - 1 more fall within FLOPS_TOLERANCE of it,
    or, after TRIES draws, the nearest ones found (fewer only where the space has fewer children)."""
    anchor = space.sample(rng)
    target = child_cost(space, anchor).macs
    seen = {anchor.hash}
    near: list[Child] = []
    others: list[tuple[float, int, Child]] = []
    for i in range(TRIES):
        if len(near) == k - 1:
            break
        child = space.sample(rng)
        if child.hash in seen:
            continue
        seen.add(child.hash)
        distance = abs(child_cost(space, child).macs - target) / target
        if distance <= FLOPS_TOLERANCE:
            near.append(child)
        else:
            others.append((distance, i, child))
    near += [c for _, _, c in sorted(others, key=lambda t: t[:2])[:k - 1 - len(near)]]
    return [anchor] + near


@contextlib.contextmanager
def statistics_kept(model: nn.Module) -> Iterator[None]:
    """Forward passes in training mode (BN on the batch's statistics) that leave every buffer as it was."""
    saved = [b.clone() for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, s in zip(model.buffers(), saved):
                b.copy_(s)


def pareto_draw(model: nn.Module, images: Tensor, labels: Tensor, space: SearchSpace, *, candidates: int,
                best: bool, autocast: Callable[[], contextlib.AbstractContextManager],
                mean: Callable[[Tensor], Tensor] = lambda t: t) -> Callable[[random.Random], Child]:
    """A `draw(rng)` for `sandwich.children_for_step`: the best (lowest loss, `best`) or worst of
    `candidates` FLOPs-matched children on this batch.

    The loss is the plain cross-entropy on the labels, in training mode (BN on the batch's
    statistics, every buffer restored after). `mean` averages the candidates' losses over the
    processes of a torchrun job (`Distributed.mean_`), so that every rank, which drew the same
    candidates from the same generator, picks the same child. It costs one forward pass per
    candidate and a host sync."""
    def draw(rng: random.Random) -> Child:
        pool = flops_matched(space, rng, candidates)
        with torch.no_grad(), statistics_kept(model):
            losses = []
            for child in pool:
                with autocast():
                    losses.append(F.cross_entropy(child_logits(model, images, child), labels))
        losses = mean(torch.stack(losses)).tolist()
        return pool[(min if best else max)(range(len(pool)), key=losses.__getitem__)]
    return draw
