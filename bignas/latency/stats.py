"""How two sets of timings agree: shares within 5 / 10 %, errors, rank correlations, the noise
floor of a re-measurement. Used by `latency-check` and by the device runner, so no torch here."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np


def noise_floor(first: Sequence[float], second: Sequence[float]) -> dict[str, Any]:
    """How the same models' second measurement differs from their first: the shares within 5 % and
    10 %, and `noise_floor_pct`, the 90th percentile of the difference in percent."""
    if not len(first):
        return {"repeat_n": 0, "repeat_within_5pct": None, "repeat_within_10pct": None, "noise_floor_pct": None}
    change = np.abs(np.asarray(second, dtype=float) / np.asarray(first, dtype=float) - 1)
    return {"repeat_n": len(first), "repeat_within_5pct": round(float(np.mean(change <= 0.05)), 4),
            "repeat_within_10pct": round(float(np.mean(change <= 0.10)), 4),
            "noise_floor_pct": round(float(100 * np.percentile(change, 90)), 3)}


def summary(predicted: np.ndarray, measured: np.ndarray) -> dict[str, Any]:
    """Fractions within 5% / 10%, mean, median and worst absolute error (percent), rank correlations."""
    error = np.abs(predicted - measured) / measured
    return {"n": int(len(measured)), "within_5pct": round(float(np.mean(error <= 0.05)), 4),
            "within_10pct": round(float(np.mean(error <= 0.10)), 4), "mae_pct": round(float(100 * error.mean()), 3),
            "median_error_pct": round(float(100 * np.median(error)), 3),
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
