"""A run's per-epoch ``log.csv`` and its ``training_curve.png``."""
from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

from sam3dlib.utils.fileio import atomic_write, atomic_write_text

LOG_COLUMNS = ("epoch", "train_loss", "val_dice", "val_dice_ema", "lr", "seconds")


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


def plot_curve(path: str | os.PathLike, history: Sequence[dict], title: str) -> Path:
    """Loss and validation Dice against epoch, saved as PNG (no pyplot state is touched)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 3.2), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ep = [r["epoch"] for r in history]
    ax.plot(ep, [r["train_loss"] for r in history], "o-", color="tab:blue", label="train loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss (Dice + CE)", color="tab:blue")
    ax2 = ax.twinx()
    val = [(r["epoch"], r["val_dice"], r.get("val_dice_ema")) for r in history if r.get("val_dice") is not None]
    if val:
        ax2.plot([v[0] for v in val], [v[1] for v in val], "s-", color="tab:orange", label="val Dice")
        ax2.plot([v[0] for v in val], [v[2] for v in val], "--", color="tab:red", label="val Dice (EMA)")
    ax2.set_ylabel("online validation Dice", color="tab:orange")
    ax2.set_ylim(0, 1)
    fig.suptitle(title, fontsize=9)
    handles = ax.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    ax.legend(handles, [h.get_label() for h in handles], loc="center right", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return atomic_write(path, lambda fh: fh.write(buffer.getvalue()))
