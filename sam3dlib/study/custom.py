"""Your own dataset, end to end: plan and prepare, train ``custom``, score the test fold.

The same steps as ``sam3d prepare --raw`` / ``sam3d train custom`` (which call these), for
notebook 08 and scripts::

    store = prepare("raw/Task02_Heart", "data/heart")
    run = train("data/heart", "runs/heart", profile="quick", fold=0)
    per_class_table(run)
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pandas as pd

from sam3dlib.config import ExperimentConfig
from sam3dlib.data.planning import DEFAULT_MEMORY_GB, PlannerSettings
from sam3dlib.data.store import PreparedDataset
from sam3dlib.study.registry import custom_config
from sam3dlib.utils.errors import ConfigError


def planner_settings(memory_gb: float = DEFAULT_MEMORY_GB) -> PlannerSettings:
    """The planner wired to the decoder's measured memory model and SAM's 16-pixel patch."""
    from sam3dlib.modeling.constants import PATCH_SIZE
    from sam3dlib.modeling.memory import decoder_state_bytes, training_bytes_per_voxel

    return PlannerSettings(training_bytes_per_voxel, decoder_state_bytes, memory_gb, PATCH_SIZE)


def prepare(raw: str | os.PathLike, out: str | os.PathLike, plan: dict[str, Any] | None = None,
            num_workers: int = 0, progress: bool = True, force: bool = False) -> PreparedDataset:
    """Plan and prepare a raw MSD / nnU-Net v2 folder into the store ``out`` (resumable).

    Args:
        raw: the raw folder (``dataset.json``, ``imagesTr/``, ``labelsTr/``).
        out: the store folder.
        plan: plan values to impose (``sam3dlib.data.planning.OVERRIDABLE``), e.g. ``{"memory_gb": 4}``.
        num_workers: worker processes.
        progress: progress bars.
        force: rebuild an existing store from scratch (e.g. after the raw data changed).
    """
    from sam3dlib.data.prepare import prepare_user_dataset

    plan = dict(plan or {})
    return prepare_user_dataset(raw, out, planner_settings(plan.get("memory_gb", DEFAULT_MEMORY_GB)), plan,
                                num_workers, progress, force)


def custom_config_for(data: str | os.PathLike, profile: str = "smoke", fold: int = 0,
                      **overrides: Any) -> ExperimentConfig:
    """The ``custom`` experiment of the user store ``data`` (spec and folds from its plan).

    Raises:
        StoreError: ``data`` is not a prepared store.
        ConfigError: ``data`` holds a paper dataset (train it with its table experiment), or a
            setting is out of range.
    """
    store = PreparedDataset(data)
    if not store.is_user_dataset:
        raise ConfigError(f"{data} holds the paper dataset {store.spec.name!r}; train it with its table "
                          "experiment (e.g. table1_synapse), or prepare your own data with `sam3d prepare --raw`")
    return custom_config(store.spec, profile, fold, **overrides)


def train(data: str | os.PathLike, out: str | os.PathLike, profile: str = "smoke", fold: int = 0,
          progress: bool = True, resume: bool = False, force: bool = False, **overrides: Any) -> Path:
    """Train ``custom`` on a prepared user store, then predict and score its test cases.

    Returns:
        The run folder (``config.json``, ``log.csv``, ``training_curve.png``, ``per_case.csv``,
        ``summary.csv``, ``predictions/``).
    """
    from sam3dlib.study.experiment import run_experiment

    config = custom_config_for(data, profile, fold, **overrides)
    return run_experiment(config, data, out, resume=resume, progress=progress, force=force)


def per_class_table(run: str | os.PathLike) -> pd.DataFrame:
    """The run's test metrics, one row per region: DSC (%), HD95 (voxels), HD95 (mm)."""
    summary = pd.read_csv(Path(run) / "summary.csv")
    table = summary.pivot_table(index="region", columns="metric", values="mean", sort=False)
    table = table.rename(columns={"DSC": "DSC (%)", "HD95": "HD95 (voxels)", "HD95_strict": "HD95 (mm)"})
    table["DSC (%)"] = 100 * table["DSC (%)"]
    n = summary.groupby("region", sort=False)["n_cases"].max()
    table["cases"] = n.reindex(table.index)
    return table
