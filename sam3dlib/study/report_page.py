"""The HTML report of a reproduction (``tableN_report.html``): a results page, not a notebook dump.

:func:`render_report` exports an executed table notebook with nbconvert's input-free HTML export
(no code, no prompts), leaves out the cells the builder tagged :data:`REPORT_HIDE_TAG` (training
logs, the injected parameters, raw frames), and puts at the top a banner on stand-in runs and a
run-info block (:func:`run_info`, :func:`run_info_html`): wall time, device, git commit, package
versions, data with its case lists, encoder with its sha256, and the protocol in one sentence.

The notebook builder (``notebooks/_build.py``) tags cells with :data:`FIGURE_TAG` (a cell that
displays figures) and :data:`REPORT_HIDE_TAG`.
"""
from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sam3dlib.data.splits import PROTOCOL_SENTENCES
from sam3dlib.modeling.constants import RANDOM_INIT
from sam3dlib.study.report import TABLE_CSS
from sam3dlib.training.provenance import recorded_weights
from sam3dlib.utils.fileio import atomic_write_text

#: A cell that displays figures: under nbval its output must hold a PNG.
FIGURE_TAG = "figure"
#: A cell left out of the HTML report (its code is never shown; this drops its output too).
REPORT_HIDE_TAG = "report-hide"
#: Papermill's cell of injected parameters (machine paths): never in the report.
INJECTED_TAG = "injected-parameters"

REPORT_CSS = (
    ".sam3d-banner{background:#b00020;color:#fff;padding:0.7em 1em;font:bold 15px/1.4 system-ui,sans-serif;"
    "border-radius:4px;margin:0 0 1em}"
    ".sam3d-runinfo{font:13px/1.45 system-ui,sans-serif;background:#f6f8fa;border:1px solid #d0d7de;"
    "border-radius:4px;padding:0.6em 1em;margin:0 0 1.5em}"
    ".sam3d-runinfo th{text-align:left;vertical-align:top;padding:2px 12px 2px 0;white-space:nowrap}"
    ".sam3d-runinfo td{padding:2px 0}"
    ".sam3d-runinfo details{margin:0}"
)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def experiment_dirs(run_dir: str | os.PathLike) -> list[Path]:
    """The experiment run folders of a table run (``<run_dir>/experiments/<config>-seed<k>``), sorted."""
    root = Path(run_dir) / "experiments"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def run_info(run_dir: str | os.PathLike, seconds: float | None = None) -> dict[str, Any]:
    """The facts of a table run, from its files (``params.json``, ``finished.json`` and each
    experiment's ``provenance.json`` / ``results.json``).

    Args:
        run_dir: the run folder (``results/tableN/runs/<id>`` or a notebook's ``out_dir``).
        seconds: wall time of the whole run (default: ``finished.json``'s ``seconds``).

    Returns:
        ``{"table", "profile", "seconds", "device", "git_commit", "git_dirty", "python", "packages",
        "experiments": [{"name", "seed", "dataset", "data", "data_dir", "train", "val", "test",
        "encoder", "encoder_weights", "encoder_sha256", "protocol", "checkpoint"}], "stand_in"}``;
        missing facts are None.
    """
    run = Path(run_dir)
    params = {**_read_json(run / "params.json"), **_read_json(run / "finished.json")}
    exps, first = [], {}
    for d in experiment_dirs(run):
        prov, res = _read_json(d / "provenance.json"), _read_json(d / "results.json")
        if not prov:
            continue
        first = first or prov
        split = prov.get("split") or {}
        weights = recorded_weights(prov)
        random_enc = prov.get("random_encoder") is True or weights in (None, "", RANDOM_INIT)
        exps.append({
            "name": d.name, "seed": prov.get("seed"), "dataset": prov.get("dataset"),
            "data": "phantom (synthetic stand-in)" if prov.get("phantom") else prov.get("dataset"),
            "data_dir": prov.get("data_dir"),
            "train": list(split.get("train") or []), "val": list(split.get("val") or []),
            "test": list(res.get("cases") or split.get("test") or []),
            "encoder": prov.get("encoder"),
            "encoder_weights": RANDOM_INIT if random_enc else Path(str(weights)).name,
            "encoder_sha256": prov.get("encoder_sha256"),
            "protocol": prov.get("protocol"), "checkpoint": res.get("checkpoint"),
            "stand_in": bool(prov.get("phantom")) or random_enc or prov.get("encoder") == "vit_tiny",
        })
    return {
        "table": params.get("table"),
        "profile": params.get("profile") or first.get("profile"),
        "seconds": seconds if seconds is not None else params.get("seconds"),
        "device": first.get("device") or params.get("device"),
        "git_commit": first.get("git_commit"), "git_dirty": first.get("git_dirty"),
        "python": first.get("python"), "packages": dict(first.get("packages") or {}),
        "experiments": exps,
        "stand_in": any(e["stand_in"] for e in exps),
    }


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "not recorded"
    s = int(round(float(seconds)))
    return f"{s // 3600} h {s % 3600 // 60:02d} min" if s >= 3600 else f"{s // 60} min {s % 60:02d} s"


