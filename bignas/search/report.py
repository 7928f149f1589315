"""The search.json document, the Pareto front and plot, and the output folder.

OUT holds search.json, one plot per target of its Pareto front and progress curve (pareto.png, or
pareto-NAME.png for several)
and the best child of each target as an architecture file that `bignas export --arch` reads
(best.json, or best-NAME.json for several). The folder is written whole or not at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bignas.io import atomic_dir, check_output_dir, write_json
from bignas.search.figures import plot_result
from bignas.search.front import hypervolume, pareto_front, progress
from bignas.search.problem import Problem, Search, SearchError, Target

OUTPUTS = ("search.json", "pareto*.png", "best*.json")  # what a search writes into OUT


def document(problem: Problem, strategy: str, budget: int, seed: int, settings: dict[str, Any],
             searches: list[Search], guided: dict[str, Any] | None = None,
             halving: dict[str, Any] | None = None) -> dict[str, Any]:
    """The search.json document: the problem, and one result per target ("devices", kept for compatibility).
    `guided`: the predictor's settings of a guided search (`guided.GuidedSettings`), else None;
    `halving`: the settings of successive halving (`halving.HalvingSettings`), else None (full fidelity)."""
    fidelity = {"method": "successive-halving", **halving} if halving is not None else {"method": "full"}
    return {"space": problem.space.name, "space_hash": problem.space.hash, "strategy": strategy,
            "strategy_settings": settings, "predictor": guided, "fidelity": fidelity, "budget": budget, "seed": seed,
            "constraints": {"max_mflops": problem.max_mflops, "max_params_m": problem.max_params_m,
                            "max_weights_mb": problem.max_weights_mb, "max_activation_mb": problem.max_activation_mb,
                            "devices": [{"name": t.name, "table": str(t.table.path), "max_latency_ms": t.max_ms,
                                         "latency_stat": t.stat, "precision": t.table.precision}
                                        for t in problem.targets]},
            "devices": [target_result(problem, target, search) for search in searches for target in search.targets]}


def target_result(problem: Problem, target: Target | None, search: Search) -> dict[str, Any]:
    """One target's result: every child the search evaluated, the Pareto front, the best child that
    meets this target's budgets (highest top-1; among equals, the cheapest), the best feasible top-1
    after each evaluation (`progress`) and the hypervolume of the feasible children."""
    space = problem.space
    name = target.name if target is not None else "any"
    x = "latency_ms" if target is not None else "mflops"
    evaluated, feasible, top1s = [], [], []
    predicted = search.notes.get("predicted", {})
    for e in search.evaluated:
        point = {"arch": e.child.to_dict(space), "hash": e.child.hash, "top1_val": e.top1,
                 "latency_ms": e.costs["latency_ms"].get(name), "mflops": e.costs["mflops"],
                 "params_m": e.costs["params_m"]}
        if e.child.hash in predicted:  # a guided search: what the predictor said, beside the measurement
            point["predicted_top1"] = predicted[e.child.hash]
        if "memory" in e.costs:  # with a memory budget
            point.update(e.costs["memory"].summary())
        evaluated.append(point)
        ok = len(search.targets) == 1 or not problem.violations(e.child, target)
        if ok:
            feasible.append(point)
        top1s.append(e.top1 if ok else None)
    best = max(feasible, key=lambda p: (p["top1_val"], -p[x])) if feasible else None
    budget_x = target.max_ms if target is not None else problem.max_mflops
    # The reference point is the problem's, never the search's, so searches of one problem compare:
    # the budget, or with none the largest child's cost; and top-1 0.
    largest = problem.costs(space.max())
    ref_x = budget_x if budget_x is not None else (largest["latency_ms"][name] if target is not None
                                                   else largest["mflops"])
    hv = hypervolume(feasible, x, ref_x)
    considered = search.considered
    return {"target": name, "device": name,  # "device": the name before targets, kept for readers of it
            "table": str(target.table.path) if target else None,
            "max_latency_ms": target.max_ms if target else None,
            "latency_stat": target.stat if target else None,
            "precision": target.table.precision if target else "fp32", "strategy": search.strategy, "x": x,
            "budget_x": budget_x,
            "best": best, "evaluated": evaluated, "pareto": pareto_front(feasible, x),
            "progress": progress(top1s),
            "hypervolume": {"value": hv, "normalised": hv / ref_x,
                            "reference": {x: ref_x, "top1_val": 0.0}},
            "predictor": search.notes.get("predictor"),
            "fidelity": search.notes.get("fidelity"),  # successive halving: its rungs, low-fidelity top-1s
            "candidates_considered": considered,
            "overhead_ms_per_candidate": round(1e3 * search.overhead_s / max(considered, 1), 4),
            "evaluation_s": round(search.eval_s, 4), "overhead_s": round(search.overhead_s, 4)}


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
            plot_result(result, tmp / f"pareto{suffix}.png")
            if result["best"] is not None:
                write_json(tmp / f"best{suffix}.json", result["best"]["arch"])
