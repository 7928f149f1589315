"""Time a model here on a table's device, in the table's milliseconds (latency-check and export)."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from bignas.latency.measure import Timer
from bignas.latency.models import export_reference
from bignas.latency.table import LatencyTable, TableError, differences, fingerprint


def device_differences(table: LatencyTable) -> list[str]:
    """How this host differs from the device `table` was measured on (`FINGERPRINT` fields, e.g.
    "isa 'avx,avx2' (here 'avx,avx2,avx512f')"); empty when it is that device."""
    return differences(table.header, fingerprint(table.header["provider"]))


@contextlib.contextmanager
def table_clock(table: LatencyTable, strict: bool = True) -> Iterator[Callable[[Path], float]]:
    """A function timing an ONNX model here as `table`'s profile says, in the table's milliseconds:
    its median relative to the interleaved reference, times the table's `reference_ms`.
    `strict`: refuse a host whose fingerprint differs from the table's (CPU, its instruction sets,
    ONNX Runtime version, provider: kernels differ, so do the ratios); else time anyway (to check
    how the table does here). A provider this build lacks is always refused."""
    import onnxruntime as ort

    header = table.header
    changed = device_differences(table)
    if strict and changed:
        raise TableError(f"{table.path}: this host is not the device the table was measured on: "
                         f"{'; '.join(changed)}. Verify or transfer it here: bignas profile --transfer "
                         f"{table.path} --out NEW.json")
    available = ort.get_available_providers()
    if header["provider"] not in available:
        raise TableError(f"{table.path}: measured with '{header['provider']}', which this ONNX Runtime build "
                         f"lacks (available: {available})")
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference.onnx"
        export_reference(reference, Path(tmp) / "shared")
        timer = Timer(table.profile, reference)
        yield lambda model: timer.time(model).ratio * table.reference_ms
