"""What a table run produced: the tables, per-case scores, run folders and files (:class:`TableResult`)."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sam3dlib.evaluation.metrics import AVERAGE
from sam3dlib.study import report


@dataclass
class TableResult:
    """What :func:`run_table` produced (also on disk under ``out_dir``)."""

    table: str
    out_dir: Path
    conditions: report.RunConditions
    long: pd.DataFrame
    tables: list[report.ComparisonTable]
    per_case: pd.DataFrame
    run_dirs: dict[str, list[Path]]
    data_dirs: dict[str, Path] = field(default_factory=dict)
    files: dict[str, Path] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    #: each model's training cost (:func:`sam3dlib.study.model_comparison.cost_table`)
    cost: pd.DataFrame = field(default_factory=pd.DataFrame)
    #: ``cost_csv`` (``tableN_cost.csv``) and ``md`` (``tableN.md``, the cost table appended)
    cost_files: dict[str, Path] = field(default_factory=dict)

    def ours(self) -> pd.DataFrame:
        return self.long[self.long["source"] == report.THIS_RUN].reset_index(drop=True)

    def mean_dsc(self) -> dict[str, float]:
        """Average DSC (%) of each of our rows, keyed ``"<table> <method>"``."""
        o = self.ours()
        o = o[(o["metric"] == "DSC") & (o["region"] == AVERAGE)]
        return {f"{r.table} {r.method}": float(r.value) for r in o.itertuples()}

    def relpath(self, key: str) -> str:
        """A written file relative to ``out_dir`` (for display without machine paths)."""
        return os.path.relpath(self.files[key], self.out_dir)


def store_root(result: TableResult, dataset: str) -> Path:
    """The prepared store a table run used for ``dataset``."""
    return Path(result.data_dirs[dataset]) / dataset


__all__ = ["TableResult", "store_root"]
