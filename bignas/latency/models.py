"""The ONNX models profiling and checks time: every block key, the fixed reference, whole children.

A block is built by the same static module a deployed child runs (`bignas.nn.registry`), so a
timed block and the block in the child cannot drift apart.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import tempfile
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from bignas.console import ProgressFn
from bignas.errors import BignasError
from bignas.io import atomic_path, digest
from bignas.latency.keys import BlockKey
from bignas.nn.child import StaticNet
from bignas.nn.registry import static_block
from bignas.onnx_io import export_onnx, export_side_by_side
from bignas.plan import BlockPlan, plan
from bignas.quantize import Int8Format, quantize, random_batches
from bignas.space import Child, SearchSpace

REFERENCE_FILE = "reference.onnx"
# The fixed reference every time is divided by: a mid-size MBConv block (about 0.1-0.3 ms on one
# core), as memory- and compute-bound as the blocks it is interleaved with. Never change it: tables
# measured against another reference would not compare.
REFERENCE = BlockKey.of(BlockPlan(stage=0, index=0, in_ch=24, out_ch=24, mid_ch=96, expand_conv=True, kernel=5,
                                  stride=1, se_mid=0, act="relu", se_act="relu", se_gate="sigmoid", resolution=28))


def build_module(key: BlockKey) -> nn.Module:
    """The exact module a static child runs for this key (random weights: timing only)."""
    return static_block(key.entry)


def shared_path(key: BlockKey, cache: Path) -> Path:
    """Where `key`'s dynamic-size export (one for every resolution of its shape-free signature) is cached."""
    return cache / f"{digest(key.shape_free)}.onnx"


def export_key(key: BlockKey, path: Path, cache: Path, int8: Int8Format | None = None) -> None:
    """Export `key`'s module to `path` with a static input size, via a dynamic-size export cached in
    `cache`; quantized as `int8` says when given."""
    import onnx

    shared = shared_path(key, cache)
    if not shared.exists():
        export_shared([key], cache)
    model = onnx.load(str(shared))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    for axis in (2, 3):
        dims[axis].Clear()
        dims[axis].dim_value = key.resolution
    del model.graph.value_info[:]  # symbolic intermediate shapes; ONNX Runtime re-infers them
    _write(path, lambda fp32: onnx.save(model, str(fp32)), int8)


def _write(path: Path, write_fp32: Callable[[Path], None], int8: Int8Format | None) -> None:
    """Write a model to `path` whole (a killed run never leaves a file there): `write_fp32(file)`
    writes it in fp32; with `int8`, that file is a temporary one, quantized into `path` (random
    calibration inputs: ranges do not change the speed of a model that is only timed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if int8 is None:
        with atomic_path(path) as tmp:
            write_fp32(tmp)
        return
    with tempfile.TemporaryDirectory(prefix=".fp32.", dir=path.parent) as tmp:
        fp32 = Path(tmp) / "model.onnx"
        write_fp32(fp32)
        quantize(fp32, path, random_batches(fp32), int8)


def export_shared(keys: list[BlockKey], cache: Path) -> None:
    """The dynamic-size exports of `keys` (distinct shape-free signatures) into `cache`, in one export:
    the exporter's fixed costs are paid once (16 blocks: about half the time of 16 exports), and
    each block's graph is then cut out of the whole. A cut block has the nodes, weights, input,
    output and producer of the block exported alone; only the names of its nodes and weights
    differ, and depend on the blocks it was exported beside."""
    import onnx
    from onnx.utils import Extractor

    if len({key.shape_free for key in keys}) != len(keys):
        raise ValueError(f"export_shared: signatures exported twice in {[key.shape_free for key in keys]}")
    with torch.random.fork_rng():  # the caller's RNG is kept
        modules = []
        for key in keys:
            torch.manual_seed(0)  # each block's weights as if it were exported alone
            modules.append(build_module(key))
        if len(keys) == 1:
            export_onnx(modules[0], keys[0].resolution, shared_path(keys[0], cache), keys[0].in_ch, dynamic_size=True)
            return
        cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache) as tmp:
            whole_path = Path(tmp) / "side_by_side.onnx"
            names = export_side_by_side(modules, [(k.in_ch, k.resolution) for k in keys], whole_path)
            whole = onnx.load(str(whole_path))
    extractor = Extractor(whole)
    for i, (key, (images, logits)) in enumerate(zip(keys, names)):
        model = extractor.extract_model([images], [logits])
        _rename(model.graph, {images: "images", logits: "logits"}, {f"batch{i}": "batch", f"size{i}": "size"})
        model.producer_name, model.producer_version = whole.producer_name, whole.producer_version
        model.graph.name = whole.graph.name
        with atomic_path(shared_path(key, cache)) as out:
            onnx.save(model, str(out))


def _rename(graph, names: dict[str, str], dims: dict[str, str]) -> None:
    """Rename the values `names` maps, wherever the graph defines or uses them, and the symbolic
    dim names `dims` maps, wherever a shape uses them."""
    for value in (*graph.input, *graph.output, *graph.value_info):
        value.name = names.get(value.name, value.name)
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:  # a name, or an expression of names: "((size1 - 1)//2) + 1"
                dim.dim_param = re.sub(r"\w+", lambda word: dims.get(word[0], word[0]), dim.dim_param)
    for node in graph.node:
        node.input[:] = [names.get(n, n) for n in node.input]
        node.output[:] = [names.get(n, n) for n in node.output]


def export_reference(path: Path, cache: Path) -> None:
    export_key(REFERENCE, path, cache)


def export_child(space: SearchSpace, child: Child, path: Path, int8: Int8Format | None = None) -> None:
    """The whole child as users deploy it (`bignas.export.export_onnx`), quantized as `int8` says when given."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        net = StaticNet(plan(space, child))
        _write(path, lambda fp32: export_onnx(net, child.resolution, fp32, in_channels=space.in_channels), int8)


