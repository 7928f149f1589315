"""ONNX primitives: export a module with the modern exporter, compare ONNX Runtime with PyTorch,
score an ONNX file's top-1 in ONNX Runtime.

Below everything that writes or times ONNX files (export, latency profiling and checks).
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch
from torch import nn

from bignas.console import quiet
from bignas.io import atomic_path

OPSET = 18


def export_onnx(model: nn.Module, resolution: int, path: str | Path, in_channels: int = 3,
                dynamic_size: bool = False) -> Path:
    """Write `model` (eval mode) as ONNX with the modern (torch.export) exporter and a dynamic batch
    axis; with `dynamic_size`, height and width are dynamic too (one export serves every size)."""
    example, axes = _example(in_channels, resolution, dynamic_size)
    _export(model, (example,), (axes,), path, ["images"], ["logits"])
    return Path(path)


class SideBySide(nn.Module):
    """Several models in one: the i-th input goes through the i-th model, to the i-th output."""

    def __init__(self, models: list[nn.Module]) -> None:
        super().__init__()
        self.models = nn.ModuleList(models)

    def forward(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return tuple(m(x) for m, x in zip(self.models, inputs))


def export_side_by_side(models: list[nn.Module], inputs: list[tuple[int, int]],
                        path: str | Path) -> list[tuple[str, str]]:
    """Write `models`, each with its own (channels, resolution) input of dynamic batch and size, into
    one ONNX file in one export (the exporter's fixed costs paid once). Returns each model's (input,
    output) names, for `onnx.utils.Extractor` to cut its own graph out."""
    examples, axes = zip(*(_example(c, r, True, str(i)) for i, (c, r) in enumerate(inputs)))
    names = [(f"images{i}", f"logits{i}") for i in range(len(models))]
    _export(SideBySide(models), (examples,), (axes,), path, [n for n, _ in names], [n for _, n in names])
    return names


def _example(channels: int, resolution: int, dynamic_size: bool, suffix: str = "") -> tuple[torch.Tensor, dict]:
    """An example input (batch 2) and its dynamic axes: batch, and with `dynamic_size` height and width."""
    axes = {0: torch.export.Dim(f"batch{suffix}", min=1, max=4096)}
    if dynamic_size:
        size = torch.export.Dim(f"size{suffix}", min=2, max=4096)
        axes.update({2: size, 3: size})
    return torch.randn(2, channels, resolution, resolution), axes


def _export(model: nn.Module, args: tuple, dynamic_shapes: tuple, path: str | Path, input_names: list[str],
            output_names: list[str]) -> None:
    with atomic_path(path) as tmp, quiet():
        program = torch.onnx.export(model.eval(), args, dynamo=True, opset_version=OPSET, input_names=input_names,
                                    output_names=output_names, dynamic_shapes=dynamic_shapes, verbose=False)
        program.save(str(tmp))


def onnx_max_abs_diff(model: nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """Largest absolute difference between ONNX Runtime (CPU) and PyTorch outputs on `x`."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = model.eval()(x).numpy()
    return float(np.abs(got - want).max())


def onnx_top1(path: str | Path, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], resolution: int) -> float:
    """Top-1 of the ONNX file `path` run by ONNX Runtime (CPU) on `batches` of (images, labels),
    resized to `resolution`: how an exported model, an int8 one in particular, really scores."""
    import onnxruntime as ort

    from bignas.data import resize_batch

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    correct = total = 0
    for images, labels in batches:
        (logits,) = session.run(None, {name: resize_batch(images, resolution).numpy()})
        correct += int((logits.argmax(1) == labels.numpy()).sum())
        total += len(labels)
    return correct / total
