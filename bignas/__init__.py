"""bignas: train one elastic supernet, profile devices, extract constrained children."""

__version__ = "0.1.0"


def load_child(path):
    """Load a child exported by `bignas export`: child.pt as a plain PyTorch module in eval mode,
    child.onnx or child.int8.onnx as a callable run by ONNX Runtime (see `bignas.export.OnnxChild`).

    Imported lazily: `import bignas` stays free of torch, for the device-side latency runner.
    """
    from bignas.export import load_child as _load_child

    return _load_child(path)
