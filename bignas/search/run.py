"""One search run: per device, the best child under its budgets; search.json and pareto.png."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable

from bignas.seeds import derive_seed
from bignas.io import write_json
from bignas.search.constraints import Constraints, Device, SearchError
from bignas.search.strategies import History, coarse_to_fine, random_search
from bignas.space import Child

STRATEGIES = ("coarse-to-fine", "random")


def search(constraints: Constraints, evaluate: Callable[[list[Child]], list[float]], *, strategy: str,
           budget: int, seed: int) -> dict[str, Any]:
    """Search once per device (or once, with no device) and return the search.json document.

    Devices share `evaluate`, so a child evaluated for one device is free for the next.
    """
    space = constraints.space
    devices: list[Device | None] = list(constraints.devices) or [None]
    for device in devices:  # refuse an infeasible budget before spending any evaluation
        constraints.check_achievable(device)
    results = []
    for device in devices:
        name = device.name if device else "any"
        fits = _counted(lambda c, d=device: constraints.fits(c, d))
        rng = random.Random(derive_seed("search", seed, name))
        eval_time = [0.0]

        def timed(children: list[Child]) -> list[float]:
            start = time.perf_counter()
            try:
                return evaluate(children)
            finally:
                eval_time[0] += time.perf_counter() - start

        start = time.perf_counter()
        if strategy == "coarse-to-fine":
            history = coarse_to_fine(space, fits, timed, budget, rng,
                                     cost=lambda c, d=device: _budget_use(constraints, c, d))
        else:
            history = random_search(space, fits, timed, budget, rng)
        overhead = time.perf_counter() - start - eval_time[0]
        results.append(_device_result(constraints, device, name, strategy, history, overhead, fits.calls))
    return {"space": space.name, "space_hash": space.hash, "strategy": strategy, "budget": budget, "seed": seed,
            "constraints": {"max_mflops": constraints.max_mflops, "max_params_m": constraints.max_params_m,
                            "devices": [{"name": d.name, "table": str(d.table.path), "max_latency_ms": d.max_ms}
                                        for d in constraints.devices]},
            "devices": results}


def search_run(run: str | Path, tables: list[str], limits: list[float], *, out: str | Path,
               max_mflops: float | None = None, max_params_m: float | None = None,
               strategy: str = "coarse-to-fine", budget: int = 40, seed: int = 0, data: str | None = None,
               device: str = "auto", quiet: bool = False) -> dict[str, Any] | None:
    """`bignas search`: load the run and tables, search, write OUT/search.json and the Pareto plots.
    Returns the search.json document (None on ranks other than 0 under torchrun)."""
    from tqdm import tqdm

    from bignas.data import load_dataset
    from bignas.latency.table import read_table
    from bignas.search.evaluator import Evaluator
    from bignas.train.distributed import Distributed
    from bignas.train.recipe import load_run

    if limits and len(limits) != len(tables):
        raise SearchError(f"{len(tables)} --table but {len(limits)} --max-latency-ms: give one budget per table")
    if budget < 1:
        raise SearchError(f"--budget must be at least 1, got {budget}")
    if strategy not in STRATEGIES:
        raise SearchError(f"unknown strategy {strategy!r} (expected one of {', '.join(STRATEGIES)})")
    space, config, supernet = load_run(run, device)
    devices, names = [], set()
    for i, path in enumerate(tables):
        table = read_table(path, space.hash)
        name = table.header["profile"] if table.header["profile"] not in names else f"{table.header['profile']}-{i}"
        names.add(name)
        devices.append(Device(name, table, limits[i] if limits else None))
    constraints = Constraints(space, tuple(devices), max_mflops, max_params_m)
    data = data or config.data
    dataset = load_dataset(data, image_size=config.image_size, workers=config.workers)
    dist = Distributed.from_env(device)
    bar = tqdm(total=budget * max(1, len(devices)), unit="child", desc="search",
               disable=quiet or not dist.is_main, dynamic_ncols=True)
    evaluator = Evaluator(supernet, space, dataset, run, data_spec=data,
                          calibration_images=config.eval.calibration_images, batch_size=config.eval.batch_size,
                          rank=dist.rank, world_size=dist.world_size, on_result=lambda: bar.update(1))
    try:
        doc = search(constraints, evaluator, strategy=strategy, budget=budget, seed=seed)
    finally:
        bar.close()
        dist.close()
    doc.update(run=str(run), data=data, evaluated_fresh=evaluator.fresh)
    if not dist.is_main:
        return None
    write_results(doc, Path(out))
    return doc


def write_results(doc: dict[str, Any], out: Path) -> None:
    """search.json, and one Pareto plot per device (pareto.png, or pareto-DEVICE.png for several)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "search.json", doc)
    several = len(doc["devices"]) > 1
    for result in doc["devices"]:
        name = f"pareto-{result['device']}.png" if several else "pareto.png"
        plot_pareto(result, out / name)


