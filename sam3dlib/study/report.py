"""Tables from result files, side by side with the paper's numbers.

The paper's Tables 1-5 ship as ``resources/paper_tables.csv`` in a long format
(``table, dataset, method, group, params_m, metric, region, value``). A run of ours adds rows
in the same format, method ``"SAM3D (this run)"`` (Table 5: ``"SAM3D w/o skip connection
(this run)"`` ...), with condition columns saying what produced them (encoder checkpoint or
``"random init"``, ``"phantom"`` data or the dataset, profile, protocol, seeds). DSC is given
x100 like the paper; HD95 as the authors' evaluation script computes it (voxels of the original grid;
the paper states no unit).

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
from pathlib import Path

import numpy as np
import pandas as pd

from sam3dlib.data.specs import DatasetSpec
from sam3dlib.evaluation.metrics import AVERAGE, BRATS_AVERAGES, average_regions
from sam3dlib.modeling.constants import EMBED_CHANNELS, NO_ENCODER, RANDOM_INIT
from sam3dlib.study import paper_tables
from sam3dlib.study.paper_tables import PAPER, PAPER_SOURCE, TABLE_LAYOUTS
from sam3dlib.study.registry import table_key
from sam3dlib.utils.fileio import atomic_write, atomic_write_csv, atomic_write_text

THIS_RUN = "this run"
OURS_SUFFIX = " (this run)"
#: The paper's long format.
LONG_COLUMNS = ["table", "dataset", "method", "group", "params_m", "metric", "region", "value"]
#: Columns we add: where a row comes from and under which conditions it was measured.
CONDITION_COLUMNS = ["source", "sd", "n_seeds", "seeds", "encoder", "encoder_weights", "data", "profile", "protocol"]
#: The paper's cells as printed (empty for our rows): :mod:`sam3dlib.study.paper_tables`.
PRINTED_COLUMNS = ["printed", "printed_header", "params_printed", "paper_source"]
ALL_COLUMNS = LONG_COLUMNS + CONDITION_COLUMNS + PRINTED_COLUMNS
#: Put after a cell of a structure this run never predicted (DSC 0).
MISSED_MARK = "(missed)"
#: Style of the comparison tables: our rows highlighted beside the paper's, differences in italics.
TABLE_CSS = (
    ".sam3d-table table{border-collapse:collapse;font:13px/1.4 system-ui,sans-serif;margin:0.5em 0 1.5em}"
    ".sam3d-table th,.sam3d-table td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}"
    ".sam3d-table thead th{border-bottom:2px solid #444;background:#f4f4f4}"
    ".sam3d-table table tbody th,.sam3d-table table thead th:first-child{text-align:left;font-weight:normal}"
    ".sam3d-table table tr.ours{background:#fff3c4;font-weight:bold}"
    ".sam3d-table tr.difference{color:#555;font-style:italic}"
    ".sam3d-table .caption{max-width:60em;font:13px/1.4 system-ui,sans-serif;color:#333}"
)
PAGE_CSS = "body{font:14px/1.5 system-ui,sans-serif;margin:2em auto;max-width:75em;padding:0 1em;color:#222}"



def load_paper_tables() -> pd.DataFrame:
    """All of the paper's Tables 1-5 in long format, with ``source`` = the paper and its table.

    Returns:
        DataFrame with :data:`ALL_COLUMNS`; ``table`` is a string (``"1"`` ... ``"5a"``, ``"5b"``);
        ``value`` is the printed number, ``printed`` its text (:mod:`sam3dlib.study.paper_tables`).
    """
    return _with_conditions(paper_tables.load_paper_tables())


def _with_conditions(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    df["source"] = PAPER_SOURCE
    for col in CONDITION_COLUMNS[1:]:
        df[col] = np.nan if col in ("sd", "n_seeds") else ""
    return df[ALL_COLUMNS]


def paper_rows(table: int | str, dataset: str | None = None) -> pd.DataFrame:
    """The paper's rows of one table (``5`` = 5a and 5b), optionally of one dataset only."""
    return _with_conditions(paper_tables.paper_rows(table, dataset))


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
        if self.encoder == NO_ENCODER:
            enc = "no encoder (trained from scratch)"
        elif self.random_encoder:
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

#: Marks on displayed cells, explained in the table's footnotes.
READING_MARK = "†"  # a printed header we read differently (Table 2)
AUDIT_MARK = "‡"  # a printed average that is not the mean of its printed cells
PARAMS = "Params (M)"


