"""Time a profiling bundle on the target device and write its latency table.

    python -m bignas.latency.device BUNDLE --out FILE

Needs only onnxruntime and numpy (and the bignas source tree, or just this package's torch-free
modules: console, errors, io, schema, latency.profiles / measure / stats / table). `bignas profile --bundle DIR`
writes the bundle; `bignas profile --calibrate FILE` completes the table this writes. A killed
run resumes from FILE.partial, which is rewritten atomically every few entries, records the bundle
and the machine (CPU, ONNX Runtime version and provider) it was measured on, and is resumed only
on the same bundle and machine. FILE itself is written once, atomically, at the end: a kill leaves
the earlier FILE (or none) and the partial, never half a table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

from bignas.console import Progress
from bignas.errors import run_entry_point
from bignas.io import check_output_dir, digest, read_json, write_json
from bignas.latency.measure import BundleError, Timer, file_problem
from bignas.latency.profiles import parse_profile
from bignas.latency.stats import noise_floor
from bignas.latency.table import (LatencyTable, differences, fingerprint, make_header, positive_number,
                                  write_table)

MANIFEST = "manifest.json"
BUNDLE_FORMAT = "bignas-latency-bundle"
SAVE_EVERY = 10  # entries between two progress-file writes


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
    files = [("reference", data["reference"])] + ([("anchor", data["anchor"])] if "anchor" in data else [])
    for group in ("blocks", "children"):
        if not isinstance(data[group], list) or not all(isinstance(e, dict) and "file" in e for e in data[group]):
            raise BundleError(f"{path}: field '{group}' must be a list of objects with a 'file'")
        files += [(f"{group}[{i}].file", e["file"]) for i, e in enumerate(data[group])]
    root = path.parent.resolve()
    for field, file in files:
        if not isinstance(file, str) or not (root / file).resolve().is_relative_to(root):
            raise BundleError(f"{path}: field '{field}' = {file!r} is not a file inside the bundle")
    # Each file's size as written (bundles written before it lack the field), so that a bundle copied in
    # part is refused before anything is timed.
    sizes = data.setdefault("sizes", {})
    if not isinstance(sizes, dict) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                              for n in sizes.values()):
        raise BundleError(f"{path}: field 'sizes' must map file names to byte counts")
    return data


def check_files(bundle: Path, manifest: dict) -> None:
    """Refuse a bundle one of whose model files is missing or not the size it was written with."""
    files = [("reference", manifest["reference"])] + ([("anchor", manifest["anchor"])] if "anchor" in manifest else [])
    files += [(f"{g}[{i}].file", e["file"]) for g in ("blocks", "children") for i, e in enumerate(manifest[g])]
    for field, file in files:
        problem = file_problem(bundle / file, manifest["sizes"].get(file))
        if problem:
            raise BundleError(f"{bundle / file}: model file {problem} (field '{field}' of {bundle / MANIFEST})")


def check_out(out: Path) -> None:
    """Refuse an --out the table cannot be written to, before anything is timed."""
    if out.exists() and not out.is_file():
        raise BundleError(f"{out}: exists and is not a file; --out names the latency table (JSON) to write")
    # A file where the table's folder should be, or no writable folder to create it in.
    check_output_dir(out.absolute().parent, ("*",), BundleError, "device run")
    if out.parent.is_dir() and not os.access(out.parent, os.W_OK | os.X_OK):
        raise BundleError(f"{out.parent}: not a writable folder, so {out.name} cannot be written there")


def resume(partial: Path, bundle_id: str, machine: dict[str, str]) -> dict:
    """The progress a killed run left in `partial` when it timed this bundle on this machine;
    otherwise a fresh start, with one line on stderr saying why the partial is not used."""
    fresh = {"bundle": bundle_id, "machine": machine, "entries": {}, "children": {}, "again": {}}
    if not partial.exists():
        return fresh
    try:
        saved = read_json(partial, "progress file", BundleError)
    except BundleError as e:
        saved, why = None, str(e).removeprefix(f"{partial}: ")
    else:
        why = "is not a progress file of this runner"
    if isinstance(saved, dict) and all(_timings(saved.get(group)) for group in ("entries", "children")) and (
            "again" not in saved or _timings(saved["again"])) and (
            "anchor" not in saved or _timings({"anchor": saved["anchor"]})):
        changed = differences(saved.get("machine"), machine)
        if saved.get("bundle") != bundle_id:
            why = "is for another bundle (its manifest differs)"
        elif not isinstance(saved.get("machine"), dict):
            why = "does not say which machine it was measured on (an older runner wrote it)"
        elif changed:
            why = f"was measured elsewhere: {', '.join(changed)}"
        else:
            return saved  # same bundle, same machine: continue where the killed run stopped
    print(f"{partial}: {why}; not resuming it, starting fresh", file=sys.stderr)
    return fresh


def _timings(results) -> bool:
    return isinstance(results, dict) and all(
        isinstance(t, dict) and all(positive_number(t.get(k))
                                    for k in ("ratio", "ms", "ref_ms", *(("p90_ms",) if "p90_ms" in t else ())))
        for t in results.values())


def run_bundle(bundle: str | Path, out: str | Path, progress=None) -> LatencyTable:
    """Time every model of `bundle` against its reference and write the (uncalibrated) table to `out`."""
    bundle, out = Path(bundle), Path(out)
    check_out(out)
    manifest = read_manifest(bundle)
    profile = parse_profile(manifest["profile"], f"{bundle / MANIFEST}: field 'profile'")
    check_files(bundle, manifest)
    bundle_id = digest((bundle / MANIFEST).read_bytes())
    partial = out.with_name(out.name + ".partial")
    state = resume(partial, bundle_id, fingerprint(profile.provider))
    timer = Timer(profile, bundle / manifest["reference"])
    anchor = manifest.get("anchor")  # bundles written before anchors time children against the reference
    if anchor is not None and "anchor" not in state:
        t = timer.time(bundle / anchor)
        state["anchor"] = {"ratio": t.ratio, "ms": t.ms, "ref_ms": t.reference_ms}
    # Whole children are timed against the anchor, a model of their own size (blocks against the
    # small reference, which is theirs), and converted to the reference's units with the anchor's ratio.
    anchored = Timer(profile, bundle / anchor) if anchor is not None else timer
    scale = state["anchor"]["ratio"] if anchor is not None else 1.0
    # Whole children are timed twice, in two passes minutes apart: the second pass is the profile's
    # noise floor (how far this host's own measurements move), and their mean a steadier ground
    # truth for the calibration.
    again = state.setdefault("again", {})
    todo = [(b["key"], b["file"], state["entries"], timer, 1.0) for b in manifest["blocks"]]
    todo += [(c["file"], c["file"], group, anchored, scale) for group in (state["children"], again)
             for c in manifest["children"]]
    unsaved = 0
    for i, (name, file, results, clock, factor) in enumerate(todo):
        if progress:
            progress("time", i + 1, len(todo))
        if name in results:
            continue
        t = clock.time(bundle / file)
        results[name] = {"ratio": t.ratio * factor, "ms": t.ms, "ref_ms": t.reference_ms if clock is timer
                         else state["anchor"]["ref_ms"], "p90_ms": t.p90_ms}
        unsaved += 1
        if unsaved >= SAVE_EVERY:
            write_json(partial, state)
            unsaved = 0
    if unsaved:
        write_json(partial, state)  # so that a kill while the table is written re-times nothing
    measured = list(state["entries"].values()) + list(state["children"].values())
    reference_ms = float(np.median([m["ref_ms"] for m in measured]))
    children = [child_record(c["arch"], state["children"][c["file"]], again[c["file"]]) for c in manifest["children"]]
    header = make_header(profile, manifest["space"], manifest["space_hash"], reference_ms)
    if anchor is not None:
        header["anchor_ratio"] = state["anchor"]["ratio"]
    header["noise"] = noise_floor([c["ratios"][0] for c in children], [c["ratios"][1] for c in children])
    table = LatencyTable(header, state["entries"], children)
    write_table(out, table)
    partial.unlink(missing_ok=True)
    return table


def child_record(arch: dict, first: dict, second: dict) -> dict:
    """A whole child of the table from its two timings: the mean of both passes' ratios, raw
    times, and `p90_over_p50`, its runs' 90th percentile over their median (the mean over the
    passes that recorded p90: a partial of an older runner did not)."""
    record = {"arch": arch, "ratio": (first["ratio"] + second["ratio"]) / 2,
              "ratios": [first["ratio"], second["ratio"]], "ms": (first["ms"] + second["ms"]) / 2,
              "ref_ms": first["ref_ms"]}
    tails = [t["p90_ms"] / t["ms"] for t in (first, second) if "p90_ms" in t]
    if tails:
        record["p90_over_p50"] = float(np.mean(tails))
    return record


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

    def command() -> int:
        table = run_bundle(args.bundle, args.out, None if args.quiet else Progress())
        print(json.dumps({"table": args.out, "entries": len(table.entries), "children": len(table.children)}))
        return 0

    return run_entry_point(parser.prog, command)


if __name__ == "__main__":
    sys.exit(main())
