"""How many whole children does a table's calibration need? Refits on subsets, checked on fresh children.

For a table and its `latency-check` file (TABLE.check.json: fresh children measured on the same
host), refit the calibration (`bignas.latency.fit.calibrate`, the model chosen by leave-one-out as
`profile` does) on --draws random subsets of n of the table's timed whole children, for each n of
--sizes, and predict the check's children. Prints per n the share of check children within 10 %
and 5 % of their measured p50: median and worst over the draws. No timing: it reads files only, so
it may run beside other work.

    python tools/bench_calibration_children.py --table T.json [--table T2.json ...] --sizes 10 15 20 30

The tables shipped before 25 became `profile`'s default had 30 children each (git show
10f0990:bignas/latency_tables/cpu-1t/cifar-small.json, and its .check.json).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
from pathlib import Path

import numpy as np

from bignas.latency.fit import calibrate, predict
from bignas.latency.stats import summary
from bignas.latency.table import LatencyTable, read_table
from bignas.space import load_space


def shares(table: LatencyTable, space, check: list[dict]) -> tuple[float, float]:
    """Share of `check` children predicted within 10 % and within 5 % of their measured p50."""
    result = summary(np.array([predict(table, space, space.child_from_dict(c["arch"])) for c in check]),
                     np.array([c["measured_ms"] for c in check]))
    return result["within_10pct"], result["within_5pct"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--table", action="append", required=True, help="a latency table with its TABLE.check.json")
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 15, 20, 25, 30],
                        help="calibration children per refit (sizes above a table's children are skipped)")
    parser.add_argument("--draws", type=int, default=40, help="random subsets per size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"{'table':<44} {'n':>3}  within 10 %: median (worst)  within 5 %: median (worst)")
    for path in args.table:
        table = read_table(path)
        space = load_space(table.header["space"])
        check = json.loads(Path(path).with_suffix(".check.json").read_text())["children"]
        rng = random.Random(args.seed)
        for n in [n for n in args.sizes if n <= len(table.children)]:
            draws = [shares(calibrate(LatencyTable(table.header, table.entries, rng.sample(table.children, n)),
                                      space), space, check)
                     for _ in range(args.draws if n < len(table.children) else 1)]
            w10, w5 = zip(*draws)
            print(f"{path:<44} {n:>3}  {statistics.median(w10):.2f} ({min(w10):.2f}){'':<18}"
                  f"{statistics.median(w5):.2f} ({min(w5):.2f})")


if __name__ == "__main__":
    main()
