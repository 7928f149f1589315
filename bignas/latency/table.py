"""Latency tables: one JSON file per (device profile, search space), with a header saying where,
how and for which space it was measured. No torch here (the device runner writes tables too).

Times are stored as ratios to the reference model timed interleaved with them (see `measure`);
`reference_ms` in the header, the reference's median over the whole profiling run, converts
them to milliseconds.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping

from bignas.errors import BignasError
from bignas.io import read_json, write_json
from bignas.latency.profiles import DeviceProfile
from bignas.quantize import Precision
from bignas.schema import name_problem

FORMAT = "bignas-latency-table"
SCHEMA = 3
UNRECORDED = "unrecorded"  # a fingerprint field an older table did not record
# What a timing depends on besides the profile: the machine and the ONNX Runtime build that ran it.
# The CPU's name alone is not enough (two hosts called "AMD EPYC (2 cores)" can be different
# generations): its vendor, family / model / stepping and the instruction sets that change which
# kernels ONNX Runtime picks are recorded too.
FINGERPRINT = ("host", "cpu_vendor", "cpu_id", "isa", "accelerator", "onnxruntime", "provider")
HEADER_FIELDS = ("schema", "profile", *FINGERPRINT, "threads", "batch", "space", "space_hash", "date",
                 "reference_ms", "settings")
PRECISIONS = typing.get_args(Precision)
TEXT_FIELDS = (*FINGERPRINT, "space_hash", "date")  # besides the two names
# x86 (AVX2, AVX-512 and its VNNI / BF16, AVX-VNNI, AMX) and Arm (dot product, int8 and bf16
# matrix, SVE) extensions that select different ONNX Runtime kernels, fp32 or int8.
KERNEL_ISA = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
              "avx_vnni", "amx_tile", "amx_int8", "amx_bf16", "asimd", "asimddp", "i8mm", "bf16", "sve", "sve2")


class TableError(BignasError):
    """A latency table is missing, corrupt, truncated, or for another space; the message names it."""


@dataclass
class LatencyTable:
    header: dict[str, Any]
    entries: dict[str, dict[str, float]]  # key -> {"ratio", "ms", "ref_ms"}
    children: list[dict[str, Any]] = field(default_factory=list)  # whole children timed: {"arch", "ratio", "ms"}
    calibration: dict[str, Any] | None = None  # {"a", "c", "b", ...}: see `calibrate`
    path: Path | None = None

    @property
    def reference_ms(self) -> float:
        return float(self.header["reference_ms"])

    @property
    def precision(self) -> str:
        """What the table times: "fp32" models, or "int8" ones (quantized as its profile says)."""
        return self.header["settings"].get("precision", "fp32")  # tables from before int8: fp32

    @property
    def profile(self) -> DeviceProfile:
        from bignas.latency.profiles import parse_profile

        return parse_profile(self.header["settings"], f"{self.path}: header.settings")

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "header": self.header, "calibration": self.calibration,
                "children": self.children, "entries": self.entries}


def device_description() -> str:
    """The CPU model (and core count) of this machine, e.g. 'AMD EPYC (2 cores)'."""
    name = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("model name", "Model", "Hardware")):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name or platform.processor() or platform.machine()} ({os.cpu_count()} cores)"


def cpu_identity() -> dict[str, str]:
    """`cpu_vendor`, `cpu_id` (family / model / stepping, or Arm's implementer / part / revision)
    and `isa` (the `KERNEL_ISA` extensions this CPU has, comma-separated) from /proc/cpuinfo; where
    there is none, the platform's processor and machine strings and an empty `isa`."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip():
                break  # the end of the first processor's block
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    if "vendor_id" in fields:
        cpu_id = " ".join(f"{k} {fields.get(k, '?')}" for k in ("cpu family", "model", "stepping"))
    elif "CPU implementer" in fields:
        cpu_id = " ".join(f"{k} {fields.get(k, '?')}" for k in ("CPU implementer", "CPU part", "CPU revision"))
    else:
        cpu_id = platform.processor() or "unknown"
    vendor = fields.get("vendor_id") or fields.get("CPU implementer") or platform.machine() or "unknown"
    return {"cpu_vendor": vendor, "cpu_id": cpu_id, "isa": ",".join(f for f in KERNEL_ISA if f in flags)}


def fingerprint(provider: str) -> dict[str, str]:
    """This machine and ONNX Runtime build, timing with `provider`: the `FINGERPRINT` fields."""
    import onnxruntime as ort

    return {"host": device_description(), **cpu_identity(), "accelerator": ort.get_device(),
            "onnxruntime": ort.__version__, "provider": provider}


def differences(recorded: Any, here: Mapping[str, str], fields: Iterable[str] = FINGERPRINT) -> list[str]:
    """How `recorded` (a table header, a progress file's record) differs from `here` in `fields`,
    e.g. ["onnxruntime '1.31.0' (here '1.32.0')"]; empty when it matches."""
    recorded = recorded if isinstance(recorded, dict) else {}
    return [f"{f} {recorded.get(f)!r} (here {here[f]!r})" for f in fields if recorded.get(f) != here[f]]


def make_header(profile: DeviceProfile, space_name: str, space_hash: str, reference_ms: float) -> dict[str, Any]:
    return {
        "schema": SCHEMA, "profile": profile.name, **fingerprint(profile.provider),
        "threads": {"intra_op": profile.intra_op_threads, "inter_op": profile.inter_op_threads},
        "batch": profile.batch, "space": space_name, "space_hash": space_hash,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "reference_ms": reference_ms, "settings": profile.to_dict(),
    }


def write_table(path: str | Path, table: LatencyTable) -> None:
    """Write atomically: a reader sees the old table or the new one, never half of one."""
    write_json(path, table.to_dict())
    table.path = Path(path)


def shipped_tables() -> list[str]:
    """Names (`PROFILE/SPACE`, e.g. `cpu-1t/cifar-small`) of the tables shipped with the package."""
    root = resources.files("bignas") / "latency_tables"
    return sorted(f"{d.name}/{f.name[:-5]}" for d in root.iterdir() if d.is_dir() for f in d.iterdir()
                  if f.name.endswith(".json") and not f.name.endswith(".check.json"))


def read_table(path_or_name: str | Path, space_hash: str | None = None, precision: str | None = None) -> LatencyTable:
    """Read and check a table: a path, or where no such file exists a shipped name (`cpu-1t/cifar-small`).
    With `space_hash`, refuse a table measured for another space; with `precision`, one that times
    models of the other precision (an int8 table predicts nothing about an fp32 child)."""
    path = Path(path_or_name)
    if not path.exists() and str(path_or_name) in shipped_tables():
        path = resources.files("bignas") / "latency_tables" / f"{path_or_name}.json"
    elif not path.exists():
        raise TableError(f"{path}: no such latency table (shipped: {', '.join(shipped_tables())})")
    data = read_json(path, "latency table", TableError)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TableError(f"{path}: not a bignas latency table (field 'format' is not '{FORMAT}')")
    for name in ("header", "entries", "children", "calibration"):
        if name not in data:
            raise TableError(f"{path}: missing field '{name}' (truncated or hand-edited table?)")
    header = data["header"]
    if not isinstance(header, dict):
        raise TableError(f"{path}: field 'header' must be an object")
    if header.get("schema") == 1:
        # Schema 1 called the host's CPU description "device" (the device is what the profile names).
        header = {("host" if k == "device" else k): v for k, v in header.items()} | {"schema": 2}
    if header.get("schema") == 2:
        # Schema 2 knew the CPU by name only: it matches no host exactly (verify, then transfer).
        header = {f: UNRECORDED for f in FINGERPRINT} | header | {"schema": SCHEMA}
    missing = [f for f in HEADER_FIELDS if f not in header]
    if missing:
        raise TableError(f"{path}: missing field 'header.{missing[0]}'")
    if header["schema"] != SCHEMA:
        raise TableError(f"{path}: field 'header.schema' is {header['schema']!r}; this bignas reads schema {SCHEMA}")
    for key in ("profile", "space"):
        if name_problem(header[key]):
            raise TableError(f"{path}: field 'header.{key}' {name_problem(header[key])}")
    for key in TEXT_FIELDS:
        if not isinstance(header[key], str):
            raise TableError(f"{path}: field 'header.{key}' must be a string, got {header[key]!r}")
    settings = header["settings"]
    if not isinstance(settings, dict) or settings.get("precision", "fp32") not in PRECISIONS:
        raise TableError(f"{path}: field 'header.settings.precision' must be one of {list(PRECISIONS)}")
    for key in ("reference_ms", "anchor_ratio"):
        if (key in header or key == "reference_ms") and not positive_number(header.get(key)):
            raise TableError(f"{path}: field 'header.{key}' must be a positive number")
    entries = data["entries"]
    if not isinstance(entries, dict) or not entries:
        raise TableError(f"{path}: field 'entries' must be a non-empty object")
    for key, entry in entries.items():
        if not isinstance(entry, dict) or not positive_number(entry.get("ratio")):
            raise TableError(f"{path}: field 'entries[{key}].ratio' must be a positive number")
    children = data["children"]
    if not isinstance(children, list) or not all(
            isinstance(c, dict) and isinstance(c.get("arch"), dict) and positive_number(c.get("ratio")) for c in children):
        raise TableError(f"{path}: field 'children' must be a list of {{arch, ratio}} objects")
    calibration = data["calibration"]
    if calibration is not None and not (isinstance(calibration, dict) and all(
            finite_number(calibration.get(k)) for k in ("a", "b", "c"))
            and all(finite_number(calibration.get(k, 0.0)) for k in ("w", "v"))
            and adds_time_per_block(calibration, entries)):
        raise TableError(f"{path}: field 'calibration' must be null or an object with finite numbers a, b, c "
                         f"(and w, v if present), a positive slope a, w and v not negative, and a * ratio + c > 0 "
                         f"for every entry (each block adds time)")
    if calibration is not None and "p90_over_p50" in calibration and not (
            finite_number(calibration["p90_over_p50"]) and calibration["p90_over_p50"] >= 1):
        raise TableError(f"{path}: field 'calibration.p90_over_p50' must be a number of at least 1 (the 90th "
                         f"percentile of runs is never below their median), got {calibration['p90_over_p50']!r}")
    table = LatencyTable(header, entries, children, calibration, path)
    if space_hash is not None:
        check_space(table, space_hash)
    if precision is not None:
        check_precision(table, precision)
    return table


def check_precision(table: LatencyTable, precision: str) -> None:
    """Refuse a table that times models of another precision than `precision`."""
    if table.precision != precision:
        raise TableError(f"{table.path}: an {table.precision} table (field 'header.settings.precision'), but "
                         f"{precision} latency is asked for here; give a table profiled with precision: "
                         f"{precision}")


def check_space(table: LatencyTable, space_hash: str) -> None:
    """Refuse a table measured for another search space."""
    if table.header["space_hash"] != space_hash:
        raise TableError(f"{table.path}: table is for space '{table.header['space']}' (hash "
                         f"{table.header['space_hash']}), not this one (hash {space_hash}): field "
                         f"'header.space_hash' does not match")


def adds_time_per_block(k: Mapping[str, float], entries: Mapping[str, Mapping[str, float]]) -> bool:
    """Whether calibration `k` lets every block add time, so that a child with more or larger blocks
    is never predicted faster: a positive slope `a`, no negative weight or activation term (`w`,
    `v`), and `a * ratio + c` positive for every entry."""
    a, c = k["a"], k.get("c", 0.0)
    return a > 0 and k.get("w", 0.0) >= 0 and k.get("v", 0.0) >= 0 and all(
        a * e["ratio"] + c > 0 for e in entries.values())


def finite_number(v: Any) -> bool:
    """A real number (not a bool), finite: what every timing and coefficient of a table must be."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def positive_number(v: Any) -> bool:
    return finite_number(v) and v > 0
