"""Figures as PNG files: matplotlib on its file-only backend, saved atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bignas.io import atomic_path


def figure(width: float, height: float) -> tuple[Any, Any]:
    """A new (figure, axes) pair on matplotlib's Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height))


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> None:
    """Lay out `fig`, write it to `path` as PNG atomically, and free it."""
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
