"""Which validated epoch is the fold's best: by the score at post-processing tuned on the
fold's validation counts (``tuned``), at the model's own decision (``default``), or by the
validation loss (``loss``); and the top k of them, for weight averaging."""

from __future__ import annotations

# name -> (log column, True when higher is better)
SELECT: dict[str, tuple[str, bool]] = {
    "tuned": ("val_tuned", True),
    "default": ("val_score", True),
    "loss": ("val_loss", False),
}


def ranked(rows: list[dict], select: str) -> list[dict]:
    """The validated rows, best first; ties go to the earlier epoch."""
    if select not in SELECT:
        raise ValueError(f"unknown --select {select!r}; valid: {', '.join(SELECT)}")
    column, higher = SELECT[select]
    validated = [row for row in rows if column in row]
    return sorted(validated, key=lambda row: (-row[column] if higher else row[column],
                                              row["epoch"]))


def best_row(rows: list[dict], select: str) -> dict | None:
    """The best validated row by ``select``, or None when no epoch was validated."""
    order = ranked(rows, select)
    return order[0] if order else None


def top_epochs(rows: list[dict], select: str, k: int) -> list[int]:
    """The epochs of the k best validated rows, best first."""
    return [row["epoch"] for row in ranked(rows, select)[:k]]
