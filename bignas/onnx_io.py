"""ONNX primitives: export a module with the modern exporter, compare ONNX Runtime with PyTorch.

Below everything that writes or times ONNX files (export, latency profiling and checks).
"""

from __future__ import annotations

from pathlib import Path

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
    model = model.eval()
    example = torch.randn(2, in_channels, resolution, resolution)
    axes = {0: torch.export.Dim("batch", min=1, max=4096)}
    if dynamic_size:
        size = torch.export.Dim("size", min=2, max=4096)
        axes.update({2: size, 3: size})
    with atomic_path(path) as tmp, quiet():
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET,
                                    input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=(axes,), verbose=False)
        program.save(str(tmp))
    return Path(path)


def onnx_max_abs_diff(model: nn.Module, path: str | Path, x: torch.Tensor) -> float:
    """Largest absolute difference between ONNX Runtime (CPU) and PyTorch outputs on `x`."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        want = model.eval()(x).numpy()
    return float(np.abs(got - want).max())
