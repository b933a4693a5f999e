"""Tables from result files, side by side with the paper's numbers.

The paper's Tables 1-5 ship as ``resources/paper_tables.csv`` in a long format
(``table, dataset, method, group, params_m, metric, region, value``). A run of ours adds rows
in the same format, method ``"SAM3D (this run)"`` (Table 5: ``"SAM3D w/o skip connection
(this run)"`` ...), with condition columns saying what produced them (encoder checkpoint or
``"random init"``, ``"phantom"`` data or the dataset, profile, protocol, seeds). DSC is given
x100 like the paper; HD95 in the paper's units (voxels of the original grid).

Figures live in :mod:`sam3dlib.study.report_figures`.

Examples::

    >>> from sam3dlib.study import report
    >>> paper = report.paper_rows(1)                       # Table 1 as printed
    >>> stats = report.seeds_summary([summary_seed0, summary_seed1])
    >>> ours = report.our_rows(stats, get_spec("synapse"), conditions, table="1")
    >>> print(report.comparison_table("1", ours).to_markdown())
"""
from __future__ import annotations

import html
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from sam3dlib.data.specs import DatasetSpec
from sam3dlib.evaluation.metrics import AVERAGE
from sam3dlib.modeling.constants import EMBED_CHANNELS, RANDOM_INIT
from sam3dlib.study.registry import table_key
from sam3dlib.utils.fileio import atomic_write, atomic_write_csv, atomic_write_text

#: The paper the reference rows come from; every paper number is labelled with it.
PAPER = "Bui et al., SAM3D, ISBI 2024"
PAPER_SOURCE = f"paper ({PAPER})"
THIS_RUN = "this run"
OURS_SUFFIX = " (this run)"
#: The paper's long format.
LONG_COLUMNS = ["table", "dataset", "method", "group", "params_m", "metric", "region", "value"]
#: Columns we add: where a row comes from and under which conditions it was measured.
CONDITION_COLUMNS = ["source", "sd", "n_seeds", "seeds", "encoder", "encoder_weights", "data", "profile", "protocol"]
ALL_COLUMNS = LONG_COLUMNS + CONDITION_COLUMNS
#: Put after a cell of a structure this run never predicted (DSC 0).
MISSED_MARK = "(missed)"
#: Style of the comparison tables: our rows highlighted beside the paper's, differences in italics.
TABLE_CSS = (
    ".sam3d-table table{border-collapse:collapse;font:13px/1.4 system-ui,sans-serif;margin:0.5em 0 1.5em}"
    ".sam3d-table th,.sam3d-table td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}"
    ".sam3d-table thead th{border-bottom:2px solid #444;background:#f4f4f4}"
    ".sam3d-table tbody th,.sam3d-table thead th:first-child{text-align:left;font-weight:normal}"
    ".sam3d-table tr.ours{background:#fff3c4;font-weight:bold}"
    ".sam3d-table tr.difference{color:#555;font-style:italic}"
    ".sam3d-table .caption{max-width:60em;font:13px/1.4 system-ui,sans-serif;color:#333}"
)
PAGE_CSS = "body{font:14px/1.5 system-ui,sans-serif;margin:2em auto;max-width:75em;padding:0 1em;color:#222}"


# --------------------------------------------------------------------------------------------
# Paper rows


@lru_cache(maxsize=1)
def _paper_csv() -> pd.DataFrame:
    text = resources.files("sam3dlib.resources").joinpath("paper_tables.csv").read_text()
    from io import StringIO

    df = pd.read_csv(StringIO(text), dtype={"table": str})
    return df


def load_paper_tables() -> pd.DataFrame:
    """All of the paper's Tables 1-5 in long format, with ``source`` = the paper.

    Returns:
        DataFrame with :data:`ALL_COLUMNS`; ``table`` is a string (``"1"`` ... ``"5a"``, ``"5b"``).
    """
    df = _paper_csv().copy()
    df["source"] = PAPER_SOURCE
    for col in CONDITION_COLUMNS[1:]:
        df[col] = np.nan if col in ("sd", "n_seeds") else ""
    return df[ALL_COLUMNS]


def paper_rows(table: int | str, dataset: str | None = None) -> pd.DataFrame:
    """The paper's rows of one table (``5`` = 5a and 5b), optionally of one dataset only."""
    key = table_key(table)
    df = load_paper_tables()
    keep = df["table"].str.startswith("5") if key == "5" else df["table"] == key
    if dataset is not None:
        keep &= df["dataset"] == dataset.lower()
    return df[keep].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Our rows


