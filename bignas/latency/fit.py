"""From block times to whole-child latency: the calibration fit and the one `predict`.

Isolated blocks do not add up to a whole model: each block timed alone pays a full ONNX Runtime
call (input checks, output allocation, thread hand-off) and runs with cold caches, while in the
child it is fused into one graph. So the prediction is a fit on whole children timed end to end,
in reference ratios (times the table's `reference_ms` for milliseconds):

    latency ~ a * (sum of the child's block ratios) + c * (number of blocks) + b
              + w * (weight MB) + v * (activation MB)

`c` absorbs the per-call overhead every block paid when timed alone, `b` the whole model's own
call; `w` and `v` what blocks timed alone never see: a whole child's weights and activations
competing for the caches. Which terms are free is chosen per table by leave-one-out
cross-validation on its children (`MODELS`); the others stay 0. No torch here.
"""

from __future__ import annotations

import functools
import random

import numpy as np

from bignas.cost import entry_cost
from bignas.latency import STATS
from bignas.latency.keys import BlockKey, child_keys
from bignas.plan import Entry
from bignas.latency.table import LatencyTable, TableError, adds_time_per_block, finite_number, positive_number
from bignas.space import Child, SearchSpace

TERMS = ("a", "c", "b", "w", "v")  # coefficients of: block-ratio sum, block count, 1, weight MB, activation MB
# Candidate models (their free terms), in order of preference at equal cross-validated error.
MODELS = {"blocks": ("a", "c", "b"), "blocks+weights": ("a", "c", "b", "w"),
          "blocks+activations": ("a", "c", "b", "v"), "blocks+both": ("a", "c", "b", "w", "v")}
CV_TIE = 1e-4  # held-out relative errors closer than 0.01 percentage points are a tie
# When the full fit of "blocks" is degenerate (few, alike or noisy children): fewer terms.
FALLBACKS = (("a", "b"), ("a",))


def calibration_children(space: SearchSpace, n: int, seed: int = 0) -> list[Child]:
    """The smallest, the largest and random children, `n` distinct in all (the ends anchor the fit)."""
    return space.distinct_samples(random.Random(seed), n, first=(space.min(), space.max()))


@functools.lru_cache(maxsize=1 << 16)  # asked for every block of every candidate a search considers
def entry_megabytes(entry: Entry) -> tuple[float, float]:
    """(weights, activations) of one block in fp32 megabytes: its parameters, and its input plus
    its expanded (mid) feature map, the largest tensors it reads and writes."""
    channels = entry.in_ch + getattr(entry, "mid_ch", 0)
    return 4 * entry_cost(entry).params_m, 4e-6 * entry.resolution ** 2 * channels


def features(table: LatencyTable, space: SearchSpace, child: Child,
             keys: list[BlockKey] | None = None) -> tuple[float, float, float, float, float]:
    """The child's values of the `TERMS`: its blocks' summed ratios, their number, 1, and its weight
    and activation megabytes. `keys`: the child's `child_keys`, when the caller has them (one
    child, several tables)."""
    total = weight_mb = activation_mb = 0.0
    keys = child_keys(space, child) if keys is None else keys
    for key in keys:
        entry = table.entries.get(str(key))
        if entry is None:
            raise TableError(f"{table.path}: no entry for block '{key}' (a table of another space?)")
        total += entry["ratio"]
        w, v = entry_megabytes(key.entry)
        weight_mb += w
        activation_mb += v
    return total, float(len(keys)), 1.0, weight_mb, activation_mb


def _solve(x: np.ndarray, y: np.ndarray, terms: tuple[str, ...]) -> np.ndarray:
    """Least squares on the relative error (every child counts alike, fast or slow) over `terms`."""
    columns = [TERMS.index(t) for t in terms]
    solution, *_ = np.linalg.lstsq(x[:, columns] / y[:, None], np.ones_like(y), rcond=None)
    k = np.zeros(len(TERMS))
    k[columns] = solution
    return k


def _admissible(k: np.ndarray, table: LatencyTable) -> bool:
    """A finite fit in which every block adds time (a larger child is never predicted faster)."""
    return bool(np.isfinite(k).all()) and adds_time_per_block(dict(zip(TERMS, k.tolist())), table.entries)


