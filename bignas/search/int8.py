"""int8 targets: a target whose latency table times int8 models (profile `precision: int8`).

Quantizing and scoring a child in ONNX Runtime costs several fp32 evaluations (an export, the
quantization, a validation pass), and one child's int8 top-1 can fall further than another's
(depthwise convolutions with wide ranges do). So the strategies search as for fp32, on the cached
fp32 val top-1 and the int8 table's latency, and afterwards the top `k` feasible children of each
int8 target are quantized as `bignas export --int8` quantizes them (`evaluate.quantize_child`: the
same calibration images, format and method, so the figure is the exported file's) and scored in
ONNX Runtime on val. The one with the best int8 val top-1 is the target's best; search.json keeps
both figures. int8 accuracies are cached in the run's accuracy file like fp32 ones, under their
own context.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from bignas.data import Dataset
from bignas.evaluate import evaluate_child, quantize_child
from bignas.onnx_io import export_onnx, onnx_top1
from bignas.quantize import Calibration, Int8Format
from bignas.search.evaluator import Evaluator
from bignas.search.problem import Problem
from bignas.space import Child
from bignas.train.run_dir import TrainedRun


def int8_evaluator(trained: TrainedRun, dataset: Dataset, data_spec: str, fmt: Int8Format, calibration: Calibration,
                   rank: int = 0, world_size: int = 1, on_result=None) -> Evaluator:
    """`evaluator(children) -> int8 val top-1` of each child (cached), quantized with `fmt` and `calibration`."""
    config = trained.config
    batch = config.eval.batch_size

    def one(child: Child) -> float:
        _, static = evaluate_child(trained.supernet, child, dataset, "val",
                                   calibration_images=config.eval.calibration_images, batch_size=batch)
        with tempfile.TemporaryDirectory(prefix="bignas-int8-") as tmp:
            fp32, int8 = Path(tmp) / "child.onnx", Path(tmp) / "child.int8.onnx"
            export_onnx(static.cpu().eval(), child.resolution, fp32, trained.space.in_channels)
            quantize_child(fp32, int8, dataset, batch, child.resolution, fmt, calibration)
            return onnx_top1(int8, dataset.val.eval_batches(batch), child.resolution)

    return Evaluator(trained.supernet, trained.space, dataset, trained.dir.accuracy_file, data_spec=data_spec,
                     calibration_images=config.eval.calibration_images, batch_size=batch, rank=rank,
                     world_size=world_size, on_result=on_result, evaluate_one=one,
                     precision={"precision": "int8", "int8_format": fmt.to_dict(),
                                "int8_calibration": calibration.to_dict()})


def finalists(problem: Problem, result: dict[str, Any], k: int) -> list[dict[str, Any]]:
    """The `k` evaluated children of `result` that meet its target's budgets with the best fp32 val
    top-1 (among equals, the cheaper first)."""
    target = next(t for t in problem.targets if t.name == result["target"])
    space = problem.space
    feasible = [p for p in result["evaluated"] if not problem.violations(space.child_from_dict(p["arch"]), target)]
    return sorted(feasible, key=lambda p: (-p["top1_val"], p[result["x"]]))[:k]


def pick_int8(problem: Problem, result: dict[str, Any], evaluate, k: int, fmt: Int8Format,
              calibration: Calibration) -> None:
    """Quantize and score `result`'s finalists (`evaluate`: an `int8_evaluator`); make the best by
    int8 val top-1 the target's best, and record every finalist's two figures under "int8"."""
    space = problem.space
    points = finalists(problem, result, k)
    top1s = evaluate([space.child_from_dict(p["arch"]) for p in points]) if points else []
    rows = [{"hash": p["hash"], "top1_val": p["top1_val"], "top1_val_int8": t, "latency_ms": p["latency_ms"]}
            for p, t in zip(points, top1s)]
    best = max(zip(points, top1s), key=lambda pt: (pt[1], pt[0]["top1_val"]), default=None)
    result["best"] = {**best[0], "top1_val_int8": best[1]} if best else None
    result["int8"] = {"finalists": rows, "k": k, "picked_by": "top1_val_int8", "format": fmt.to_dict(),
                      "calibration": calibration.to_dict()}
