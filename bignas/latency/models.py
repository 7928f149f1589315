"""The ONNX models profiling and checks time: every block key, the fixed reference, whole children.

A block is built by the same static module a deployed child runs (`bignas.nn.registry`), so a
timed block and the block in the child cannot drift apart.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from bignas.io import atomic_path, digest
from bignas.latency.keys import BlockKey
from bignas.nn.child import StaticNet
from bignas.nn.registry import static_block
from bignas.onnx_io import export_onnx
from bignas.plan import BlockPlan, plan
from bignas.space import Child, SearchSpace

REFERENCE_FILE = "reference.onnx"
# The fixed reference every time is divided by: a mid-size MBConv block (about 0.1-0.3 ms on one
# core), as memory- and compute-bound as the blocks it is interleaved with. Never change it: tables
# measured against another reference would not compare.
REFERENCE = BlockKey.of(BlockPlan(stage=0, index=0, in_ch=24, out_ch=24, mid_ch=96, expand_conv=True, kernel=5,
                                  stride=1, se_mid=0, act="relu", se_act="relu", se_gate="sigmoid", resolution=28))


def build_module(key: BlockKey) -> nn.Module:
    """The exact module a static child runs for this key (random weights: timing only)."""
    return static_block(key.entry)


def export_key(key: BlockKey, path: Path, cache: Path) -> None:
    """Export `key`'s module to `path` with a static input size, via a dynamic-size export cached in `cache`."""
    import onnx

    shared = cache / f"{digest(key.shape_free)}.onnx"
    if not shared.exists():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            export_onnx(build_module(key), key.resolution, shared, in_channels=key.in_ch, dynamic_size=True)
    model = onnx.load(str(shared))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for axis in (2, 3):
        dims[axis].Clear()
        dims[axis].dim_value = key.resolution
    del model.graph.value_info[:]  # symbolic intermediate shapes; ONNX Runtime re-infers them
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def export_reference(path: Path, cache: Path) -> None:
    export_key(REFERENCE, path, cache)


def export_child(space: SearchSpace, child: Child, path: Path) -> None:
    """The whole child as users deploy it (`bignas.export.export_onnx`)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        export_onnx(StaticNet(plan(space, child)), child.resolution, path, in_channels=space.in_channels)