@dataclass(frozen=True)
class RunConditions:
    """What a run of ours was measured under; stand-in runs say so wherever they are shown.

    Attributes:
        encoder: ViT name (``vit_b``; ``vit_tiny`` is a test stand-in, not SAM).
        encoder_weights: the weights file name (and short sha256) or ``"random init"``.
        data: ``"phantom"`` or the dataset's name.
        profile: ``paper``, ``quick`` or ``smoke``.
        protocol: split protocol, ``paper`` or ``clean``.
        seeds: the seeds aggregated.
    """

    encoder: str
    encoder_weights: str
    data: str
    profile: str
    protocol: str
    seeds: tuple[int, ...] = (0,)

    @property
    def random_encoder(self) -> bool:
        return self.encoder_weights == RANDOM_INIT

    @property
    def phantom(self) -> bool:
        return self.data == "phantom"

    @property
    def stand_in(self) -> bool:
        """True when the run is not the paper's setting (random/tiny encoder or phantom data)."""
        return self.random_encoder or self.phantom or self.encoder == "vit_tiny"

    def describe(self) -> str:
        """Short human description, e.g. ``"random-init vit_tiny encoder, phantom data, smoke profile"``."""
        if self.random_encoder:
            enc = f"random-init {self.encoder} encoder"
        else:
            enc = f"{self.encoder} encoder from {self.encoder_weights}"
        data = "phantom data" if self.phantom else f"{self.data} data"
        seeds = f"seed {self.seeds[0]}" if len(self.seeds) == 1 else f"{len(self.seeds)} seeds"
        parts = [enc, data, f"{self.profile} profile", f"{self.protocol} protocol", seeds]
        text = ", ".join(parts)
        return f"STAND-IN RUN: {text}" if self.stand_in else text

    def as_columns(self) -> dict[str, str]:
        d = asdict(self)
        d["seeds"] = " ".join(str(s) for s in self.seeds)
        return d


def trainable_params_m(spec: DatasetSpec, skip: bool = True, deep_supervision: bool = True) -> float:
    """Trainable parameters (the decoder) in millions, as the paper counts them (1.88M, 4.63M)."""
    from sam3dlib.modeling.decoder import Decoder3D

    dec = Decoder3D(spec.num_channels * EMBED_CHANNELS, spec.num_classes, skip=skip, deep_supervision=deep_supervision)
    return round(sum(p.numel() for p in dec.parameters()) / 1e6, 2)


def _summary_stats(summary: pd.DataFrame) -> pd.DataFrame:
    """Accept :func:`seeds_summary` output or one ``metrics.aggregate`` frame."""
    if {"region", "metric", "mean"} - set(summary.columns):
        raise ValueError(
            f"summary frame needs columns region, metric, mean (metrics.aggregate / seeds_summary); got {list(summary.columns)}"
        )
    out = summary.copy()
    if "sd" not in out.columns:
        out["sd"] = np.nan
    if "n_seeds" not in out.columns:
        out["n_seeds"] = 1
    return out


def our_rows(
    summary: pd.DataFrame,
    spec: DatasetSpec,
    conditions: RunConditions,
    table: int | str = "1",
    method: str = "SAM3D",
    params_m: float | None = None,
    skip: bool = True,
) -> pd.DataFrame:
    """Our run's numbers as rows in the paper's long format (plus condition columns).

    Args:
        summary: ``metrics.aggregate`` output (``region, metric, mean``) or :func:`seeds_summary`
            output (adds ``sd``, ``n_seeds``). DSC in [0, 1]; it is written x100 like the paper.
        spec: the dataset's spec.
        conditions: what the run was measured under.
        table: paper table the rows belong to (``"1"`` ... ``"5b"``).
        method: the paper's method name these rows reproduce; ``" (this run)"`` is appended.
        params_m: trainable parameters in millions; computed from ``spec``/``skip`` when None.
        skip: decoder skip connections (for the parameter count).

    Returns:
        DataFrame with :data:`ALL_COLUMNS`. Regions the paper shows only as "average" (Lung)
        keep our region rows too, so no measured number is dropped.
    """
    stats = _summary_stats(summary)
    if params_m is None:
        params_m = trainable_params_m(spec, skip=skip)
    rows = []
    for rec in stats.to_dict("records"):
        scale = 100.0 if rec["metric"] == "DSC" else 1.0
        sd = rec["sd"] * scale if not pd.isna(rec["sd"]) else np.nan
        rows.append(
            {
                "table": table_key(table),
                "dataset": spec.name,
                "method": method + OURS_SUFFIX,
                "group": THIS_RUN,
                "params_m": params_m,
                "metric": rec["metric"],
                "region": rec["region"],
                "value": float(rec["mean"]) * scale,
                "source": THIS_RUN,
                "sd": sd,
                "n_seeds": int(rec["n_seeds"]),
                **conditions.as_columns(),
            }
        )
    return pd.DataFrame(rows, columns=ALL_COLUMNS)


