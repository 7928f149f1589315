"""Block kinds in one place: each plan type names its elastic (supernet) and its static module.

A new kind (say FusedMBConv) needs a plan class in `bignas.plan`, an elastic block, a static
block, one line here and one cost function in `bignas.cost`.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from bignas.nn.blocks import ElasticHead, ElasticMBConv, ElasticStem
from bignas.nn.static import Head, MBConv, Stem
from bignas.plan import BlockPlan, ConvPlan, Entry, HeadPlan
from bignas.space import SearchSpace


@dataclass(frozen=True)
class BlockKind:
    elastic: type[nn.Module]  # built from the largest plan entry and the space: Elastic*(entry, space)
    static: type[nn.Module]  # built from one plan entry: Static(entry, **options)


BLOCKS: dict[type, BlockKind] = {
    ConvPlan: BlockKind(ElasticStem, Stem),
    BlockPlan: BlockKind(ElasticMBConv, MBConv),
    HeadPlan: BlockKind(ElasticHead, Head),
}


def elastic_block(largest: Entry, space: SearchSpace) -> nn.Module:
    """The supernet module holding every variant of `largest`'s kind, sized for `largest`."""
    return BLOCKS[type(largest)].elastic(largest, space)


def static_block(entry: Entry, **options: float) -> nn.Module:
    """The plain module a child runs for `entry` (options: `drop_connect` / `dropout` of its kind)."""
    return BLOCKS[type(entry)].static(entry, **options)
