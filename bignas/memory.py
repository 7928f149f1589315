"""Memory of a deployed child, analytically (no torch): the bytes of its weights, fp32 and int8, and
its peak activation memory for batch 1. What microcontroller and phone targets are sized by.

Weights, as the exported ONNX files store them (batch norm folded into a bias per channel):
- fp32: 4 bytes per weight and per bias value;
- int8 (ONNX Runtime's QDQ, weights per channel): 1 byte per weight; per output channel a float32
  scale and an int8 zero point of the weights (5 bytes); per bias value the int32 bias with its
  float32 scale and int32 zero point (12 bytes). Per tensor, the scale and zero point are one each.
The activations' own scales and zero points (5 bytes per quantized tensor) are left out: under 1 %.

Peak activation memory: the operations of `graph` run in order, each writing a new tensor, except
an elementwise one (activation, gating, residual add, reshape), which writes over an input of its
size that nothing reads afterwards. A tensor is freed after its last reader; a residual block's
input stays alive until its add. The peak is the largest sum of live tensors at any operation:
elements, times 4 bytes in fp32 or 1 in int8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from bignas.graph import Graph, Op, plan_graph
from bignas.plan import Plan, plan
from bignas.space import Child, SearchSpace

MB = 1e6  # budgets and reports are in megabytes (10^6 bytes), as file sizes are


@dataclass(frozen=True)
class Memory:
    weights_fp32: int  # bytes
    weights_int8: int
    activations: int  # elements alive at the peak, batch 1

    def weights_mb(self, precision: str = "fp32") -> float:
        return (self.weights_int8 if precision == "int8" else self.weights_fp32) / MB

    def activation_mb(self, precision: str = "fp32") -> float:
        return self.activations * (1 if precision == "int8" else 4) / MB

    def summary(self) -> dict[str, float]:
        """The figures every JSON output reports, in MB, rounded to the byte."""
        return {"weights_mb": round(self.weights_mb("fp32"), 6), "weights_mb_int8": round(self.weights_mb("int8"), 6),
                "activation_mb": round(self.activation_mb("fp32"), 6),
                "activation_mb_int8": round(self.activation_mb("int8"), 6)}


def weight_bytes(g: Graph, per_channel: bool = True) -> tuple[int, int]:
    """(fp32, int8) bytes of the weights of `g`'s convolutions and classifier."""
    convs = g.convs
    weights, biases = sum(c.weights for c in convs), sum(c.biases for c in convs)
    scales = sum(c.out_ch if per_channel else 1 for c in convs)
    return 4 * (weights + biases), weights + 5 * scales + 12 * biases


def peak_elements(ops: Sequence[Op], input_size: int) -> int:
    """The largest number of activation elements alive at once while `ops` run in order (value 0,
    of `input_size` elements, is the input). See the module's docstring for the rules."""
    last: dict[int, int] = {}
    for i, op in enumerate(ops):
        for v in op.inputs:
            last[v] = i
    alive = {0: input_size}
    peak = input_size
    for i, op in enumerate(ops):
        over = next((v for v in op.inputs if op.elementwise and last[v] == i and alive.get(v) == op.size), None)
        if over is not None:
            del alive[over]  # the output takes its buffer
        alive[op.output] = op.size
        peak = max(peak, sum(alive.values()))
        for v in op.inputs:
            if last[v] == i:
                alive.pop(v, None)
    return peak


def plan_memory(net: Plan, per_channel: bool = True) -> Memory:
    g = plan_graph(net)
    fp32, int8 = weight_bytes(g, per_channel)
    return Memory(fp32, int8, peak_elements(g.ops, g.input_size))


def child_memory(space: SearchSpace, child: Child, per_channel: bool = True) -> Memory:
    """Weight bytes and peak activation memory of `child` as deployed."""
    return plan_memory(plan(space, child), per_channel)