def _cases(ids: list[str]) -> str:
    return f"{len(ids)}: {', '.join(ids)}" if ids else "none"


def protocol_sentence(protocol: str | None) -> str:
    """The protocol in one sentence (:data:`sam3dlib.data.splits.PROTOCOL_SENTENCES`)."""
    return PROTOCOL_SENTENCES.get(str(protocol), f"protocol {protocol!r}")


def banner_html(info: Mapping[str, Any]) -> str:
    """A red banner when the run is a stand-in (phantom data or a random / tiny encoder), else ``""``."""
    if not info.get("stand_in"):
        return ""
    return ('<div class="sam3d-banner">STAND-IN RUN: phantom data and/or a random or tiny stand-in encoder. '
            "These numbers test the pipeline; they say nothing about the paper's claims.</div>")


def run_info_html(info: Mapping[str, Any]) -> str:
    """The run-info block (an HTML ``<div>``) of :func:`run_info`'s facts."""
    e = html.escape
    commit = info.get("git_commit") or "not recorded"
    if info.get("git_dirty"):
        commit += " (with uncommitted changes)"
    pkgs = ", ".join(f"{k} {v}" for k, v in sorted((info.get("packages") or {}).items()))
    rows = [
        ("Wall time", _duration(info.get("seconds"))),
        ("Device", str(info.get("device") or "not recorded")),
        ("Code", f"sam3dlib git commit {commit}"),
        ("Packages", f"Python {info.get('python') or '?'}; {pkgs or 'not recorded'}"),
        ("Profile", str(info.get("profile") or "not recorded")),
    ]
    body = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    for x in info.get("experiments") or []:
        sha = x.get("encoder_sha256")
        enc = f"{x.get('encoder')}, weights {x.get('encoder_weights')}"
        if sha and sha != RANDOM_INIT:
            enc += f" (sha256 {sha})"
        data = (f"{x.get('data')}: train {_cases(x['train'])}; validation {_cases(x['val'])}; "
                f"test (scored) {_cases(x['test'])}")
        body += (f"<tr><th>{e(str(x['name']))}</th><td>"
                 f"<b>Encoder</b> {e(enc)}<br><b>Data</b> {e(data)}<br>"
                 f"<b>Protocol</b> {e(protocol_sentence(x.get('protocol')))}; the scores use its "
                 f"<code>{e(str(x.get('checkpoint') or 'best.pt'))}</code>.</td></tr>")
    return f'<div class="sam3d-runinfo"><b>Run information</b><table>{body}</table></div>'


def _drop_hidden(nb) -> None:
    keep = []
    for cell in nb.cells:
        tags = set(cell.get("metadata", {}).get("tags", []))
        if tags & {REPORT_HIDE_TAG, INJECTED_TAG, "parameters"}:
            continue
        keep.append(cell)
    nb.cells = keep


def render_report(notebook: str | os.PathLike, target: str | os.PathLike, info: Mapping[str, Any] | None = None) -> Path:
    """The executed ``notebook`` as a standalone results page (figures embedded), written atomically.

    No code cells' inputs and no prompts (nbconvert's ``exclude_input``); cells tagged
    :data:`REPORT_HIDE_TAG`, the parameters and papermill's injected parameters are left out.
    With ``info`` (:func:`run_info`), the stand-in banner and the run-info block open the page,
    after the notebook's title.
    """
    import nbformat
    from nbconvert import HTMLExporter
    from nbformat.v4 import new_markdown_cell

    nb = nbformat.read(os.fspath(notebook), as_version=4)
    _drop_hidden(nb)
    if info is not None:
        block = new_markdown_cell(banner_html(info) + run_info_html(info))
        at = 1 if nb.cells and nb.cells[0].cell_type == "markdown" else 0
        nb.cells.insert(at, block)
    exporter = HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb)
    style = f"<style>{REPORT_CSS}{TABLE_CSS}</style>"
    body = body.replace("</head>", f"{style}\n</head>", 1)
    return atomic_write_text(target, body)


__all__ = ["FIGURE_TAG", "INJECTED_TAG", "REPORT_HIDE_TAG", "banner_html", "experiment_dirs", "protocol_sentence",
           "render_report", "run_info", "run_info_html"]
