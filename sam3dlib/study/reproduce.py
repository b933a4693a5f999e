"""``make reproduce-tableN`` / ``sam3d reproduce N``: regenerate a paper table from its notebook.

:func:`reproduce_table` checks the data and the encoder weights *before any work*
(:func:`~sam3dlib.study.inputs.check_inputs`), executes the table's notebook with papermill into
``<out>/runs/<run id>/`` (never into ``notebooks/``; :mod:`sam3dlib.study.run_folders`), renders
the executed notebook to a standalone HTML report beside the table's CSV with nbconvert, and
points ``<out>/latest`` at the run. The notebook calls :func:`sam3dlib.study.table_run.run_table`.

Papermill, nbconvert and ipykernel come with the ``study`` extra (``pip install
'sam3dlib[study]'``; ``make setup`` installs it). The notebooks ship with the package
(:func:`notebooks_dir`).
"""
from __future__ import annotations

import importlib.util
import os
import sys
import sysconfig
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sam3dlib.modeling.models import SAM3D_MODEL
from sam3dlib.study.grid import table_jobs
from sam3dlib.study.inputs import DEFAULT_ENCODER_WEIGHTS, check_inputs
from sam3dlib.study.kernel import check_kernel, kernel_for
from sam3dlib.study.launcher import JOBS_DIR, grid_plan, load_settings, run_grid
from sam3dlib.study.notebook_params import NotebookParams, ParameterError, as_models, as_seeds
from sam3dlib.study.registry import NOTEBOOKS, table_key
from sam3dlib.study.run_folders import point_latest, run_id, select_run_dir
from sam3dlib.study.table_run import data_dir_for, select_rows
from sam3dlib.utils.errors import UserInputError
from sam3dlib.utils.fileio import atomic_write_json
from sam3dlib.utils.finished import mark_finished

#: Where a wheel install puts the notebooks (``[tool.setuptools.data-files]`` in pyproject.toml).
NOTEBOOKS_DATA_DIR = Path("share") / "sam3dlib" / "notebooks"
#: The packages the ``study`` extra adds for executing and rendering notebooks.
STUDY_PACKAGES = ("papermill", "nbconvert", "nbformat", "ipykernel")


class MissingDependencyError(UserInputError, ImportError):
    """A package of the ``study`` extra is not installed; the message says how to install it."""


def notebooks_dir() -> Path:
    """The table notebooks: ``notebooks/`` of a source checkout, else those installed with the wheel.

    Raises:
        FileNotFoundError: neither exists (the message names both places).
    """
    checkout = Path(__file__).resolve().parents[2] / "notebooks"
    installed = Path(sysconfig.get_path("data")) / NOTEBOOKS_DATA_DIR
    for d in (checkout, installed):
        if (d / NOTEBOOKS["1"]).is_file():
            return d
    raise FileNotFoundError(f"table notebooks not found in {checkout} (source checkout) nor in {installed} "
                            "(installed package); reinstall sam3dlib or run from a checkout")


def require_study_packages(also: Sequence[str] = ()) -> None:
    """Check that papermill, nbconvert, nbformat and ipykernel (and ``also``: ``submitit`` for
    ``--launcher slurm``) are installed.

    Raises:
        MissingDependencyError: naming the missing packages and the install command.
    """
    missing = [name for name in (*STUDY_PACKAGES, *also) if importlib.util.find_spec(name) is None]
    if missing:
        raise MissingDependencyError(f"sam3d reproduce needs {', '.join(missing)} (the 'study' extra): "
                                     f"{sys.executable} -m pip install 'sam3dlib[study]' (or make setup)")


def render_html(notebook: Path, target: Path, run_dir: Path | None = None, seconds: float | None = None) -> Path:
    """The executed ``notebook`` as one standalone results page (figures embedded, no code), with the
    run-info block of ``run_dir`` when given (:mod:`sam3dlib.study.report_page`); written atomically."""
    from sam3dlib.study.report_page import render_report, run_info

    return render_report(notebook, target, run_info(run_dir, seconds) if run_dir is not None else None)


