"""Figures as PNG files: matplotlib on its file-only backend, saved atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bignas.io import atomic_path


def figure(width: float, height: float, rows: int = 1, cols: int = 1) -> tuple[Any, Any]:
    """A new (figure, axes) pair on matplotlib's Agg backend (files only, no display); with several
    rows or columns, the axes as a 2-D array (rows x cols)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if rows == cols == 1:
        return plt.subplots(figsize=(width, height))
    return plt.subplots(rows, cols, figsize=(width, height), squeeze=False)


def save_figure(fig: Any, path: str | Path, dpi: int = 100) -> None:
    """Lay out `fig`, write it to `path` as PNG atomically, and free it."""
    import matplotlib.pyplot as plt

    try:
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
