"""Checkpoints: written atomically, the last few kept, loaded with weights_only=True."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from bignas.errors import BignasError
from bignas.io import atomic_path

FORMAT = "bignas-checkpoint-1"
_NAME = re.compile(r"^step-(\d{8})\.pt$")


class CheckpointError(BignasError):
    """A checkpoint that is truncated, not ours, or from another search space."""


def checkpoint_dir(run: Path) -> Path:
    return Path(run) / "checkpoints"


def save_checkpoint(run: Path, step: int, state: dict[str, Any], keep: int) -> Path:
    """Write `state` as checkpoints/step-XXXXXXXX.pt and delete all but the newest `keep`."""
    folder = checkpoint_dir(run)
    path = folder / f"step-{step:08d}.pt"
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, **state}, tmp)
    for old in list_checkpoints(run)[:-keep]:
        old.unlink()
    return path


def list_checkpoints(run: Path) -> list[Path]:
    folder = checkpoint_dir(run)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _NAME.match(p.name))


def load_checkpoint(path: Path, space_hash: str | None = None) -> dict[str, Any]:
    """Read a checkpoint safely; refuse a truncated or foreign file with a clear message."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except Exception as e:  # truncated zip, not a torch file, disallowed pickle content
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a bignas checkpoint (expected format '{FORMAT}')")
    if space_hash is not None and state.get("space_hash") != space_hash:
        raise CheckpointError(f"{path}: field 'space_hash' is {state.get('space_hash')!r}, but this run's "
                              f"search space hashes to {space_hash!r}")
    return state


def latest_checkpoint(run: Path) -> Path | None:
    found = list_checkpoints(run)
    return found[-1] if found else None
