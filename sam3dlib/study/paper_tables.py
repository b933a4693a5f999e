"""The paper's Tables 1-5 as printed, and an audit of the paper's numbers against each other.

``resources/paper_tables.csv`` holds every printed cell of Bui et al., *SAM3D*, ISBI 2024, one
row per cell, in the printed column order of each table:

``table, dataset, method, group, params, metric, region, printed_header, value, source``

* ``value`` and ``params`` are the cell text exactly as printed (``"64.4"``, ``"150.5M"``, ``"-"``
  where the paper prints a dash), so the printed precision is kept; :func:`load_paper_tables`
  adds the numbers (``value`` as float, ``params_m``) and keeps the text in ``printed`` and
  ``params_printed``.
* ``region`` is our reading of the column, ``printed_header`` the header the paper prints above
  it. They differ only in Table 2, whose printed header reads RV | LV | MYO over values in
  RV | MYO | LV order (docs/REFERENCE.md, "The paper's tables").
* ``source`` names the table (``paper Table 2``).

The audit (:func:`average_checks`, :func:`claim_checks`) recomputes what the paper states twice:
each printed average against the mean of its own printed cells, and the text's numerical claims
(``resources/paper_claims.csv``) against the tables. Nothing here is typed by hand from the
paper except those two files.
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources
from io import StringIO

import numpy as np
import pandas as pd

from sam3dlib.evaluation.metrics import AVERAGE
from sam3dlib.study.registry import table_key

#: The paper the reference rows come from; every paper number is labelled with it.
PAPER = "Bui et al., SAM3D, ISBI 2024"
PAPER_SOURCE = f"paper ({PAPER})"
#: The printed text of a missing cell (an unknown parameter count).
DASH = "-"
#: How a table shows the paper's rows: ``reading`` (the printed layout with our reading of a wrong
#: header, Table 2's, marked) or ``printed`` (the printed header unchanged).
TABLE_LAYOUTS = ("reading", "printed")


def _resource_csv(name: str) -> pd.DataFrame:
    text = resources.files("sam3dlib.resources").joinpath(name).read_text()
    return pd.read_csv(StringIO(text), dtype=str, keep_default_na=False)


def decimals(text: str) -> int:
    """Decimal places of a printed number (``"64.4"`` -> 1, ``"150.50M"`` -> 2, ``"-"`` -> 0)."""
    core = text.rstrip("M")
    return len(core.split(".", 1)[1]) if "." in core else 0


def _number(text: str) -> float:
    return float("nan") if text in ("", DASH) else float(text.rstrip("M"))


@lru_cache(maxsize=1)
def _printed() -> pd.DataFrame:
    df = _resource_csv("paper_tables.csv")
    df["printed"] = df["value"]
    df["params_printed"] = df["params"]
    df["value"] = df["printed"].map(_number)
    df["params_m"] = df["params_printed"].map(_number)
    return df.drop(columns=["params"]).rename(columns={"source": "paper_source"})


def load_paper_tables() -> pd.DataFrame:
    """Every printed cell of Tables 1-5, in printed order.

    Returns:
        DataFrame with ``table`` (``"1"`` ... ``"5a"``, ``"5b"``), ``dataset``, ``method``,
        ``group``, ``params_m`` (float, NaN for a dash), ``params_printed``, ``metric``,
        ``region`` (our reading), ``printed_header``, ``value`` (float), ``printed`` (the cell
        text) and ``paper_source``.
    """
    return _printed().copy()


def paper_rows(table: int | str, dataset: str | None = None) -> pd.DataFrame:
    """The printed cells of one table (``5`` = 5a and 5b), optionally of one dataset only."""
    key = table_key(table)
    df = load_paper_tables()
    keep = df["table"].str.startswith("5") if key == "5" else df["table"] == key
    if dataset is not None:
        keep &= df["dataset"] == dataset.lower()
    return df[keep].reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# Audit: printed averages


def _tolerance(average: str, cells: list[str]) -> float:
    """Largest gap rounding alone can explain: half a unit of the average's last printed digit
    plus half a unit of the cells' (their mean carries at most that error)."""
    cell_digits = min(decimals(c) for c in cells)
    return 0.5 * 10.0 ** -decimals(average) + 0.5 * 10.0 ** -cell_digits + 1e-9


