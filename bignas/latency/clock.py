"""Time a model here on a table's device, in the table's milliseconds (latency-check and export)."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from bignas.latency.measure import Timer
from bignas.latency.models import export_reference
from bignas.latency.table import LatencyTable, TableError, fingerprint


@contextlib.contextmanager
def table_clock(table: LatencyTable) -> Iterator[Callable[[Path], float]]:
    """A function timing an ONNX model here as `table`'s profile says, in the table's milliseconds:
    its median relative to the interleaved reference, times the table's `reference_ms`. Refuses a
    host that is not the device the table describes, another ONNX Runtime version, and a provider
    this build lacks (kernels differ between versions, so do the ratios)."""
    import onnxruntime as ort

    header = table.header
    here = fingerprint(header["provider"])
    if header["host"] != here["host"]:
        raise TableError(f"{table.path}: measured on '{header['host']}', this machine is '{here['host']}': "
                         f"time models on the device the table describes")
    if header["onnxruntime"] != here["onnxruntime"]:
        raise TableError(f"{table.path}: measured with ONNX Runtime {header['onnxruntime']}, this machine has "
                         f"{here['onnxruntime']}: re-profile (or transfer) the table for this ONNX Runtime")
    available = ort.get_available_providers()
    if header["provider"] not in available:
        raise TableError(f"{table.path}: measured with '{header['provider']}', which this ONNX Runtime build "
                         f"lacks (available: {available})")
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference.onnx"
        export_reference(reference, Path(tmp) / "shared")
        timer = Timer(table.profile, reference)
        yield lambda model: timer.time(model).ratio * table.reference_ms
