"""A run's per-epoch ``log.csv`` and its ``training_curve.png``."""
from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from itertools import accumulate
from pathlib import Path

from sam3dlib.utils.fileio import atomic_write, atomic_write_text

LOG_COLUMNS = ("epoch", "train_loss", "val_dice", "val_dice_ema", "lr", "steps", "seconds", "step_seconds", "peak_memory_gib")
#: columns measured on the clock or the machine (they differ between identical runs)
TIMING_COLUMNS = ("seconds", "step_seconds", "peak_memory_gib")


def write_log(path: str | os.PathLike, history: Sequence[dict]) -> Path:
    """Write ``log.csv`` (one row per finished epoch; empty cells where not validated)."""
    lines = [",".join(LOG_COLUMNS)]
    for row in history:
        cells = []
        for col in LOG_COLUMNS:
            v = row.get(col)
            cells.append("" if v is None else (str(v) if isinstance(v, int) else f"{v:.6g}"))
        lines.append(",".join(cells))
    return atomic_write_text(path, "\n".join(lines) + "\n")


def _measured(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def curve_figure(runs: Sequence[tuple[str, Sequence[Mapping]]], title: str, x: str = "epoch",
                 offsets: Sequence[float] | None = None):
    """Training loss (left) and online validation Dice (right; EMA dashed) against epoch or time.

    Args:
        runs: ``(label, history)`` per run; a history is ``log.csv``'s rows as dicts (keys of
            :data:`LOG_COLUMNS`; ``val_dice`` None/NaN where the epoch did not validate).
        title: the figure's title.
        x: ``epoch``, or ``seconds``: each epoch's end in seconds since the run started
            (the cumulative ``seconds`` column plus the run's offset), for runs compared at an
            equal budget of time whose epochs differ.
        offsets: seconds spent before the first epoch, per run (e.g. feature encoding); 0 if None.

    Returns:
        A :class:`matplotlib.figure.Figure` (built without pyplot: no global state).
    """
    from sam3dlib.utils.figures import new_figure

    if x not in ("epoch", "seconds"):
        raise ValueError(f"x must be 'epoch' or 'seconds', got {x!r}")
    fig = new_figure(figsize=(10, 3.6), layout="constrained")
    ax_loss, ax_dice = fig.subplots(1, 2)
    for i, (label, history) in enumerate(runs):
        ends = accumulate((float(r["seconds"]) for r in history), initial=offsets[i] if offsets else 0.0)
        next(ends)  # the offset itself: where the first epoch starts
        at = {r["epoch"]: r["epoch"] if x == "epoch" else end for r, end in zip(history, ends)}  # x of each epoch
        line = ax_loss.plot([at[r["epoch"]] for r in history], [r["train_loss"] for r in history], "o-", ms=3,
                            label=label)[0]
        val = [r for r in history if _measured(r.get("val_dice"))]
        ax_dice.plot([at[r["epoch"]] for r in val], [r["val_dice"] for r in val], "s-", ms=3, color=line.get_color(),
                     label=label)
        ema = [r for r in val if _measured(r.get("val_dice_ema"))]
        ax_dice.plot([at[r["epoch"]] for r in ema], [r["val_dice_ema"] for r in ema], "--", color=line.get_color())
    from matplotlib.ticker import MaxNLocator

    xlabel = "epoch" if x == "epoch" else "seconds since the run started (feature encoding + training)"
    if x == "epoch":
        for ax in (ax_loss, ax_dice):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
    else:
        for ax in (ax_loss, ax_dice):
            ax.set_xlim(left=0)
    ax_loss.set(xlabel=xlabel, ylabel="training loss (Dice + CE)")
    ax_dice.set(xlabel=xlabel, ylabel="online validation Dice (EMA dashed)", ylim=(0, 1))
    if len(runs) > 1:
        for ax in (ax_loss, ax_dice):
            ax.legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    return fig


def plot_curve(path: str | os.PathLike, history: Sequence[dict], title: str) -> Path:
    """:func:`curve_figure` of one run, saved as PNG atomically."""
    fig = curve_figure([("", history)], title)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    return atomic_write(path, lambda fh: fh.write(buffer.getvalue()))
