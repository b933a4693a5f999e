"""The demo's one-page summary (``results/demo/summary.html``), written from the demo's output files.

:func:`write_demo_summary` reads what ``make demo`` wrote (``demo.json``, ``table.csv``,
``per_slab.csv`` and the PNG figures) and renders one standalone page in the style of the
reproduction reports (:mod:`sam3dlib.study.report_page`): a banner when an encoder was randomly
initialised, a run-info block (wall time, threads, task and split, each encoder's source and
sha256, settings), the table, the per-slab table and every figure embedded.
"""
from __future__ import annotations

import base64
import html
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from sam3dlib.modeling.constants import RANDOM_INIT
from sam3dlib.study.report import PAGE_CSS, TABLE_CSS
from sam3dlib.study.report_page import REPORT_CSS
from sam3dlib.utils.errors import MissingFileError
from sam3dlib.utils.fileio import atomic_write_text

#: The summary's file name in the demo's output folder.
SUMMARY = "summary.html"
#: The demo's tables have a column per class, metric and cost: headers wrap, and a table wider than
#: the page scrolls inside it instead of running off the page.
SUMMARY_CSS = ".sam3d-table{overflow-x:auto}.sam3d-table thead th{white-space:normal;vertical-align:bottom}"
#: Figures shown first, in this order (others follow by name).
FIGURE_ORDER = ("overlays_pretrained.png", "overlays_random.png", "curves.png")


def _frame_html(df: pd.DataFrame) -> str:
    """A table in the comparison tables' style; floats with 3 significant decimals."""
    body = df.to_html(index=False, escape=True, float_format=lambda v: f"{v:.3f}", border=0, na_rep="")
    return f'<div class="sam3d-table">{body}</div>'


def _figures(out: Path) -> list[Path]:
    pngs = {p.name: p for p in sorted(out.glob("*.png"))}
    first = [pngs.pop(n) for n in FIGURE_ORDER if n in pngs]
    return first + list(pngs.values())


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}" style="max-width:100%">'
            f"<figcaption>{html.escape(path.name)}</figcaption></figure>")


def _info_rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    if "seconds" in record:
        rows.append(("Wall time", f"{float(record['seconds']):.0f} s on {record.get('threads', '?')} threads "
                                  f"(CPU time {record.get('cpu_seconds', '?')} s; load average "
                                  f"{record.get('load_average_1min', '?')})"))
    for key, label in (("task", "Task"), ("split", "Split")):
        if record.get(key):
            rows.append((label, str(record[key])))
    for name, enc in (record.get("encoders") or {}).items():
        if isinstance(enc, dict):
            text = f"{enc.get('source', '')}; weights sha256 {enc.get('sha256', '?')}"
            rows.append((f"Encoder {name}", text))
    from sam3dlib.modeling.models import SAM3D_MODEL  # the model registry pulls in torch: only when rows are made

    for arm in (record.get("arms") or {}).values():
        if isinstance(arm, dict) and arm.get("model", SAM3D_MODEL) != SAM3D_MODEL:  # a baseline trained from scratch
            rows.append((f"Baseline {arm.get('label', '')}", f"{arm.get('model')} trained from scratch, no encoder: "
                         f"{arm.get('steps')} steps in {arm.get('budget_seconds')} s (stopped by "
                         f"{arm.get('stopped_by')}), {arm.get('trainable_parameters')} trainable parameters"))
    if isinstance(record.get("mean_foreground_dsc"), dict):
        rows.append(("Mean foreground DSC (test)", "; ".join(
            f"{k}: {100 * float(v):.1f} %" for k, v in record["mean_foreground_dsc"].items())))
    if record.get("settings"):
        rows.append(("Settings", ", ".join(f"{k}={v}" for k, v in record["settings"].items())))
    return rows


def write_demo_summary(out: str | os.PathLike) -> Path:
    """Write ``<out>/summary.html`` from the demo's files in ``out``.

    Raises:
        MissingFileError: ``out`` holds no ``demo.json`` (the demo did not finish there).
    """
    out = Path(out)
    if not (out / "demo.json").is_file():
        raise MissingFileError(f"{out / 'demo.json'} not found: run the demo first (make demo)")
    record = json.loads((out / "demo.json").read_text())
    e = html.escape
    encoders = record.get("encoders") or {}
    random_enc = [k for k, v in encoders.items() if isinstance(v, dict) and v.get("sha256") in (None, RANDOM_INIT)]
    parts = ["<h1>SAM3D demo: summary</h1>"]
    if random_enc:
        parts.append(f'<div class="sam3d-banner">Randomly initialised encoder(s): {e(", ".join(random_enc))}: a '
                     "baseline without pretrained weights, not SAM3D's setting.</div>")
    rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in _info_rows(record))
    parts.append(f'<div class="sam3d-runinfo"><b>Run information</b><table>{rows}</table></div>')
    if (out / "table.csv").is_file():
        parts.append("<h2>Test slabs: mean per class (DSC in [0, 1], HD95 in mm)</h2>")
        parts.append(_frame_html(pd.read_csv(out / "table.csv")))
    if (out / "per_slab.csv").is_file():
        parts.append("<h2>Per test slab (inferior to superior)</h2>")
        parts.append(_frame_html(pd.read_csv(out / "per_slab.csv")))
    figures = _figures(out)
    if figures:
        parts.append("<h2>Figures</h2>")
        parts += [_img(p) for p in figures]
    page = (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>SAM3D demo summary</title>\n'
            f"<style>{PAGE_CSS}{TABLE_CSS}{REPORT_CSS}{SUMMARY_CSS}</style></head>\n<body>\n" + "\n".join(parts) + "\n</body></html>\n")
    return atomic_write_text(out / SUMMARY, page)


__all__ = ["SUMMARY", "write_demo_summary"]
