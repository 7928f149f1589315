"""Profiling bundles: every block of a space, the reference model and the calibration children as
ONNX files, plus a manifest. `device.run_bundle` times a bundle with only onnxruntime + numpy;
`bignas profile` writes one and runs it in place, a device without PyTorch gets it copied over.

Exporting is the slow part (the torch.export-based exporter takes seconds a model; exports run
in worker processes, `models.export_all`), so a block is exported once per shape-free signature
with dynamic height and width (several signatures side by side in one export, each then cut out),
and the input size is then fixed per resolution in the ONNX file: ONNX Runtime sees static
shapes, as it does in the whole child. Files are written atomically and
kept, so an interrupted run resumes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from bignas.console import ProgressFn
from bignas.io import digest, write_json
from bignas.latency.device import BUNDLE_FORMAT, MANIFEST
from bignas.latency.keys import space_keys
from bignas.latency.models import REFERENCE_FILE, export_all, export_child, export_reference
from bignas.latency.profiles import DeviceProfile
from bignas.space import Child, SearchSpace

def write_bundle(profile: DeviceProfile, space: SearchSpace, directory: Path, children: list[Child],
                 progress: ProgressFn | None = None, blocks: bool = True) -> Path:
    """Export every block key of `space` (none with `blocks=False`: a transfer keeps a table's
    blocks and re-times only whole children), the reference and `children` into `directory`;
    return the manifest.

    Files already there are kept (they were written atomically), so a killed run resumes."""
    directory = Path(directory)
    cache = directory / "shared"
    keys = list(space_keys(space).values()) if blocks else []
    blocks = [{"key": str(k), "file": f"blocks/{digest(str(k))}.onnx"} for k in keys]
    wholes = [{"arch": c.to_dict(space), "file": f"children/{c.hash}.onnx"} for c in children]
    if not (directory / REFERENCE_FILE).exists():
        export_reference(directory / REFERENCE_FILE, cache)
    export_all(space, [(k, directory / b["file"]) for k, b in zip(keys, blocks)],
               [(c, directory / w["file"]) for c, w in zip(children, wholes)], cache, progress,
               int8=profile.quantized)
    # The anchor whole children are timed against: the space's largest child, of their size.
    anchor = f"children/{space.max().hash}.onnx"
    if not (directory / anchor).exists():
        export_child(space, space.max(), directory / anchor, profile.quantized)
    shutil.rmtree(cache, ignore_errors=True)  # only needed while exporting; the device needs none of it
    manifest = directory / MANIFEST
    files = sorted({REFERENCE_FILE, anchor, *(e["file"] for e in blocks + wholes)})
    write_json(manifest, {"format": BUNDLE_FORMAT, "profile": profile.to_dict(), "space": space.name,
                          "space_hash": space.hash, "reference": REFERENCE_FILE, "anchor": anchor, "blocks": blocks,
                          "children": wholes, "sizes": {f: (directory / f).stat().st_size for f in files}})
    return manifest
