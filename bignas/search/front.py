"""The Pareto front of evaluated children, its hypervolume, and a search's progress curve.

Every function takes search.json points (dicts with "top1_val" and the cost named by `x`:
"latency_ms" or "mflops"): higher top-1 is better, lower cost is better.
"""

from __future__ import annotations

from typing import Any, Sequence

Point = dict[str, Any]


def pareto_front(points: Sequence[Point], x: str) -> list[Point]:
    """The points no other point beats on both lower `x` and higher top-1, by increasing `x`."""
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (p[x], -p["top1_val"])):
        if p["top1_val"] > best:
            front.append(p)
            best = p["top1_val"]
    return front


def hypervolume(points: Sequence[Point], x: str, ref_x: float, ref_top1: float = 0.0) -> float:
    """The area (cost units x top-1) that `points` dominate inside the box from the reference point
    (`ref_x`, `ref_top1`) towards lower cost and higher top-1. Points beyond the reference add nothing."""
    area, floor = 0.0, ref_top1
    for p in pareto_front([p for p in points if p[x] <= ref_x and p["top1_val"] > ref_top1], x):
        area += (ref_x - p[x]) * (p["top1_val"] - floor)  # a front point by x is above every earlier one
        floor = p["top1_val"]
    return area


def progress(top1s: Sequence[float | None]) -> list[float | None]:
    """Best top-1 so far after each evaluation, given each evaluation's top-1 (None: not feasible
    for this target); None until the first feasible one."""
    out: list[float | None] = []
    best: float | None = None
    for top1 in top1s:
        if top1 is not None and (best is None or top1 > best):
            best = top1
        out.append(best)
    return out
