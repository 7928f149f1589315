"""ONNX export of a static child with an ONNX Runtime parity check."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bignas.io import atomic_path

OPSET = 18


def export_onnx(model: nn.Module, resolution: int, path: str | Path, in_channels: int = 3) -> Path:
    """Write `model` (eval mode) as ONNX with the modern (torch.export) exporter and a dynamic batch axis."""
    model = model.eval()
    example = torch.randn(2, in_channels, resolution, resolution)
    batch = torch.export.Dim("batch", min=1, max=4096)
    with atomic_path(path) as tmp, _quiet():
        program = torch.onnx.export(model, (example,), dynamo=True, opset_version=OPSET,
                                    input_names=["images"], output_names=["logits"],
                                    dynamic_shapes=({0: batch},), verbose=False)
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


@contextlib.contextmanager
def _quiet():
    """The exporter reports every stage on stdout and through warnings; keep the CLI's output clean."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