def _notebook_for(key: str, out: Path) -> Path:
    if key not in NOTEBOOKS:
        raise ParameterError(f"table {key!r}: choose one of {', '.join(NOTEBOOKS)}")
    nb_dir = notebooks_dir()
    if out.resolve() == nb_dir or nb_dir in out.resolve().parents:
        raise ParameterError(f"--out {out}: executed notebooks never go into notebooks/; choose e.g. results/table{key}")
    return nb_dir / NOTEBOOKS[key]


def _parameters(data: Path | None, weights: Path | None, profile: str, seeds: tuple[int, ...], device: str, run_dir: Path,
                launcher: str = "local", cluster: dict | None = None,
                released: dict[str, Path | None] | None = None,
                models: tuple[str, ...] = (SAM3D_MODEL,)) -> dict:
    extra = {k: (os.fspath(Path(v).resolve()) if v is not None else None) for k, v in (released or {}).items()}
    return {
        **extra,
        "models": list(models),
        "data_dir": os.fspath(data.resolve()) if data is not None else None,
        "encoder_weights": os.fspath(weights.resolve()) if (weights is not None and profile != "smoke") else None,
        "profile": profile,
        "seeds": list(seeds),
        "seed": int(seeds[0]),
        "device": device,
        "out_dir": os.fspath(run_dir.resolve()),
        "launcher": launcher,
        "cluster": dict(cluster or {}),
    }


def estimate_table(n: int | str, profile: str, data_dir: str | os.PathLike | None, encoder_weights: str | os.PathLike | None,
                   seeds: Sequence[int] | str | int = (0,), device: str = "auto") -> list[str]:
    """One line per experiment of the table: its expected wall time and peak memory on ``device``
    (:func:`sam3dlib.training.estimate.estimate_training`, a few timed steps), times the seeds."""
    from sam3dlib.data.specs import get_spec
    from sam3dlib.data.store import PreparedDataset
    from sam3dlib.study.inputs import has_store
    from sam3dlib.study.registry import experiments
    from sam3dlib.study.seed_runs import experiment_config
    from sam3dlib.training.estimate import estimate_training, training_slices

    key = table_key(n)
    seeds_t = as_seeds("seeds", seeds) or (0,)
    check_inputs(key, profile, Path(data_dir) if data_dir is not None else None,
                 Path(encoder_weights) if encoder_weights is not None else None)
    p = NotebookParams.from_mapping({"profile": profile, "device": device, "data_dir": data_dir,
                                     "encoder_weights": encoder_weights if profile != "smoke" else None})
    lines = []
    for info in experiments(key):
        cfg = experiment_config(info.config, p, seeds_t[0])
        store = PreparedDataset(Path(data_dir) / info.dataset) if data_dir and has_store(data_dir, info.dataset) else None
        est = estimate_training(cfg, get_spec(info.dataset), cache_slices=training_slices(store, cfg) if store else 0)
        times = f" (x {len(seeds_t)} seeds)" if len(seeds_t) > 1 else ""
        lines.append(f"Table {info.table} {info.paper_method} [{profile}]{times}: {est.describe()}")
    return lines


def check_released(key: str, weights: str | os.PathLike | None, maps: str | os.PathLike | None) -> dict[str, Path | None]:
    """The released inputs, checked before any work (they must exist; Table 5 has none).

    Raises:
        MissingInputError: a given path does not exist, or one is given for Table 5.
    """
    from sam3dlib.study.inputs import MissingInputError

    given = {"released_weights": weights, "released_predictions": maps}
    out = {k: (Path(v) if v not in (None, "") else None) for k, v in given.items()}
    if key.startswith("5") and any(out.values()):
        raise MissingInputError("Table 5 (the skip ablation) has no released weights or prediction maps; "
                                "drop RELEASED_WEIGHTS / RELEASED_PREDICTIONS")
    for k, v in out.items():
        if v is not None and not v.exists():
            raise MissingInputError(f"{k.upper()} {v} does not exist (sam3d download authors-{k.split('_')[1]} says where "
                                    "the authors' files are)")
    return out


#: the name an executed notebook is given when its execution failed (never taken for a result)
FAILED_SUFFIX = ".failed.ipynb"


