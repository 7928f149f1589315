"""Atomic file writes: a reader never sees a half-written file, and a failure leaves the old one."""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        _fsync(tmp)  # the content is on disk before the new name points at it
        os.replace(tmp, path)
        _fsync(path.parent)  # and the rename itself survives a power loss
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _fsync(path: str | Path) -> None:
    """Flush a file's or a folder's data to disk (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def check_output_dir(out: str | Path, outputs: Iterable[str], error: type[Exception], what: str) -> None:
    """Refuse an output folder a command must not replace: a file, or a folder holding anything
    but `outputs` (glob patterns of what `what` writes). Called before any expensive work."""
    if Path(out).name in ("", ".", ".."):
        raise error(f"output folder {str(out)!r}: name a folder of its own (it is replaced whole)")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise error(f"{out}: exists and is not a folder")
    if out.is_dir():
        patterns = tuple(outputs)
        others = [p.name for p in out.iterdir() if not any(p.match(g) for g in patterns)]
        if others:
            raise error(f"{out}: exists and holds more than an earlier {what}'s output "
                        f"({', '.join(sorted(others)[:3])}); choose another output folder")
    parent = next((p for p in out.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise error(f"{out}: cannot be created ({parent} is not a writable folder)")


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it replaces `path` as a whole, so a
    reader sees the earlier folder or the complete new one, never a mix. What a killed earlier
    write left beside `path` is cleared first (see `recover_dir`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    old = None
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; results are meant to be shared
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old / path.name)
            try:
                os.replace(tmp, path)
            except OSError:
                os.replace(old / path.name, path)  # put the earlier folder back
                raise
        else:
            os.replace(tmp, path)
    finally:
        for leftover in (tmp, old):
            if leftover is not None and leftover.exists():
                shutil.rmtree(leftover)


def recover_dir(path: Path) -> None:
    """Undo what a write killed inside `atomic_dir` left beside `path` (one writer per folder at a
    time is assumed): put back an earlier folder a kill caught between its two renames, and remove
    the half-built temporaries."""
    if not path.parent.is_dir():
        return
    for leftover in sorted(path.parent.glob(f".{glob.escape(path.name)}.{'?' * 8}.old")):
        if not path.exists() and (leftover / path.name).is_dir():
            os.replace(leftover / path.name, path)
            print(f"note: restored {path} from {leftover}, left by a write that was killed", file=sys.stderr)
        shutil.rmtree(leftover, ignore_errors=True)
    for leftover in path.parent.glob(f".{glob.escape(path.name)}.{'?' * 8}.tmp"):
        shutil.rmtree(leftover, ignore_errors=True)


def read_json(path: str | Path, what: str, error: type[Exception] = ValueError) -> Any:
    """The JSON in `path`; a missing or malformed file raises `error` naming the path."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise error(f"{path}: malformed JSON ({str(e)[:200]})") from None


def write_json(path: str | Path, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")


def digest(data: str | bytes) -> str:
    """A short stable hash (16 hex digits of SHA-256) of text or bytes: cache keys, file names."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()[:16]
