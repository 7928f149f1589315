"""The one base class of the errors bignas reports to users (bad files, bad fields, bad runs)."""

from __future__ import annotations

from typing import Any


class BignasError(ValueError):
    """Bad input: the message names the file and the field; the CLI prints it and exits 2."""


def check_keys(d: Any, allowed: set[str], required: set[str], source: str, where: str,
               error: type[BignasError] = BignasError, noun: str = "field") -> None:
    """Refuse a mapping with an unknown or a missing key, naming the file and the field."""
    if not isinstance(d, dict):
        raise error(f"{source}: {noun} '{where.rstrip('.') or 'top level'}' must be a mapping")
    unknown = sorted(set(d) - allowed)
    if unknown:
        raise error(f"{source}: unknown {noun} '{where}{unknown[0]}' (allowed: {sorted(allowed)})")
    missing = sorted(required - set(d))
    if missing:
        raise error(f"{source}: missing {noun} '{where}{missing[0]}'")