def _column_name(metric: str, region: str) -> str:
    return f"{metric} {'avg' if region == AVERAGE else region}"


def _variant_label(regions: Sequence[str]) -> str:
    return f"{AVERAGE} ({', '.join(regions)})"


def with_average_variants(summary: pd.DataFrame, spec: DatasetSpec) -> pd.DataFrame:
    """Add a row per alternative "average" of ``spec`` (BraTS: over WT, ET, TC and over five regions).

    Each added row's ``region`` is ``"average (R1, R2, ...)"`` and its ``mean`` the plain mean of
    those regions' means (the rule of ``metrics.aggregate``), so a table can compare like with like
    with a printed average of either kind. Datasets with one kind of average are returned as is.
    """
    variants = list(dict.fromkeys(average_regions(spec, v) for v in BRATS_AVERAGES))
    if len(variants) < 2:
        return summary
    extra = []
    for metric in dict.fromkeys(summary["metric"]):
        sub = summary[summary["metric"] == metric].set_index("region")["mean"]
        for regions in variants:
            if all(r in sub.index for r in regions):
                extra.append({"region": _variant_label(regions), "metric": metric,
                              "mean": float(np.mean([sub[r] for r in regions]))})
    return pd.concat([summary, pd.DataFrame(extra)], ignore_index=True)


@dataclass(repr=False)
class ComparisonTable:
    """Paper rows, ours and the differences, one row per method, one column per metric/region.

    Attributes:
        values: numeric wide frame (index: method; columns ``Params (M)``, ``DSC avg``,
            ``DSC RKid`` ... in the paper's printed order).
        sd: same shape, sd over seeds (NaN where there is none).
        caption: says where each row comes from and, for stand-in runs, that they are.
        table: the paper table (``"1"`` ... ``"5b"``).
        difference_rows: the rows that are differences (this run − paper).
        printed: same shape, the paper's cell text as printed ("" for our rows and differences).
        headers: column -> the header displayed (the printed one, marked where we read it otherwise).
        digits: column -> decimals of our cells (the paper's printed precision in that column).
        marks: ``(row, column)`` -> mark shown after the cell (:data:`READING_MARK`, :data:`AUDIT_MARK`).
        footnotes: what each mark and each kind of average means.
    """

    values: pd.DataFrame
    sd: pd.DataFrame
    caption: str
    table: str
    difference_rows: list[str] = field(default_factory=list)
    printed: pd.DataFrame | None = None
    headers: dict[str, str] = field(default_factory=dict)
    digits: dict[str, int] = field(default_factory=dict)
    marks: dict[tuple[str, str], str] = field(default_factory=dict)
    footnotes: list[str] = field(default_factory=list)

    def ours_rows(self) -> list[str]:
        """The rows measured by this run (method ending in :data:`OURS_SUFFIX`)."""
        return [str(r) for r in self.values.index if str(r).endswith(OURS_SUFFIX)]

    def missed(self, row: str, column: str) -> bool:
        """Whether a cell of our ``row`` belongs to a structure this run never predicted: its DSC is 0
        (then a region's HD95 of 0 is the convention for an empty prediction, not a perfect border)."""
        if row not in self.ours_rows() or column == PARAMS:
            return False
        region = column.split(" ", 1)[1] if " " in column else column
        dsc = f"DSC {region}"
        return dsc in self.values.columns and self.values.at[row, dsc] == 0

    def _cell(self, r: str, c: str, digits: int | None) -> str:
        v, s = self.values.at[r, c], self.sd.at[r, c]
        text = "" if self.printed is None else str(self.printed.at[r, c] or "")
        if not text and not pd.isna(v):
            d = self.digits.get(c, 2) if digits is None else digits
            sign = "+" if r in self.difference_rows and v > 0 else ""
            text = f"{sign}{v:.{d}f}" + (f" ± {s:.{d}f}" if not pd.isna(s) else "")
            text += f" {MISSED_MARK}" if self.missed(r, c) else ""
        return text + self.marks.get((r, c), "") if text else ""

    def formatted(self, digits: int | None = None) -> pd.DataFrame:
        """Strings for display: the paper's cells as printed; ours ``mean ± sd`` at the column's
        printed precision (or ``digits``) and ``(missed)`` after a cell of a structure this run never
        predicted (:meth:`missed`); blanks for missing cells; marks appended."""
        out = pd.DataFrame(index=self.values.index, columns=self.values.columns, dtype=object)
        for r in self.values.index:
            for c in self.values.columns:
                out.at[r, c] = self._cell(r, c, digits)
        out.columns = [self.headers.get(c, c) for c in self.values.columns]
        out.index.name = "method"
        return out

    def notes(self) -> str:
        return "\n".join(f"- {n}" for n in self.footnotes)

    def to_markdown(self, digits: int | None = None) -> str:
        """A GitHub-flavoured markdown table with the caption above it and the footnotes below."""
        f = self.formatted(digits)
        header = ["method", *f.columns]
        lines = [f"**Table {self.table}.** {self.caption}", "", "| " + " | ".join(header) + " |"]
        lines.append("|" + "|".join([":---"] + ["---:"] * len(f.columns)) + "|")
        for name, row in f.iterrows():
            cells = [str(name).replace("|", "\\|"), *(str(x) for x in row)]
            lines.append("| " + " | ".join(cells) + " |")
        if self.footnotes:
            lines += ["", self.notes()]
        return "\n".join(lines) + "\n"

    def to_html(self, digits: int | None = None) -> str:
        """An HTML table with the caption and footnotes: paper rows plain, our rows (class ``ours``)
        highlighted, ``difference`` rows (class ``difference``) in italics; styled by :data:`TABLE_CSS`."""
        f = self.formatted(digits)
        ours, diffs = set(self.ours_rows()), set(self.difference_rows)
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["method", *f.columns])
        rows = []
        for name, row in f.iterrows():
            cls = "ours" if name in ours else "difference" if name in diffs else "paper"
            cells = "".join(f"<td>{html.escape(str(x))}</td>" for x in row)
            rows.append(f'<tr class="{cls}"><th>{html.escape(str(name))}</th>{cells}</tr>')
        notes = "".join(f"<li>{html.escape(n)}</li>" for n in self.footnotes)
        foot = f'\n<ul class="footnotes">{notes}</ul>' if notes else ""
        return (f'<div class="sam3d-table"><p class="caption"><b>Table {html.escape(self.table)}.</b> '
                f'{html.escape(self.caption)}</p>\n<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n'
                + "\n".join(rows) + f"\n</tbody>\n</table>{foot}</div>")

    def _repr_html_(self) -> str:  # Jupyter rich display (Lab, the HTML report): our rows highlighted
        return f"<style>{TABLE_CSS}</style>\n{self.to_html()}"

    def _repr_markdown_(self) -> str:  # Jupyter rich display
        return self.to_markdown()

    def __str__(self) -> str:
        return self.to_markdown()

    __repr__ = __str__


