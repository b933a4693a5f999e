"""A table's job grid: one job per experiment x seed, each filling its own run folder.

The paper's tables use fixed splits (no folds), so a table's grid is its experiments
(:func:`sam3dlib.study.registry.experiments`) times the seeds. Every job trains, predicts and
scores one run folder ``<table run>/experiments/<config>-seed<k>/`` (:func:`experiment_dir`), the
same folder the table notebook uses: after the jobs are done the notebook finds every run
finished and only reads them (:func:`sam3dlib.study.seed_runs.run_seed` reuses a finished run of
the same config and data), so the table is the same as after a run in one process.

:func:`run_job` is what one job executes, wherever it runs (in the notebook's process, as a
SLURM job through :mod:`sam3dlib.study.launcher`): it resumes the run from its last checkpoint
when one exists and says so on its first line.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam3dlib.study.notebook_params import NotebookParams
from sam3dlib.study.registry import TableInfo, experiments

#: where a table run keeps its experiments' run folders
EXPERIMENTS_DIR = "experiments"


def experiment_dir(table_out: str | os.PathLike, config: str, seed: int) -> Path:
    """``<table_out>/experiments/<config>-seed<seed>``: one experiment x seed's run folder."""
    return Path(table_out) / EXPERIMENTS_DIR / f"{config}-seed{seed}"


@dataclass(frozen=True)
class GridJob:
    """One experiment x seed of a table (picklable: it travels to the cluster node).

    Attributes:
        table: the table row's key (``1``, ``5a`` ...).
        config: the experiment (``table1_synapse`` ...).
        seed: the training seed.
        run_dir: its run folder (absolute).
        data_dir: the folder holding its prepared store ``<data_dir>/<dataset>/`` (absolute).
        params: the notebook's parameters (:meth:`NotebookParams.as_dict`).
    """

    table: str
    config: str
    seed: int
    run_dir: str
    data_dir: str
    params: dict[str, Any] = field(compare=False)

    @property
    def name(self) -> str:
        """``<config>-seed<k>``: the job's name (its run folder's name, its SLURM job name)."""
        return Path(self.run_dir).name

    @property
    def info(self) -> TableInfo:
        return next(i for i in experiments(self.table) if i.config == self.config)

    def notebook_params(self) -> NotebookParams:
        return NotebookParams.from_mapping(self.params)


def table_jobs(infos: tuple[TableInfo, ...], p: NotebookParams, data_dirs: dict[str, Path]) -> list[GridJob]:
    """The grid of a table run: every row's experiment (once, Table 5 has two per dataset) x every seed.

    Args:
        infos: the table's rows (:func:`sam3dlib.study.registry.experiments`).
        p: the notebook's parameters (``out_dir`` is the table run's folder).
        data_dirs: dataset -> folder holding its prepared store.
    """
    params = {**p.as_dict(), "launcher": "local"}  # a job runs its experiment in its own process
    jobs: dict[str, GridJob] = {}
    for info in infos:
        for seed in p.seeds:
            rd = experiment_dir(Path(p.out_dir).resolve(), info.config, seed)
            jobs.setdefault(rd.name, GridJob(info.table, info.config, int(seed), os.fspath(rd),
                                             os.fspath(Path(data_dirs[info.dataset]).resolve()), params))
    return list(jobs.values())


def epochs_logged(run_dir: str | os.PathLike) -> int:
    """Epochs recorded in ``run_dir/log.csv`` (0 without one): the epoch a resumed run continues after."""
    try:
        with (Path(run_dir) / "log.csv").open(newline="") as f:
            return sum(1 for _ in csv.DictReader(f))
    except OSError:
        return 0


def resume_message(job: GridJob) -> str | None:
    """``resuming ... from checkpoints/latest.pt after epoch k of E`` when the run has a checkpoint, else None."""
    from sam3dlib.modeling.run_checkpoint import LATEST
    from sam3dlib.pipeline import is_scored

    run = Path(job.run_dir)
    if is_scored(run) or not (run / "checkpoints" / LATEST).is_file():
        return None
    from sam3dlib.study.seed_runs import experiment_config

    epochs = experiment_config(job.config, job.notebook_params(), job.seed).epochs
    return f"{job.name}: resuming {run} from checkpoints/{LATEST} after epoch {epochs_logged(run)} of {epochs}"


def run_job(job: GridJob, progress: bool = False) -> str:
    """Run one job: train, predict and score its experiment (resumed from its last checkpoint).

    Returns:
        The run folder (a str, so that the job's pickled result holds no library object).
    """
    from sam3dlib.study.seed_runs import run_seed

    message = resume_message(job)
    print(message or f"{job.name}: starting in {job.run_dir}", flush=True)
    run = run_seed(job.info, job.notebook_params(), Path(job.data_dir), job.seed, Path(job.run_dir), progress=progress)
    print(f"{job.name}: done, scores in {Path(run) / 'summary.csv'}", flush=True)
    return os.fspath(run)


__all__ = ["EXPERIMENTS_DIR", "GridJob", "epochs_logged", "experiment_dir", "resume_message", "run_job", "table_jobs"]
