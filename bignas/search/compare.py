"""`bignas compare`: several searches' fronts and progress curves on one figure, and their figures side by side.

This is how a user picks a strategy: run each one on the same run, targets and budget, then
compare the OUT folders. Each folder's search.json is checked for the fields the figure reads.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from bignas.io import read_json
from bignas.search.figures import plot_compare
from bignas.search.problem import SearchError

RESULT_FIELDS = ("target", "strategy", "x", "pareto", "progress", "hypervolume", "best")


def read_search(out: str | Path) -> dict[str, Any]:
    """The search.json of OUT, refused with the file and field named when a figure could not be drawn from it."""
    path = Path(out) / "search.json"
    if Path(out).is_file():
        path = Path(out)
    doc = read_json(path, "search result (give the OUT folder of 'bignas search')", SearchError)
    results = doc.get("devices") if isinstance(doc, dict) else None
    if not isinstance(results, list) or not results:
        raise SearchError(f"{path}: field 'devices' must be a non-empty list of target results")
    for i, result in enumerate(results):
        missing = [k for k in RESULT_FIELDS if not isinstance(result, dict) or k not in result]
        if missing:
            raise SearchError(f"{path}: field 'devices[{i}].{missing[0]}' is missing (a search.json of an "
                              f"older bignas: run the search again)")
        x = result["x"]
        for j, p in enumerate(result["pareto"]):
            if not all(isinstance(p.get(k), (int, float)) and math.isfinite(p[k]) for k in (x, "top1_val")):
                raise SearchError(f"{path}: field 'devices[{i}].pareto[{j}]' needs finite '{x}' and 'top1_val'")
        if not all(t is None or isinstance(t, (int, float)) for t in result["progress"]):
            raise SearchError(f"{path}: field 'devices[{i}].progress' must hold numbers or nulls")
        if not isinstance(result["hypervolume"], dict) or "normalised" not in result["hypervolume"]:
            raise SearchError(f"{path}: field 'devices[{i}].hypervolume.normalised' is missing")
    return doc


def compare(outs: list[str], figure_path: str | Path, labels: list[str] | None = None) -> list[dict[str, Any]]:
    """Plot the searches in `outs` on one figure at `figure_path` (PNG); return one summary row per
    search and target: best val top-1, hypervolume, evaluations."""
    if labels and len(labels) != len(outs):
        raise SearchError(f"{len(outs)} searches but {len(labels)} labels: give one --label per search, or none")
    if Path(figure_path).suffix.lower() != ".png":
        raise SearchError(f"--out {figure_path}: the figure is written as PNG, so name it *.png")
    if Path(figure_path).is_dir():
        raise SearchError(f"--out {figure_path} is a folder; name the PNG file to write")
    docs = [read_search(out) for out in outs]
    stats: dict[str, set] = {}  # results written before budgets had a statistic were on p50
    for doc in docs:
        for r in doc["devices"]:
            stats.setdefault(r["target"], set()).add((r.get("latency_stat") or "p50") if r["x"] == "latency_ms" else None)
    mixed = sorted(t for t, s in stats.items() if len(s) > 1)
    if mixed:
        raise SearchError(f"target {mixed[0]}: the searches' latency budgets are on different statistics "
                          f"({', '.join(sorted(map(str, stats[mixed[0]])))}); their fronts and hypervolumes do not "
                          f"compare: compare searches run with the same --latency-stat")
    labels = labels or [f"{doc.get('strategy', '?')} seed {doc.get('seed', '?')}" for doc in docs]
    plot_compare(docs, labels, Path(figure_path))
    return [{"search": label, "target": r["target"], "strategy": r["strategy"],
             "evaluated": len(r["progress"]), "best_top1_val": r["best"]["top1_val"] if r["best"] else None,
             "hypervolume": r["hypervolume"]["normalised"]}
            for doc, label in zip(docs, labels) for r in doc["devices"]]
