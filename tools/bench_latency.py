"""Benchmark a device profile end to end: profile + calibration wall time, then latency-check.

    python tools/bench_latency.py --profile cpu-1t --space cifar-small
    python tools/bench_latency.py --profile cpu-1t --space ofa-mbv3 --out latency_tables/cpu-1t/ofa-mbv3.json

Prints one JSON object: machine, threads, profile seconds (wall and CPU), table size and the
latency-check figures (targets for cpu-1t: within_10pct >= 0.90, within_5pct >= 0.60,
spearman >= 0.95 over 100 children; profile + calibration <= 15 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from bignas.console import Progress
from bignas.latency.check import latency_check
from bignas.latency.profiling import default_table_path, profile_device
from bignas.latency.profiles import load_profile
from bignas.latency.table import device_description
from bignas.space import load_space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="cpu-1t")
    parser.add_argument("--space", default="cifar-small")
    parser.add_argument("--out", help="table to write (default latency_tables/PROFILE/SPACE.json)")
    parser.add_argument("--calibration-children", type=int, default=30)
    parser.add_argument("--check-children", type=int, default=100)
    args = parser.parse_args()

    profile, space = load_profile(args.profile), load_space(args.space)
    out = Path(args.out) if args.out else default_table_path(profile, space)
    wall, cpu = time.monotonic(), time.process_time()
    table = profile_device(profile, space, out, args.calibration_children, Progress())
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    check_wall = time.monotonic()
    check = latency_check(table, space, args.check_children, progress=Progress())
    print(json.dumps({
        "machine": device_description(), "load_average": os.getloadavg()[0], "profile": profile.name,
        "threads": profile.intra_op_threads, "space": space.name, "table": str(out), "entries": len(table.entries),
        "calibration_children": len(table.children), "profile_seconds": round(wall, 1),
        "profile_cpu_seconds": round(cpu, 1), "check_seconds": round(time.monotonic() - check_wall, 1),
        "calibration": table.calibration, "latency_check": check}))


if __name__ == "__main__":
    main()