def seeds_summary(summaries: Sequence[pd.DataFrame] | Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Mean and sample sd over seeds of ``metrics.aggregate`` frames.

    Args:
        summaries: one ``region, metric, mean`` frame per seed (a list or ``{seed: frame}``).

    Returns:
        ``region, metric, mean, sd, n_seeds`` in the first frame's row order; ``sd`` is NaN for
        one seed.

    Raises:
        ValueError: no frames, or frames that lack the columns.
    """
    frames = list(summaries.values()) if isinstance(summaries, Mapping) else list(summaries)
    if not frames:
        raise ValueError("seeds_summary needs at least one summary frame")
    for i, f in enumerate(frames):
        if {"region", "metric", "mean"} - set(f.columns):
            raise ValueError(f"summary frame {i} needs columns region, metric, mean; got {list(f.columns)}")
    allf = pd.concat([f[["region", "metric", "mean"]].assign(_seed=i) for i, f in enumerate(frames)])
    order = frames[0][["region", "metric"]].drop_duplicates()
    g = allf.groupby(["region", "metric"], sort=False)["mean"]
    stats = pd.DataFrame({"mean": g.mean(), "sd": g.std(ddof=1), "n_seeds": g.count()}).reset_index()
    return order.merge(stats, on=["region", "metric"], how="left").reset_index(drop=True)


def read_summary(path: str | os.PathLike) -> pd.DataFrame:
    """Read a run's ``summary.csv`` with a clear error naming the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: summary file not found (written by run_experiment)")
    df = pd.read_csv(p)
    if {"region", "metric", "mean"} - set(df.columns):
        raise ValueError(f"{p}: needs columns region, metric, mean; has {list(df.columns)}")
    return df


# --------------------------------------------------------------------------------------------
# Comparison table


def _column_name(metric: str, region: str) -> str:
    return f"{metric} {'avg' if region == AVERAGE else region}"


@dataclass(repr=False)
class ComparisonTable:
    """Paper rows, ours and the differences, one row per method, one column per metric/region.

    Attributes:
        values: numeric wide frame (index: method; columns ``Params (M)``, ``DSC RKid`` ...).
        sd: same shape, sd over seeds (NaN where there is none).
        caption: says where each row comes from and, for stand-in runs, that they are.
        table: the paper table (``"1"`` ... ``"5b"``).
    """

    values: pd.DataFrame
    sd: pd.DataFrame
    caption: str
    table: str
    difference_rows: list[str] = field(default_factory=list)

    def ours_rows(self) -> list[str]:
        """The rows measured by this run (method ending in :data:`OURS_SUFFIX`)."""
        return [str(r) for r in self.values.index if str(r).endswith(OURS_SUFFIX)]

    def missed(self, row: str, column: str) -> bool:
        """Whether a cell of our ``row`` belongs to a structure this run never predicted: its DSC is 0
        (then a region's HD95 of 0 is the convention for an empty prediction, not a perfect border)."""
        if row not in self.ours_rows() or column == "Params (M)":
            return False
        region = column.split(" ", 1)[1] if " " in column else column
        dsc = f"DSC {region}"
        return dsc in self.values.columns and self.values.at[row, dsc] == 0

    def formatted(self, digits: int = 2) -> pd.DataFrame:
        """Strings for display: ``mean ± sd`` where an sd exists, blanks for missing cells, and
        ``(missed)`` after a cell of a structure this run never predicted (:meth:`missed`)."""
        out = pd.DataFrame(index=self.values.index, columns=self.values.columns, dtype=object)
        for r in self.values.index:
            for c in self.values.columns:
                v, s = self.values.at[r, c], self.sd.at[r, c]
                if pd.isna(v):
                    out.at[r, c] = ""
                elif c == "Params (M)":
                    out.at[r, c] = f"{v:.2f}"
                else:
                    sign = "+" if r in self.difference_rows and v > 0 else ""
                    text = f"{sign}{v:.{digits}f}"
                    out.at[r, c] = text + (f" ± {s:.{digits}f}" if not pd.isna(s) else "") + (
                        f" {MISSED_MARK}" if self.missed(r, c) else "")
        out.index.name = "method"
        return out

    def to_markdown(self, digits: int = 2) -> str:
        """A GitHub-flavoured markdown table with the caption above it."""
        f = self.formatted(digits)
        header = ["method", *f.columns]
        lines = [f"**Table {self.table}.** {self.caption}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join([":---"] + ["---:"] * len(f.columns)) + "|")
        for name, row in f.iterrows():
            cells = [str(name).replace("|", "\\|"), *(str(x) for x in row)]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines) + "\n"

    def to_html(self, digits: int = 2) -> str:
        """An HTML table with the caption: paper rows plain, our rows (class ``ours``) highlighted,
        ``difference`` rows (class ``difference``) in italics; styled by :data:`TABLE_CSS`."""
        f = self.formatted(digits)
        ours, diffs = set(self.ours_rows()), set(self.difference_rows)
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["method", *f.columns])
        rows = []
        for name, row in f.iterrows():
            cls = "ours" if name in ours else "difference" if name in diffs else "paper"
            cells = "".join(f"<td>{html.escape(str(x))}</td>" for x in row)
            rows.append(f'<tr class="{cls}"><th>{html.escape(str(name))}</th>{cells}</tr>')
        return (f'<div class="sam3d-table"><p class="caption"><b>Table {html.escape(self.table)}.</b> '
                f'{html.escape(self.caption)}</p>\n<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
                + "\n".join(rows) + "\n</tbody>\n</table></div>")

    def _repr_html_(self) -> str:  # Jupyter rich display (Lab, the HTML report): our rows highlighted
        return f"<style>{TABLE_CSS}</style>\n{self.to_html()}"

    def _repr_markdown_(self) -> str:  # Jupyter rich display
        return self.to_markdown()

    def __str__(self) -> str:
        return self.to_markdown()

    __repr__ = __str__


