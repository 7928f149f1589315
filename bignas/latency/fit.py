"""From block times to whole-child latency: the calibration fit and the one `predict`.

Isolated blocks do not add up to a whole model: each block timed alone pays a full ONNX Runtime
call (input checks, output allocation, thread hand-off) and runs with cold caches, while in the
child it is fused into one graph. So the prediction is a fit on whole children timed end to end:

    latency ~ a * (sum of the child's block ratios) + c * (number of blocks) + b

in reference ratios, times the table's `reference_ms`. `c` absorbs the per-call overhead every
block paid when timed alone, `b` the whole model's own call. No torch here.
"""

from __future__ import annotations

import random

import numpy as np

from bignas.latency.keys import BlockKey, child_keys
from bignas.latency.table import LatencyTable, TableError, adds_time_per_block
from bignas.space import Child, SearchSpace


def calibration_children(space: SearchSpace, n: int, seed: int = 0) -> list[Child]:
    """The smallest, the largest and random children, `n` distinct in all (the ends anchor the fit)."""
    children = {c.hash: c for c in (space.min(), space.max())}
    rng = random.Random(seed)
    for _ in range(100 * n):
        if len(children) >= n:
            break
        child = space.sample(rng)
        children.setdefault(child.hash, child)
    return list(children.values())[:n]


def block_sum(table: LatencyTable, space: SearchSpace, child: Child,
              keys: list[BlockKey] | None = None) -> tuple[float, int]:
    """Sum of the table's ratios over the child's stem, blocks and head, and how many there are.
    `keys`: the child's `child_keys`, when the caller has them (one child, several tables)."""
    total = 0.0
    keys = child_keys(space, child) if keys is None else keys
    for key in keys:
        entry = table.entries.get(str(key))
        if entry is None:
            raise TableError(f"{table.path}: no entry for block '{key}' (a table of another space?)")
        total += entry["ratio"]
    return total, len(keys)


def fit(table: LatencyTable, space: SearchSpace) -> dict[str, float]:
    """Least-squares fit of (a, c, b) on the table's whole children; with its fit error."""
    if len(table.children) < 4:
        raise TableError(f"{table.path}: {len(table.children)} whole children timed; calibration needs at least 4")
    rows, measured = [], []
    for c in table.children:
        total, count = block_sum(table, space, space.child_from_dict(c["arch"], f"{table.path}: children"))
        rows.append((total, count, 1.0))
        measured.append(c["ratio"])
    x, y = np.array(rows), np.array(measured)
    # Few, alike or noisy children can make the full fit degenerate: a <= 0, or a per-block term c
    # so negative that a block subtracts time (a larger child predicted faster). Then drop the
    # per-block term, then the intercept.
    for columns in ((0, 1, 2), (0, 2), (0,)):
        solution, *_ = np.linalg.lstsq(x[:, columns], y, rcond=None)
        a, c, b = (dict(zip(columns, solution)).get(i, 0.0) for i in range(3))
        if adds_time_per_block(a, c, table.entries):
            break
    if not (np.isfinite((a, b, c)).all() and a > 0):
        raise TableError(f"{table.path}: the calibration fit has slope a = {float(a):g} (must be a positive number): "
                         f"the {len(y)} whole children's times do not grow with their blocks' times; "
                         f"re-time them on a quieter machine or with more --children")
    error = np.abs(x @ (a, c, b) - y) / y
    return {"a": float(a), "c": float(c), "b": float(b), "children": len(y),
            "fit_mae_pct": float(100 * error.mean()), "fit_worst_pct": float(100 * error.max())}


def calibrate(table: LatencyTable, space: SearchSpace) -> LatencyTable:
    """Fit the correction on the table's whole children and store it in the table."""
    table.calibration = fit(table, space)
    return table


def predict(table: LatencyTable, space: SearchSpace, child: Child, keys: list[BlockKey] | None = None) -> float:
    """Predicted latency of `child` in milliseconds: the one code path of search, export and checks.
    `keys` as for `block_sum`."""
    if table.calibration is None:
        raise TableError(f"{table.path}: not calibrated yet (run: bignas profile --calibrate {table.path})")
    total, count = block_sum(table, space, child, keys)
    k = table.calibration
    return table.reference_ms * (k["a"] * total + k["c"] * count + k["b"])
