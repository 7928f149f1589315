"""`bignas quickstart`: the three jobs end to end on the embedded dataset, on this CPU.

Train the quickstart recipe (mnist5k, cifar-small), get a cpu-1t latency table true on this host
(the shipped one verified here, or transferred here: see `_table`), search under a latency
budget halfway between the smallest and the largest child, export the best child. Each stage
reuses what an earlier, interrupted run finished.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from bignas.latency.fit import predict
from bignas.latency.device import Progress
from bignas.latency.clock import device_differences
from bignas.latency.profiling import profile_device, table_warnings, verify_or_transfer
from bignas.latency.profiles import load_profile
from bignas.latency.table import LatencyTable, TableError, read_table
from bignas.space import SearchSpace, load_space

PROFILE = "cpu-1t"
SPACE = "cifar-small"
# Accuracy evaluations of the search. On mnist5k the children differ by less than the noise of its val split
# (README: "On the mnist5k quickstart run"), so more would buy time, not accuracy: 3 s each on a slow 2-core host,
# where the quickstart must stay within 10 minutes.
BUDGET = 30


def quickstart(out: str | Path, quiet: bool = False) -> dict:
    out = Path(out)
    start = time.monotonic()
    say = (lambda *a: None) if quiet else (lambda msg: print(f"[quickstart {time.monotonic() - start:5.0f}s] {msg}",
                                                            flush=True))
    run = out / "run"
    say(f"1/4 training the supernet into {run}")
    _train(run, quiet)
    space = load_space(SPACE)
    say(f"2/4 latency table for {PROFILE}")
    table_path, table, how = _table(out, space, quiet, say)
    fastest, slowest = predict(table, space, space.min()), predict(table, space, space.max())
    budget_ms = round((fastest + slowest) / 2, 4)
    say(f"3/4 searching: latency budget {budget_ms:.3f} ms (smallest child {fastest:.3f}, largest {slowest:.3f})")
    _search(run, table_path, budget_ms, out / "search", quiet)
    say("4/4 exporting the best child")
    from bignas.export import export_run_child

    card = export_run_child(run, out / "search" / "best.json", out / "export", [table_path],
                            max_latency_ms=budget_ms)
    summary = {"out": str(out), "table": str(table_path), "table_was": how, "budget_ms": budget_ms, "card": str(out / "export" / "card.json"),
               "seconds": round(time.monotonic() - start, 1)}
    _print_summary(card, budget_ms, summary, quiet)
    return summary


def _train(run: Path, quiet: bool) -> None:
    from bignas.train.config import load_config
    from bignas.train.recipe import Recipe, train_run
    from bignas.train.run_dir import RunDir

    run_dir = RunDir(run)
    if run_dir.final_file.exists():
        return
    resume = run_dir.latest_checkpoint() is not None
    config = run_dir.read_config() if resume else load_config("quickstart.yaml")
    train_run(Recipe(config, run, show_progress=not quiet), resume=resume)


def _table(out: Path, space: SearchSpace, quiet: bool, say) -> tuple[Path, LatencyTable, str]:
    """A table true on this host: one an earlier quickstart made here, else the shipped table
    verified or transferred here (`verify_or_transfer`), else (no shipped table) a full profile."""
    progress = None if quiet else Progress()
    mine = out / "latency_tables" / PROFILE / f"{space.name}.json"
    if mine.exists():  # made here by an earlier quickstart: still this host?
        table = read_table(mine, space.hash)
        if not device_differences(table):
            say(f"    reusing {mine} (made on this host by an earlier quickstart)")
            return mine, table, "reused"
    try:
        shipped = read_table(f"{PROFILE}/{space.name}", space.hash)
    except TableError as e:
        say(f"    no usable shipped table ({e}): profiling this host (a few minutes)")
        table, how = profile_device(load_profile(PROFILE), space, mine, progress=progress), "profiled"
    else:
        table, how, why = verify_or_transfer(shipped, space, mine, progress)
        say(f"    {how} the shipped {PROFILE} table: {why}")
    if how != "verified":
        for warning in table_warnings(table, f"bignas profile --profile {PROFILE} --space {space.name} "
                                             f"--children {2 * len(table.children)}"):
            say(f"    warning: {warning}")
    return Path(table.path), table, how


def _search(run: Path, table_path: Path, budget_ms: float, out: Path, quiet: bool) -> None:
    """Search into OUT, which then holds best.json, the child to export."""
    from bignas.search.command import search_run

    search_run(run, [str(table_path)], [budget_ms], out=out, budget=BUDGET, device="cpu", quiet=quiet)


def _print_summary(card: dict, budget_ms: float, summary: dict, quiet: bool) -> None:
    rows = [("val top-1", f"{card['top1_val']:.4f}"), ("test top-1", f"{card['top1_test']:.4f}"),
            ("resolution", card["arch"]["resolution"]), ("MFLOPs", f"{card['mflops']:.2f}"),
            ("params (M)", f"{card['params_m']:.4f}"), ("latency budget (ms)", f"{budget_ms:.3f}"),
            ("predicted latency p50 / p90 (ms)", _pair(card["predicted_latency_ms"], card["predicted_latency_p90_ms"])),
            ("measured latency p50 / p90 (ms)", _pair(card["measured_latency_ms"], card["measured_latency_p90_ms"])
             if card["measured_latency_ms"] is not None else f"n/a ({card['measured_latency_note']})"),
            ("ONNX max abs diff", f"{card['onnx_max_abs_diff']:.1e}")]
    if not quiet:
        print("\nbest child under the budget, exported to", Path(summary["card"]).parent)
        width = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"  {k:<{width}}  {v}")
        print()
    print(json.dumps(summary))


def _pair(p50: float, p90: float | None) -> str:
    return f"{p50:.3f} / " + (f"{p90:.3f}" if p90 is not None else "n/a (the table predates p90)")
