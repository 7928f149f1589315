"""The one base class of the errors bignas reports to users (bad files, bad fields, bad runs)."""

from __future__ import annotations

import sys
import traceback
from typing import Any, Callable


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


def run_entry_point(prog: str, command: Callable[[], int]) -> int:
    """Run one command of a bignas entry point (`bignas ...`, `python -m bignas.latency.device`) and
    return its exit status. Bad input and file-system refusals print one line naming the file and
    exit 2; Ctrl-C exits 130 and keeps what was finished; anything else is a bug of bignas, printed
    whole with the version and a request to report it."""
    try:
        return command()
    except BignasError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system refused (a path under a file, no space, no permission)
        print(f"{prog}: error: {e.filename or ''}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted (what was finished is kept)", file=sys.stderr)
        return 130
    except Exception:  # not a refusal of bad input: a bug of bignas, shown whole
        from bignas import __version__

        traceback.print_exc()
        print(f"{prog}: internal error, a bug of bignas {__version__}: please report it with the command line "
              f"and the traceback above", file=sys.stderr)
        return 1