def pareto_front(points: list[dict[str, Any]], x: str) -> list[dict[str, Any]]:
    """The points no other point beats on both lower `x` and higher top-1, by increasing `x`."""
    front, best = [], -1.0
    for p in sorted(points, key=lambda p: (p[x], -p["top1_val"])):
        if p["top1_val"] > best:
            front.append(p)
            best = p["top1_val"]
    return front


def plot_pareto(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bignas.io import atomic_path

    x = result["x"]
    label = {"latency_ms": f"predicted latency on {result['device']} (ms)", "mflops": "MFLOPs (multiply-adds)"}[x]
    fig, ax = plt.subplots(figsize=(6, 4.5))
    pts = result["evaluated"]
    ax.scatter([p[x] for p in pts], [p["top1_val"] for p in pts], s=14, alpha=0.5, label="evaluated")
    front = result["pareto"]
    ax.plot([p[x] for p in front], [p["top1_val"] for p in front], "o-", color="C1", ms=4, label="Pareto front")
    best = result["best"]
    ax.scatter([best[x]], [best["top1_val"]], marker="*", s=160, color="C3", zorder=3, label="best within budget")
    if result["budget_x"] is not None:
        ax.axvline(result["budget_x"], ls="--", color="gray", label="budget")
    ax.set_xlabel(label)
    ax.set_ylabel("val top-1")
    ax.set_title(f"{result['strategy']} search, {len(pts)} children")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


class _counted:
    """A feasibility test that counts its calls (the candidates the search considered)."""

    def __init__(self, fn: Callable[[Child], bool]) -> None:
        self.fn, self.calls = fn, 0

    def __call__(self, child: Child) -> bool:
        self.calls += 1
        return self.fn(child)


def _budget_use(constraints: Constraints, child: Child, device: Device | None) -> float:
    """The largest fraction of any budget `child` uses (1.0 = exactly on a limit)."""
    c = constraints.costs(child)
    uses = [0.0]
    if constraints.max_mflops:
        uses.append(c["mflops"] / constraints.max_mflops)
    if constraints.max_params_m:
        uses.append(c["params_m"] / constraints.max_params_m)
    if device is not None and device.max_ms:
        uses.append(c["latency_ms"][device.name] / device.max_ms)
    return max(uses) if len(uses) > 1 else c["mflops"]


def _device_result(constraints: Constraints, device: Device | None, name: str, strategy: str, history: History,
                   overhead_s: float, considered: int) -> dict[str, Any]:
    space = constraints.space
    evaluated = []
    for child, top1 in history:
        c = constraints.costs(child)
        evaluated.append({"arch": child.to_dict(space), "hash": child.hash, "top1_val": top1,
                          "latency_ms": c["latency_ms"].get(name), "mflops": c["mflops"], "params_m": c["params_m"]})
    x = "latency_ms" if device is not None else "mflops"
    # Best: highest top-1; among equals, the cheapest.
    best = max(evaluated, key=lambda p: (p["top1_val"], -p[x]))
    return {"device": name, "table": str(device.table.path) if device else None,
            "max_latency_ms": device.max_ms if device else None, "strategy": strategy, "x": x,
            "budget_x": device.max_ms if device is not None else constraints.max_mflops,
            "best": best, "evaluated": evaluated, "pareto": pareto_front(evaluated, x),
            "candidates_considered": considered,
            "overhead_ms_per_candidate": round(1e3 * overhead_s / max(considered, 1), 4)}
