"""Profiling bundles: every block of a space, the reference model and the calibration children as
ONNX files, plus a manifest. `device.run_bundle` times a bundle with only onnxruntime + numpy;
`bignas profile` writes one and runs it in place, a device without PyTorch gets it copied over.

Exporting is the slow part (the torch.export-based exporter takes about a second a model), so a
block is exported once per shape-free signature with dynamic height and width, and the input
size is then fixed per resolution in the ONNX file: ONNX Runtime sees static shapes, as it does
in the whole child. Files are written atomically and kept, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from bignas.onnx_io import export_onnx
from bignas.io import atomic_path, write_json
from bignas.latency.device import BUNDLE_FORMAT, MANIFEST
from bignas.latency.keys import BlockKey, space_keys
from bignas.latency.profiles import DeviceProfile
from bignas.nn.static import ConvBNAct, Head, MBConv, StaticNet
from bignas.space import Child, SearchSpace
from bignas.plan import BlockPlan, plan

REFERENCE_FILE = "reference.onnx"
# The fixed reference every time is divided by: a mid-size MBConv block (about 0.1-0.3 ms on one
# core), as memory- and compute-bound as the blocks it is interleaved with. Never change it: tables
# measured against another reference would not compare.
REFERENCE = BlockKey.of(BlockPlan(stage=0, index=0, in_ch=24, out_ch=24, mid_ch=96, expand_conv=True, kernel=5,
                                  stride=1, se_mid=0, act="relu", se_act="relu", se_gate="sigmoid", resolution=28))

ProgressFn = Callable[[str, int, int], None]


def build_module(key: BlockKey) -> nn.Module:
    """The exact modules a static child runs for this key (random weights: timing only)."""
    e = key.entry
    if key.kind == "stem":
        return ConvBNAct(e.in_ch, e.out_ch, e.kernel, e.stride, e.act)
    if key.kind == "mbconv":
        return MBConv(e)
    return Head(e)


def export_key(key: BlockKey, path: Path, cache: Path) -> None:
    """Export `key`'s module to `path` with a static input size, via a dynamic-size export cached in `cache`."""
    import onnx

    shared = cache / f"{_digest(key.shape_free)}.onnx"
    if not shared.exists():
        with torch.random.fork_rng():
            torch.manual_seed(0)
            export_onnx(build_module(key), key.resolution, shared, in_channels=key.in_ch, dynamic_size=True)
    model = onnx.load(str(shared))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for axis in (2, 3):
        dims[axis].Clear()
        dims[axis].dim_value = key.resolution
    del model.graph.value_info[:]  # symbolic intermediate shapes; ONNX Runtime re-infers them
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def export_reference(path: Path, cache: Path) -> None:
    export_key(REFERENCE, path, cache)


def export_child(space: SearchSpace, child: Child, path: Path) -> None:
    """The whole child as users deploy it (`bignas.export.export_onnx`)."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        export_onnx(StaticNet(plan(space, child)), child.resolution, path, in_channels=space.in_channels)


def write_bundle(profile: DeviceProfile, space: SearchSpace, directory: Path, children: list[Child],
                 progress: ProgressFn | None = None) -> Path:
    """Export every block key of `space`, the reference and `children` into `directory`; return the manifest.

    Files already there are kept (they were written atomically), so a killed run resumes."""
    directory = Path(directory)
    cache = directory / "shared"
    keys = list(space_keys(space).values())
    blocks = [{"key": str(k), "file": f"blocks/{_digest(str(k))}.onnx"} for k in keys]
    wholes = [{"arch": c.to_dict(space), "file": f"children/{c.hash}.onnx"} for c in children]
    total = len(keys) + len(children)
    if not (directory / REFERENCE_FILE).exists():
        export_reference(directory / REFERENCE_FILE, cache)
    for i, (key, block) in enumerate(zip(keys, blocks)):
        if progress:
            progress("export", i + 1, total)
        if not (directory / block["file"]).exists():
            export_key(key, directory / block["file"], cache)
    for i, (child, whole) in enumerate(zip(children, wholes)):
        if progress:
            progress("export", len(keys) + i + 1, total)
        if not (directory / whole["file"]).exists():
            export_child(space, child, directory / whole["file"])
    shutil.rmtree(cache, ignore_errors=True)  # only needed while exporting; the device needs none of it
    manifest = directory / MANIFEST
    write_json(manifest, {"format": BUNDLE_FORMAT, "profile": profile.to_dict(), "space": space.name,
                          "space_hash": space.hash, "reference": REFERENCE_FILE, "blocks": blocks,
                          "children": wholes})
    return manifest


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
