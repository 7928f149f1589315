"""Checkpoints: written atomically, the last few kept, loaded with weights_only=True."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bignas.errors import BignasError
from bignas.weights import load_weights, save_weights

FORMAT = "bignas-checkpoint-1"
_NAME = re.compile(r"^step-(\d{8})\.pt$")


class CheckpointError(BignasError):
    """A checkpoint that is truncated, not ours, or from another search space."""


def save_checkpoint(folder: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write `state` as FOLDER/step-XXXXXXXX.pt and delete all but the newest `keep`."""
    path = Path(folder) / f"step-{step:08d}.pt"
    save_weights({"format": FORMAT, **state}, path)
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink()
    return path


def list_checkpoints(folder: Path) -> list[Path]:
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def load_checkpoint(path: Path, space_hash: str | None = None) -> dict[str, Any]:
    """Read a checkpoint safely; refuse a truncated or foreign file with a clear message."""
    state = load_weights(path, "checkpoint", CheckpointError)
    if state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a bignas checkpoint (expected format '{FORMAT}')")
    if space_hash is not None and state.get("space_hash") != space_hash:
        raise CheckpointError(f"{path}: field 'space_hash' is {state.get('space_hash')!r}, but this run's "
                              f"search space hashes to {space_hash!r}")
    return state


def latest_checkpoint(folder: Path) -> Path | None:
    found = list_checkpoints(folder)
    return found[-1] if found else None
