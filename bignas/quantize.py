"""int8 models: ONNX Runtime's own static QDQ quantization of an fp32 ONNX file (no quantizer of ours).

Two kinds of choices, kept apart:
- `Int8Format`, how a model is quantized *for a device* (signed or unsigned activations, weights
  per channel, 7-bit weights): it changes which kernels ONNX Runtime runs, so it belongs to the
  device profile, and a latency table records it;
- `Calibration`, how activation ranges are found (method and number of images): it changes the
  accuracy, not the speed, so export and search choose it.

No torch here: the calibration images come in as numpy arrays, and a device with only
onnxruntime and numpy can quantize the files of a bundle.
"""

from __future__ import annotations

import dataclasses
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Literal

from bignas.console import quiet
from bignas.errors import BignasError
from bignas.io import atomic_path
from bignas.schema import rules

if TYPE_CHECKING:
    import numpy as np

Precision = Literal["fp32", "int8"]


class QuantizeError(BignasError):
    """A model ONNX Runtime's quantization tools cannot quantize as asked."""


@dataclass(frozen=True)
class Int8Format:
    # Unsigned activations, signed weights (U8S8) by measurement: on an x86-64 CPU with VNNI and
    # ONNX Runtime 1.32 (README, "int8"), U8S8 children fuse into QLinearConv / QLinearMul /
    # QLinearSigmoid and run 4-5x faster than S8S8 ones, whose Q/DQ pairs stay around float
    # convolutions. ONNX Runtime's docs ask for reduce_range with U8S8 on x86 CPUs without VNNI
    # (7-bit weights: the 16-bit intermediate sums of pmaddubsw cannot saturate); Arm CPUs take
    # S8S8. Weights per channel: depthwise convolutions of these spaces have channels of very
    # different ranges, and one scale per tensor loses them.
    activations: Literal["s8", "u8"] = rules("u8", help="u8: unsigned int8 activations (U8S8); s8: signed (S8S8)")
    per_channel: bool = rules(True, help="one weight scale per output channel (else one per tensor)")
    reduce_range: bool = rules(False, help="7-bit weights: for U8S8 on x86 CPUs without VNNI")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True)
class Calibration:
    method: Literal["minmax", "entropy", "percentile"] = rules(
        "minmax", help="how activation ranges are set from the calibration images (ONNX Runtime's calibrators)")
    images: int = rules(256, positive=True, help="calibration images, from the training split (never val or test)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Feasible children a search quantizes per int8 target (the best by fp32 val top-1): each costs an
# export, a quantization and a validation pass in ONNX Runtime (seconds on cifar-small).
FINALISTS = 5


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over batches of images, fed one image at a
    time: the entropy and percentile calibrators stack every call's outputs into one array, which
    batches of unequal sizes (250 images, then 6) break."""

    def __init__(self, name: str, batches: Iterable[np.ndarray]) -> None:
        self.name, self.images = name, (image for batch in batches for image in batch)

    def get_next(self) -> dict[str, np.ndarray] | None:
        import numpy as np

        image = next(self.images, None)
        return None if image is None else {self.name: np.ascontiguousarray(image[None], dtype=np.float32)}


def quantize(fp32: str | Path, out: str | Path, batches: Iterable[np.ndarray], fmt: Int8Format = Int8Format(),
             method: str = "minmax") -> Path:
    """Write `out`, the static QDQ int8 model of the fp32 ONNX file `fp32`: ONNX Runtime's
    pre-processing (shape inference, graph optimisation: BN folded, etc.), then `quantize_static`
    with activation ranges calibrated by `method` on `batches` (numpy arrays of the model's input)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise QuantizeError(f"unknown calibration method {method!r} (known: {', '.join(methods)})")
    out = Path(out)
    name = onnx.load(str(fp32), load_external_data=False).graph.input[0].name
    activations = QuantType.QInt8 if fmt.activations == "s8" else QuantType.QUInt8
    with tempfile.TemporaryDirectory(prefix=".quantize.", dir=out.parent) as tmp, quiet():
        ready = Path(tmp) / "preprocessed.onnx"
        quant_pre_process(str(fp32), str(ready))
        with atomic_path(out) as dst:
            try:
                quantize_static(str(ready), str(dst), _Reader(name, batches), quant_format=QuantFormat.QDQ,
                                per_channel=fmt.per_channel, reduce_range=fmt.reduce_range,
                                activation_type=activations, weight_type=QuantType.QInt8,
                                calibrate_method=methods[method])
            except (ValueError, RuntimeError) as e:
                raise QuantizeError(f"{fp32}: ONNX Runtime could not quantize it: {e}") from e
    return out


def random_batches(path: str | Path, count: int = 4, batch: int = 4, seed: int = 0) -> list[np.ndarray]:
    """Standard-normal inputs of the (static) input shape of the ONNX file `path`: the calibration of
    models that are only timed (latency profiling), where the ranges do not change the speed."""
    import numpy as np
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    shape = [batch] + [d.dim_value for d in dims[1:]]
    if any(s < 1 for s in shape):
        raise QuantizeError(f"{path}: input shape {shape} is not static past the batch axis")
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape, dtype=np.float32) for _ in range(count)]
