"""Time a model here on a table's device, in the table's milliseconds (latency-check and export)."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from bignas.latency.measure import Timer
from bignas.latency.models import export_reference
from bignas.latency.table import LatencyTable, TableError, device_description


@contextlib.contextmanager
def table_clock(table: LatencyTable) -> Iterator[Callable[[Path], float]]:
    """A function timing an ONNX model here as `table`'s profile says, in the table's milliseconds:
    its median relative to the interleaved reference, times the table's `reference_ms`. Refuses a
    host that is not the device the table describes."""
    here = device_description()
    if table.header["host"] != here:
        raise TableError(f"{table.path}: measured on '{table.header['host']}', this machine is '{here}': "
                         f"time models on the device the table describes")
    with tempfile.TemporaryDirectory() as tmp:
        reference = Path(tmp) / "reference.onnx"
        export_reference(reference, Path(tmp) / "shared")
        timer = Timer(table.profile, reference)
        yield lambda model: timer.time(model).ratio * table.reference_ms
