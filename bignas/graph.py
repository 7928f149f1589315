"""The operations of a child, in the order its exported ONNX graph runs them (no torch).

One plan entry becomes convolutions (batch norm folded into them, as the exporter does), their
activations, squeeze-excitation's pool / convs / gate, the residual add, the head's pool, reshape
and classifier. Each operation says which values it reads and how many elements it writes, so
the cost model (MACs, parameters) and the memory model (weight bytes, peak activation memory)
read one description of a child instead of two.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable

from bignas.plan import BlockPlan, ConvPlan, HeadPlan, Plan

# Activations exported as one elementwise operator (Relu, HardSwish, Sigmoid, HardSigmoid); swish
# (SiLU) is exported as Sigmoid then Mul: its sigmoid needs a tensor of its own while the input is
# still to be read.
TWO_OPS = {"swish"}


@dataclass(frozen=True)
class Conv:
    """A convolution (a linear layer is a 1 x 1 one on a 1 x 1 map), with its batch norm folded in."""

    in_ch: int
    out_ch: int
    kernel: int
    out_size: int
    groups: int = 1
    bias: bool = False
    bn: bool = True

    @property
    def weights(self) -> int:
        return self.out_ch * (self.in_ch // self.groups) * self.kernel * self.kernel

    @property
    def macs(self) -> int:
        return self.weights * self.out_size * self.out_size

    @property
    def params(self) -> int:
        """Learnable parameters in PyTorch: weights, bias, BN's weight and bias."""
        return self.weights + (self.out_ch if self.bias else 0) + (2 * self.out_ch if self.bn else 0)

    @property
    def biases(self) -> int:
        """Bias values once deployed: its own bias, or BN folded into one."""
        return self.out_ch if self.bias or self.bn else 0


@dataclass(frozen=True)
class Op:
    """One operation: it reads `inputs` (value ids) and writes value `output` of `size` elements.
    Elementwise ones (activations, gating, residual add, reshape) may write over an input of their
    size that nothing reads afterwards."""

    kind: str  # conv, act, pool, mul, add, reshape
    inputs: tuple[int, ...]
    output: int
    size: int
    elementwise: bool = False
    conv: Conv | None = None


@dataclass
class Graph:
    """Operations in execution order; value 0 is the input image."""

    input_size: int
    ops: list[Op] = field(default_factory=list)

    def _add(self, kind: str, inputs: tuple[int, ...], size: int, elementwise: bool = False,
             conv: Conv | None = None) -> int:
        out = len(self.ops) + 1
        self.ops.append(Op(kind, inputs, out, size, elementwise, conv))
        return out

    def conv(self, x: int, conv: Conv) -> int:
        return self._add("conv", (x,), conv.out_ch * conv.out_size * conv.out_size, conv=conv)

    def act(self, x: int, name: str | None, size: int) -> int:
        if name is None:
            return x
        if name in TWO_OPS:
            gate = self._add("act", (x,), size, True)
            return self._add("mul", (x, gate), size, True)
        return self._add("act", (x,), size, True)

    def conv_act(self, x: int, conv: Conv, act: str | None) -> int:
        return self.act(self.conv(x, conv), act, conv.out_ch * conv.out_size * conv.out_size)

    def pool(self, x: int, channels: int) -> int:
        return self._add("pool", (x,), channels)

    def mul(self, x: int, gate: int, size: int) -> int:
        return self._add("mul", (x, gate), size, True)

    def add(self, x: int, y: int, size: int) -> int:
        return self._add("add", (x, y), size, True)

    def reshape(self, x: int, size: int) -> int:
        return self._add("reshape", (x,), size, True)

    @property
    def convs(self) -> list[Conv]:
        return [op.conv for op in self.ops if op.conv is not None]


def stem_ops(p: ConvPlan, g: Graph, x: int) -> int:
    return g.conv_act(x, Conv(p.in_ch, p.out_ch, p.kernel, (p.resolution - 1) // p.stride + 1), p.act)


def block_ops(p: BlockPlan, g: Graph, x: int) -> int:
    size, out = p.resolution, p.out_resolution
    h = g.conv_act(x, Conv(p.in_ch, p.mid_ch, 1, size), p.act) if p.expand_conv else x
    h = g.conv_act(h, Conv(p.mid_ch, p.mid_ch, p.kernel, out, groups=p.mid_ch), p.act)
    if p.se_mid:
        s = g.conv_act(g.pool(h, p.mid_ch), Conv(p.mid_ch, p.se_mid, 1, 1, bias=True, bn=False), p.se_act)
        s = g.conv_act(s, Conv(p.se_mid, p.mid_ch, 1, 1, bias=True, bn=False), p.se_gate)
        h = g.mul(h, s, p.mid_ch * out * out)
    y = g.conv(h, Conv(p.mid_ch, p.out_ch, 1, out))
    return g.add(y, x, p.out_ch * out * out) if p.residual else y


def head_ops(p: HeadPlan, g: Graph, x: int) -> int:
    h = g.pool(g.conv_act(x, Conv(p.in_ch, p.width, 1, p.resolution), p.act), p.width)
    if p.mix is not None:
        h = g.conv_act(h, Conv(p.width, p.mix, 1, 1, bn=False), p.act)
    h = g.reshape(h, p.features)
    return g.conv(h, Conv(p.features, p.num_classes, 1, 1, bias=True, bn=False))


# The operations of each block kind, by plan type (see bignas.nn.registry for the modules).
OPS: dict[type, Callable] = {ConvPlan: stem_ops, BlockPlan: block_ops, HeadPlan: head_ops}


def plan_graph(net: Plan) -> Graph:
    """Every operation of a child, in order."""
    g = Graph(net.stem.in_ch * net.stem.resolution * net.stem.resolution)
    x = 0
    for entry in (net.stem, *net.blocks, net.head):
        x = OPS[type(entry)](entry, g, x)
    return g


# A pure function of one entry, asked for some ten entries of every candidate a search considers.
@functools.lru_cache(maxsize=1 << 16)
def entry_convs(entry) -> tuple[Conv, ...]:
    """The convolutions (and the classifier) of one plan entry."""
    g = Graph(0)
    OPS[type(entry)](entry, g, 0)
    return tuple(g.convs)
