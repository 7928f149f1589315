"""Argument types and flags shared by the subcommands' parsers."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Callable

from bignas.train.config import DEVICES


def out_path(value: str) -> str:
    """An --out value: refused when empty or a bare '.' / '..', which would write into (or replace) a working folder."""
    if Path(value).name in ("", ".", ".."):
        raise argparse.ArgumentTypeError(f"{value!r}: name an output of its own, not the current or parent folder")
    return value


def positive(kind: type, limit: float | None = None, zero: bool = False) -> Callable[[str], float | int]:
    """An argparse type: a finite number above zero (or zero, with `zero`; and at most `limit`),
    else a usage error naming the value."""
    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if not math.isfinite(value) or value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"{text!r}: must be a finite number {'of zero or more' if zero else 'above zero'}")
        if limit is not None and value > limit:
            raise argparse.ArgumentTypeError(f"{text!r}: must be at most {limit:g}")
        return value
    return parse


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="torch device for the supernet (default: auto, CUDA when available; under torchrun "
                        "each process takes the GPU of its LOCAL_RANK)")
