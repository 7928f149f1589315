"""`bignas search`: open a trained run and latency tables, search, write OUT."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from tqdm import tqdm

from bignas.latency.fit import p90_scale
from bignas.latency.table import read_table
from bignas.search import driver
from bignas.quantize import FINALISTS, Calibration
from bignas.search.evaluator import Evaluator
from bignas.search.guided import GuidedSettings, make_guided
from bignas.search.halving import HalvingSettings, make_halving, rung_settings
from bignas.search.int8 import int8_evaluator, pick_int8
from bignas.search.problem import Problem, SearchError, Target
from bignas.search.report import check_out, write_results
from bignas.search.strategies import get_strategy, make_settings
from bignas.space import SearchSpace
from bignas.train.distributed import Distributed
from bignas.train.run_dir import TrainedRun


def search_run(run: str | Path, tables: list[str], limits: list[float], *, out: str | Path,
               max_mflops: float | None = None, max_params_m: float | None = None,
               max_weights_mb: float | None = None, max_activation_mb: float | None = None,
               strategy: str = "coarse-to-fine", options: list[str] | None = None, budget: int = 40, seed: int = 0, data: str | None = None,
               device: str = "auto", quiet: bool = False, latency_stat: str = "p50",
               int8: Calibration = Calibration(), int8_finalists: int = FINALISTS,
               guided: GuidedSettings | None = None, halving: HalvingSettings | None = None) -> dict[str, Any] | None:
    """Search the run's supernet for the best child per table under its budget; write OUT/search.json,
    the Pareto plots and the best children (see `report.write_results`). Returns the search.json
    document (None on ranks other than 0 under torchrun). `options`: the strategy's `key=value`
    settings (see `strategies.make_settings`). `latency_stat`: the budgets are on p50 or p90.
    `guided`: screen candidates on an accuracy predictor fitted on the run's accuracy cache and on
    the search's evaluations (see `search.guided`); the budget counts real evaluations only.
    `halving`: score the candidates at low fidelity first, then promote the best by successive
    halving up to the full estimate (see `search.halving`); the budget counts candidates."""
    if limits and len(limits) != len(tables):
        raise SearchError(f"{len(tables)} latency tables but {len(limits)} latency budgets: give one budget per table")
    if latency_stat != "p50" and not tables:
        raise SearchError(f"--latency-stat {latency_stat} needs a --table: the statistic is of a table's device")
    if budget < 1:
        raise SearchError(f"the search budget must be at least 1 evaluation, got {budget}")
    if int8_finalists < 1:
        raise SearchError(f"--int8-finalists must be at least 1, got {int8_finalists}")
    info = get_strategy(strategy)
    settings = make_settings(strategy, options)
    check_out(out)

    dist = Distributed.from_env(device)  # under torchrun, each process evaluates on its own GPU
    try:
        trained = TrainedRun.open(run, dist.device)
        trained.require_supernet("a search")
        data = data or trained.config.data
        dataset = trained.dataset(data)
        problem = Problem(trained.space, _targets(trained.space, tables, limits, latency_stat), max_mflops, max_params_m,
                          max_weights_mb, max_activation_mb)
        searches = 1 if info.multi_target else max(1, len(problem.targets))
        rungs = rung_settings(halving) if halving is not None else []
        per_search = budget
        for _ in rungs:  # at most this many children reach each higher rung (one target)
            per_search += math.ceil(halving.keep * per_search)
        with tqdm(total=per_search * searches, unit="child", desc="search", disable=quiet or not dist.is_main,
                  dynamic_ncols=True) as bar:
            def evaluator_at(calibration_images: int, val_images: int | None) -> Evaluator:
                return Evaluator(trained.supernet, trained.space, dataset, trained.dir.accuracy_file,
                                 data_spec=data, calibration_images=calibration_images,
                                 batch_size=trained.config.eval.batch_size, rank=dist.rank,
                                 world_size=dist.world_size, on_result=lambda: bar.update(1), val_images=val_images)

            evaluator = evaluator_at(trained.config.eval.calibration_images, None)  # the full estimate
            lower = [evaluator_at(r["calibration_images"], r["val_images"]) for r in rungs]
            first = lower[0] if lower else evaluator
            prior = first.known_children() if guided is not None else ()
            doc = driver.run(strategy, problem, first, budget, seed, settings, guided, prior, halving,
                             [*lower[1:], evaluator] if lower else ())
        quantized = [t for t in problem.targets if t.table.precision == "int8"]
        for target in quantized:
            fmt = target.table.profile.int8
            with tqdm(total=int8_finalists, unit="child", desc=f"int8 finalists, {target.name}",
                      disable=quiet or not dist.is_main, dynamic_ncols=True) as bar:
                evaluate = int8_evaluator(trained, dataset, data, fmt, int8, dist.rank, dist.world_size,
                                          on_result=lambda: bar.update(1))
                for result in doc["devices"]:
                    if result["target"] == target.name:
                        pick_int8(problem, result, evaluate, int8_finalists, fmt, int8)
    finally:
        dist.close()
    doc.update(run=str(run), data=data, evaluated_fresh=evaluator.fresh + sum(e.fresh for e in lower),
               cache_lines_skipped=evaluator.skipped)
    if not dist.is_main:
        return None
    write_results(doc, Path(out))
    return doc


def search_command(args: argparse.Namespace) -> int:
    """`bignas search`: the command line's arguments to `search_run`; prints the best child per target (JSON)."""
    doc = search_run(args.run, args.table or [], args.max_latency_ms or [], out=args.out,
                     max_mflops=args.max_mflops, max_params_m=args.max_params_m, max_weights_mb=args.max_weights_mb,
                     max_activation_mb=args.max_activation_mb, strategy=args.strategy,
                     options=args.option or [], budget=args.budget, seed=args.seed, data=args.data,
                     device=args.device, quiet=args.quiet, latency_stat=args.latency_stat,
                     int8=Calibration(args.int8_method, args.int8_images), int8_finalists=args.int8_finalists,
                     guided=make_guided(args.predictor_option or []) if args.predictor else None,
                     halving=make_halving(args.fidelity_option or []) if args.fidelity == "successive-halving" else None)
    if doc is not None:
        print(json.dumps({"out": args.out, "devices": [
            {"device": r["target"], "top1_val": b["top1_val"], "latency_ms": b["latency_ms"],
             "latency_stat": r.get("latency_stat"),
             "mflops": round(b["mflops"], 4), "params_m": round(b["params_m"], 6), "arch": b["arch"],
             "hypervolume": round(r["hypervolume"]["normalised"], 6)} if (b := r["best"]) is not None
            else {"device": r["target"], "best": None}
            for r in doc["devices"]]}))
    return 0


def _targets(space: SearchSpace, tables: list[str], limits: list[float], stat: str) -> tuple[Target, ...]:
    """One target per table, named by its profile (made unique by position when two share one);
    refuses a table that cannot predict `stat`."""
    targets, names = [], set()
    for i, path in enumerate(tables):
        table = read_table(path, space.hash)
        if stat == "p90":
            p90_scale(table)
        name = table.header["profile"] if table.header["profile"] not in names else f"{table.header['profile']}-{i}"
        names.add(name)
        targets.append(Target(name, table, limits[i] if limits else None, stat))
    return tuple(targets)