def _baselines_note(ours: pd.DataFrame, described: RunConditions) -> list[str]:
    """A sentence naming the retrained baselines among ``ours`` (no encoder) when the caption's
    conditions describe another row (SAM3D's)."""
    names = list(dict.fromkeys(str(m).removesuffix(OURS_SUFFIX)
                               for m, e in zip(ours["method"], ours["encoder"]) if str(e) == NO_ENCODER))
    if not names or described.encoder == NO_ENCODER:
        return []
    return [f"{', '.join(names)} (this run): retrained from scratch with the same data, split, sampling, "
            "augmentation, loss, schedule and evaluation; no encoder."]


def _caption(table: str, ours: pd.DataFrame, layout: str) -> str:
    shown = "with the printed header unchanged" if layout == "printed" else "with our reading of a header marked"
    parts = [f"Rows without '{OURS_SUFFIX.strip()}' are the paper's numbers ({PAPER}): values, precision and "
             f"column order as printed, {shown}."]
    if not ours.empty:
        c = ours.iloc[0]
        seeds = str(c["seeds"]).split()
        cond = RunConditions(
            str(c["encoder"]), str(c["encoder_weights"]), str(c["data"]), str(c["profile"]),
            str(c["protocol"]), tuple(int(s) for s in seeds) or (0,),
        )
        parts.append(f"'{OURS_SUFFIX.strip()}' rows: {cond.describe()}.")
        parts += _baselines_note(ours, cond)
        if len(seeds) > 1:
            parts.append(f"Our cells are mean ± sd over seeds {' '.join(seeds)}.")
        parts.append("'difference' rows = this run − the paper's row of the same method.")
        if cond.stand_in:
            parts.append("Stand-in conditions: the differences measure nothing about the paper's claims.")
    parts.append(
        "DSC in %. HD95: the paper states no unit; the SAM3D rows come from the authors' evaluation script "
        "(medpy HD95 in voxels of the original grid, 0 when a mask is empty), rows of other methods are copied "
        "from their own papers and were computed by their own code; this run follows the authors' script "
        "(docs/REFERENCE.md, \"Evaluation\")."
    )
    if not ours.empty:
        parts.append(f"'{MISSED_MARK}': a structure this run never predicted (DSC 0; its HD95 of 0 is the "
                     "convention for an empty prediction, not a perfect border).")
    return " ".join(parts)


