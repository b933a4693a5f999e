"""Run a paper table (what a table notebook calls): every experiment x seed, then the tables.

:func:`run_table` runs the table's experiments for every seed (on built-in phantoms when
``data_dir`` is None) and writes under ``out_dir`` the per-case CSV, the table in the paper's
long format with our rows (``tableN.csv``), the rendered comparison (``tableN.md`` /
``tableN.html``) and the PNG figures (:mod:`sam3dlib.study.table_figures`).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from sam3dlib.data.specs import get_spec
from sam3dlib.data.store import PreparedDataset
from sam3dlib.modeling.models import SAM3D_MODEL
from sam3dlib.study import report
from sam3dlib.study.grid import experiment_dir, table_jobs
from sam3dlib.study.inputs import MissingInputError, has_store, missing_data_message
from sam3dlib.study.model_comparison import cost_table, model_runs, trainable_params_m, write_cost_files
from sam3dlib.study.notebook_params import NotebookParams, ParameterError
from sam3dlib.study.phantom_data import ensure_phantom_data, phantom_data_dir, phantom_size_for
from sam3dlib.study.registry import TableInfo, experiments, table_key
from sam3dlib.study.seed_runs import conditions_from_run, run_seed
from sam3dlib.study.table_figures import draw_figures
from sam3dlib.study.table_result import TableResult, store_root
from sam3dlib.utils.fileio import atomic_write_csv


def select_rows(key: str, dataset: str | None) -> tuple[TableInfo, ...]:
    infos = experiments(key)
    if dataset is not None:
        infos = tuple(i for i in infos if i.dataset == dataset)
        if not infos:
            raise ParameterError(f"notebook parameter 'dataset': Table {key} has no {dataset!r} experiment")
    return infos


def data_dir_for(dataset: str, p: NotebookParams, cache_root: str | os.PathLike | None = None,
                 build: bool = True) -> Path:
    """The folder holding ``dataset``'s store for a table run: ``p.data_dir``, or the built-in phantoms
    (built once when ``build``; else only their folder is named).

    Raises:
        MissingInputError: ``p.data_dir`` has no prepared store of ``dataset``.
    """
    if p.data_dir is None:
        size = phantom_size_for(p.profile)
        if not build:
            return phantom_data_dir(dataset, cache_root, seed=0, size=size)
        return ensure_phantom_data(dataset, cache_root, seed=0, size=size)
    if not has_store(p.data_dir, dataset):
        raise MissingInputError(missing_data_message(dataset, Path(p.data_dir), p.profile))
    return Path(p.data_dir)


def run_table(table: int | str, params: NotebookParams | Mapping[str, Any], *,
              cache_root: str | os.PathLike | None = None, figures: bool = True, progress: bool = False) -> TableResult:
    """Run every experiment of a paper table (for each of ``params.models``) and write its tables and figures.

    Args:
        table: paper table 1-5 (5 = 5a ACDC + 5b Synapse).
        params: the notebook's parameters (checked with :class:`NotebookParams`).
        cache_root: where phantom stores are built when ``params.data_dir`` is None.
        figures: also draw and save the PNG figures.
        progress: print per experiment and seed one line per epoch (loss, ETA), then prediction
            and scoring (plain text bars: no widgets).

    Returns:
        :class:`TableResult`; files under ``params.out_dir``: ``tableN.csv`` (paper's long
        format + our rows), ``tableN.md`` (with the training-cost table), ``tableN.html``,
        ``tableN_cost.csv``, ``per_case.csv``, ``figures/*.png``,
        ``experiments/<config>-seed<k>/`` (each run's own files; a baseline's:
        ``<config>-<model>-seed<k>/``). With ``params.launcher ==
        "slurm"`` every experiment x seed first runs as its own job
        (:func:`sam3dlib.study.launcher.run_grid`, settings from ``params.cluster``; waits for all).
    """
    p = params if isinstance(params, NotebookParams) else NotebookParams.from_mapping(params)
    key = table_key(table)
    infos = select_rows(key, p.dataset)
    out = Path(p.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    data_dirs = {ds: data_dir_for(ds, p, cache_root) for ds in dict.fromkeys(i.dataset for i in infos)}
    phantoms = {ds: bool(PreparedDataset(d / ds).meta.get("phantom")) for ds, d in data_dirs.items()}
    if p.launcher != "local":  # every experiment x seed as its own job; below, their finished runs are read
        from sam3dlib.study.launcher import JOBS_DIR, load_settings, run_grid

        run_grid(table_jobs(infos, p, data_dirs), load_settings(overrides=p.cluster), out / JOBS_DIR)
    ours, per_case, run_dirs, cond = [], [], {}, None
    runs = model_runs(infos, p.models)
    for run in runs:
        info = run.info
        run_dirs[run.label] = []
        summaries = []
        for seed in p.seeds:
            rd = run_seed(info, p, data_dirs[info.dataset], seed, experiment_dir(out, run.label, seed),
                          progress=progress, model=run.model)
            run_dirs[run.label].append(rd)
            summaries.append(report.read_summary(rd / "summary.csv"))
            pc = pd.read_csv(rd / "per_case.csv")
            per_case.append(pc.assign(table=info.table, method=run.method + report.OURS_SUFFIX, seed=seed))
        run_cond = conditions_from_run(run_dirs[run.label][0], p, info.dataset, phantoms[info.dataset], p.seeds)
        cond = cond or run_cond
        spec = get_spec(info.dataset)
        summaries = [report.with_average_variants(s, spec) for s in summaries]
        params = None if run.model == SAM3D_MODEL else trainable_params_m(run_dirs[run.label][0])
        ours.append(report.our_rows(report.seeds_summary(summaries), spec, run_cond,
                                    table=info.table, method=run.method, skip=info.skip, params_m=params))
    ours_df = pd.concat(ours, ignore_index=True)
    long = report.long_table(key, ours_df)
    tables = [report.comparison_table(t, ours_df, layout=p.table_layout) for t in dict.fromkeys(sorted(i.table for i in infos))]
    per_case_df = pd.concat(per_case, ignore_index=True)
    files = report.write_table_files(out, f"table{key}", long, tables)
    files["per_case"] = atomic_write_csv(out / "per_case.csv", per_case_df)
    cost = cost_table(runs, run_dirs)
    cost_files = write_cost_files(out, f"table{key}", cost)
    result = TableResult(key, out, cond, long, tables, per_case_df, run_dirs, data_dirs, files, cost=cost,
                         cost_files=cost_files)
    if figures:
        draw_figures(result)
    return result


__all__ = ["TableResult", "data_dir_for", "run_table", "select_rows", "store_root"]
