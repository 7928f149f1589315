"""`bignas latency-check`: predictions of a table against fresh children timed end to end."""

from __future__ import annotations

import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bignas.io import write_json
from bignas.latency import QUICK_CHILDREN, REPEAT_CHILDREN
from bignas.plots import figure, save_figure
from bignas.console import ProgressFn
from bignas.latency.clock import device_differences, table_clock
from bignas.latency.models import export_all
from bignas.latency.fit import predict, table_stats
from bignas.latency.stats import noise_floor, summary
from bignas.latency.table import LatencyTable
from bignas.space import Child, SearchSpace


def fresh_children(space: SearchSpace, table: LatencyTable, n: int, seed: int) -> list[Child]:
    """`n` distinct random children, none of them one the table was calibrated on."""
    taken = {space.child_from_dict(c["arch"]).hash for c in table.children}
    return space.distinct_samples(random.Random(seed), n, taken=taken)


# `--quick` verifies a table on this host when 9 of its 10 children are within 10 % and the median
# error is at most 5 %: a table that meets the profiling targets (95 % within 10 %, 75 % within 5 %)
# passes this about 9 times in 10; one that is off by 10 % on most children never does.
VERIFY_WITHIN_10PCT, VERIFY_MEDIAN_PCT = 0.9, 5.0


def latency_check(table: LatencyTable, space: SearchSpace, n: int = 100, seed: int = 1000,
                  progress: ProgressFn | None = None, repeat: int = REPEAT_CHILDREN,
                  write: bool = True) -> dict[str, Any]:
    """Time `n` fresh children as exported for deployment; compare with `predict`, p50 (the top-level
    figures) and p90 (under "p90", when the table predicts it). Then time the first `repeat` of
    them again (a second pass, after all of the first) to measure the noise floor: how far this host's own
    measurements move (`repeat_within_*`, `noise_floor_pct`: the 90th percentile of the
    re-measurement's difference, in percent). With `write`, TABLE.check.json (every child) and
    TABLE.check.png (scatter) go beside the table. On a host whose fingerprint differs from the
    table's, the check runs and says so in `device_differences`."""
    children = fresh_children(space, table, n, seed)
    repeat = min(repeat, len(children))
    stats = table_stats(table)
    predicted = [{s: predict(table, space, child, stat=s) for s in stats} for child in children]
    with tempfile.TemporaryDirectory() as tmp:
        paths = [Path(tmp) / f"child{i}.onnx" for i in range(len(children))]
        export_all(space, [], list(zip(children, paths)), Path(tmp), progress, int8=table.profile.quantized)
        # Timed once every file is written, as `profile` times its bundle: a check that exported each
        # child between timings (torch's memory and threads churning beside ONNX Runtime) saw its
        # measurements drift by 7 % over 16 minutes (cifar-small, cpu-1t, 2 cores).
        with table_clock(table, strict=False, space=space) as measure:
            measured = []
            for i, path in enumerate(paths):
                if progress:
                    progress("time", i + 1, len(paths))
                measured.append(measure(path))
            again = []
            for i in range(repeat):
                if progress:
                    progress("re-time", i + 1, repeat)
                again.append(measure(paths[i]).p50_ms)
    p50 = np.array([m.p50_ms for m in measured])
    result = {**summary(np.array([p["p50"] for p in predicted]), p50), **noise_floor(p50[:repeat], again),
              "p90": summary(np.array([p["p90"] for p in predicted]), np.array([m.p90_ms for m in measured]))
              if "p90" in stats else None,
              "device_differences": device_differences(table)}
    result["warnings"] = caveats(result)
    if write:
        base = table.path.with_suffix("")
        write_json(f"{base}.check.json", {**result, "seed": seed, "children": [
            {"arch": c.to_dict(space), "predicted_ms": p["p50"], "measured_ms": m.p50_ms,
             **({"predicted_p90_ms": p["p90"]} if "p90" in p else {}), "measured_p90_ms": m.p90_ms,
             **({"remeasured_ms": again[i]} if i < repeat else {})}
            for i, (c, p, m) in enumerate(zip(children, predicted, measured))]})
        plot(np.array([p["p50"] for p in predicted]), p50, result, Path(f"{base}.check.png"), table)
    return result


def quick_check(table: LatencyTable, space: SearchSpace, seed: int = 1000,
                progress: ProgressFn | None = None) -> dict[str, Any]:
    """`latency-check --quick`: QUICK_CHILDREN children, each timed twice, nothing written; `verified`
    when this host is the table's device and the predictions meet the stated rule."""
    result = latency_check(table, space, QUICK_CHILDREN, seed, progress, repeat=QUICK_CHILDREN, write=False)
    result["rule"] = (f"verified: this host's fingerprint is the table's, at least {VERIFY_WITHIN_10PCT:.0%} of "
                      f"{QUICK_CHILDREN} children within 10 % and a median error of at most {VERIFY_MEDIAN_PCT:g} %")
    result["verified"] = (not result["device_differences"] and result["within_10pct"] >= VERIFY_WITHIN_10PCT
                          and result["median_error_pct"] <= VERIFY_MEDIAN_PCT)
    return result


def caveats(result: dict[str, Any]) -> list[str]:
    """What makes the check's figures less than they seem."""
    out = []
    if result["device_differences"]:
        out.append(f"this host is not the table's device ({'; '.join(result['device_differences'])}): the "
                   f"figures say how the table does here; transfer it (bignas profile --transfer)")
    floor = result["noise_floor_pct"]
    if floor is not None and floor > 10:
        out.append(f"noise floor {floor:.1f} %: this host's own re-measurements differ by more than 10 % for "
                   f"1 child in 10, so '90 % within 10 %' cannot be confirmed here now (a busy or "
                   f"throttled host? run the check alone)")
    elif floor is not None and floor > 5:
        out.append(f"noise floor {floor:.1f} %: re-measurements differ by more than 5 % for 1 child in 10, so "
                   f"within_5pct is bounded by the host's noise, not only by the table")
    return out


def plot(predicted: np.ndarray, measured: np.ndarray, result: dict[str, Any], path: Path,
         table: LatencyTable) -> None:
    fig, ax = figure(5, 5)
    lo, hi = 0.9 * min(predicted.min(), measured.min()), 1.1 * max(predicted.max(), measured.max())
    line = np.array([lo, hi])
    ax.plot(line, line, "k-", lw=1, label="predicted = measured")
    ax.fill_between(line, line / 1.1, line * 1.1, color="0.9", label="within 10%")
    ax.scatter(measured, predicted, s=12)
    ax.set(xlabel="measured p50 (ms)", ylabel="predicted p50 (ms)", xlim=(lo, hi), ylim=(lo, hi),
           title=f"{table.header['profile']} / {table.header['space']}: within 10% {result['within_10pct']:.2f}, "
                 f"Spearman {result['spearman']:.3f}{p90_text(result)}\n{floor_text(result)}")
    ax.title.set_fontsize(9)
    ax.legend(loc="upper left", fontsize=8)
    save_figure(fig, path, dpi=100)


def floor_text(result: dict[str, Any]) -> str:
    if not result["repeat_n"]:
        return "not re-measured: no noise floor"
    return (f"re-measured {result['repeat_n']}: {result['repeat_within_5pct']:.2f} within 5%, noise floor "
            f"{result['noise_floor_pct']:.1f}%")


def p90_text(result: dict[str, Any]) -> str:
    return "" if result["p90"] is None else f"; p90 within 10% {result['p90']['within_10pct']:.2f}"