# Exports are the slow part of profiling and checking (the torch.export-based exporter: 2-7 s a
# model on one core, of which about half is fixed cost, so blocks are exported side by side) and
# independent of each other, so they run in worker processes, one core each, before anything is
# timed. A few exports are not worth starting workers (2-4 s each).
MAX_EXPORT_WORKERS, JOBS_PER_WORKER = 8, 4
BLOCKS_PER_EXPORT = 16  # shape-free block signatures exported side by side in one job (`export_shared`)


def export_workers(jobs: int) -> int:
    """How many processes export `jobs` models here: one per usable core, at most
    MAX_EXPORT_WORKERS, and none (in this process) for fewer than 2 * JOBS_PER_WORKER jobs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_EXPORT_WORKERS, jobs // JOBS_PER_WORKER))


def export_all(space: SearchSpace, keys: list[tuple[BlockKey, Path]], children: list[tuple[Child, Path]],
               cache: Path, progress: ProgressFn | None = None, workers: int | None = None,
               int8: Int8Format | None = None) -> None:
    """Export `keys` (`export_key`, cached in `cache`) and `children` (`export_child`) to their paths,
    in `workers` processes (default `export_workers`); files already there are kept (they were
    written atomically: a killed run resumes). The same files for any number of workers: every
    export is seeded, and jobs do not depend on the number of workers. With `int8`, every file is
    quantized as it says (an int8 profile: `DeviceProfile.quantized`)."""
    groups: dict[str, list[tuple[BlockKey, Path]]] = defaultdict(list)
    for key, path in keys:
        if not path.exists():  # keys sharing a shape-free export go to one job: one writer per cache file
            groups[key.shape_free].append((key, path))
    signatures = list(groups.values())
    # Blocks first, BLOCKS_PER_EXPORT signatures a job (the longest jobs: so that no worker is left
    # alone with one at the end), then whole children.
    jobs = [(_export_keys, (chunk, cache, int8), sum(map(len, chunk)))
            for chunk in (signatures[i:i + BLOCKS_PER_EXPORT] for i in range(0, len(signatures), BLOCKS_PER_EXPORT))]
    jobs += [(export_child, (space, child, path, int8), 1) for child, path in children if not path.exists()]
    done, total = 0, sum(n for *_, n in jobs)
    workers = export_workers(len(jobs)) if workers is None else workers
    if workers <= 1:
        for function, args, n in jobs:
            function(*args)
            done += n
            if progress:
                progress("export", done, total)
        return
    context = multiprocessing.get_context("spawn")  # no fork of a process that holds torch's threads
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=torch.set_num_threads, initargs=(1,))
    try:
        futures = {pool.submit(function, *args): n for function, args, n in jobs}
        for future in as_completed(futures):
            try:
                future.result()  # a worker's error is raised here, with its traceback
            except BrokenProcessPool as e:  # a worker killed (out of memory?) or unable to start
                raise BignasError(f"an export worker process stopped: {e}"
                                  f"{f' ({e.__cause__})' if e.__cause__ else ''}; {workers} models were being "
                                  f"exported at once") from e
            done += futures[future]
            if progress:
                progress("export", done, total)
    finally:  # on an error or Ctrl-C, queued exports are dropped; the few already handed to workers end first
        pool.shutdown(cancel_futures=True)


def _export_keys(signatures: list[list[tuple[BlockKey, Path]]], cache: Path, int8: Int8Format | None) -> None:
    """Export each signature's keys, from one side-by-side export of the signatures not cached yet."""
    todo = [group[0][0] for group in signatures if not shared_path(group[0][0], cache).exists()]
    if todo:
        export_shared(todo, cache)
    for group in signatures:
        for key, path in group:
            export_key(key, path, cache, int8)
