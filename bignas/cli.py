"""The `bignas` command line: one function per subcommand."""

from __future__ import annotations

import argparse
import json
import random
import sys

from bignas.cost import child_cost
from bignas.space import SpaceError, load_space, space_names


def cmd_inspect(args: argparse.Namespace) -> int:
    space = load_space(args.space)
    if args.arch == "max":
        child = space.max()
    elif args.arch == "min":
        child = space.min()
    elif args.arch == "random":
        child = space.sample(random.Random(args.seed))
    else:
        child = space.load_child(args.arch)
    cost = child_cost(space, child)
    print(json.dumps({"space": space.name, "arch": child.to_dict(space), "resolution": child.resolution,
                      "mflops": round(cost.mflops, 4), "params_m": round(cost.params_m, 6)}))
    return 0


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except SpaceError as e:
        print(f"bignas {args.command}: error: {e}", file=sys.stderr)
        return 2
