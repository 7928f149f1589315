"""Accuracy of many children for search: BN recalibration + validation top-1, cached by child hash.

The cache is the run directory's `accuracy.jsonl`, append-only, one record per evaluated child,
reused by every later search on the same weights, data and calibration size. Under torchrun the
children still to evaluate are spread over the ranks.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from bignas.data import Dataset
from bignas.nn import Supernet
from bignas.evaluate import evaluate_child
from bignas.space import Child, SearchSpace


def weights_digest(model: torch.nn.Module) -> str:
    """Hash of every tensor of `model`'s state: cached accuracies are valid for these weights only."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


class Evaluator:
    """`evaluator(children) -> top-1 on the validation split`, each child evaluated at most once."""

    def __init__(self, supernet: Supernet, space: SearchSpace, dataset: Dataset, run_dir: str | Path, *,
                 data_spec: str, calibration_images: int, batch_size: int, rank: int = 0, world_size: int = 1,
                 on_result: Callable[[], None] | None = None) -> None:
        self.supernet, self.space, self.dataset = supernet, space, dataset
        self.calibration_images, self.batch_size = calibration_images, batch_size
        self.rank, self.world_size = rank, world_size
        self.on_result = on_result
        self.path = Path(run_dir) / "accuracy.jsonl"
        self.context = {"weights": weights_digest(supernet), "data": data_spec, "split": "val",
                        "calibration_images": calibration_images}
        self.cache = self._load()
        self.fresh = 0  # children evaluated by this evaluator (not found in the cache)

    def __call__(self, children: list[Child]) -> list[float]:
        todo = list({c.hash: c for c in children if c.hash not in self.cache}.values())
        mine = todo[self.rank::self.world_size]
        results = [(c.hash, self._evaluate(c)) for c in mine]
        if self.world_size > 1:
            gathered: list = [None] * self.world_size
            dist.all_gather_object(gathered, results)
            results = [r for part in gathered for r in part]
        by_hash = {c.hash: c for c in todo}
        for h, top1 in results:
            self.cache[h] = top1
            if self.rank == 0:
                self._append(by_hash[h], top1)
        self.fresh += len(results)
        return [self.cache[c.hash] for c in children]

    def _evaluate(self, child: Child) -> float:
        top1, _ = evaluate_child(self.supernet, child, self.dataset, "val",
                                 calibration_images=self.calibration_images, batch_size=self.batch_size)
        if self.on_result is not None:
            self.on_result()
        return top1

    def _load(self) -> dict[str, float]:
        cache: dict[str, float] = {}
        if not self.path.exists():
            return cache
        skipped = 0
        for line in self.path.read_text().splitlines():
            try:
                record = json.loads(line)
                if all(record.get(k) == v for k, v in self.context.items()):
                    cache[record["hash"]] = float(record["top1"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                skipped += 1  # a line cut short by a killed run: that child is simply evaluated again
        if skipped:
            print(f"{self.path}: skipped {skipped} unreadable line(s)", file=sys.stderr)
        return cache

    def _append(self, child: Child, top1: float) -> None:
        record = {"hash": child.hash, "top1": top1, **self.context, "arch": child.to_dict(self.space)}
        with open(self.path, "a") as f:  # one write per record: a kill loses at most the last line
            f.write(json.dumps(record) + "\n")
