"""The child file, child.pt: one static child's weights with its architecture and search space.

Written by `bignas export`, and as the final weights of a run that trains one child (`bignas
train --arch`, `bignas finetune`); plain tensors and containers only, so that
`torch.load(..., weights_only=True)` reads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torch import nn

from bignas.errors import BignasError
from bignas.space import Child, SearchSpace, parse_space
from bignas.weights import load_weights, save_weights

CHILD_FORMAT = "bignas-child"


def save_child(static: nn.Module, space: SearchSpace, child: Child, path: str | Path) -> None:
    """Write `static`'s state dict with `child`'s arch and its `space`, atomically."""
    plain = json.loads(json.dumps({"space": space.to_dict(), "arch": child.to_dict(space)}))  # lists, not tuples
    state = {"format": CHILD_FORMAT, **plain,
             "state_dict": {k: v.detach().cpu() for k, v in static.state_dict().items()}}
    save_weights(state, path)


def read_child(path: str | Path, error: type[BignasError] = BignasError) -> tuple[SearchSpace, Child, dict[str, Any]]:
    """The space, child and state dict of a child file; anything else raises `error` naming the field."""
    state = load_weights(path, "child file", error)
    if state.get("format") != CHILD_FORMAT:
        raise error(f"{path}: field 'format' is not {CHILD_FORMAT!r} (not written by bignas?)")
    if not isinstance(state.get("state_dict"), dict):
        raise error(f"{path}: field 'state_dict' is missing")
    space = parse_space(state.get("space"), f"{path}: space")
    return space, space.child_from_dict(state.get("arch"), f"{path}: arch"), state["state_dict"]
