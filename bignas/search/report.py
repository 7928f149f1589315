"""The search.json document, the Pareto front and plot, and the output folder.

OUT holds search.json, one Pareto plot per target (pareto.png, or pareto-NAME.png for several)
and the best child of each target as an architecture file that `bignas export --arch` reads
(best.json, or best-NAME.json for several). The folder is written whole or not at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bignas.io import atomic_dir, check_output_dir, write_json
from bignas.plots import figure, save_figure
from bignas.search.problem import Problem, Search, SearchError, Target

OUTPUTS = ("search.json", "pareto*.png", "best*.json")  # what a search writes into OUT


def document(problem: Problem, strategy: str, budget: int, seed: int, settings: dict[str, Any],
             searches: list[Search]) -> dict[str, Any]:
    """The search.json document: the problem, and one result per target ("devices", kept for compatibility)."""
    return {"space": problem.space.name, "space_hash": problem.space.hash, "strategy": strategy,
            "strategy_settings": settings, "budget": budget, "seed": seed,
            "constraints": {"max_mflops": problem.max_mflops, "max_params_m": problem.max_params_m,
                            "devices": [{"name": t.name, "table": str(t.table.path), "max_latency_ms": t.max_ms}
                                        for t in problem.targets]},
            "devices": [target_result(problem, target, search) for search in searches for target in search.targets]}


def target_result(problem: Problem, target: Target | None, search: Search) -> dict[str, Any]:
    """One target's result: every child the search evaluated, the Pareto front and the best child
    that meets this target's budgets (highest top-1; among equals, the cheapest)."""
    space = problem.space
    name = target.name if target is not None else "any"
    x = "latency_ms" if target is not None else "mflops"
    evaluated, feasible = [], []
    for e in search.evaluated:
        point = {"arch": e.child.to_dict(space), "hash": e.child.hash, "top1_val": e.top1,
                 "latency_ms": e.costs["latency_ms"].get(name), "mflops": e.costs["mflops"],
                 "params_m": e.costs["params_m"]}
        evaluated.append(point)
        if len(search.targets) == 1 or not problem.violations(e.child, target):
            feasible.append(point)
    best = max(feasible, key=lambda p: (p["top1_val"], -p[x])) if feasible else None
    considered = search.considered
    return {"target": name, "device": name,  # "device": the name before targets, kept for readers of it
            "table": str(target.table.path) if target else None,
            "max_latency_ms": target.max_ms if target else None, "strategy": search.strategy, "x": x,
            "budget_x": target.max_ms if target is not None else problem.max_mflops,
            "best": best, "evaluated": evaluated, "pareto": pareto_front(evaluated, x),
            "candidates_considered": considered,
            "overhead_ms_per_candidate": round(1e3 * search.overhead_s / max(considered, 1), 4),
            "evaluation_s": round(search.eval_s, 4), "overhead_s": round(search.overhead_s, 4)}


def pareto_front(points: list[dict[str, Any]], x: str) -> list[dict[str, Any]]:
    """The points no other point beats on both lower `x` and higher top-1, by increasing `x`."""
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (p[x], -p["top1_val"])):
        if p["top1_val"] > best:
            front.append(p)
            best = p["top1_val"]
    return front


def check_out(out: str | Path) -> None:
    """Refuse an OUT that a search must not replace: a file, or a folder holding anything else."""
    check_output_dir(out, OUTPUTS, SearchError, "search")


def write_results(doc: dict[str, Any], out: str | Path) -> None:
    """search.json, the Pareto plots and the best children, built beside OUT and renamed into place
    (an OUT from an earlier search is replaced only once the new one is complete)."""
    check_out(out)
    with atomic_dir(out) as tmp:
        write_json(tmp / "search.json", doc)
        several = len(doc["devices"]) > 1
        for result in doc["devices"]:
            suffix = f"-{result['target']}" if several else ""
            plot_pareto(result, tmp / f"pareto{suffix}.png")
            if result["best"] is not None:
                write_json(tmp / f"best{suffix}.json", result["best"]["arch"])


def plot_pareto(result: dict[str, Any], path: Path) -> None:
    x = result["x"]
    label = {"latency_ms": f"predicted latency on {result['target']} (ms)", "mflops": "MFLOPs (multiply-adds)"}[x]
    fig, ax = figure(6, 4.5)
    pts = result["evaluated"]
    ax.scatter([p[x] for p in pts], [p["top1_val"] for p in pts], s=14, alpha=0.5, label="evaluated")
    front = result["pareto"]
    ax.plot([p[x] for p in front], [p["top1_val"] for p in front], "o-", color="C1", ms=4, label="Pareto front")
    best = result["best"]
    if best is not None:
        ax.scatter([best[x]], [best["top1_val"]], marker="*", s=160, color="C3", zorder=3,
                   label="best within budget")
    if result["budget_x"] is not None:
        ax.axvline(result["budget_x"], ls="--", color="gray", label="budget")
    ax.set_xlabel(label)
    ax.set_ylabel("val top-1")
    ax.set_title(f"{result['strategy']} search, {len(pts)} children")
    ax.legend(loc="lower right", fontsize=8)
    save_figure(fig, path, dpi=110)
