"""Accuracy of many children for search: BN recalibration + validation top-1, cached by child hash.

The cache is a JSON-lines file (a run directory's `accuracy.jsonl`), append-only, one record per evaluated child,
written as soon as that child is evaluated (a killed search loses at most the child in flight),
and reused by every later search on the same weights, data (spec and content) and calibration size. Under torchrun
the cache is read once, by rank 0, and broadcast (so every rank splits the same children), and the
children still to evaluate go round the ranks in chunks of one child per rank.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Literal

import torch
import torch.distributed as dist

from bignas.data import Dataset
from bignas.nn import Supernet
from bignas.evaluate import calibration_count, evaluate_child
from bignas.io import digest
from bignas.weights import weights_digest
from bignas.space import Child, SearchSpace


# what records written before int8 evaluations and validation subsets measured
UNRECORDED = {"precision": "fp32", "val_images": None}
BN_AVERAGE = "images"  # BN recalibration weights each image alike (`evaluate.recalibrate_bn`)


class Evaluator:
    """`evaluator(children) -> top-1 on the validation split` (or `split`), each child evaluated at most once.

    `evaluate_one(child) -> top-1` replaces the default (BN recalibration + val top-1 through
    `evaluate_child`); the cache is keyed on `supernet`'s weights either way. `precision`: what
    `evaluate_one` measures, in the cache's context (default {"precision": "fp32"}; an int8 one
    also says how it quantizes: see `search.int8`), so fp32 and int8 accuracies never mix.
    `val_images`: measure on a fixed subset of that many validation images (`Split.subset`), a
    lower fidelity, cached apart from the whole split's accuracies. `split="test"` measures on the
    test split instead, for benchmarks that check val against test; search never does.
    """

    def __init__(self, supernet: Supernet, space: SearchSpace, dataset: Dataset, cache_file: str | Path, *,
                 data_spec: str, calibration_images: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 on_result: Callable[[], None] | None = None,
                 evaluate_one: Callable[[Child], float] | None = None, precision: dict[str, Any] | None = None,
                 val_images: int | None = None, split: Literal["val", "test"] = "val") -> None:
        self.supernet, self.space, self.dataset = supernet, space, dataset
        if split not in ("val", "test"):
            raise ValueError(f"split must be 'val' or 'test', got {split!r}")
        if val_images is not None and dataset is not None and val_images >= len(dataset.split(split)):
            val_images = None  # the whole split
        self.calibration_images, self.batch_size, self.val_images = calibration_images, batch_size, val_images
        self.split = split
        self.rank, self.world_size = rank, world_size
        self.on_result = on_result
        self.evaluate_one = evaluate_one or self._evaluate
        self.path = Path(cache_file)
        self.context = {"weights": weights_digest(supernet), "data": data_spec,
                        "data_fingerprint": dataset.fingerprint if dataset is not None else None, "split": split,
                        "calibration_images": calibration_images, "val_images": val_images,
                        "bn_average": BN_AVERAGE, **(precision or {"precision": "fp32"})}
        # Records from before `bn_average` weighted each calibration batch alike: the same
        # statistics, and so reusable, only where every batch was full.
        n = calibration_count(dataset, calibration_images) if dataset is not None else calibration_images
        self.unrecorded = {**UNRECORDED, "bn_average": BN_AVERAGE if n <= batch_size or n % batch_size == 0
                           else "batches"}
        self.skipped = 0  # unreadable cache lines (cut short by a killed run): those children are evaluated again
        self.archs: dict[str, dict[str, Any]] = {}  # hash -> architecture, of the children in the cache (rank 0)
        self.cache = self._load() if rank == 0 else {}
        if world_size > 1:  # every rank must split the same `todo`: they all take rank 0's reading of the file
            shared = [(self.cache, self.skipped)]
            dist.broadcast_object_list(shared, src=0)
            self.cache, self.skipped = shared[0]
        self.fresh = 0  # children evaluated by this evaluator (not found in the cache)

    def __call__(self, children: list[Child]) -> list[float]:
        todo = list({c.hash: c for c in children if c.hash not in self.cache}.values())
        if self.world_size == 1:
            for child in todo:
                self._record(child, float(self.evaluate_one(child)))
        else:  # each rank one child per chunk, gathered after every chunk
            for i in range(0, len(todo), self.world_size):
                chunk = todo[i:i + self.world_size]
                mine = (chunk[self.rank].hash, float(self.evaluate_one(chunk[self.rank]))) \
                    if self.rank < len(chunk) else None
                gathered: list = [None] * self.world_size
                dist.all_gather_object(gathered, mine)
                by_hash = {c.hash: c for c in chunk}
                for result in gathered:
                    if result is not None:
                        self._record(by_hash[result[0]], result[1])
        return [self.cache[c.hash] for c in children]

    def known(self) -> dict[str, float]:
        """Every cached accuracy for these weights, data and split: child hash -> top-1."""
        return dict(self.cache)

    def known_children(self) -> list[tuple[Child, float]]:
        """Every cached (child, top-1) for these weights, data and split, in the order they were cached."""
        return [(self.space.child_from_dict(self.archs[h], f"{self.path}: child {h}"), top1)
                for h, top1 in self.cache.items() if h in self.archs]

    def digest(self) -> str:
        """A hash of what the cache holds for these weights and data: it changes when a child is added."""
        return digest(json.dumps([self.context, sorted(self.cache.items())]))

    def _record(self, child: Child, top1: float) -> None:
        self.cache[child.hash] = top1
        self.archs[child.hash] = child.to_dict(self.space)
        self.fresh += 1
        if self.rank == 0:
            self._append(child, top1)
        if self.on_result is not None:
            self.on_result()

    def _evaluate(self, child: Child) -> float:
        top1, _ = evaluate_child(self.supernet, child, self.dataset, self.split,
                                 calibration_images=self.calibration_images, batch_size=self.batch_size,
                                 images=self.val_images)
        return top1

    def _load(self) -> dict[str, float]:
        cache: dict[str, float] = {}
        if not self.path.exists():
            return cache
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
                if all(record.get(k, self.unrecorded.get(k)) == v for k, v in self.context.items()):
                    cache[record["hash"]] = float(record["top1"])
                    if isinstance(record.get("arch"), dict):
                        self.archs[record["hash"]] = record["arch"]
            except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
                self.skipped += 1  # a line cut short by a killed run: that child is simply evaluated again
        return cache

    def _append(self, child: Child, top1: float) -> None:
        record = {"hash": child.hash, "top1": top1, **self.context, "arch": self.archs[child.hash]}
        line = (json.dumps(record) + "\n").encode()
        with open(self.path, "a+b") as f:  # one write per record: a kill loses at most the last line
            if f.seek(0, 2) and (f.seek(-1, 2), f.read(1))[1] != b"\n":
                line = b"\n" + line  # after a line a kill cut short: start a fresh one
            f.write(line)
