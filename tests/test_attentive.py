"""Pareto-aware sandwich sampling (AttentiveNAS best-up / worst-up)."""

import contextlib
import random

import pytest
import torch
import torch.nn.functional as F

from bignas.cost import child_cost
from bignas.data import resize_batch
from bignas.space import load_space
from bignas.seeds import derive_seed
from bignas.train.attentive import FLOPS_TOLERANCE, flops_matched, pareto_draw
from bignas.train.config import ConfigError, load_config
from bignas.train.sandwich import children_for_step
from conftest import make_random_supernet


def test_flops_matched_candidates_are_distinct_near_the_anchor_and_seeded():
    space = load_space("cifar-small")
    for seed in range(5):
        pool = flops_matched(space, random.Random(seed), 3)
        assert len({c.hash for c in pool}) == 3
        target = child_cost(space, pool[0]).macs
        assert all(abs(child_cost(space, c).macs - target) <= FLOPS_TOLERANCE * target for c in pool[1:])
        assert [c.hash for c in flops_matched(space, random.Random(seed), 3)] == [c.hash for c in pool]


@pytest.mark.parametrize("best", [True, False])
def test_pareto_draw_picks_the_best_or_worst_candidate_and_leaves_bn_statistics_alone(best):
    net = make_random_supernet("cifar-small").train()
    gen = torch.Generator().manual_seed(0)
    images, labels = torch.randn(8, 3, 32, 32, generator=gen), torch.randint(0, 10, (8,), generator=gen)
    buffers = [b.clone() for b in net.buffers()]
    draw = pareto_draw(net, images, labels, net.space, candidates=3, best=best, autocast=contextlib.nullcontext)
    children = children_for_step(net.space, 0, 7, 2, draw)
    assert all(torch.equal(a, b) for a, b in zip(buffers, net.buffers()))  # running statistics untouched
    assert children[:2] == [net.space.max(), net.space.min()] and len(children) == 4
    assert [c.hash for c in children_for_step(net.space, 0, 7, 2, draw)] == [c.hash for c in children]

    # Replay the candidates (the same generator) and check each pick is the extreme loss of its pool.
    rng = random.Random(derive_seed("children", 0, 7))
    for picked in children[2:]:
        pool = flops_matched(net.space, rng, 3)
        with torch.no_grad():
            losses = [F.cross_entropy(net(resize_batch(images, c.resolution), c), labels).item() for c in pool]
        net.load_state_dict(dict(zip([k for k, _ in net.named_buffers()], buffers)), strict=False)
        assert picked.hash == pool[losses.index(min(losses) if best else max(losses))].hash

    # The ranking is that of the losses `mean` returns (averaged over processes): reversed, best-up picks the worst.
    flipped = pareto_draw(net, images, labels, net.space, candidates=3, best=not best,
                          autocast=contextlib.nullcontext, mean=lambda t: -t)
    assert [c.hash for c in children_for_step(net.space, 0, 7, 2, flipped)] == [c.hash for c in children]


def test_sampler_config_is_validated():
    with pytest.raises(ConfigError, match="'sandwich.sampler'"):
        load_config("quickstart.yaml", ["sandwich.sampler=pareto"])
    with pytest.raises(ConfigError, match="'sandwich.candidates'"):
        load_config("quickstart.yaml", ["sandwich.candidates=1"])
    assert load_config("quickstart.yaml", ["sandwich.sampler=best-up"]).sandwich.candidates == 3
