"""Time a profiling bundle on the target device and write its latency table.

    python -m bignas.latency.device BUNDLE --out FILE

Needs only onnxruntime and numpy (and the bignas source tree, or just this package's torch-free
modules: console, errors, io, latency.profiles / measure / table). `bignas profile --bundle DIR`
writes the bundle; `bignas profile --calibrate FILE` completes the table this writes. A killed
run resumes from FILE.partial, which is rewritten atomically every few entries.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bignas.console import Progress
from bignas.errors import BignasError
from bignas.io import digest, read_json, write_json
from bignas.latency.measure import Timer
from bignas.latency.profiles import parse_profile
from bignas.latency.table import LatencyTable, make_header, write_table

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "bignas-latency-bundle"
SAVE_EVERY = 10  # entries between two progress-file writes


class BundleError(BignasError):
    """A bundle is missing or malformed; the message names the file and field."""


def read_manifest(bundle: Path) -> dict:
    path = Path(bundle) / MANIFEST
    data = read_json(path, "bundle manifest", BundleError)
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: not a bignas profiling bundle (field 'format' is not '{BUNDLE_FORMAT}')")
    for name in ("profile", "space", "space_hash", "reference", "blocks", "children"):
        if name not in data:
            raise BundleError(f"{path}: missing field '{name}'")
    # Model files are named relative to the bundle and must stay inside it (as ONNX Runtime
    # requires of external data): a manifest never makes the runner open a file elsewhere.
    files = [("reference", data["reference"])]
    for group in ("blocks", "children"):
        if not isinstance(data[group], list) or not all(isinstance(e, dict) and "file" in e for e in data[group]):
            raise BundleError(f"{path}: field '{group}' must be a list of objects with a 'file'")
        files += [(f"{group}[{i}].file", e["file"]) for i, e in enumerate(data[group])]
    root = path.parent.resolve()
    for field, file in files:
        if not isinstance(file, str) or not (root / file).resolve().is_relative_to(root):
            raise BundleError(f"{path}: field '{field}' = {file!r} is not a file inside the bundle")
    return data


def run_bundle(bundle: str | Path, out: str | Path, progress=None) -> LatencyTable:
    """Time every model of `bundle` against its reference and write the (uncalibrated) table to `out`."""
    bundle, out = Path(bundle), Path(out)
    manifest = read_manifest(bundle)
    profile = parse_profile(manifest["profile"], f"{bundle / MANIFEST}: field 'profile'")
    bundle_id = digest((bundle / MANIFEST).read_bytes())
    partial = out.with_name(out.name + ".partial")
    state = {"bundle": bundle_id, "entries": {}, "children": {}}
    if partial.exists():
        saved = read_json(partial, "progress file", BundleError)
        if isinstance(saved, dict) and saved.get("bundle") == bundle_id:
            state = saved  # same bundle: continue where the killed run stopped
    timer = Timer(profile, bundle / manifest["reference"])
    todo = [(b["key"], b["file"], state["entries"]) for b in manifest["blocks"]]
    todo += [(c["file"], c["file"], state["children"]) for c in manifest["children"]]
    for i, (name, file, results) in enumerate(todo):
        if progress:
            progress("time", i + 1, len(todo))
        if name in results:
            continue
        t = timer.time(bundle / file)
        results[name] = {"ratio": t.ratio, "ms": t.ms, "ref_ms": t.reference_ms}
        if (i + 1) % SAVE_EVERY == 0:
            write_json(partial, state)
    measured = list(state["entries"].values()) + list(state["children"].values())
    reference_ms = float(np.median([m["ref_ms"] for m in measured]))
    children = [{"arch": c["arch"], **state["children"][c["file"]]} for c in manifest["children"]]
    header = make_header(profile, manifest["space"], manifest["space_hash"], reference_ms)
    table = LatencyTable(header, state["entries"], children)
    write_table(out, table)
    partial.unlink(missing_ok=True)
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bignas.latency.device",
        description="Time every block, the reference and the calibration children of a profiling bundle "
                    "(written by `bignas profile --bundle DIR`) with ONNX Runtime, as the bundle's device "
                    "profile says, and write a latency table. Needs only onnxruntime and numpy. Then, on a "
                    "machine with bignas installed: bignas profile --calibrate FILE.")
    parser.add_argument("bundle", metavar="BUNDLE", help="bundle directory (holds manifest.json)")
    parser.add_argument("--out", required=True, metavar="FILE", help="latency table JSON to write")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    args = parser.parse_args(argv)
    try:
        table = run_bundle(args.bundle, args.out, None if args.quiet else Progress())
    except BignasError as e:
        print(f"{parser.prog}: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps({"table": args.out, "entries": len(table.entries), "children": len(table.children)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
