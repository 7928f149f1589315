"""Weights files: saved atomically, read only with `torch.load(..., weights_only=True)`."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from bignas.errors import BignasError
from bignas.io import atomic_path


def save_weights(obj: dict[str, Any], path: str | Path) -> None:
    """Write `obj` (tensors, numbers, strings and containers of them) to `path` atomically."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_weights(path: str | Path, what: str, error: type[BignasError] = BignasError) -> dict[str, Any]:
    """The dict saved in `path`, on the CPU; a missing, truncated or foreign file raises `error`
    naming the path and `what` it should have been."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise error(f"{path}: no such {what}") from None
    except Exception as e:  # truncated zip, not a torch file, disallowed pickle content
        raise error(f"{path}: not a readable {what} ({type(e).__name__}: {e})") from None
    if not isinstance(state, dict):
        raise error(f"{path}: not a {what} (holds a {type(state).__name__}, not a dict)")
    return state


def weights_digest(model: torch.nn.Module) -> str:
    """Hash of every tensor of `model`'s state: cached accuracies are valid for these weights only."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
