"""The `bignas` command line: one function per subcommand."""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
from pathlib import Path

from bignas.cost import child_cost
from bignas.errors import BignasError, run_entry_point
from bignas.latency import PROFILE_CHILDREN, QUICK_CHILDREN, REPEAT_CHILDREN, STATS, TRANSFER_CHILDREN
from bignas.latency.profiles import profile_names
from bignas.memory import child_memory
from bignas.quantize import FINALISTS, METHODS, Calibration
from bignas.schema import describe_options
from bignas.search.guided import GuidedSettings
from bignas.search.halving import HalvingSettings
from bignas.space import load_space, space_names
from bignas.cli_args import add_device, out_path, positive
from bignas.train.command import add_train_parsers


def cmd_inspect(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    child = space.named_child(args.arch, random.Random(args.seed))
    print(json.dumps({"space": space.name, "arch": child.to_dict(space), "resolution": child.resolution,
                      **child_cost(space, child).summary(), **child_memory(space, child).summary()}))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    from bignas.latency.command import profile_command

    print(json.dumps(profile_command(args.profile, args.space, args.out, args.bundle, args.calibrate, args.transfer,
                                     args.children, args.quiet)))
    return 0


def cmd_latency_check(args: argparse.Namespace) -> int:
    from bignas.console import Progress
    from bignas.latency.check import latency_check, quick_check
    from bignas.latency.table import check_space, read_table

    if args.children < 2:
        raise BignasError(f"--children {args.children}: rank correlations need at least 2 children")
    table = read_table(args.table)
    space = load_space(args.space or table.header["space"])
    check_space(table, space.hash)
    progress = None if args.quiet else Progress()
    if args.quick:
        result = quick_check(table, space, args.seed, progress)
    else:
        result = latency_check(table, space, args.children, args.seed, progress, args.repeat)
    for warning in result["warnings"]:
        print(f"bignas latency-check: warning: {warning}", file=sys.stderr)
    print(json.dumps(result))
    return 0 if result.get("verified", True) else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    from bignas.evaluate import calibration_count
    from bignas.train.distributed import pick_device
    from bignas.train.run_dir import TrainedRun

    run = TrainedRun.open(args.run, pick_device(args.device))
    space = run.space
    child = space.named_child(args.arch)
    dataset = run.dataset(args.data)
    calibration = calibration_count(dataset, args.calibration_images or run.config.eval.calibration_images)
    top1, _ = run.evaluate(child, dataset, args.split, calibration)
    print(json.dumps({"arch": child.to_dict(space), "resolution": child.resolution, "top1": round(top1, 6),
                      **child_cost(space, child).summary(), "split": args.split,
                      "calibration_images": calibration}))
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    from bignas.search.command import search_command

    return search_command(args)


def cmd_predictor(args: argparse.Namespace) -> int:
    from bignas.search.predictor_run import predictor_run

    print(json.dumps(predictor_run(args.run, samples=args.samples, seed=args.seed, data=args.data,
                                   device=args.device, quiet=args.quiet)))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from bignas.search.compare import compare

    for row in compare(args.searches, args.out, args.label):
        print(json.dumps(row))
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from bignas.export import export_run_child

    int8 = Calibration(args.int8_method, args.int8_images) if args.int8 else None
    card = export_run_child(args.run, args.arch, args.out, args.table or [], args.device, args.max_latency_ms,
                            args.latency_stat, int8)
    print(json.dumps(card))
    return 0


def cmd_quickstart(args: argparse.Namespace) -> int:
    from bignas.quickstart import quickstart

    quickstart(args.out, quiet=args.quiet)
    return 0


MAX_CHILDREN = 10_000  # whole children timed by profile or latency-check: hours already
MAX_BUDGET = 100_000  # accuracy evaluations of one search: days already


def _add_int8_calibration(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--int8-method", choices=METHODS, default=Calibration.method,
                   help=f"how {what} sets activation ranges from the calibration images: ONNX Runtime's "
                        f"calibrators (default: %(default)s)")
    p.add_argument("--int8-images", type=positive(int), default=Calibration.images, metavar="N",
                   help=f"calibration images for {what}, the first N of the fixed BN-recalibration subset of "
                        f"the training split, never val or test (default: %(default)s)")


def _add_latency_stat(p: argparse.ArgumentParser) -> None:
    p.add_argument("--latency-stat", choices=STATS, default="p50",
                   help="the latency statistic budgets are on: p50, the median of runs (default), or p90, their "
                        "90th percentile, for a budget most runs must meet (needs a table that recorded p90)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bignas",
        description="Train one elastic supernet, profile devices with ONNX Runtime, and extract "
                    "the best child network for each device's budget.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("inspect", help="print one child architecture with its MFLOPs and parameters (JSON)",
                       description="Print one JSON object {space, arch, resolution, mflops, params_m}. "
                                   "mflops are millions of multiply-accumulates of convs and linear layers.")
    p.add_argument("--space", required=True,
                   help=f"search space: a shipped name ({', '.join(space_names())}) or a YAML file")
    p.add_argument("--arch", required=True,
                   help="'max' (largest child), 'min' (smallest), 'random', or a child architecture JSON file")
    p.add_argument("--seed", type=int, default=0, help="seed for --arch random (default: 0)")
    p.set_defaults(func=cmd_inspect)

    add_train_parsers(sub)

    p = sub.add_parser("evaluate", help="top-1 of one child of a trained supernet (JSON)",
                       description="Extract a child, re-estimate its BN statistics on a fixed calibration "
                                   "subset of the training split, and print one JSON object "
                                   "{arch, resolution, top1, mflops, params_m, split, calibration_images}.")
    p.add_argument("--run", required=True, help="run directory written by 'bignas train'")
    p.add_argument("--arch", required=True, help="'max', 'min', or a child architecture JSON file")
    p.add_argument("--data", help="dataset spec (default: the run's)")
    p.add_argument("--split", choices=["val", "test"], default="val",
                   help="'val' (held out of training; what search uses) or 'test' (final reports only)")
    p.add_argument("--calibration-images", type=positive(int), metavar="N",
                   help="training images that re-estimate the child's BN statistics, the first N of the fixed "
                        "calibration order (default: the run's eval.calibration_images; all of them if fewer)")
    add_device(p)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("profile", help="measure a device's latency table with ONNX Runtime",
                       description="Time every distinct block of a search space (every stem, MBConv and "
                                   "head signature over all its resolutions) with ONNX Runtime exactly as "
                                   "the device profile says, interleaved with a fixed reference model; time "
                                   "a few dozen whole children end to end in two passes (their mean is the "
                                   "ground truth, their difference the noise floor, printed as 'noise' with a "
                                   "warning when high) and fit the calibration (p50, and p90 as a multiple of "
                                   "it); write the table (default latency_tables/PROFILE/SPACE.json). A killed run resumes "
                                   "where it stopped. For a device without PyTorch: --bundle DIR here, then "
                                   "`python -m bignas.latency.device DIR --out FILE` on the device, then "
                                   "--calibrate FILE here.")
    p.add_argument("--profile", help=f"device profile: a shipped name ({', '.join(profile_names())}) or a YAML file; "
                                    "required unless --calibrate or --transfer (there: the table's own by default)")
    p.add_argument("--space", default=None,
                   help=f"search space: a shipped name ({', '.join(space_names())}) or a YAML file "
                        "(default: ofa-mbv3; with --calibrate: the table's)")
    p.add_argument("--out", type=out_path, help="table to write (default latency_tables/PROFILE/SPACE.json; with "
                                 "--calibrate: FILE itself)")
    p.add_argument("--bundle", metavar="DIR", help="only write the block ONNX files, the reference model, the "
                                                   "calibration children and a manifest, for a device that "
                                                   "cannot run PyTorch")
    p.add_argument("--calibrate", metavar="FILE", help="complete a table the device runner wrote (fit the "
                                                       "calibration on its whole children)")
    p.add_argument("--transfer", metavar="TABLE",
                   help="make TABLE (measured on another host, or failing `latency-check --quick` here) true on "
                        "this host in minutes: keep its block entries, time the reference and --children whole "
                        "children here, re-fit the calibration, write --out (required); with --profile, "
                        "the children are timed under that profile instead of the table's")
    p.add_argument("--children", type=positive(int, MAX_CHILDREN), default=None,
                   help=f"whole children timed for the calibration: the smallest, the largest and random ones "
                        f"(default: {PROFILE_CHILDREN}; with --transfer: {TRANSFER_CHILDREN})")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_profile)

    p = sub.add_parser("latency-check", help="compare a latency table's predictions with fresh measurements",
                       description="Export N fresh random children (none the table was calibrated on) as "
                                   "they are deployed, time each end to end under the table's profile, and "
                                   "print one JSON object {n, within_5pct, within_10pct, mae_pct, "
                                   "median_error_pct, spearman, kendall, worst_pct} of the p50 predictions, "
                                   "the same under 'p90' (null for a table without p90), and the noise floor of "
                                   "a second pass {repeat_n, repeat_within_5pct, repeat_within_10pct, "
                                   "noise_floor_pct}: within_* are fractions of the children, *_pct errors in "
                                   "percent. TABLE.check.png (predicted vs "
                                   "measured) and TABLE.check.json (every child) go beside the table. Run it "
                                   "on the machine the table describes.")
    p.add_argument("--table", required=True, help="latency table JSON")
    p.add_argument("--children", type=positive(int, MAX_CHILDREN), default=100,
                   help="random children to time (default: 100); all are exported to a temporary folder before "
                        "any is timed (ofa-mbv3: up to 30 MB a child)")
    p.add_argument("--space", default=None, help="search-space YAML, for a table of a space not shipped")
    p.add_argument("--seed", type=int, default=1000, help="seed of the random children (default: 1000)")
    p.add_argument("--repeat", type=positive(int, MAX_CHILDREN, zero=True), default=REPEAT_CHILDREN,
                   help=f"children timed again in a second pass, for the noise floor (default: {REPEAT_CHILDREN})")
    p.add_argument("--quick", action="store_true",
                   help=f"verify the table on this host before reusing it: {QUICK_CHILDREN} children, each timed "
                        f"twice, nothing written; adds 'verified' and the 'rule' it follows, and exits 1 when "
                        f"not verified (then: bignas profile --transfer TABLE --out NEW.json)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=cmd_latency_check)

    p = sub.add_parser("search", help="find the most accurate child under per-device latency, MFLOPs, params budgets",
                       description="Search a trained supernet for the child with the best validation top-1 "
                                   "that meets every budget; with several --table / --max-latency-ms pairs, one "
                                   "best child per device. Accuracy (BN recalibration + val top-1) is cached in "
                                   "RUN/accuracy.jsonl and reused. Writes OUT/search.json, and per device a Pareto plot "
                                   "and the best child as an architecture file for 'bignas export --arch' "
                                   "(best.json, or best-DEVICE.json for several).")
    p.add_argument("--run", required=True, help="run directory written by 'bignas train'")
    p.add_argument("--table", action="append", metavar="FILE",
                   help="latency table of a device (repeat for several devices); an int8 table (profile "
                        "'precision: int8', e.g. cpu-1t-int8) makes an int8 target: see --int8-finalists")
    p.add_argument("--max-latency-ms", action="append", type=positive(float), metavar="X",
                   help="latency budget in ms on --latency-stat, one per --table, in the same order")
    _add_latency_stat(p)
    p.add_argument("--max-mflops", type=positive(float), metavar="F", help="budget in millions of multiply-adds")
    p.add_argument("--max-params-m", type=positive(float), metavar="P", help="budget in millions of parameters")
    p.add_argument("--max-weights-mb", type=positive(float), metavar="W",
                   help="budget on the child's weights in MB (10^6 bytes) as deployed: int8 for a target with an "
                        "int8 table, else fp32 (see 'bignas inspect')")
    p.add_argument("--max-activation-mb", type=positive(float), metavar="A",
                   help="budget on the child's peak activation memory in MB for batch 1, in the target's "
                        "precision as --max-weights-mb")
    from bignas.search.strategies import STRATEGIES

    p.add_argument("--strategy", choices=sorted(STRATEGIES), default="coarse-to-fine",
                   help="; ".join(f"{name}: {STRATEGIES[name].help}" for name in sorted(STRATEGIES)))
    p.add_argument("--option", action="append", metavar="KEY=VALUE",
                   help="a setting of the chosen strategy (repeat for several); "
                        + "; ".join(f"{name}: {STRATEGIES[name].describe_settings()}" for name in sorted(STRATEGIES)))
    p.add_argument("--budget", type=positive(int, MAX_BUDGET), default=40, help="accuracy evaluations per device (default: 40)")
    p.add_argument("--predictor", action="store_true",
                   help="predictor-guided: each round the strategy screens candidates on an accuracy predictor "
                        "fitted on RUN/accuracy.jsonl and on this search's evaluations, and only the best "
                        "predicted are evaluated (--budget counts those only); search.json gives each child's "
                        "predicted_top1 beside its measured top1_val")
    p.add_argument("--predictor-option", action="append", metavar="KEY=VALUE",
                   help=f"a setting of --predictor (repeat for several): {describe_options(GuidedSettings)}")
    p.add_argument("--fidelity", choices=["full", "successive-halving"], default="full",
                   help="full: every candidate gets the full estimate (BN recalibration + top-1 on all val images); "
                        "successive-halving: every candidate is scored on a val subset after a shorter "
                        "recalibration, the best share is promoted rung by rung up to the full estimate, and only "
                        "full-fidelity top-1 is reported (--budget counts candidates; default: %(default)s)")
    p.add_argument("--fidelity-option", action="append", metavar="KEY=VALUE",
                   help=f"a setting of successive halving (repeat for several; tuples as [a, b]): "
                        f"{describe_options(HalvingSettings)}")
    p.add_argument("--int8-finalists", type=positive(int), default=FINALISTS, metavar="K",
                   help="for an int8 target: its K feasible children with the best fp32 val top-1 are quantized "
                        "(as 'bignas export --int8' does) and scored in ONNX Runtime; the best int8 val top-1 "
                        "wins (default: %(default)s; cached like fp32 evaluations, not counted in --budget)")
    _add_int8_calibration(p, "an int8 target")
    p.add_argument("--seed", type=int, default=0, help="search seed (default: 0)")
    p.add_argument("--data", help="dataset spec (default: the run's)")
    p.add_argument("--out", type=out_path, required=True, help="output directory")
    add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_search)

    p = sub.add_parser("predictor", help="fit the run's accuracy predictor on its accuracy cache (JSON)",
                       description="Evaluate --samples random children (BN recalibration + val top-1, cached in "
                                   "RUN/accuracy.jsonl like a search's), then fit an accuracy predictor on every "
                                   "child the cache holds for the run's weights and data: ridge regression and "
                                   "once-for-all's MLP on the one-hot child encoding, compared by 5-fold "
                                   "cross-validated Kendall tau; the better one is written to RUN/predictor.json "
                                   "with its cache's digest (a predictor whose cache has changed since is refused "
                                   "as stale). Prints one JSON object: the kind, the children it was fitted on, "
                                   "the cost, and every kind's cross-validated Kendall tau, Spearman and mean "
                                   "absolute error in top-1 points.")
    p.add_argument("--run", required=True, help="run directory written by 'bignas train'")
    p.add_argument("--samples", type=int, default=100, metavar="N",
                   help="random children to evaluate first (seeded; those already cached cost nothing; "
                        "0: refit on the cache as it is; default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random children and of the fit (default: 0)")
    p.add_argument("--data", help="dataset spec (default: the run's)")
    add_device(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_predictor)

    p = sub.add_parser("compare", help="plot several searches' Pareto fronts and progress curves on one figure",
                       description="Read the search.json of each OUT folder written by 'bignas search' (for "
                                   "example one per --strategy, same run, targets and budget) and draw, per "
                                   "target, their Pareto fronts and best-so-far curves side by side. Prints one "
                                   "JSON line per search and target: best val top-1 and normalised hypervolume.")
    p.add_argument("searches", nargs="+", metavar="OUT", help="output folders of 'bignas search'")
    p.add_argument("--label", action="append", metavar="NAME",
                   help="legend name of each search, in order (default: strategy and seed)")
    p.add_argument("--out", type=out_path, required=True, metavar="FILE.png", help="figure to write (PNG)")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser("export", help="export one child for deployment: child.pt, child.onnx, card.json",
                       description="Extract a child from a trained run, recalibrate its BN statistics, write "
                                   "child.pt (load with bignas.load_child), child.onnx (checked against PyTorch "
                                   "with ONNX Runtime, max abs diff <= 1e-4) and card.json; with --table, the "
                                   "predicted p50 and p90 latency, and the measured ones when this host is the "
                                   "table's device; with --max-latency-ms, whether they meet that budget. With --int8, "
                                   "child.int8.onnx and its measured top-1 and latency too.")
    p.add_argument("--run", required=True, help="run directory written by 'bignas train'")
    p.add_argument("--arch", required=True, help="child architecture JSON (e.g. the 'arch' of search.json's best)")
    p.add_argument("--table", action="append", metavar="FILE",
                   help="latency table of the target device; give it twice for both precisions: an fp32 table "
                        "times child.onnx, an int8 one (profile 'precision: int8', e.g. cpu-1t-int8) "
                        "child.int8.onnx and sets how it is quantized")
    p.add_argument("--max-latency-ms", type=positive(float), metavar="X",
                   help="the latency budget the child was searched for, on --latency-stat (needs --table): the "
                        "card says whether the predicted and measured latency of each table's model meet it")
    p.add_argument("--int8", action="store_true",
                   help="also write child.int8.onnx: ONNX Runtime's static QDQ quantization (as the int8 table's "
                        "profile says, else U8S8: unsigned int8 activations, signed int8 weights per channel), "
                        "calibrated on training images; its top-1 on val and test is measured in ONNX Runtime and "
                        "written in the card")
    _add_int8_calibration(p, "--int8")
    _add_latency_stat(p)
    p.add_argument("--out", type=out_path, required=True, help="output directory")
    add_device(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("quickstart", help="train, profile, search and export on the embedded dataset, on this CPU",
                       description="The whole pipeline on mnist5k and the cifar-small space: train the "
                                   "quickstart recipe, make the shipped cpu-1t latency table true on this host "
                                   "(reused when this host has its exact fingerprint and passes a one-minute "
                                   "check, else transferred: its blocks kept, its calibration re-fitted on whole "
                                   "children timed here), search for the "
                                   "best child under a latency budget halfway between the smallest and largest "
                                   "child, export it, and print what it found. A few minutes on 2 cores; "
                                   "running it again resumes or reuses what is done.")
    p.add_argument("--out", type=out_path, default="runs/quickstart", help="output directory (default: runs/quickstart)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_quickstart)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_entry_point(f"bignas {args.command}", lambda: args.func(args))