def _caption(table: str, ours: pd.DataFrame) -> str:
    parts = [f"Rows without '{OURS_SUFFIX.strip()}' are the paper's numbers ({PAPER}), copied as printed."]
    if not ours.empty:
        c = ours.iloc[0]
        seeds = str(c["seeds"]).split()
        cond = RunConditions(
            str(c["encoder"]), str(c["encoder_weights"]), str(c["data"]), str(c["profile"]),
            str(c["protocol"]), tuple(int(s) for s in seeds) or (0,),
        )
        parts.append(f"'{OURS_SUFFIX.strip()}' rows: {cond.describe()}.")
        if len(seeds) > 1:
            parts.append(f"Our cells are mean ± sd over seeds {' '.join(seeds)}.")
        parts.append("'difference' rows = this run − the paper's row of the same method.")
        if cond.stand_in:
            parts.append("Stand-in conditions: the differences measure nothing about the paper's claims.")
    parts.append("DSC in %, HD95 in voxels of the original grid (the paper's convention).")
    if not ours.empty:
        parts.append(f"'{MISSED_MARK}': a structure this run never predicted (DSC 0; its HD95 of 0 is the "
                     "convention for an empty prediction, not a perfect border).")
    return " ".join(parts)


def comparison_table(table: int | str, ours: pd.DataFrame | None = None) -> ComparisonTable:
    """Wide table with the paper's rows, ours and ``difference`` rows (ours − paper's same method).

    Args:
        table: paper table (``1`` ... ``4``, ``"5a"``, ``"5b"``); for Table 5 pass the sub-table.
        ours: rows from :func:`our_rows` (any tables; only ``table``'s are used). None: paper only.

    Returns:
        :class:`ComparisonTable`. Columns follow the paper's order for that table; our extra
        regions (e.g. Lung's ``tumour``) are not shown there but stay in the long CSV.
    """
    key = table_key(table)
    if key == "5":
        raise ValueError("Table 5 has two sub-tables; build '5a' (ACDC) and '5b' (Synapse) separately")
    paper = paper_rows(key)
    ours = pd.DataFrame(columns=ALL_COLUMNS) if ours is None else ours[ours["table"].astype(str) == key]
    cols: list[tuple[str, str]] = list(dict.fromkeys(zip(paper["metric"], paper["region"])))
    # order: per-region DSC in the paper's order, DSC avg, then HD95 columns
    dsc = [c for c in cols if c[0] == "DSC" and c[1] != AVERAGE] + [c for c in cols if c == ("DSC", AVERAGE)]
    cols = dsc + [c for c in cols if c[0] != "DSC"]
    names = ["Params (M)"] + [_column_name(*c) for c in cols]

    def wide(rows: pd.DataFrame, value_col: str) -> pd.DataFrame:
        methods = list(dict.fromkeys(rows["method"]))
        out = pd.DataFrame(np.nan, index=methods, columns=names, dtype=float)
        for m in methods:
            sub = rows[rows["method"] == m]
            if value_col == "value":
                out.at[m, "Params (M)"] = pd.to_numeric(sub["params_m"], errors="coerce").max()
            for metric, region in cols:
                hit = sub[(sub["metric"] == metric) & (sub["region"] == region)]
                if len(hit):
                    out.at[m, _column_name(metric, region)] = float(hit[value_col].iloc[0])
        return out

    values = pd.concat([wide(paper, "value"), wide(ours, "value")]) if len(ours) else wide(paper, "value")
    sd = pd.concat([wide(paper, "sd"), wide(ours, "sd")]) if len(ours) else wide(paper, "sd")
    diffs = []
    for m in dict.fromkeys(ours["method"]):
        ref = m[: -len(OURS_SUFFIX)] if m.endswith(OURS_SUFFIX) else m
        if ref in values.index:
            name = f"difference ({ref}: this run − paper)"
            values.loc[name] = values.loc[m] - values.loc[ref]
            values.at[name, "Params (M)"] = np.nan
            sd.loc[name] = np.nan
            diffs.append(name)
    values.index.name = sd.index.name = "method"
    return ComparisonTable(values, sd, _caption(key, ours), key, diffs)


