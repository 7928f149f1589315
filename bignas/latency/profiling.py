"""`bignas profile`: a latency table for this machine, or a bundle for a device without PyTorch.

Profiling here is the device flow run in place: write a bundle into a work folder beside the
table, time it with the device runner, calibrate. The work folder keeps the exported files and
the runner's progress, so a killed run resumes where it stopped; it is removed on success.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bignas.console import ProgressFn
from bignas.latency import PROFILE_CHILDREN, TRANSFER_CHILDREN
from bignas.latency.bundle import write_bundle
from bignas.latency.models import REFERENCE_FILE, export_reference
from bignas.latency.fit import calibrate, calibration_children
from bignas.latency.device import check_out, run_bundle
from bignas.latency.measure import open_session
from bignas.latency.profiles import DeviceProfile
from bignas.latency.table import FINGERPRINT, LatencyTable, TableError, check_space, read_table, write_table
from bignas.space import SearchSpace, load_space

# The user's own tables, relative to the current directory (the shipped ones are package data:
# `table.shipped_tables`).
TABLES = Path("latency_tables")


def default_table_path(profile: DeviceProfile, space: SearchSpace, root: str | Path = TABLES) -> Path:
    """Where `bignas profile` writes a table by default: `ROOT/PROFILE/SPACE.json`."""
    return Path(root) / profile.name / f"{space.name}.json"


NOISY_PCT = 5  # a table whose calibration children moved more than this between passes warns
FIT_WITHIN_10 = 0.9  # a calibration whose leave-one-out puts fewer children within 10 % warns


def table_warnings(table: LatencyTable, more_children: str) -> list[str]:
    """What to know before trusting a table just fitted here: its whole children's second pass moved
    (noise floor), or its calibration does not predict its own children held out. `more_children`:
    how to time more of them, in the way the table was made."""
    out = []
    noise = table.header.get("noise")  # the calibration children's second pass (tables timed before it: none)
    floor = noise.get("noise_floor_pct") if isinstance(noise, dict) else None
    if isinstance(floor, (int, float)) and floor > NOISY_PCT:
        out.append(f"noise floor {floor:.1f} %: the whole children's second pass differs from the first by more "
                   f"than {NOISY_PCT} % for 1 child in 10, so the calibration is fitted on times that noisy; "
                   f"time them again with nothing else running for a tighter table")
    fit = (table.calibration or {}).get("cv_within_10pct")
    if table.calibration and not (isinstance(fit, (int, float)) and fit >= FIT_WITHIN_10):
        told = (f"predicts only {fit:.0%} of its own children within 10 % (leave-one-out)"
                if isinstance(fit, (int, float)) else
                "could not be cross-validated (too few children, or times their blocks do not explain)")
        out.append(f"the calibration {told}; time more children ({more_children}) with nothing else running")
    return out


def profile_device(profile: DeviceProfile, space: SearchSpace, out: Path, children: int = PROFILE_CHILDREN,
                   progress: ProgressFn | None = None) -> LatencyTable:
    """Time every block key of `space` and `children` whole children here; write the calibrated table."""
    check_out(out)  # a folder or a file in the way fails now, not after the timing
    work = out.parent / f".{out.stem}.work"
    reference = work / REFERENCE_FILE
    if not reference.exists():
        export_reference(reference, work / "shared")
    open_session(profile, reference)  # refuse a profile ONNX Runtime rejects before exporting anything else
    write_bundle(profile, space, work, calibration_children(space, children), progress)
    table = calibrate(run_bundle(work, work / "table.json", progress), space)
    write_table(out, table)
    shutil.rmtree(work)
    return table


def transfer_table(table: LatencyTable, space: SearchSpace, out: Path, children: int = TRANSFER_CHILDREN,
                   progress: ProgressFn | None = None, profile: DeviceProfile | None = None) -> LatencyTable:
    """`table` made true on this host: its block entries kept (ratios to the reference, which
    travel between hosts far better than milliseconds), `children` whole children and the
    reference timed here, the calibration re-fitted on them, this host's fingerprint in the header
    (the table's own is kept as `header.transferred_from`). Minutes, not a full profile.
    `profile`: time the children under another profile than the table's (other threads or graph
    optimisations: the blocks keep the ratios of the table's, the calibration absorbs the rest)."""
    check_out(out)
    work = out.parent / f".{out.stem}.work"
    profile = table.profile if profile is None else profile
    if profile.precision != table.precision:
        raise TableError(f"{table.path}: an {table.precision} table cannot be transferred under profile "
                         f"'{profile.name}' ({profile.source}), which times {profile.precision} models: the blocks "
                         f"kept would be of the other precision")
    reference = work / REFERENCE_FILE
    if not reference.exists():
        export_reference(reference, work / "shared")
    open_session(profile, reference)
    write_bundle(profile, space, work, calibration_children(space, children), progress, blocks=False)
    timed = run_bundle(work, work / "table.json", progress)
    # what the kept block ratios were measured under: the device and the profile's settings
    origin = {f: table.header.get(f) for f in ("profile", *FINGERPRINT, "threads", "batch", "settings", "date",
                                                "reference_ms")}
    header = timed.header | {"transferred_from": table.header.get("transferred_from", []) + [origin]}
    moved = calibrate(LatencyTable(header, table.entries, timed.children), space)
    write_table(out, moved)
    shutil.rmtree(work)
    return moved


def verify_or_transfer(table: LatencyTable, space: SearchSpace, out: Path, progress: ProgressFn | None = None,
                       children: int = TRANSFER_CHILDREN) -> tuple[LatencyTable, str, str]:
    """`table` when this host has its exact fingerprint and it passes `latency-check --quick` here,
    else `table` transferred here into `out` (re-fitted on `children` whole children). Returns
    (the table, "verified" or "transferred", why)."""
    from bignas.latency.check import quick_check
    from bignas.latency.clock import device_differences

    changed = device_differences(table)
    if not changed:
        check = quick_check(table, space, progress=progress)
        figures = (f"{check['within_10pct']:.0%} of {check['n']} children within 10 %, median error "
                   f"{check['median_error_pct']:.1f} %, noise floor {check['noise_floor_pct']:.1f} %")
        if check["verified"]:
            return table, "verified", f"this host is its device, and the quick check passed here ({figures})"
        why = f"this host is its device, but the quick check failed here ({figures})"
    else:
        why = f"it was measured on another device ({'; '.join(changed)})"
    return transfer_table(table, space, out, children, progress), "transferred", why


def bundle_for_device(profile: DeviceProfile, space: SearchSpace, directory: Path,
                      children: int = PROFILE_CHILDREN,
                      progress: ProgressFn | None = None) -> Path:
    """Write a bundle for `python -m bignas.latency.device` on the target; return its manifest."""
    return write_bundle(profile, space, directory, calibration_children(space, children), progress)


def calibrate_file(path: Path, out: Path | None = None, space: str | None = None) -> LatencyTable:
    """Complete a table the device runner wrote: fit the calibration, write it to `out` (default: in place)."""
    check_out(out or path)
    table = read_table(path)
    space_ = load_space(space or table.header["space"])
    check_space(table, space_.hash)
    write_table(out or path, calibrate(table, space_))
    return table
