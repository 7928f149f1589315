"""The ONNX models profiling and checks time: every block key, the fixed reference, whole children.

A block is built by the same static module a deployed child runs (`bignas.nn.registry`), so a
timed block and the block in the child cannot drift apart.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

import torch
from torch import nn

from bignas.console import ProgressFn
from bignas.errors import BignasError
from bignas.io import atomic_path, digest
from bignas.latency.keys import BlockKey
from bignas.nn.child import StaticNet
from bignas.nn.registry import static_block
from bignas.onnx_io import export_onnx
from bignas.plan import BlockPlan, plan
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


def export_key(key: BlockKey, path: Path, cache: Path) -> None:
    """Export `key`'s module to `path` with a static input size, via a dynamic-size export cached in `cache`."""
    import onnx

    shared = cache / f"{digest(key.shape_free)}.onnx"
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


# Exports are the slow part of profiling and checking (the torch.export-based exporter: 2-7 s a
# model on one core) and independent of each other, so they run in worker processes, one core
# each, before anything is timed. A few exports are not worth starting workers (2-4 s each).
MAX_EXPORT_WORKERS, JOBS_PER_WORKER = 8, 4


def export_workers(jobs: int) -> int:
    """How many processes export `jobs` models here: one per usable core, at most
    MAX_EXPORT_WORKERS, and none (in this process) for fewer than 2 * JOBS_PER_WORKER jobs."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, MAX_EXPORT_WORKERS, jobs // JOBS_PER_WORKER))


def export_all(space: SearchSpace, keys: list[tuple[BlockKey, Path]], children: list[tuple[Child, Path]],
               cache: Path, progress: ProgressFn | None = None, workers: int | None = None) -> None:
    """Export `keys` (`export_key`, cached in `cache`) and `children` (`export_child`) to their paths,
    in `workers` processes (default `export_workers`); files already there are kept (they were
    written atomically: a killed run resumes). Same files as one by one: every export is seeded."""
    groups: dict[str, list[tuple[BlockKey, Path]]] = defaultdict(list)
    for key, path in keys:
        if not path.exists():  # keys sharing a shape-free export go to one job: one writer per cache file
            groups[key.shape_free].append((key, path))
    # Whole children first: the longest jobs, so that no worker is left alone with one at the end.
    jobs = [(export_child, (space, child, path), 1) for child, path in children if not path.exists()]
    jobs += [(_export_keys, (group, cache), len(group)) for group in groups.values()]
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


def _export_keys(group: list[tuple[BlockKey, Path]], cache: Path) -> None:
    for key, path in group:
        export_key(key, path, cache)
