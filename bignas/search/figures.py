"""Search figures: one target's Pareto front beside its progress curve, and several searches on one figure."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from bignas.plots import figure, save_figure

X_LABELS = {"latency_ms": "predicted {stat} latency on {target} (ms)", "mflops": "MFLOPs (multiply-adds)"}


def plot_result(result: dict[str, Any], path: Path) -> None:
    """Left: every evaluated child, the front, the best child and the budget. Right: best feasible
    val top-1 against evaluations spent."""
    x = result["x"]
    fig, axes = figure(11, 4.5, cols=2)
    ax, curve = axes[0]
    pts = result["evaluated"]
    ax.scatter([p[x] for p in pts], [p["top1_val"] for p in pts], s=14, alpha=0.5, label="evaluated")
    _front(ax, result, "C1", "Pareto front")
    best = result["best"]
    if best is not None:
        ax.scatter([best[x]], [best["top1_val"]], marker="*", s=160, color="C3", zorder=3,
                   label="best within budget")
    if result["budget_x"] is not None:
        ax.axvline(result["budget_x"], ls="--", color="gray", label="budget")
    ax.set_xlabel(x_label(result))
    ax.set_ylabel("val top-1")
    ax.set_title(f"{result['strategy']} search, {len(pts)} children")
    ax.legend(loc="lower right", fontsize=8)
    _progress(curve, result, "C0", result["strategy"])
    curve.set_title(f"hypervolume {result['hypervolume']['normalised']:.4f} (normalised)")
    save_figure(fig, path, dpi=110)


def plot_compare(docs: Sequence[dict[str, Any]], labels: Sequence[str], path: Path) -> None:
    """One row per target found in any document: the searches' fronts (left) and progress (right)."""
    targets = list(dict.fromkeys(r["target"] for doc in docs for r in doc["devices"]))
    fig, axes = figure(11, 4.2 * len(targets), rows=len(targets), cols=2)
    for row, target in zip(axes, targets):
        front_ax, curve_ax = row
        for i, (doc, label) in enumerate(zip(docs, labels)):
            for result in doc["devices"]:
                if result["target"] == target:
                    hv = result["hypervolume"]["normalised"]
                    _front(front_ax, result, f"C{i % 10}", f"{label} (HV {hv:.4f})")
                    _progress(curve_ax, result, f"C{i % 10}", label)
                    front_ax.set_xlabel(x_label(result))
        front_ax.set_ylabel("val top-1")
        front_ax.set_title(f"Pareto fronts, target {target}")
        front_ax.legend(loc="lower right", fontsize=8)
        curve_ax.set_title(f"progress, target {target}")
    save_figure(fig, path, dpi=100)


def _front(ax: Any, result: dict[str, Any], color: str, label: str) -> None:
    front, x = result["pareto"], result["x"]
    ax.plot([p[x] for p in front], [p["top1_val"] for p in front], "o-", color=color, ms=4, label=label)


def _progress(ax: Any, result: dict[str, Any], color: str, label: str) -> None:
    steps = [(i + 1, top1) for i, top1 in enumerate(result["progress"]) if top1 is not None]
    ax.step([s for s, _ in steps], [t for _, t in steps], where="post", color=color, label=label)
    ax.set_xlabel("accuracy evaluations spent")
    ax.set_ylabel("best feasible val top-1 so far")
    ax.legend(loc="lower right", fontsize=8)


def x_label(result: dict[str, Any]) -> str:
    # Results written before budgets had a statistic were on p50.
    return X_LABELS[result["x"]].format(target=result["target"], stat=result.get("latency_stat") or "p50")
