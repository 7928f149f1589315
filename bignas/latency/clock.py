"""Time a model here on a table's device, in the table's milliseconds (latency-check and export)."""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from bignas.latency.measure import Timer
from bignas.latency.models import export_child, export_reference
from bignas.latency.table import LatencyTable, TableError, differences, fingerprint
from bignas.space import SearchSpace, load_space


@dataclass(frozen=True)
class Latency:
    """A model timed here, in a table's milliseconds: the median of its runs and their 90th percentile."""

    p50_ms: float
    p90_ms: float


def device_differences(table: LatencyTable) -> list[str]:
    """How this host differs from the device `table` was measured on (`FINGERPRINT` fields, e.g.
    "isa 'avx,avx2' (here 'avx,avx2,avx512f')"); empty when it is that device."""
    return differences(table.header, fingerprint(table.header["provider"]))


@contextlib.contextmanager
def table_clock(table: LatencyTable, strict: bool = True,
                space: SearchSpace | None = None) -> Iterator[Callable[[Path], Latency]]:
    """A function timing an ONNX model here as `table`'s profile says, in the table's milliseconds
    (p50: its ratio to the interleaved anchor (the space's largest child, `space` or the table's; the
    small reference for tables without one) times the table's `anchor_ratio` and `reference_ms`;
    p90: p50 times its runs' 90th percentile over their median).
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
        if "anchor_ratio" in header:  # whole models against the anchor the table's children were timed against
            space = load_space(header["space"]) if space is None else space
            anchor, scale = Path(tmp) / "anchor.onnx", header["anchor_ratio"]
            export_child(space, space.max(), anchor, table.profile.quantized)
        else:
            anchor, scale = Path(tmp) / "reference.onnx", 1.0
            export_reference(anchor, Path(tmp) / "shared")
        timer = Timer(table.profile, anchor)

        def measure(model: Path) -> Latency:
            t = timer.time(model)
            p50 = t.ratio * scale * table.reference_ms
            return Latency(p50, p50 * t.p90_ms / t.ms)

        yield measure