def _execute(nb: Path, run_dir: Path, params: dict, progress: bool, kernel: str | None = None) -> float:
    """Run the notebook in ``kernel`` (None: this Python, :func:`~sam3dlib.study.kernel.kernel_for`);
    with ``progress`` the kernel's output (one line per epoch: loss, ETA; then prediction and
    scoring) streams to this process's stdout/stderr as it comes. A failed or interrupted
    execution leaves its partial notebook as ``<name>.failed.ipynb``."""
    import papermill as pm

    t0 = time.perf_counter()
    target = run_dir / nb.name
    streams = dict(stdout_file=sys.stdout, stderr_file=sys.stderr) if progress else {}
    try:
        with kernel_for(kernel) as kernel_name:
            pm.execute_notebook(os.fspath(nb), os.fspath(target), parameters=params, cwd=os.fspath(run_dir),
                                progress_bar=False, kernel_name=kernel_name, **streams)
    except BaseException:
        if target.is_file():
            os.replace(target, target.with_name(target.name[: -len(".ipynb")] + FAILED_SUFFIX))
        raise
    return time.perf_counter() - t0


def _grid(key: str, params: dict, build: bool) -> list:
    """The table's experiment x seed jobs under ``params`` (phantom stores built once when ``build``)."""
    p = NotebookParams.from_mapping(params)
    infos = select_rows(key, p.dataset)
    data_dirs = {ds: data_dir_for(ds, p, build=build) for ds in dict.fromkeys(i.dataset for i in infos)}
    return table_jobs(infos, p, data_dirs)


def table_run_jobs(run_dir: str | os.PathLike) -> list:
    """The job grid of a table run folder, from the ``params.json`` that ``reproduce`` wrote (empty without)."""
    import json

    try:
        saved = json.loads((Path(run_dir) / "params.json").read_text())
    except (OSError, ValueError):
        return []
    key = saved.pop("table")
    saved["out_dir"] = os.fspath(Path(run_dir).resolve())
    return _grid(key, saved, build=False)


def grid_status(results_dir: str | os.PathLike) -> list[tuple[Path, list[dict[str, str]]]]:
    """For ``sam3d status``: each table run under ``results_dir`` (a ``results/tableN`` folder or one
    run folder) that has jobs, newest first, with :func:`~sam3dlib.study.launcher.status_rows`.

    Raises:
        MissingFileError: ``results_dir`` does not exist.
    """
    from sam3dlib.study.launcher import status_rows
    from sam3dlib.utils.errors import MissingFileError

    root = Path(results_dir)
    if not root.is_dir():
        raise MissingFileError(f"{root}: no such results folder")
    runs = [root] if (root / "params.json").is_file() or (root / JOBS_DIR).is_dir() else \
        sorted((d for d in (root / "runs").glob("*") if (d / JOBS_DIR).is_dir()), key=lambda d: d.stat().st_mtime,
               reverse=True)
    return [(run, status_rows(table_run_jobs(run), run / JOBS_DIR)) for run in runs]