def fit(table: LatencyTable, space: SearchSpace) -> dict[str, float]:
    """Fit each candidate model on the table's whole children, keep the one with the lowest
    leave-one-out error; the calibration with its fit and cross-validated errors."""
    n = len(table.children)
    if n < 4:
        raise TableError(f"{table.path}: {n} whole children timed; calibration needs at least 4")
    for i, c in enumerate(table.children):
        if not (isinstance(c.get("ratio"), (int, float)) and np.isfinite(c["ratio"]) and c["ratio"] > 0):
            raise TableError(f"{table.path}: field 'children[{i}].ratio' is {c.get('ratio')!r}, not a positive "
                             f"number: that child's timing went wrong; re-time it")
    x = np.array([features(table, space, space.child_from_dict(c["arch"], f"{table.path}: children"))
                  for c in table.children])
    y = np.array([c["ratio"] for c in table.children])
    scored = {}
    for name, terms in MODELS.items():
        if n < len(terms) + 2:  # too few children to fit and hold one out
            continue
        k = _solve(x, y, terms)
        if not _admissible(k, table):
            continue
        held_out = []
        for i in range(n):
            keep = np.arange(n) != i
            ki = _solve(x[keep], y[keep], terms)
            held_out.append(abs(x[i] @ ki - y[i]) / y[i])
        scored[name] = (float(np.mean(held_out)), k, np.array(held_out))
    if scored:
        best = min(v[0] for v in scored.values())
        name = next(m for m in scored if scored[m][0] <= best + CV_TIE)  # the simplest as good as the best
        _, k, held_out = scored[name]
    else:  # degenerate: the fewest terms that give an admissible fit
        name, held_out = "blocks", None
        for terms in FALLBACKS:
            k = _solve(x, y, terms)
            if _admissible(k, table):
                break
    if not (np.isfinite(k).all() and k[0] > 0):
        raise TableError(f"{table.path}: the calibration fit has slope a = {float(k[0]):g} (must be a positive "
                         f"number): the {n} whole children's times do not grow with their blocks' times; "
                         f"re-time them on a quieter machine or with more --children")
    error = np.abs(x @ k - y) / y
    out = {**dict(zip(TERMS, k.tolist())), "model": name, "children": n,
           "fit_mae_pct": float(100 * error.mean()), "fit_worst_pct": float(100 * error.max())}
    tails = [tail(c) for c in table.children]
    if all(t is not None for t in tails):
        # The 90th percentile of a whole child's runs is a near-constant multiple of its median
        # (the same host, the same kind of model), so p90 is predicted as p50 times its median.
        out["p90_over_p50"] = float(np.median(tails))
    if held_out is not None:
        out |= {"cv_mae_pct": float(100 * held_out.mean()), "cv_worst_pct": float(100 * held_out.max()),
                "cv_within_5pct": float(np.mean(held_out <= 0.05)), "cv_within_10pct": float(np.mean(held_out <= 0.10)),
                "candidates_cv_mae_pct": {m: round(100 * v[0], 3) for m, v in scored.items()}}
    return out


def tail(child: dict) -> float | None:
    """A timed whole child's p90 over p50: recorded as such, or from the raw times an earlier
    runner kept; None when it is not there or not a number of at least 1."""
    value = child.get("p90_over_p50")
    if value is None and finite_number(child.get("p90_ms")) and positive_number(child.get("ms")):
        value = child["p90_ms"] / child["ms"]
    return float(value) if finite_number(value) and value >= 1 else None


def calibrate(table: LatencyTable, space: SearchSpace) -> LatencyTable:
    """Fit the correction on the table's whole children and store it in the table."""
    table.calibration = fit(table, space)
    return table


def table_stats(table: LatencyTable | None) -> tuple[str, ...]:
    """The latency statistics `table` predicts: none without a table, p50 always, p90 when recorded."""
    if table is None:
        return ()
    return STATS if "p90_over_p50" in (table.calibration or {}) else STATS[:1]


def p90_scale(table: LatencyTable) -> float:
    """What p50 is multiplied by for p90 on `table`'s device; TableError for a table timed before
    bignas recorded p90."""
    scale = (table.calibration or {}).get("p90_over_p50")
    if scale is None:
        raise TableError(f"{table.path}: no 'calibration.p90_over_p50': the table was timed before bignas recorded "
                         f"p90, so it predicts p50 only. For p90, re-time its whole children on its device: here, "
                         f"bignas profile --transfer {table.path} --out NEW.json; on a device without PyTorch, "
                         f"run a new bundle there (bignas profile --bundle) and bignas profile --calibrate")
    return scale


def predict(table: LatencyTable, space: SearchSpace, child: Child, keys: list[BlockKey] | None = None,
            stat: str = "p50") -> float:
    """Predicted latency of `child` in milliseconds, its median (`p50`) or 90th percentile (`p90`)
    over runs: the one code path of search, export and checks. `keys` as for `features`."""
    if stat not in STATS:
        raise ValueError(f"latency statistic {stat!r}: one of {STATS}")
    if table.calibration is None:
        raise TableError(f"{table.path}: not calibrated yet (run: bignas profile --calibrate {table.path})")
    k = table.calibration
    # Plain floats: called for every candidate a search considers, and numpy's per-call cost for
    # five numbers is more than the sum itself.
    ms = table.reference_ms * sum(f * k.get(t, 0.0) for f, t in zip(features(table, space, child, keys), TERMS))
    return ms * p90_scale(table) if stat == "p90" else ms
