"""`bignas profile`: which of its four jobs a command line asks for, the table's warnings, the summary."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from bignas.console import Progress
from bignas.errors import BignasError
from bignas.latency import PROFILE_CHILDREN, TRANSFER_CHILDREN, profiling
from bignas.latency.profiles import load_profile
from bignas.latency.table import check_space, read_table
from bignas.space import load_space


def profile_command(profile_name: str | None, space_name: str | None, out: str | None, bundle: str | None,
                    calibrate: str | None, transfer: str | None, children: int | None,
                    quiet: bool) -> dict[str, Any]:
    """Profile here (`profile_name`), write a bundle for a device (`bundle`), calibrate a table a
    device wrote (`calibrate`) or transfer a table here (`transfer`); returns the summary printed."""
    start = time.monotonic()
    progress = None if quiet else Progress()
    children = children or (TRANSFER_CHILDREN if transfer else PROFILE_CHILDREN)
    if children < 4:
        raise BignasError(f"--children {children}: the calibration fits 3 numbers, time at least 4 children")
    if transfer:
        if out is None:
            raise BignasError(f"--transfer {transfer} needs --out FILE: the table made true here "
                              f"(the one transferred is left as it is)")
        if bundle or calibrate:
            raise BignasError("--transfer writes a table here: it takes no --bundle or --calibrate")
        source = read_table(transfer)
        space = load_space(space_name or source.header["space"])
        check_space(source, space.hash)
        profile = load_profile(profile_name) if profile_name else None
        table = profiling.transfer_table(source, space, Path(out), children, progress, profile)
    elif calibrate:
        table = profiling.calibrate_file(Path(calibrate), Path(out) if out else None, space_name)
    elif profile_name is None:
        raise BignasError("--profile is required (except with --calibrate FILE)")
    elif bundle:
        profile, space = load_profile(profile_name), load_space(space_name or "ofa-mbv3")
        manifest = profiling.bundle_for_device(profile, space, Path(bundle), children, progress)
        return {"bundle": bundle, "manifest": str(manifest), "next": [
            f"python -m bignas.latency.device {bundle} --out TABLE.json   # on the device",
            "bignas profile --calibrate TABLE.json   # back here"]}
    else:
        profile, space = load_profile(profile_name), load_space(space_name or "ofa-mbv3")
        path = Path(out) if out else profiling.default_table_path(profile, space)
        table = profiling.profile_device(profile, space, path, children, progress)
    more = 2 * len(table.children)
    for warning in profiling.table_warnings(table, f"a bundle with --children {more}, timed on the device"
                                            if calibrate else f"--children {more}"):
        print(f"bignas profile: warning: {warning}", file=sys.stderr)
    return {"table": str(table.path), "entries": len(table.entries), "children": len(table.children),
            "precision": table.precision, "reference_ms": round(table.reference_ms, 6),
            "calibration": table.calibration, "noise": table.header.get("noise"),
            "seconds": round(time.monotonic() - start, 1)}