def reproduce_table(
    n: int | str,
    profile: str = "paper",
    data_dir: str | os.PathLike | None = "data",
    encoder_weights: str | os.PathLike | None = DEFAULT_ENCODER_WEIGHTS,
    seeds: Sequence[int] | str | int = (0,),
    out: str | os.PathLike = "results/table1",
    force: bool = False,
    device: str = "auto",
    progress: bool = False,
    launcher: str = "local",
    cluster: Mapping[str, Any] | None = None,
    cluster_config: str | os.PathLike | None = None,
    dry_run: bool = False,
    wait: bool = True,
    tflops: float | None = None,
    released_weights: str | os.PathLike | None = None,
    released_predictions: str | os.PathLike | None = None,
    kernel: str | None = None,
    models: Sequence[str] | str | None = None,
) -> Path:
    """Execute the table's notebook with papermill into ``<out>/runs/<run id>/``.

    Args:
        n: paper table 1-5.
        profile: ``paper``, ``quick`` or ``smoke``.
        data_dir: folder with prepared stores ``<data_dir>/<dataset>/`` (None: built-in phantoms).
        encoder_weights: SAM ViT-B weights file (not needed, and not used, by ``smoke``).
        seeds: seeds to run (``"0 1 2"``); the table shows mean ± sd over them.
        out: results folder of this table (``results/tableN``).
        force: run again even if a finished run with the same inputs exists.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        progress: stream the notebook's output while it runs (per experiment and seed: epoch,
            loss, ETA; then prediction and scoring).
        launcher: ``local`` (every experiment x seed in the notebook's process) or ``slurm`` (one
            job each through submitit; the notebook runs when all are done and reads their runs).
        cluster: job settings (:class:`~sam3dlib.study.launcher.ClusterSettings` fields), over
            those of ``cluster_config`` (a TOML file).
        dry_run: print the job grid (state, expected GPU-hours and memory, sbatch lines) and stop.
        wait: ``slurm``: wait for the jobs and render the table; False: submit and return (a
            rerun of the same command submits only what is missing or failed, then renders).
        tflops: the device's sustained TFLOP/s for the dry run's estimate (default: the stated model's).
        released_weights, released_predictions: the authors' released weights / prediction maps for
            the ladder's middle columns (:mod:`sam3dlib.study.ladder`); None: "not run".
        kernel: the Jupyter kernel to execute the notebook in; None (default): this Python
            (:mod:`sam3dlib.study.kernel`). A named kernel must import sam3dlib (checked first).
        models: the models to train (``"sam3d unetr nnunet"``; None: SAM3D only): the paper's
            baselines retrained under the same protocol get rows beside the paper's
            (:mod:`sam3dlib.study.model_comparison`).

    Returns:
        The run folder: the executed notebook, ``tableN_report.html`` (the notebook rendered),
        ``tableN.csv`` / ``.md`` / ``.html``, ``per_case.csv``, ``figures/``, ``finished.json``.

    Raises:
        MissingInputError: data or encoder weights missing (checked before any work).
        FinishedRunError: a finished run with the same inputs exists and ``force`` is False.
        ParameterError: a bad table/profile/seeds/device.
        MissingDependencyError: papermill/nbconvert/ipykernel not installed.
        KernelError: ``kernel`` does not exist or cannot import sam3dlib (before any work).
        ClusterConfigError: a bad job setting; GridFailedError: some jobs failed (named with their logs).
    """
    key = table_key(n)
    checked = NotebookParams.from_mapping({"profile": profile, "device": device, "launcher": launcher})  # clear errors first
    seeds_t = as_seeds("seeds", seeds) or (0,)
    models_t = as_models("models", models)
    data = Path(data_dir) if data_dir is not None else None
    weights = Path(encoder_weights) if encoder_weights is not None else None
    out = Path(out)
    nb = _notebook_for(key, out)
    require_study_packages(("submitit",) if checked.launcher == "slurm" else ())
    check_inputs(key, profile, data, weights)
    if kernel is not None:
        check_kernel(kernel)
    settings = load_settings(cluster_config, cluster) if checked.launcher == "slurm" else None
    released = check_released(key, released_weights, released_predictions)
    run_dir = select_run_dir(out, run_id(key, profile, data, weights if profile != "smoke" else None, seeds_t, checked.device,
                                         models=models_t, **released), force)
    params = _parameters(data, weights, profile, seeds_t, checked.device, run_dir, checked.launcher,
                         settings.as_dict() if settings else None, released, models_t)
    if dry_run or settings is not None:
        jobs = _grid(key, params, build=not dry_run)
        if dry_run:
            print(grid_plan(jobs, settings, run_dir / JOBS_DIR, tflops))
            return run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "params.json", {"table": key, **params})
        states = run_grid(jobs, settings, run_dir / JOBS_DIR, wait=wait)
        if not wait:
            print(f"{sum(v == 'done' for v in states.values())} of {len(jobs)} jobs done; `sam3d status {out}` shows "
                  "them; rerun this command to wait for them and render the table")
            return run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run_dir / "params.json", {"table": key, **params})
    if progress:
        print(f"Table {key}: running {nb.name} into {run_dir}", flush=True)
    seconds = _execute(nb, run_dir, params, progress, kernel)
    if not (run_dir / f"table{key}.csv").is_file():
        raise RuntimeError(f"{run_dir / nb.name}: the notebook ran but wrote no table{key}.csv")
    render_html(run_dir / nb.name, run_dir / f"table{key}_report.html", run_dir, seconds)
    mark_finished(run_dir, {"table": key, "seconds": round(seconds, 1), **params})
    point_latest(out, run_dir)
    return run_dir


__all__ = ["MissingDependencyError", "grid_status", "table_run_jobs", "notebooks_dir", "render_html", "reproduce_table", "require_study_packages"]
