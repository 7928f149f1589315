"""`bignas latency-check`: predictions of a table against fresh children timed end to end."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bignas.io import write_json
from bignas.plots import figure, save_figure
from bignas.console import ProgressFn
from bignas.latency.clock import table_clock
from bignas.latency.models import export_child
from bignas.latency.fit import predict
from bignas.latency.table import LatencyTable
from bignas.space import Child, SearchSpace


def fresh_children(space: SearchSpace, table: LatencyTable, n: int, seed: int) -> list[Child]:
    """`n` distinct random children, none of them one the table was calibrated on."""
    taken = {space.child_from_dict(c["arch"]).hash for c in table.children}
    rng, children = random.Random(seed), {}
    for _ in range(100 * n):
        if len(children) >= n:
            break
        child = space.sample(rng)
        if child.hash not in taken:
            children.setdefault(child.hash, child)
    return list(children.values())


def latency_check(table: LatencyTable, space: SearchSpace, n: int = 100, seed: int = 1000,
                  progress: ProgressFn | None = None) -> dict[str, Any]:
    """Time `n` fresh children as exported for deployment; compare with `predict`. Writes
    TABLE.check.json (every child) and TABLE.check.png (scatter) beside the table."""
    children = fresh_children(space, table, n, seed)
    predicted, measured = [], []
    with table_clock(table) as measure_ms, tempfile.TemporaryDirectory() as tmp:
        for i, child in enumerate(children):
            if progress:
                progress("check", i + 1, len(children))
            path = Path(tmp) / "child.onnx"
            export_child(space, child, path)
            measured.append(measure_ms(path))
            predicted.append(predict(table, space, child))
    result = summary(np.array(predicted), np.array(measured))
    base = table.path.with_suffix("")
    write_json(f"{base}.check.json", {**result, "seed": seed, "children": [
        {"arch": c.to_dict(space), "predicted_ms": p, "measured_ms": m}
        for c, p, m in zip(children, predicted, measured)]})
    plot(np.array(predicted), np.array(measured), result, Path(f"{base}.check.png"), table)
    return result


def summary(predicted: np.ndarray, measured: np.ndarray) -> dict[str, Any]:
    """Fractions within 5% / 10%, mean and worst absolute error (percent), rank correlations."""
    error = np.abs(predicted - measured) / measured
    return {"n": int(len(measured)), "within_5pct": round(float(np.mean(error <= 0.05)), 4),
            "within_10pct": round(float(np.mean(error <= 0.10)), 4), "mae_pct": round(float(100 * error.mean()), 3),
            "spearman": round(spearman(predicted, measured), 4), "kendall": round(kendall(predicted, measured), 4),
            "worst_pct": round(float(100 * error.max()), 3)}


def ranks(v: np.ndarray) -> np.ndarray:
    """Ranks from 0, ties sharing their average rank."""
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts
    return (first + (counts - 1) / 2)[inverse]


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.corrcoef(ranks(x), ranks(y))[0, 1])


def kendall(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b over all pairs (n is at most a few hundred)."""
    sx, sy = np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :])
    return float((sx * sy).sum() / np.sqrt((sx != 0).sum() * (sy != 0).sum()))


def plot(predicted: np.ndarray, measured: np.ndarray, result: dict[str, Any], path: Path,
         table: LatencyTable) -> None:
    fig, ax = figure(5, 5)
    lo, hi = 0.9 * min(predicted.min(), measured.min()), 1.1 * max(predicted.max(), measured.max())
    line = np.array([lo, hi])
    ax.plot(line, line, "k-", lw=1, label="predicted = measured")
    ax.fill_between(line, line / 1.1, line * 1.1, color="0.9", label="within 10%")
    ax.scatter(measured, predicted, s=12)
    ax.set(xlabel="measured (ms)", ylabel="predicted (ms)", xlim=(lo, hi), ylim=(lo, hi),
           title=f"{table.header['profile']} / {table.header['space']}: within 10% {result['within_10pct']:.2f}, "
                 f"Spearman {result['spearman']:.3f}")
    ax.title.set_fontsize(9)
    ax.legend(loc="upper left", fontsize=8)
    save_figure(fig, path, dpi=100)
