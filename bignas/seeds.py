"""Seeds as pure functions of explicit parts: the same on every process, rank and version."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: str | int) -> int:
    """A 63-bit seed that depends only on `parts`: stable across processes, ranks and versions."""
    # int() so that numpy or tensor integers give the same seed as Python ints
    key = "/".join(p if isinstance(p, str) else str(int(p)) for p in parts)
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") >> 1


def generator(*parts: str | int):
    """A torch.Generator seeded by `derive_seed(*parts)` (torch imported here only)."""
    import torch

    return torch.Generator().manual_seed(derive_seed(*parts))
