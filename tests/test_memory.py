"""Weight bytes and peak activation memory: the analytic figures against the exported ONNX files
(their initializers, a liveness walk over their graphs), and memory budgets in search."""

import copy
import json
import math
import random

import numpy as np
import onnx
import pytest
import torch

from bignas.cli import main
from bignas.cost import child_cost
from bignas.graph import Op
from bignas.latency.table import read_table
from bignas.memory import child_memory, peak_elements
from bignas.nn import extract
from bignas.onnx_io import export_onnx
from bignas.quantize import quantize, random_batches
from bignas.search import driver
from bignas.search.problem import Problem, Target
from bignas.space import load_space
from conftest import make_random_supernet
from test_strategies import synthetic

# ONNX operators that may write over their input (see bignas.memory): the rest allocate.
ELEMENTWISE = {"Relu", "HardSwish", "HardSigmoid", "Sigmoid", "Mul", "Add", "Reshape"}


def onnx_walk(path):
    """Peak activation elements of an ONNX file (batch 1) by the liveness rules of bignas.memory,
    applied to the graph as exported: its nodes in order, their shapes from ONNX shape inference."""
    model = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    graph = model.graph
    shapes = {v.name: [d.dim_value or 1 for d in v.type.tensor_type.shape.dim]  # dynamic batch: 1
              for v in (*graph.value_info, *graph.input, *graph.output)}
    ids, ops = {graph.input[0].name: 0}, []
    for node in graph.node:
        inputs = tuple(ids[x] for x in node.input if x in ids)  # activations, not weights or constants
        if not inputs:
            continue
        ids[node.output[0]] = len(ids)
        ops.append(Op(node.op_type, inputs, ids[node.output[0]], math.prod(shapes[node.output[0]]),
                      node.op_type in ELEMENTWISE))
    return peak_elements(ops, math.prod(shapes[graph.input[0].name]))


def initializer_bytes(path):
    return sum(onnx.numpy_helper.to_array(i).nbytes for i in onnx.load(str(path)).graph.initializer)


def with_biases(name):
    """A random supernet whose SE and classifier biases are not zero either (the exporter drops an
    all-zero bias, which a trained network never has)."""
    net = copy.deepcopy(make_random_supernet(name))
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for param_name, p in net.named_parameters():
            if param_name.endswith("bias"):
                p.copy_(torch.rand(p.shape, generator=gen) * 0.2 - 0.1)
    return net


CHILDREN = [("cifar-small", "min"), ("cifar-small", "max"), ("cifar-small", 1), ("cifar-small", 2),
            ("ofa-mbv3", "min"), ("bignas-imagenet", "min")]  # relu / hswish / swish, SE on expanded / input


@pytest.mark.parametrize("name, which", CHILDREN)
def test_memory_matches_the_exported_onnx_files(name, which, tmp_path):
    space = load_space(name)
    child = {"min": space.min, "max": space.max}[which]() if isinstance(which, str) else \
        space.sample(random.Random(which))
    fp32, int8 = tmp_path / "child.onnx", tmp_path / "child.int8.onnx"
    export_onnx(extract(with_biases(name), child), child.resolution, fp32, space.in_channels)
    memory = child_memory(space, child)
    # Peak activations: exactly what a liveness walk over the exported graph finds.
    assert memory.activations == onnx_walk(fp32)
    assert memory.activation_mb("fp32") == 4 * memory.activation_mb("int8") == 4 * memory.activations / 1e6
    # fp32 weights: the file's initializers, but for a few int64 shape constants (ReduceMean axes, Reshape).
    assert 0 <= initializer_bytes(fp32) - memory.weights_fp32 <= 64
    # int8 weights (per channel): the QDQ file's initializers, but for the activations' scales and zero points.
    quantize(fp32, int8, random_batches(fp32, count=1, batch=2))
    extra = initializer_bytes(int8) - memory.weights_int8
    assert 0 <= extra <= 0.01 * memory.weights_int8
    assert child_memory(space, child, per_channel=False).weights_int8 < memory.weights_int8


def test_the_liveness_walk_on_a_residual_block_by_hand():
    # input x (10) -> conv a (40) -> relu (in place) -> conv b (10) -> add b + x (in place into b)
    ops = [Op("conv", (0,), 1, 40), Op("act", (1,), 2, 40, True), Op("conv", (2,), 3, 10),
           Op("add", (3, 0), 4, 10, True)]
    assert peak_elements(ops, 10) == 10 + 40 + 10  # at conv b: x held for the residual, a, b
    # swish: the sigmoid cannot write over its input (still to be read by the mul), the mul can
    ops = [Op("act", (0,), 1, 8, True), Op("mul", (0, 1), 2, 8, True)]
    assert peak_elements(ops, 8) == 16


def test_memory_budgets_hold_in_search_in_the_targets_precision():
    space = load_space("cifar-small")
    _, evaluate = synthetic(space)
    small, large = child_memory(space, space.min()), child_memory(space, space.max())
    weights = (small.weights_mb("fp32") + large.weights_mb("fp32")) / 2
    activations = (small.activation_mb("fp32") + large.activation_mb("fp32")) / 2
    for strategy in ("random", "nsga2"):
        problem = Problem(space, (), max_weights_mb=weights, max_activation_mb=activations)
        (result,) = driver.run(strategy, problem, evaluate, budget=8, seed=0)["devices"]
        for p in result["evaluated"]:
            memory = child_memory(space, space.child_from_dict(p["arch"]))
            assert memory.weights_mb("fp32") <= weights and memory.activation_mb("fp32") <= activations
            assert p["weights_mb"] == round(memory.weights_mb("fp32"), 6)
    # An int8 target judges the int8 figures: the largest child's fp32 weights miss the budget,
    # its int8 weights (about a quarter) meet it.
    table = read_table("cpu-1t/cifar-small", space.hash)
    int8_table = copy.copy(table)
    int8_table.header = {**table.header, "settings": {**table.header["settings"], "precision": "int8"}}
    budget = large.weights_mb("fp32") / 2
    problem = Problem(space, (Target("int8", int8_table), Target("fp32", table)), max_weights_mb=budget)
    int8_target, fp32_target = problem.targets
    assert problem.violations(space.max(), int8_target) == []
    assert "fp32 weights" in problem.violations(space.max(), fp32_target)[0]


def test_inspect_prints_the_memory_of_a_child(capsys):
    assert main(["inspect", "--space", "cifar-small", "--arch", "max"]) == 0
    printed = json.loads(capsys.readouterr().out)
    space = load_space("cifar-small")
    memory = child_memory(space, space.max())
    assert printed["weights_mb"] == round(memory.weights_fp32 / 1e6, 6)
    assert printed["weights_mb_int8"] == round(memory.weights_int8 / 1e6, 6)
    assert printed["activation_mb"] == round(4 * memory.activations / 1e6, 6)
    assert printed["mflops"] == round(child_cost(space, space.max()).mflops, 4)
    assert np.isclose(printed["weights_mb"], 4 * child_cost(space, space.max()).params / 1e6, rtol=0.05)
