"""The plan: the concrete layers a child runs, with their input sizes (no torch).

`plan(space, child)` is the one intermediate representation that the supernet, the static child,
the cost model and the latency keys all read, so no two modules work out on their own which
layers a child runs. Each plan type names its block kind (`kind`); the modules that build or
time a kind are looked up by plan type in one place each (`bignas.nn.registry`, `bignas.cost`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Union

from bignas.space import Child, SearchSpace



@dataclass(frozen=True)
class ConvPlan:
    """Stem: conv k x k + BN + act."""
    kind: ClassVar[str] = "stem"
    in_ch: int
    out_ch: int
    kernel: int
    stride: int
    act: str
    resolution: int  # input height = width


@dataclass(frozen=True)
class BlockPlan:
    """One active MBConv block of stage `stage`, position `index` within the stage."""
    kind: ClassVar[str] = "mbconv"
    stage: int
    index: int
    in_ch: int
    out_ch: int
    mid_ch: int
    expand_conv: bool
    kernel: int  # effective kernel (see `effective_kernel`)
    stride: int
    se_mid: int  # 0 when the block has no squeeze-excitation
    act: str
    se_act: str
    se_gate: str
    resolution: int  # input height = width

    @property
    def residual(self) -> bool:
        return self.stride == 1 and self.in_ch == self.out_ch

    @property
    def out_resolution(self) -> int:
        return conv_out(self.resolution, self.stride)


@dataclass(frozen=True)
class HeadPlan:
    """1x1 conv + BN + act, global pool, optional 1x1 mix conv + act, linear classifier."""
    kind: ClassVar[str] = "head"
    in_ch: int
    width: int
    mix: int | None
    act: str
    num_classes: int
    resolution: int

    @property
    def features(self) -> int:
        return self.mix if self.mix is not None else self.width


Entry = Union[ConvPlan, BlockPlan, HeadPlan]


@dataclass(frozen=True)
class Plan:
    stem: ConvPlan
    blocks: tuple[BlockPlan, ...]
    head: HeadPlan


def conv_out(size: int, stride: int) -> int:
    """Output size of an odd-kernel conv with padding k // 2."""
    return (size - 1) // stride + 1


def effective_kernel(kernel: int, size: int) -> int:
    """Largest centre crop of `kernel` whose taps can touch a real pixel of a size x size map.

    With padding k // 2, the tap at offset o from the centre reads only zero padding at every
    output position once |o| > size - 1, for stride 1 and 2 alike, so cropping to
    2 * (size - 1) + 1 gives the same output at a fraction of the cost on small maps.
    """
    return min(kernel, 2 * (size - 1) + 1)


def make_divisible(value: float, divisor: int) -> int:
    """Round to the nearest multiple of `divisor`, never going below 90% of `value` (MobileNet)."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def plan(space: SearchSpace, child: Child, resolution: int | None = None) -> Plan:
    """The layers `child` runs. `resolution` overrides the child's (used for cheap tests)."""
    size = child.resolution if resolution is None else resolution
    stem = ConvPlan(space.in_channels, child.stem, effective_kernel(space.stem.kernel, size),
                    space.stem.stride, space.stem.act, size)
    size, channels = conv_out(size, space.stem.stride), child.stem
    blocks = []
    for si, (s, c) in enumerate(zip(space.stages, child.stages)):
        for bi in range(c.depth):
            mid = make_divisible(channels * c.expands[bi], space.channel_divisor)
            if not s.has_expand_conv:
                mid = channels
            se_base = mid if space.se.relative_to == "expanded" else channels
            se_mid = make_divisible(se_base // space.se.reduction, space.channel_divisor) if s.se else 0
            stride = s.stride if bi == 0 else 1
            blocks.append(BlockPlan(si, bi, channels, c.width, mid, s.has_expand_conv,
                                    effective_kernel(c.kernels[bi], size), stride, se_mid, s.act,
                                    space.se.act, space.se.gate, size))
            size, channels = conv_out(size, stride), c.width
    head = HeadPlan(channels, child.head, child.mix, space.head.act, space.num_classes, size)
    return Plan(stem, tuple(blocks), head)
