"""The paper's baselines retrained beside SAM3D: which runs a table adds, their rows and their cost.

A table notebook's ``models`` parameter (``make reproduce-tableN MODELS="sam3d unetr nnunet"``)
names models of :data:`sam3dlib.modeling.models.MODELS`. SAM3D runs the table's experiments as
before; every other model is trained on the same dataset, split, crop sampling, augmentation,
loss, schedule and evaluation (:func:`model_runs`), and its rows join the table under the paper's
method name (``UNETR (this run)`` beside the paper's ``UNETR``, with the difference). What each
model cost on the device used (trainable parameters, seconds per step, peak memory, steps and
training seconds) is the cost table (:func:`cost_table`), written as ``tableN_cost.csv`` and
appended to ``tableN.md``.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from sam3dlib.modeling.models import MODELS, SAM3D_MODEL
from sam3dlib.study.registry import TableInfo
from sam3dlib.utils.fileio import atomic_write_text
from sam3dlib.utils.finished import FINISHED

#: The cost table's columns (one row per table x method; mean over seeds where it varies).
COST_COLUMNS = ["table", "method", "model", "params_m", "seconds_per_step", "seconds_per_step_sd", "peak_memory_gib",
                "memory_measure", "steps", "train_seconds", "stopped_by", "device", "n_seeds"]


@dataclass(frozen=True)
class ModelRun:
    """One model trained for one row of a table: the experiment (dataset, table) and the model.

    Attributes:
        info: the table row (its experiment gives the dataset, split and crop).
        model: a key of :data:`~sam3dlib.modeling.models.MODELS`.
    """

    info: TableInfo
    model: str

    @property
    def method(self) -> str:
        """The paper's method name of the rows (SAM3D's row keeps the table's own name)."""
        return self.info.paper_method if self.model == SAM3D_MODEL else MODELS[self.model].paper_method

    @property
    def label(self) -> str:
        """The run folder's stem: ``<config>`` for SAM3D (as before), ``<config>-<model>`` otherwise."""
        return self.info.config if self.model == SAM3D_MODEL else f"{self.info.config}-{self.model}"


def model_runs(infos: Sequence[TableInfo], models: Sequence[str]) -> list[ModelRun]:
    """Every run a table needs: SAM3D on each of its experiments (when listed), then each other model
    on each experiment with the paper's decoder (the skip-connection ablation concerns SAM3D only)."""
    runs = [ModelRun(i, SAM3D_MODEL) for i in infos] if SAM3D_MODEL in models else []
    for model in (m for m in models if m != SAM3D_MODEL):
        runs += [ModelRun(i, model) for i in infos if i.skip]
    return runs


def _finished_record(run_dir: Path) -> dict:
    try:
        return json.loads((Path(run_dir) / FINISHED).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def trainable_params_m(run_dir: str | os.PathLike) -> float | None:
    """The run's trainable parameters in millions (its ``finished.json``), None when not recorded."""
    n = _finished_record(Path(run_dir)).get("trainable_parameters")
    return None if n is None else round(int(n) / 1e6, 2)


def _mean(values: list) -> float:
    vals = [float(v) for v in values if v is not None]
    return float(np.mean(vals)) if vals else float("nan")


def cost_rows(run: ModelRun, run_dirs: Sequence[Path]) -> dict:
    """The cost of one table row over its seeds (from each run's ``finished.json``)."""
    recs = [_finished_record(rd) for rd in run_dirs]
    sps = [r.get("seconds_per_step") for r in recs if r.get("seconds_per_step") is not None]
    return {
        "table": run.info.table, "method": run.method, "model": run.model,
        "params_m": _mean([r.get("trainable_parameters") for r in recs]) / 1e6,
        "seconds_per_step": _mean(sps), "seconds_per_step_sd": float(np.std(sps, ddof=1)) if len(sps) > 1 else np.nan,
        "peak_memory_gib": max((float(r["peak_memory_gib"]) for r in recs if r.get("peak_memory_gib") is not None),
                               default=np.nan),
        "memory_measure": ", ".join(sorted({str(r.get("memory_measure", "")) for r in recs})),
        "steps": _mean([r.get("steps") for r in recs]), "train_seconds": _mean([r.get("train_seconds") for r in recs]),
        "stopped_by": ", ".join(sorted({str(r.get("stopped_by", "epochs")) for r in recs})),
        "device": ", ".join(sorted({str(r.get("device", "")) for r in recs})), "n_seeds": len(recs),
    }


def cost_table(runs: Sequence[ModelRun], run_dirs: dict[str, list[Path]]) -> pd.DataFrame:
    """One row per table x model (:data:`COST_COLUMNS`); ``run_dirs`` is keyed by :attr:`ModelRun.label`."""
    return pd.DataFrame([cost_rows(r, run_dirs[r.label]) for r in runs], columns=COST_COLUMNS)


def cost_markdown(cost: pd.DataFrame) -> str:
    """The cost table as markdown (seconds per step as mean ± sd over seeds)."""
    lines = ["**Training cost (this run, measured on the device named; not in the paper).** Trainable "
             "parameters, mean compute seconds per optimizer step, peak memory during training, optimizer "
             "steps and training seconds (steps + validation) per seed, and what ended training.", "",
             "| table | method | params (M) | s/step | peak memory (GiB) | steps | train s | stopped by | device |",
             "|:---|:---|---:|---:|---:|---:|---:|:---|:---|"]
    for r in cost.itertuples():
        sps = "" if pd.isna(r.seconds_per_step) else f"{r.seconds_per_step:.3f}"
        sps += "" if pd.isna(r.seconds_per_step_sd) else f" ± {r.seconds_per_step_sd:.3f}"
        mem = "" if pd.isna(r.peak_memory_gib) else f"{r.peak_memory_gib:.2f} ({r.memory_measure})"
        lines.append(f"| {r.table} | {r.method} (this run) | {r.params_m:.2f} | {sps} | {mem} | {r.steps:.0f} | "
                     f"{r.train_seconds:.1f} | {r.stopped_by} | {r.device} |")
    return "\n".join(lines) + "\n"


def write_cost_files(out_dir: str | os.PathLike, name: str, cost: pd.DataFrame) -> dict[str, Path]:
    """``<name>_cost.csv`` and the cost table appended to ``<name>.md`` (written before)."""
    out = Path(out_dir)
    md = out / f"{name}.md"
    text = md.read_text() if md.is_file() else ""
    return {"cost_csv": atomic_write_text(out / f"{name}_cost.csv", cost.to_csv(index=False)),
            "md": atomic_write_text(md, text + "\n" + cost_markdown(cost))}


__all__ = ["COST_COLUMNS", "ModelRun", "cost_markdown", "cost_table", "model_runs", "trainable_params_m",
           "write_cost_files"]
