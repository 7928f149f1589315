"""Latency-table keys: the typed signature of one piece a child runs (stem, MBConv block, head).

A key holds everything the piece's latency depends on (op kind, input resolution, channels,
expansion, effective kernel, stride, squeeze-excitation, activations) and nothing about where it
sits in the network, so two blocks at different positions with the same shape share an entry.
No torch here: the device runner and the search read keys too.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

from bignas.plan import BlockPlan, Entry, Plan, plan
from bignas.space import Child, SearchSpace, StageChoice


# Short, fixed names keep the string keys readable; a plan field without one fails loudly here.
_ABBREV = {"resolution": "r", "in_ch": "i", "out_ch": "o", "mid_ch": "m", "expand_conv": "x",
           "kernel": "k", "stride": "s", "se_mid": "se", "act": "a", "se_act": "sa", "se_gate": "sg",
           "width": "w", "mix": "mix", "num_classes": "c"}
_POSITION = ("stage", "index")  # where a block sits: not part of its signature


@dataclass(frozen=True)
class BlockKey:
    """One plan entry with its position in the network dropped (`stage` and `index` set to 0)."""

    kind: str
    entry: Entry

    @classmethod
    def of(cls, entry: Entry) -> "BlockKey":
        return _key_of(entry)

    def fields(self, with_resolution: bool = True) -> list[tuple[str, object]]:
        return [(n, getattr(self.entry, n)) for n in _signature(type(self.entry))
                if with_resolution or n != "resolution"]

    def __str__(self) -> str:
        """The stable string under which the table stores this key."""
        return _key_string(self, True)

    @property
    def shape_free(self) -> str:
        """The key without its input resolution: one dynamic-size ONNX export serves all of these."""
        return _key_string(self, False)

    @property
    def in_ch(self) -> int:
        return self.entry.in_ch

    @property
    def resolution(self) -> int:
        return self.entry.resolution


@functools.lru_cache(maxsize=1 << 16)  # as `_key_string`: hashing an entry is cheaper than `replace`
def _key_of(entry: Entry) -> BlockKey:
    if isinstance(entry, BlockPlan):
        entry = dataclasses.replace(entry, stage=0, index=0)
    return BlockKey(entry.kind, entry)


# A pure function of the key, asked per block of every candidate a search considers: hashing a key
# is a tenth of the cost of formatting it. A space has at most some thousands of distinct keys.
@functools.lru_cache(maxsize=1 << 16)
def _key_string(key: BlockKey, with_resolution: bool) -> str:
    def text(v: object) -> str:
        return str(int(v)) if isinstance(v, bool) else "-" if v is None else str(v)
    return key.kind + ":" + ",".join(f"{_ABBREV[n]}{text(v)}" for n, v in key.fields(with_resolution))


@functools.cache  # a pure function of the plan's entry types: the search asks it per block per candidate
def _signature(entry_type: type) -> tuple[str, ...]:
    """The fields of a plan entry type that make a key: resolution first, then the plan's own order."""
    names = [f.name for f in dataclasses.fields(entry_type) if f.name not in _POSITION]
    return tuple(sorted(names, key=lambda n: n != "resolution"))


def child_keys(space: SearchSpace, child: Child) -> list[BlockKey]:
    """The keys of every piece `child` runs, in order: stem, blocks, head."""
    return plan_keys(plan(space, child))


def plan_keys(p: Plan) -> list[BlockKey]:
    """`child_keys` from the child's plan, for a caller that has it already."""
    return [BlockKey.of(p.stem), *(BlockKey.of(b) for b in p.blocks), BlockKey.of(p.head)]


def space_keys(space: SearchSpace) -> dict[str, BlockKey]:
    """Every distinct key any child of `space` can produce, over all its resolutions.

    A block's key depends only on the resolution, its stage's input width (the previous stage's
    or the stem's), its stage's width, kernel and expand, and whether it is the stage's first
    block; the head's only on the resolution, the last stage's width and the head choices. So the
    children built below, one per such combination, run every key there is, and `plan` alone
    computes them (tests check sampled children never miss one).
    """
    keys: dict[str, BlockKey] = {}
    for child in _covering_children(space):
        for key in child_keys(space, child):
            keys.setdefault(str(key), key)
    return keys


def _covering_children(space: SearchSpace):
    smallest = space.min()
    last = space.stages[-1]
    for resolution in space.resolutions:
        base = dataclasses.replace(smallest, resolution=resolution)
        for si, s in enumerate(space.stages):
            previous = space.stem.widths if si == 0 else space.stages[si - 1].widths
            for prev in previous:
                for width in s.widths:
                    for kernel in s.kernels:
                        for expand in s.expands:
                            depth = max(s.depths)
                            stages = list(base.stages)
                            stages[si] = StageChoice(depth, width, (kernel,) * depth, (expand,) * depth)
                            child = base
                            if si == 0:
                                child = dataclasses.replace(child, stem=prev)
                            else:
                                stages[si - 1] = dataclasses.replace(stages[si - 1], width=prev)
                            yield dataclasses.replace(child, stages=tuple(stages))
        for width in last.widths:
            stages = (*base.stages[:-1], dataclasses.replace(base.stages[-1], width=width))
            for head in space.head.widths:
                for mix in space.head.mix_widths or (None,):
                    yield dataclasses.replace(base, stages=stages, head=head, mix=mix)