def long_table(table: int | str, ours: pd.DataFrame) -> pd.DataFrame:
    """The paper's rows of ``table`` followed by ours (the file written as ``tableN.csv``)."""
    return pd.concat([paper_rows(table), ours], ignore_index=True)[ALL_COLUMNS]


# --------------------------------------------------------------------------------------------
# Files


def save_figure(fig, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG atomically."""
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight"))


def write_table_files(out_dir: str | os.PathLike, name: str, long: pd.DataFrame, tables: Iterable[ComparisonTable]) -> dict[str, Path]:
    """Write ``<name>.csv`` (long format), ``<name>.md`` and ``<name>.html`` under ``out_dir``."""
    out = Path(out_dir)
    tables = list(tables)
    md = "\n".join(t.to_markdown() for t in tables)
    page = "\n".join(t.to_html() for t in tables)
    return {
        "csv": atomic_write_csv(out / f"{name}.csv", long),
        "md": atomic_write_text(out / f"{name}.md", md),
        "html": atomic_write_text(out / f"{name}.html", html_page(name, page)),
    }


def html_page(title: str, body: str) -> str:
    """A standalone HTML page (UTF-8, :data:`TABLE_CSS`) around ``body``."""
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>\n'
            f"<style>{PAGE_CSS}{TABLE_CSS}</style></head>\n<body>\n{body}\n</body></html>\n")


def mean_foreground_dsc(summary: pd.DataFrame) -> float:
    """The table's mean DSC (``average`` row of a ``metrics.aggregate`` frame), in [0, 1]."""
    hit = summary[(summary["metric"] == "DSC") & (summary["region"] == AVERAGE)]
    if hit.empty:
        raise ValueError("summary has no DSC 'average' row")
    return float(hit["mean"].iloc[0])


__all__ = [
    "ALL_COLUMNS",
    "LONG_COLUMNS",
    "PAPER",
    "MISSED_MARK",
    "TABLE_CSS",
    "ComparisonTable",
    "html_page",
    "RunConditions",
    "comparison_table",
    "load_paper_tables",
    "long_table",
    "mean_foreground_dsc",
    "our_rows",
    "paper_rows",
    "read_summary",
    "seeds_summary",
    "trainable_params_m",
    "write_table_files",
]
