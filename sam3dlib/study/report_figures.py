"""Figures for the reports: overlays, DSC bars, per-case DSC distributions, params-vs-DSC,
training curves.

Every function returns a figure of :func:`sam3dlib.utils.figures.new_figure`: built without pyplot
(no global state) and shown as a PNG by ``IPython.display.display(fig)`` in any kernel (Lab,
papermill, the HTML report); save it with :func:`sam3dlib.study.report.save_figure`. Each takes ``conditions`` and puts their description in
the title, so a stand-in run (random encoder, phantom data) says so on every figure; the
paper's numbers are always labelled as the paper's.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.text import Text

from sam3dlib.data.specs import DatasetSpec
from sam3dlib.study.report import AVERAGE, OURS_SUFFIX, PAPER, RunConditions, load_paper_tables
from sam3dlib.utils.figures import new_figure

_PALETTE = [
    (0.90, 0.10, 0.10), (0.10, 0.60, 0.10), (0.10, 0.30, 0.90), (0.95, 0.75, 0.05),
    (0.80, 0.20, 0.80), (0.05, 0.80, 0.80), (0.95, 0.50, 0.10), (0.50, 0.30, 0.10),
    (0.60, 0.60, 0.95), (0.40, 0.80, 0.40), (0.90, 0.50, 0.60), (0.30, 0.30, 0.30),
    (0.70, 0.90, 0.20), (0.20, 0.20, 0.60),
]


def _title(text: str, conditions: RunConditions | None) -> str:
    return text if conditions is None else f"{text}\n{conditions.describe()}"


def _label_cmap(num_classes: int) -> ListedColormap:
    colours = [(0, 0, 0, 0)] + [(*_PALETTE[(i - 1) % len(_PALETTE)], 0.55) for i in range(1, num_classes)]
    return ListedColormap(colours)


#: How :func:`plot_overlays` draws labels: filled (translucent) or as outlines.
OVERLAY_MODES = ("fill", "contour")


def scored_labels(spec: DatasetSpec) -> list[int]:
    """The label values that the dataset's tables score (union of its regions' labels), sorted."""
    return sorted({int(v) for values in spec.regions.values() for v in values})


def _draw_labels(ax, lab: np.ndarray, spec: DatasetSpec, classes: Sequence[int], mode: str) -> None:
    if mode == "fill":
        shown = np.where(np.isin(lab, classes), lab, 0)
        ax.imshow(shown, cmap=_label_cmap(spec.num_classes), vmin=0, vmax=spec.num_classes - 1, interpolation="nearest")
        return
    for k in classes:
        mask = lab == k
        if mask.any() and not mask.all():
            ax.contour(mask.astype(np.float32), levels=[0.5], colors=[_PALETTE[(k - 1) % len(_PALETTE)]], linewidths=1.2)


def plot_overlays(
    image: np.ndarray,
    gt: np.ndarray,
    pred: np.ndarray,
    slices: Sequence[int] | None,
    spec: DatasetSpec,
    conditions: RunConditions | None = None,
    case_id: str = "",
    mode: str = "fill",
    slice_offset: int = 0,
    note: str = "",
) -> Figure:
    """Image / ground truth / prediction on chosen slices, the scored classes coloured.

    Only the classes the dataset's tables score (:func:`scored_labels`) are drawn and listed in
    the legend; other label values are left out.

    Args:
        image: ``D x H x W`` (or ``C x D x H x W``; the first channel is shown).
        gt: ``D x H x W`` label map on the same grid.
        pred: ``D x H x W`` label map on the same grid.
        slices: slice (z) indices of these arrays; None picks up to three slices with the most foreground.
        spec: the dataset's spec (class names, class count, scored regions).
        conditions: the run's conditions, shown in the title.
        case_id: shown in the title.
        mode: ``"fill"`` (translucent colours) or ``"contour"`` (outlines): :data:`OVERLAY_MODES`.
        slice_offset: added to the slice numbers shown, so that a part of a volume (a slab) is
            labelled in the volume's coordinates.
        note: a line added under the title (e.g. the slab's DSC).

    Raises:
        ValueError: if the three arrays do not share a grid, a slice index is out of range, or
            ``mode`` is unknown.
    """
    if mode not in OVERLAY_MODES:
        raise ValueError(f"overlay mode {mode!r}: choose one of {', '.join(OVERLAY_MODES)}")
    img = np.asarray(image)
    if img.ndim == 4:
        img = img[0]
    gt, pred = np.asarray(gt), np.asarray(pred)
    if not (img.shape == gt.shape == pred.shape):
        raise ValueError(f"image {img.shape}, ground truth {gt.shape} and prediction {pred.shape} must share one D x H x W grid")
    if slices is None:
        slices = pick_slices(gt)
    slices = [int(s) for s in slices]
    bad = [s for s in slices if not 0 <= s < img.shape[0]]
    if bad:
        raise ValueError(f"slices {bad} out of range 0..{img.shape[0] - 1}")
    scored = scored_labels(spec)
    fig = new_figure(figsize=(9, 3 * len(slices) + 0.9 + 0.3 * bool(note)), layout="constrained")
    axes = fig.subplots(len(slices), 3, squeeze=False)
    for row, z in enumerate(slices):
        for col, (name, lab) in enumerate((("image", None), ("ground truth", gt), ("prediction", pred))):
            ax = axes[row, col]
            ax.imshow(img[z], cmap="gray")
            if lab is not None:
                _draw_labels(ax, lab[z], spec, scored, mode)
            ax.set_title(f"{name}, slice {z + slice_offset}", fontsize=9)
            ax.axis("off")
    present = sorted((set(np.unique(gt).tolist()) | set(np.unique(pred).tolist())) & set(scored))
    handles = [Patch(color=_PALETTE[(int(k) - 1) % len(_PALETTE)], label=spec.labels.get(int(k), str(k))) for k in present]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 5), fontsize=8)
    title = f"{spec.name} {case_id}: image / ground truth / prediction (this run)" + (f"\n{note}" if note else "")
    fig.suptitle(_title(title, conditions), fontsize=10)
    return fig


def pick_slices(label: np.ndarray, n: int = 3) -> list[int]:
    """Up to ``n`` slice indices spread over the slices that hold the most foreground."""
    fg = (np.asarray(label) > 0).reshape(label.shape[0], -1).sum(1)
    if fg.max() == 0:
        return sorted({label.shape[0] // 2})
    nz = np.flatnonzero(fg)
    picks = np.linspace(nz[0], nz[-1], n + 2)[1:-1].round().astype(int)
    return sorted(set(int(p) for p in picks))


def plot_dsc_bars(ours: pd.DataFrame, paper: pd.DataFrame, conditions: RunConditions | None = None) -> Figure:
    """Per-region DSC of this run next to the paper's row of the same method, one panel per sub-table.

    Args:
        ours: rows of :func:`sam3dlib.study.report.our_rows` (DSC x100, ``sd`` over seeds).
        paper: the paper's rows (:func:`sam3dlib.study.report.paper_rows`).
        conditions: the run's conditions, shown in the title.
    """
    groups = list(dict.fromkeys(zip(ours["table"].astype(str), ours["method"])))
    fig = new_figure(figsize=(max(6.0, 1.1 * 10), 3.2 * max(1, len(groups)) + 0.6), layout="constrained")
    axes = fig.subplots(max(1, len(groups)), 1, squeeze=False)[:, 0]
    for ax, (table, method) in zip(axes, groups):
        ref = method[: -len(OURS_SUFFIX)] if method.endswith(OURS_SUFFIX) else method
        o = ours[(ours["table"].astype(str) == table) & (ours["method"] == method) & (ours["metric"] == "DSC")]
        p = paper[(paper["table"].astype(str) == table) & (paper["method"] == ref) & (paper["metric"] == "DSC")]
        regions = list(dict.fromkeys([*p["region"], *o["region"]]))
        regions = [r for r in regions if r != AVERAGE] + [AVERAGE]
        x = np.arange(len(regions))
        pv = [p.loc[p["region"] == r, "value"].astype(float).mean() if (p["region"] == r).any() else np.nan for r in regions]
        ov = [o.loc[o["region"] == r, "value"].astype(float).mean() if (o["region"] == r).any() else np.nan for r in regions]
        osd = [o.loc[o["region"] == r, "sd"].astype(float).mean() if (o["region"] == r).any() else np.nan for r in regions]
        ax.bar(x - 0.2, pv, 0.4, label=f"{ref} (paper: {PAPER})", color="0.6")
        ax.bar(x + 0.2, ov, 0.4, yerr=np.nan_to_num(osd), label=method, color="tab:blue", capsize=3)
        ax.set_xticks(x, regions)
        ax.set_ylim(0, 100)
        ax.set_ylabel("DSC (%)")
        ax.set_title(f"Table {table}", fontsize=9)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)  # beside the bars
    fig.suptitle(_title("Per-region DSC: this run vs the paper", conditions), fontsize=10)
    return fig


#: A thin line from a moved point label back to its point.
_LEADER = dict(arrowstyle="-", color="0.6", lw=0.5, shrinkA=0, shrinkB=2)


def _spread_labels(fig: Figure, labels: Sequence) -> None:
    """Move overlapping point labels (annotations with offsets in points) apart vertically."""
    if len(labels) < 2:
        return
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    placed = []
    for ann in sorted(labels, key=lambda a: -a.xy[1]):
        for _ in range(40):
            box = Text.get_window_extent(ann, renderer)  # the text alone, not its leader line
            if not any(box.overlaps(other) for other in placed):
                break
            dx, dy = ann.xyann
            ann.xyann = (dx, dy - 0.6 * ann.get_fontsize())
        placed.append(Text.get_window_extent(ann, renderer))


def plot_params_vs_dsc(
    paper_tables: pd.DataFrame | None = None, ours: pd.DataFrame | None = None, conditions: RunConditions | None = None
) -> Figure:
    """Trainable parameters vs average DSC for every method with a parameter count, one panel per
    table present in ``paper_tables`` (pass :func:`sam3dlib.study.report.paper_rows` of one table for
    that table alone); point labels are moved apart so that none overlaps another.

    Args:
        paper_tables: the paper's rows (default: all of :func:`sam3dlib.study.report.load_paper_tables`).
        ours: our rows to add (starred); tables without our rows are still shown.
        conditions: the run's conditions, shown in the title.
    """
    paper = load_paper_tables() if paper_tables is None else paper_tables
    keys = paper["table"].astype(str)
    has_params = pd.to_numeric(paper["params_m"], errors="coerce").notna()
    tables = list(dict.fromkeys(keys[has_params & (paper["region"] == AVERAGE)]))
    fig = new_figure(figsize=(5.2 * max(1, len(tables)), 4.6), layout="constrained")
    axes = fig.subplots(1, max(1, len(tables)), squeeze=False)[0]
    labels = []
    for ax, t in zip(axes, tables):
        sub = paper[(keys == t) & (paper["metric"] == "DSC") & (paper["region"] == AVERAGE)]
        sub = sub[pd.to_numeric(sub["params_m"], errors="coerce").notna()]
        for _, r in sub.iterrows():
            ax.scatter(float(r["params_m"]), float(r["value"]), color="0.45", s=25)
            labels.append(ax.annotate(r["method"], (float(r["params_m"]), float(r["value"])), fontsize=7,
                                      xytext=(4, 0), textcoords="offset points", va="center", arrowprops=_LEADER))
        if ours is not None:
            o = ours[(ours["table"].astype(str) == t) & (ours["metric"] == "DSC") & (ours["region"] == AVERAGE)]
            for _, r in o.iterrows():
                ax.errorbar(float(r["params_m"]), float(r["value"]), yerr=np.nan_to_num(float(r["sd"])), fmt="*", color="tab:red", ms=12)
                labels.append(ax.annotate(r["method"], (float(r["params_m"]), float(r["value"])), fontsize=7,
                                          color="tab:red", xytext=(4, 0), textcoords="offset points", va="center",
                                          arrowprops=_LEADER))
        ds = sub["dataset"].iloc[0] if len(sub) else ""
        ax.set_xscale("log")
        ax.margins(x=0.35, y=0.12)
        ax.set_xlabel("trainable parameters (M, log)")
        ax.set_ylabel("average DSC (%)")
        ax.set_title(f"Table {t} ({ds}); grey = paper", fontsize=9)
    for ann in labels:
        ann.set_in_layout(False)
    _spread_labels(fig, labels)
    fig.suptitle(_title(f"Parameters vs DSC: the paper's methods ({PAPER}) and this run (red)", conditions), fontsize=10)
    return fig


def plot_training_curves(log_csv: str | os.PathLike | Sequence[str | os.PathLike], conditions: RunConditions | None = None,
                         labels: Sequence[str] | None = None, x: str = "epoch",
                         offsets: Sequence[float] | None = None) -> Figure:
    """Training loss and online validation DSC per epoch from one or more ``log.csv`` files
    (the figure of :func:`sam3dlib.training.logging.curve_figure`, titled with the conditions;
    ``x`` and ``offsets`` as there: ``x="seconds"`` for runs compared at an equal time budget).

    Raises:
        FileNotFoundError: if a log file is missing.
        ValueError: if a log lacks the ``epoch``, ``train_loss`` or ``val_dice`` column.
    """
    from sam3dlib.training.logging import curve_figure

    paths = [log_csv] if isinstance(log_csv, (str, os.PathLike)) else list(log_csv)
    labels = list(labels) if labels is not None else [Path(p).parent.name for p in paths]
    runs = []
    for path, label in zip(paths, labels):
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"{p}: training log not found")
        log = pd.read_csv(p)
        missing = {"epoch", "train_loss", "val_dice"} - set(log.columns)
        if missing:
            raise ValueError(f"{p}: training log lacks columns {sorted(missing)}")
        runs.append((label, log.to_dict("records")))
    fig = curve_figure(runs, _title("Training curves (this run)", conditions), x=x, offsets=offsets)
    if conditions is not None and conditions.protocol == "paper":  # say what "validation" is here
        fig.axes[1].set_ylabel("online validation Dice (EMA dashed)\n= the test cases (paper protocol)")
    return fig


def plot_per_case_dsc(per_case: pd.DataFrame, conditions: RunConditions | None = None) -> Figure:
    """Per-case DSC (%) of each region: box plot per region, one dot per case and seed, one
    panel per sub-table and method (seaborn).

    Args:
        per_case: ``case_id, region, metric, value`` rows (``per_case.csv``; DSC in [0, 1]),
            with ``seed``, ``table`` and ``method`` columns when several runs are pooled.
        conditions: the run's conditions, shown in the title.

    Raises:
        ValueError: if the frame lacks a column or holds no DSC row.
    """
    import seaborn as sns

    missing = {"case_id", "region", "metric", "value"} - set(per_case.columns)
    if missing:
        raise ValueError(f"per-case frame lacks columns {sorted(missing)}")
    dsc = per_case[per_case["metric"] == "DSC"].assign(dsc=lambda d: 100.0 * d["value"].astype(float))
    if dsc.empty:
        raise ValueError("per-case frame holds no DSC row")
    for col, default in (("seed", 0), ("table", ""), ("method", "this run")):
        if col not in dsc.columns:
            dsc[col] = default
    dsc["seed"] = dsc["seed"].astype(str)
    groups = list(dict.fromkeys(zip(dsc["table"].astype(str), dsc["method"])))
    fig = new_figure(figsize=(11, 3.2 * len(groups) + 0.6), layout="constrained")
    axes = fig.subplots(len(groups), 1, squeeze=False)[:, 0]
    for ax, (table, method) in zip(axes, groups):
        sub = dsc[(dsc["table"].astype(str) == table) & (dsc["method"] == method)]
        sns.boxplot(data=sub, x="region", y="dsc", color="0.85", showfliers=False, ax=ax)
        sns.stripplot(data=sub, x="region", y="dsc", hue="seed", dodge=False, size=4, alpha=0.8, ax=ax)
        ax.set(ylim=(0, 100), xlabel="", ylabel="per-case DSC (%)", title=f"Table {table}: {method}".strip())
        ax.legend(title="seed", fontsize=7, title_fontsize=7, loc="lower right")
    fig.suptitle(_title("Per-case DSC over cases, seeds and regions (this run)", conditions), fontsize=10)
    return fig


__all__ = ["OVERLAY_MODES", "pick_slices", "plot_case", "scored_labels", "plot_dsc_bars", "plot_overlays", "plot_params_vs_dsc", "plot_per_case_dsc",
           "plot_training_curves"]


def plot_case(image: np.ndarray, label: np.ndarray | None, slices: Sequence[int] | None, spec: DatasetSpec, title: str = "", conditions: RunConditions | None = None) -> Figure:
    """A case's slices: every image channel, then the label map over the first channel.

    Args:
        image: ``C x D x H x W`` (or ``D x H x W``).
        label: ``D x H x W`` or None.
        slices: slice indices; None picks up to three with the most foreground (or the middle).
        spec: the dataset's spec.
        title: figure title (the conditions are appended).
    """
    img = np.asarray(image)
    img = img[None] if img.ndim == 3 else img
    if slices is None:
        slices = pick_slices(label) if label is not None else [img.shape[1] // 2]
    cols = img.shape[0] + (label is not None)
    fig = new_figure(figsize=(2.6 * cols, 2.6 * len(slices) + 0.8), layout="constrained")
    axes = fig.subplots(len(slices), cols, squeeze=False)
    cmap = _label_cmap(spec.num_classes)
    for r, z in enumerate(slices):
        for c in range(img.shape[0]):
            axes[r, c].imshow(img[c, z], cmap="gray")
            axes[r, c].set_title(f"channel {c}, slice {z}", fontsize=8)
        if label is not None:
            axes[r, -1].imshow(img[0, z], cmap="gray")
            axes[r, -1].imshow(np.asarray(label)[z], cmap=cmap, vmin=0, vmax=spec.num_classes - 1, interpolation="nearest")
            axes[r, -1].set_title(f"labels, slice {z}", fontsize=8)
        for ax in axes[r]:
            ax.axis("off")
    fig.suptitle(_title(title or f"{spec.name}: prepared case", conditions), fontsize=10)
    return fig
