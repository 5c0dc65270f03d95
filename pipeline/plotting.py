"""Pictures: matplotlib on the non-interactive Agg backend, saved atomically as PNG."""

from __future__ import annotations

from pathlib import Path

from pipeline import fileio


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: Path) -> None:
    """Save a figure as PNG atomically and close it."""
    with fileio.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=80)
    pyplot().close(fig)