def _layout_columns(paper: pd.DataFrame, layout: str) -> tuple[list[tuple[str, str]], dict[str, str], list[str]]:
    """The paper's columns in printed order, their displayed headers and the reading footnote."""
    cols = list(dict.fromkeys(zip(paper["metric"], paper["region"])))
    header_of = dict(zip(zip(paper["metric"], paper["region"]), paper["printed_header"]))
    both = {m for m, r in cols if r != AVERAGE} == {"DSC", "HD95"}
    headers, moved = {PARAMS: "Params"}, []
    for metric, region in cols:
        printed = header_of[(metric, region)]
        if region == AVERAGE:
            name = f"Average {metric}"
        else:
            name = printed if layout == "printed" or printed == region else f"{region}{READING_MARK}"
            if printed != region:
                moved.append(f"{region} (printed {printed})")
            name = f"{name} {metric}" if both else name
        headers[_column_name(metric, region)] = name
    notes = []
    if moved and layout == "reading":
        notes.append(
            f"{READING_MARK} The paper prints the header {' | '.join(dict.fromkeys(header_of[c] for c in cols if c[1] != AVERAGE))}"
            f" over values in {' | '.join(r for _, r in cols if r != AVERAGE)} order: its rows match their source "
            "papers in that order and its SAM3D row matches Table 5a, so we read the columns as "
            f"{', '.join(moved)}. layout='printed' shows the printed header."
        )
    elif moved:
        notes.append(
            "Printed header unchanged: our rows are placed under the header of their region's name, so in the "
            f"columns {', '.join(moved)} they are compared with the cells printed under that header."
        )
    return cols, headers, notes


def _our_region_key(paper: pd.DataFrame, layout: str) -> dict[tuple[str, str], str]:
    """Where an our-row cell goes: by region, or under the printed header of that name (printed layout)."""
    keys = {(m, r): _column_name(m, r) for m, r in zip(paper["metric"], paper["region"])}
    if layout == "printed":
        for m, r, h in zip(paper["metric"], paper["region"], paper["printed_header"]):
            if r != AVERAGE:
                keys[(m, h)] = _column_name(m, r)
    return keys