def average_checks(paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Each printed average against the plain mean of the same row's printed region cells.

    Rows whose table prints no region cells for a metric (Table 1's HD95, Table 3) have nothing
    to check and are left out.

    Returns:
        ``table, method, metric, printed, recomputed, regions, consistent``; ``recomputed`` is the
        mean of the printed cells, ``consistent`` whether the gap is within rounding
        (:func:`_tolerance`).
    """
    df = load_paper_tables() if paper is None else paper
    rows = []
    for (table, method, metric), sub in df.groupby(["table", "method", "metric"], sort=False):
        avg = sub[sub["region"] == AVERAGE]
        cells = sub[sub["region"] != AVERAGE]
        if avg.empty or cells.empty:
            continue
        printed = str(avg["printed"].iloc[0])
        recomputed = float(np.mean(cells["value"].to_numpy(dtype=float)))
        gap = abs(float(avg["value"].iloc[0]) - recomputed)
        rows.append({
            "table": table, "method": method, "metric": metric, "printed": printed,
            "recomputed": recomputed, "regions": ", ".join(cells["region"]),
            "consistent": gap <= _tolerance(printed, list(cells["printed"])),
        })
    return pd.DataFrame(rows, columns=["table", "method", "metric", "printed", "recomputed", "regions", "consistent"])


def inconsistent_averages(table: int | str | None = None) -> pd.DataFrame:
    """The printed averages that are not the mean of their own printed cells (all tables, or one)."""
    checks = average_checks()
    bad = checks[~checks["consistent"]]
    if table is not None:
        key = table_key(table)
        bad = bad[bad["table"].str.startswith("5")] if key == "5" else bad[bad["table"] == key]
    return bad.reset_index(drop=True)


def average_note(row: pd.Series) -> str:
    """One footnote line for an :func:`inconsistent_averages` row."""
    digits = decimals(str(row["printed"])) or 2
    return (
        f"Table {row['table']}, {row['method']}: the printed average {row['metric']} {row['printed']} is not the "
        f"mean of its printed {row['regions']} cells ({row['recomputed']:.{max(digits, 2)}f})."
    )


# --------------------------------------------------------------------------------------------
# Audit: the text's claims and rows printed twice


def _cell(table: str, method: str, metric: str, region: str) -> float:
    df = load_paper_tables()
    hit = df[(df["table"] == table) & (df["method"] == method) & (df["metric"] == metric) & (df["region"] == region)]
    if hit.empty:
        raise KeyError(f"paper_claims.csv: no Table {table} cell {method} {metric} {region}")
    return float(hit["value"].iloc[0])


def _params(table: str, method: str) -> float:
    df = load_paper_tables()
    return float(df[(df["table"] == table) & (df["method"] == method)]["params_m"].iloc[0])


def _same_row(claim: pd.Series) -> tuple[str, bool]:
    """Compare two printed rows cell by cell under their printed headers."""
    t1, t2 = claim["table"].split("/")
    df = load_paper_tables()

    def cells(table: str, method: str) -> dict[tuple[str, str], str]:
        sub = df[(df["table"] == table) & (df["method"] == method)]
        if claim["metric"]:
            sub = sub[sub["metric"] == claim["metric"]]
        return {(m, h): p for m, h, p in zip(sub["metric"], sub["printed_header"], sub["printed"])}

    a, b = cells(t1, claim["method"]), cells(t2, claim["reference"])
    differ = [k for k in a if k in b and float(a[k]) != float(b[k])]
    if not differ:
        return f"{len(set(a) & set(b))} printed cells equal", True
    shown = "; ".join(f"{h} {a[(m, h)]} vs {b[(m, h)]}" for m, h in differ)
    return f"under the printed headers: {shown}", False


def claim_checks() -> pd.DataFrame:
    """The text's numerical claims (``resources/paper_claims.csv``) recomputed from the tables.

    Kinds: ``difference`` (method − reference in one table's cell, stated in points),
    ``params_ratio`` (parameter counts of two tables' rows, stated as a factor; 5 % tolerance)
    and ``same_row`` (two rows the paper prints twice must agree under their printed headers).

    Returns:
        ``claim, source, quote, stated, from_tables, consistent``.
    """
    out = []
    for _, c in _resource_csv("paper_claims.csv").iterrows():
        if c["kind"] == "difference":
            value = _cell(c["table"], c["method"], c["metric"], c["region"]) - _cell(
                c["table"], c["reference"], c["metric"], c["region"])
            stated = float(c["stated"])
            found, ok = f"{value:.2f} points", abs(value - stated) <= 0.5 * 10.0 ** -decimals(c["stated"]) + 1e-9
        elif c["kind"] == "params_ratio":
            ta, tb = c["table"].split("/")
            value = _params(ta, c["method"]) / _params(tb, c["reference"])
            stated = float(c["stated"])
            found, ok = f"{value:.2f}x", abs(value - stated) <= 0.05 * stated
        elif c["kind"] == "same_row":
            found, ok = _same_row(c)
        else:
            raise ValueError(f"paper_claims.csv: unknown kind {c['kind']!r} in claim {c['claim']!r}")
        out.append({"claim": c["claim"], "source": c["source"], "quote": c["quote"], "stated": c["stated"],
                    "from_tables": found, "consistent": bool(ok)})
    return pd.DataFrame(out, columns=["claim", "source", "quote", "stated", "from_tables", "consistent"])


def audit_notes(table: int | str | None = None) -> list[str]:
    """Human-readable lines: the printed averages and text claims that disagree with the tables.

    Args:
        table: restrict the averages to one table (``5`` = 5a and 5b); the text's claims are
            always listed (they span tables).
    """
    notes = [average_note(r) for _, r in inconsistent_averages(table).iterrows()]
    for _, c in claim_checks().iterrows():
        if not c["consistent"]:
            stated = f" (stated: {c['stated']})" if c["stated"] else ""
            notes.append(f"{c['source']}: \"{c['quote']}\"{stated}; the tables give {c['from_tables']}.")
    return notes


def audit_markdown(table: int | str | None = None) -> str:
    """:func:`audit_notes` as a markdown list (or a line saying nothing disagrees)."""
    notes = audit_notes(table)
    return "\n".join(f"- {n}" for n in notes) if notes else "Every printed average and claim checked agrees."


# --------------------------------------------------------------------------------------------
# Provenance

#: Where a fact of the suite comes from (``resources/provenance.csv``, column ``kind``).
PROVENANCE_KINDS = ("paper", "authors' code", "our choice")


def provenance() -> pd.DataFrame:
    """Every convention and setting the suite follows, with its source.

    Returns:
        ``fact, value, kind, source``; ``kind`` is one of :data:`PROVENANCE_KINDS`: ``paper`` (a
        table, section or figure of it), ``authors' code`` (a file of UARK-AICV/SAM3D) or ``our
        choice`` (with the reason).
    """
    return _resource_csv("provenance.csv")


def provenance_markdown() -> str:
    """The provenance table as markdown (docs/REFERENCE.md holds it verbatim)."""
    lines = ["| fact | what | source |", "|---|---|---|"]
    for r in provenance().itertuples(index=False):
        where = {"paper": f"the paper, {r.source}", "authors' code": f"the authors' code: {r.source}",
                 "our choice": f"our choice: {r.source}"}[r.kind]
        lines.append(f"| {r.fact} | {r.value} | {where} |")
    return "\n".join(lines) + "\n"


__all__ = [
    "PAPER",
    "PAPER_SOURCE",
    "TABLE_LAYOUTS",
    "audit_markdown",
    "audit_notes",
    "average_checks",
    "claim_checks",
    "decimals",
    "inconsistent_averages",
    "load_paper_tables",
    "paper_rows",
    "provenance",
    "provenance_markdown",
]