def comparison_table(table: int | str, ours: pd.DataFrame | None = None, layout: str = "reading") -> ComparisonTable:
    """Wide table with the paper's rows as printed, ours and ``difference`` rows (ours − paper's same method).

    Args:
        table: paper table (``1`` ... ``4``, ``"5a"``, ``"5b"``); for Table 5 pass the sub-table.
        ours: rows from :func:`our_rows` (any tables; only ``table``'s are used). None: paper only.
        layout: ``"reading"`` (default: Table 2's header as we read it, marked) or ``"printed"``.

    Returns:
        :class:`ComparisonTable`: columns in the paper's printed order (averages first where the
        paper puts them first), the paper's cells as printed, a printed average that is not the mean
        of its printed cells marked with its recomputed value in a footnote
        (:func:`sam3dlib.study.paper_tables.inconsistent_averages`). Where the paper's averages are of
        more than one kind (Table 4), each our-row "Average" is the kind of the paper row it is
        compared with, and both kinds of ours follow in extra columns.
    """
    key = table_key(table)
    if key == "5":
        raise ValueError("Table 5 has two sub-tables; build '5a' (ACDC) and '5b' (Synapse) separately")
    if layout not in TABLE_LAYOUTS:
        raise ValueError(f"unknown table layout {layout!r}; choose one of {', '.join(TABLE_LAYOUTS)}")
    paper = paper_rows(key)
    ours = pd.DataFrame(columns=ALL_COLUMNS) if ours is None else ours[ours["table"].astype(str) == key]
    cols, headers, notes = _layout_columns(paper, layout)
    variants = [r for r in dict.fromkeys(ours["region"]) if str(r).startswith(f"{AVERAGE} (")]
    extra = [(m, v) for m in dict.fromkeys(m for m, r in cols if r == AVERAGE) for v in variants]
    for m, v in extra:
        headers[_column_name(m, v)] = f"{m} {v}"
    names = [PARAMS] + [_column_name(*c) for c in cols + extra]
    digits = {_column_name(m, r): max(paper_tables.decimals(p) for p in sub["printed"])
              for (m, r), sub in paper.groupby(["metric", "region"], sort=False)}
    digits[PARAMS] = 2
    our_key = _our_region_key(paper, layout)
    our_key.update({(m, v): _column_name(m, v) for m, v in extra})

    def wide(rows: pd.DataFrame, value_col: str, placement: dict[tuple[str, str], str]) -> pd.DataFrame:
        methods = list(dict.fromkeys(rows["method"]))
        out = pd.DataFrame(np.nan if value_col != "printed" else "", index=methods, columns=names,
                           dtype=float if value_col != "printed" else object)
        for rec in rows.itertuples(index=False):
            col = placement.get((rec.metric, rec.region))
            if col is not None:
                out.at[rec.method, col] = getattr(rec, value_col)
        if value_col == "sd":  # a parameter count has no spread over seeds
            return out
        params = "params_printed" if value_col == "printed" else "params_m"
        for m in methods:
            p = rows.loc[rows["method"] == m, params]
            out.at[m, PARAMS] = p.iloc[0] if value_col == "printed" else pd.to_numeric(p, errors="coerce").max()
        return out

    paper_key = {(m, r): _column_name(m, r) for m, r in cols}
    values, sd, printed = (wide(paper, c, paper_key) for c in ("value", "sd", "printed"))
    if len(ours):
        values = pd.concat([values, wide(ours, "value", our_key)])
        sd = pd.concat([sd, wide(ours, "sd", our_key)])
        printed = pd.concat([printed, pd.DataFrame("", index=list(dict.fromkeys(ours["method"])), columns=names)])
    checks = paper_tables.average_checks(paper)
    marks: dict[tuple[str, str], str] = {}
    for rec in checks[~checks["consistent"]].itertuples(index=False):
        marks[(rec.method, _column_name(rec.metric, AVERAGE))] = AUDIT_MARK
        notes.append(f"{AUDIT_MARK} " + paper_tables.average_note(pd.Series(rec._asdict())))
    diffs = []
    for m in dict.fromkeys(ours["method"]):
        ref = m[: -len(OURS_SUFFIX)] if m.endswith(OURS_SUFFIX) else m
        if extra:
            notes.append(_match_average(values, sd, checks, m, ref, extra))
        if ref in values.index:
            name = f"difference ({ref}: this run − paper)"
            values.loc[name] = values.loc[m] - values.loc[ref]
            values.at[name, PARAMS] = np.nan
            sd.loc[name] = np.nan
            printed.loc[name] = ""
            diffs.append(name)
    for frame in (values, sd, printed):
        frame.index.name = "method"
    return ComparisonTable(values, sd, _caption(key, ours, layout), key, diffs, printed, headers, digits, marks, notes)


def _match_average(values: pd.DataFrame, sd: pd.DataFrame, checks: pd.DataFrame, mine: str, ref: str,
                   extra: list[tuple[str, str]]) -> str:
    """Set our row's "Average" cells to the kind of average of the paper row it is compared with.

    A printed average equal to the mean of its printed region cells is compared with our mean over
    the same regions; any other is taken to be the authors' evaluation script's average (our
    default ``average`` row). Returns the footnote saying which was used.
    """
    said = []
    for metric in dict.fromkeys(m for m, _ in extra):
        hit = checks[(checks["method"] == ref) & (checks["metric"] == metric)]
        if hit.empty:
            continue
        regions = str(hit["regions"].iloc[0]).split(", ")
        same = _column_name(metric, _variant_label(regions))
        avg = _column_name(metric, AVERAGE)
        if bool(hit["consistent"].iloc[0]) and same in values.columns:
            values.at[mine, avg], sd.at[mine, avg] = values.at[mine, same], sd.at[mine, same]
            said.append(f"{metric} over {', '.join(regions)} (the paper's {ref} average is their mean)")
        else:
            said.append(f"{metric} as the authors' evaluation script averages (the paper's {ref} average is not "
                        f"the mean of its printed {', '.join(regions)}; presumably that script's)")
    return f"'{mine}' Average: " + "; ".join(said) + ". Both of our averages are in the last columns."


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
